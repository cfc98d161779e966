"""The documentation site's guarantees: every registered name is documented, the generated
reference covers every registry entry and config key, and the examples on the pages run.

The site itself is built strictly by ``.ci/run`` (``sphinx-build -W``); these tests need no Sphinx
except the reference generator's check, which skips without the ``docs`` extra.
"""

from __future__ import annotations

import ast
import dataclasses
import doctest
import importlib
import inspect
import re
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
sys.path.insert(0, str(DOCS / "_ext"))

import reference_config as config_ref  # noqa: E402
import reference_families as ref  # noqa: E402
import shieldwall_reference as site  # noqa: E402

FAMILIES = {f.slug: f for f in ref.FAMILIES}


def _entries():
    for family in ref.FAMILIES:
        for entry in ref.registry(family):
            yield family, entry


ENTRIES = list(_entries())


def test_every_registry_has_a_reference_family():
    """A new ``Registry(...)`` in the package needs its line in ``FAMILIES`` (docs/_ext)."""
    declared = set()
    for path in (ROOT / "shieldwall").rglob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, (ast.Assign, ast.AnnAssign)) and isinstance(
                    node.value, ast.Call) and getattr(node.value.func, "id", "") == "Registry":
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                module = ".".join(path.relative_to(ROOT).with_suffix("").parts)
                module = module.removesuffix(".__init__")
                declared |= {f"{module}:{t.id}" for t in targets if isinstance(t, ast.Name)}
    documented = {f.registry for f in ref.FAMILIES}
    assert declared, "no registry found: the scan is broken"
    assert declared <= documented, f"registries without reference pages: {declared - documented}"


@pytest.mark.parametrize(
    "family,entry", ENTRIES, ids=[f"{f.slug}:{e.name}" for f, e in ENTRIES])
def test_registered_name_has_docstring(family, entry):
    obj = entry.obj
    own = obj.__doc__ if inspect.isclass(obj) else inspect.getdoc(obj)
    assert own and own.strip(), (
        f"{family.slug} {entry.name!r} ({obj.__module__}.{obj.__qualname__}) has no docstring")
    module = importlib.import_module(obj.__module__)
    assert (module.__doc__ or "").strip(), f"module {obj.__module__} has no docstring"


def test_every_family_is_not_empty():
    for family in ref.FAMILIES:
        assert len(ref.registry(family)) > 0, family.slug


def test_reference_pages_cover_every_entry_and_config_key():
    pytest.importorskip("sphinx", reason="the docs extra is not installed")
    pages = site.all_pages()
    for family, entry in ENTRIES:
        text = "\n".join(t for p, t in pages.items() if p.startswith(f"{family.slug}/"))
        assert f".. _{family.slug}-{entry.name}:" in text, (family.slug, entry.name)
        for alias in entry.aliases:
            assert f"``{alias}``" in text, (family.slug, entry.name, alias)
        for name, _, default in ref.entry_params(family, entry):
            assert f"``{name}``" in text and (default == "required" or f"``{default}``" in text)
        assert f"<{family.slug}-{entry.name}>" in pages[f"{family.slug}.rst"]
    from shieldwall.config import schema

    config = pages["config.rst"]
    for section, cls in schema.SECTIONS.items():
        assert f".. _config-{section}:" in config
        block = config.split(f".. _config-{section}:")[1].split(".. _config-")[0]
        for field in dataclasses.fields(cls):
            assert f"``{section}.{field.name}``" in block, f"{section}.{field.name} missing"


def test_config_reference_reads_field_docs_and_fedml_plans():
    from shieldwall.config import schema

    docs = config_ref.field_docs(Path(schema.__file__).read_text())
    for cls in schema.SECTIONS.values():
        _, fields = docs[cls.__name__]
        for field in dataclasses.fields(cls):
            assert fields.get(field.name), f"{cls.__name__}.{field.name} has no docstring"
    plans = ref.fedml_defense_plans()
    assert plans["geo_median"]["aggregator"] == "geometric_median"
    assert plans["norm_diff_clipping"]["pre"] == ["clipping"]
    assert "norm_bound" in plans["norm_diff_clipping"]["required"]
    assert plans["crfl"]["post"] == ["crfl"]
    assert plans["krum"]["aggregator"] == "krum"


def test_parameters_of_a_rule():
    from shieldwall.aggregators.krum import krum, multikrum

    assert ref.parameters(krum) == [("power", "float", "1.0")]
    assert ref.parameters(multikrum) == [("m", "int | None", "None")]


# ---------------------------------------------------------------------- runnable examples
FENCE = re.compile(r"^(?P<indent>[ \t]*)```python runnable[ \t]*\n(?P<body>.*?)^(?P=indent)```",
                   re.S | re.M)


def _runnable_blocks():
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text()
        for match in FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            body = "\n".join(
                ln[len(match["indent"]):] for ln in match["body"].splitlines())
            yield pytest.param(body, id=f"{path.relative_to(DOCS)}:{line}")


BLOCKS = list(_runnable_blocks())


def test_there_are_runnable_examples():
    assert len(BLOCKS) >= 2


@pytest.mark.parametrize("code", BLOCKS)
def test_runnable_example(code, tmp_path, monkeypatch):
    """Each ```` ```python runnable ```` block of docs/*.md runs (and its asserts hold)."""
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "<docs example>", "exec"), {"__name__": "__docs_example__"})


YAML_FENCE = re.compile(
    r"^(?P<indent>[ \t]*)```yaml runnable[ \t]*\n(?P<body>.*?)^(?P=indent)```", re.S | re.M)


def _yaml_blocks():
    for path in sorted(DOCS.rglob("*.md")):
        text = path.read_text()
        for match in YAML_FENCE.finditer(text):
            line = text[: match.start()].count("\n") + 1
            yield pytest.param(match["body"], id=f"{path.relative_to(DOCS)}:{line}")


def _build_plans(raw: dict) -> None:
    from shieldwall.algorithms.adversary import plan_attack
    from shieldwall.algorithms.defense import build_defense
    from shieldwall.config.loader import config_from_dict

    cfg = config_from_dict(raw)
    build_defense(cfg)
    plan_attack(cfg)


@pytest.mark.parametrize("text", list(_yaml_blocks()))
def test_runnable_yaml_config(text):
    """Each ```` ```yaml runnable ```` block is a valid config whose defense and attack build."""
    import yaml

    _build_plans(yaml.safe_load(text))


@pytest.mark.parametrize(
    "family,entry", [(f, e) for f, e in ENTRIES if f.slug in ("aggregators", "attacks")],
    ids=[f"{f.slug}:{e.name}" for f, e in ENTRIES if f.slug in ("aggregators", "attacks")])
def test_reference_yaml_example_is_a_valid_config(family, entry):
    """The YAML example on each aggregator's and attack's reference entry loads and builds."""
    import yaml

    example = ref._yaml_example(family, entry.name, ref.entry_params(family, entry))
    if "..." in example:
        pytest.skip(f"{entry.name} has required parameters without a default")
    _build_plans(yaml.safe_load(example))


# ---------------------------------------------------------------------- docstring examples
MODULES = sorted({e.obj.__module__ for _, e in ENTRIES})


@pytest.mark.parametrize("module", MODULES)
def test_docstring_examples(module):
    """The ``>>>`` examples in the docstrings the reference shows."""
    result = doctest.testmod(importlib.import_module(module),
                             optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
