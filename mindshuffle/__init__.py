"""mindshuffle: the ShuffleNet family for MindSpore - models, recipes, and tools to measure speed directly."""
__version__ = "0.1.0"

from .builder import create_model, list_models, model_info  # noqa: E402
from .registry import register_model  # noqa: E402

__all__ = ["create_model", "list_models", "model_info", "register_model", "__version__"]
