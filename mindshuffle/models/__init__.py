"""Model families; importing this package registers every model."""
from . import shufflenet_v1, shufflenet_v2  # noqa: F401
from . import shufflenet_v2_variants, shufflenet_v2_large, shufflenet_v2_plus  # noqa: F401,E402
from .shufflenet_v1 import ShuffleNetV1, ShuffleUnitV1
from .shufflenet_v2 import ShuffleNetV2, ShuffleUnitV2

__all__ = ["ShuffleNetV1", "ShuffleUnitV1", "ShuffleNetV2", "ShuffleUnitV2"]
