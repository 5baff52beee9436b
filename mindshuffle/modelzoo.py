"""The model table (registered models with parameters, FLOPs and reported accuracy) and the pretrained weights
table, for people to read."""
from __future__ import annotations

from .fileio import markdown_table
from .builder import list_models, model_info
from .weights_table import weights_rows

__all__ = ["model_table", "weights_table"]


def _fmt(v, spec: str) -> str:
    return "-" if v is None else format(v, spec)


def model_table(pattern: str = "*", markdown: bool = False) -> str:
    """One row per registered model matching ``pattern``: name, family, params (M), MFLOPs at 224 px,
    reported top-1/top-5 and where they come from. Empty string when nothing matches."""
    names = list_models(pattern)
    if not names:
        return ""
    head = ["model", "params (M)", "MFLOPs", "top-1", "top-5", "accuracy source", "aliases"]
    rows = []
    for n in names:
        i = model_info(n)
        rows.append([n, _fmt(i.params and i.params / 1e6, ".3f"), _fmt(i.flops, ".1f"), _fmt(i.top1, ".2f"),
                     _fmt(i.top5, ".2f"), i.source or "-", ", ".join(i.aliases) or "-"])
    return _render(head, rows, markdown)


def weights_table(pattern: str = "*", markdown: bool = False) -> str:
    """One row per published weights file of the models matching ``pattern`` (``weights_table.WEIGHTS``): model,
    the ``pretrained=`` value that picks it, file, how it is checked, top-1/top-5, input, publisher."""
    head, rows = weights_rows(pattern, links=markdown)
    return _render(head, rows, markdown) if rows else ""


def _render(head: list, rows: list, markdown: bool) -> str:
    if markdown:
        return markdown_table(head, rows)
    widths = [max(len(str(r[k])) for r in rows + [head]) for k in range(len(head))]
    fmt = "  ".join(f"{{:{w}}}" for w in widths)
    return "\n".join(fmt.format(*r) for r in [head] + rows)
