"""Import parts of ByzFL without its package ``__init__``, which needs torchvision.

ByzFL (``pip install byzfl --no-deps``) imports its benchmark, and so torchvision, from
``byzfl/__init__.py``; there is no CPU torchvision wheel here. Its aggregators and its federated
framework need neither, so the benchmarks register an empty ``byzfl`` package pointing at the
installed folder and import the submodules they compare against.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types

__all__ = ["import_byzfl"]


def import_byzfl(*names: str) -> list[types.ModuleType] | None:
    """The ``byzfl.<name>`` modules, or ``None`` (not installed, or not loadable: printed)."""
    if "byzfl" not in sys.modules:  # (find_spec fails on the registered stub: check first)
        spec = importlib.util.find_spec("byzfl")
        if spec is None or not spec.submodule_search_locations:
            return None
        package = types.ModuleType("byzfl")
        package.__path__ = list(spec.submodule_search_locations)
        sys.modules["byzfl"] = package
    try:
        return [importlib.import_module(f"byzfl.{name}") for name in names]
    except Exception as exc:  # noqa: BLE001 - depends on the install
        print(f"# byzfl found but {', '.join(names)} not loadable ({exc!r}); skipped")
        return None
