"""Byzantine attacks, registered by name in :data:`ATTACKS` (see :mod:`.base` for the contract)."""

from __future__ import annotations

from shieldwall.attacks.base import AttackContext
from shieldwall.registry import Registry, import_submodules

__all__ = ["ATTACKS", "AttackContext"]

ATTACKS: Registry = Registry("attack")

import_submodules(__name__)
