"""Loads the compiled extension ``shoal._native`` on first use, with a clear error when it is missing."""

from __future__ import annotations

from types import ModuleType

_native: ModuleType | None = None


def native() -> ModuleType:
    """The ``shoal._native`` module (imported once)."""
    global _native
    if _native is None:
        try:
            from . import _native as mod
        except ImportError as e:  # pragma: no cover - depends on the build
            raise ImportError(
                "shoal's compiled extension shoal._native is not available "
                f"({e}). Build it with `make develop` (maturin develop) or install a shoal wheel."
            ) from e
        _native = mod
    return _native
