"""Singular-vector rotation of checkpoints against a reference, and the paper's spectral edits.

This module itself imports no torch (presets read its names); `linalg`, `weights`, `cache`, `analyze` and `edit` do.
"""

from __future__ import annotations

from healer.errors import HealerError

MODULES = ("q", "k", "v", "o", "gate", "up", "down")  # the projections of a decoder layer, in reading order


def parse_modules(text: str | tuple[str, ...] | list[str]) -> tuple[str, ...]:
    """`q,k,v,down` (or q_proj, ...) as a tuple in the canonical order; unknown names are an error."""
    items = [m.strip().removesuffix("_proj") for m in (text.split(",") if isinstance(text, str) else text)]
    unknown = [m for m in items if m not in MODULES]
    if unknown or not [m for m in items if m]:
        raise HealerError(f"modules {','.join(unknown) or '(none)'}: choose from {','.join(MODULES)}")
    return tuple(m for m in MODULES if m in items)
