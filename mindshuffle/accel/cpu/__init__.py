"""The CPU accelerator: mindshuffle's native CPU kernels (``csrc/*.cc``, built by ``build.py``) applied to a built
network by an explicit rewrite (``rewrite.py``, ``cells.py``). See ``mindshuffle.accel``."""
