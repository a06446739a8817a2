"""Name registries for what solver files refer to by name."""

from __future__ import annotations

from .transforms import BUILTIN_TRANSFORMS, Transform


def transform_classes() -> dict[str, type[Transform]]:
    """Transforms known by name (the built-ins)."""
    return dict(BUILTIN_TRANSFORMS)
