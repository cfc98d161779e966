"""Training algorithms (one round's worker and server halves), registered in :data:`ALGORITHMS`."""

from __future__ import annotations

from shieldwall.registry import Registry, import_submodules

__all__ = ["ALGORITHMS"]

ALGORITHMS: Registry = Registry("algorithm")

import_submodules(__name__)
