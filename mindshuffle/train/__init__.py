"""Training: ``fit(cfg)`` and its parts (plan, run folder, steps, loop, state, callbacks); see engine.py."""
from .engine import Interrupted, Run, fit
from .plan import RunPlan, resolve

__all__ = ["fit", "Run", "Interrupted", "RunPlan", "resolve"]
