"""Registry pages of the API reference: one index per family, one page per registering module.

Every registry family listed in :data:`FAMILIES` gets an index page (a table of every entry with
its aliases and parameters) and one page per module that registers something: the module's
docstring (the rule's math and paper), then per entry the config keys and aliases that select it,
its parameters with defaults, a YAML example and its own docstring (autodoc). Also the RST
helpers the other generated pages share (:func:`literal`, :func:`heading`, :func:`cells`).
Used by the Sphinx extension :mod:`shieldwall_reference`.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Family:
    """One registry and how a config selects its entries."""

    slug: str  # folder and page name under reference/
    title: str
    registry: str  # "module:ATTRIBUTE"
    imports: tuple[str, ...]  # modules whose import registers every entry
    selectors: tuple[str, ...]  # config keys whose value names an entry
    yaml: str | None  # example selecting ``{name}`` with ``{params}`` lines, or None
    intro: str
    configurable: bool = False  # keyword parameters are config keys beside the name


FAMILIES: tuple[Family, ...] = (
    Family(
        "aggregators", "Aggregators", "shieldwall.aggregators:AGGREGATORS",
        ("shieldwall.aggregators",),
        ("defense_args.defense_type", "redundancy_args.mode"),
        "defense_args:\n  enable_defense: true\n  defense_type: {name}\n{params}",
        "Robust aggregation rules ``fn(updates: Tensor[n, d], f: int, **params) -> Tensor[d]``. "
        "A rule's parameters are keys of ``defense_args`` beside its name, checked against its "
        "signature. See also :doc:`../aggregators`.",
        configurable=True,
    ),
    Family(
        "preaggregators", "Pre-aggregators", "shieldwall.preaggregators:PREAGGREGATORS",
        ("shieldwall.preaggregators",),
        ("defense_args.preaggregators",),
        "defense_args:\n  enable_defense: true\n  defense_type: median\n"
        "  preaggregators: [{{{name}: {{{inline}}}}}]\n",
        "Steps that transform the ``(n, d)`` rows before the aggregator (bucketing, NNM, "
        "clipping, ARC, FedML's filters), listed in ``defense_args.preaggregators`` as names or "
        "``{name: {params}}``, applied in order.",
        configurable=True,
    ),
    Family(
        "postaggregators", "Post-aggregators", "shieldwall.postaggregators:POSTAGGREGATORS",
        ("shieldwall.postaggregators",),
        ("defense_args.postaggregators",),
        "defense_args:\n  enable_defense: true\n  defense_type: mean\n"
        "  postaggregators: [{{{name}: {{{inline}}}}}]\n",
        "Steps applied to the aggregate (CRFL's clip and noise, weak DP), listed in "
        "``defense_args.postaggregators`` or implied by a FedML ``defense_type``.",
        configurable=True,
    ),
    Family(
        "attacks", "Attacks", "shieldwall.attacks:ATTACKS", ("shieldwall.attacks",),
        ("attack_args.attack_type", "attack_args.attack_mode (with attack_type: byzantine)",
         "redundancy_args.err_mode"),
        "attack_args:\n  enable_attack: true\n  attack_type: {name}\n"
        "  byzantine_client_num: 2\n{params}",
        "Update attacks replace the Byzantine clients' rows; data attacks corrupt their local "
        "data. Parameters are keys of ``attack_args`` beside the name. See also "
        ":doc:`../attacks`.",
        configurable=True,
    ),
    Family(
        "models", "Models", "shieldwall.models:MODELS", ("shieldwall.models",),
        ("model_args.model",), "model_args:\n  model: {name}\n",
        "Model constructors; input shape and number of classes come from the data set.",
    ),
    Family(
        "datasets", "Data sets", "shieldwall.data:DATASETS", ("shieldwall.data",),
        ("data_args.dataset",),
        "data_args:\n  dataset: {name}\n  data_cache_dir: ../shared/datasets\n",
        "Data set loaders. Nothing is downloaded: files are read from ``data_cache_dir``.",
    ),
    Family(
        "algorithms", "Algorithms", "shieldwall.algorithms:ALGORITHMS",
        ("shieldwall.algorithms",),
        ("train_args.federated_optimizer",), "train_args:\n  federated_optimizer: {name}\n",
        "Training algorithms written once against the runtime contract.",
    ),
    Family(
        "runtimes", "Runtimes", "shieldwall.runtime.base:RUNTIMES",
        ("shieldwall.runtime", "shieldwall.runtime.net.server"),
        ("comm_args.runtime", "comm_args.backend (with runtime: auto)"),
        "comm_args:\n  runtime: {name}\n",
        "Where the clients run: the in-process simulator, torch.distributed processes, or "
        "networked gRPC silos. See also :doc:`../runtimes`.",
    ),
    Family(
        "drivers", "Drivers", "shieldwall.drivers:DRIVERS", ("shieldwall.drivers",),
        ("train_args.federated_optimizer: BTARD", "redundancy_args.enable"), None,
        "What runs a whole training run: the server round loop (the default), BTARD's "
        "serverless protocol, or the redundancy (DETOX/ByzShield) trainer. The driver whose "
        "claim holds for a config runs it; a config two drivers claim is an error.",
    ),
    Family(
        "server_optimizers", "Server optimizers",
        "shieldwall.algorithms.server_opt:SERVER_OPTIMIZERS",
        ("shieldwall.algorithms.server_opt",),
        ("train_args.server_optimizer",),
        "train_args:\n  federated_optimizer: FedOpt\n  server_optimizer: {name}\n"
        "  server_lr: 0.1\n",
        "The server's optimizer in FedOpt: one step on the negated aggregate of the clients' "
        "model changes, with ``server_lr`` and ``server_momentum``.",
    ),
    Family(
        "placements", "Redundancy placements", "shieldwall.redundancy.placement:PLACEMENTS",
        ("shieldwall.redundancy",),
        ("redundancy_args.approach",),
        "redundancy_args:\n  enable: true\n  approach: {name}\n",
        "File-to-worker assignments of the redundancy defenses (DETOX, ByzShield). See also "
        ":doc:`../redundancy`.",
    ),
)


def registry(family: Family):
    """Import what registers the family's entries and return its :class:`Registry`."""
    for name in family.imports:
        importlib.import_module(name)
    module, attribute = family.registry.split(":")
    return getattr(importlib.import_module(module), attribute)


# --------------------------------------------------------------------------------------- helpers
def _summary(obj: Any) -> str:
    doc = inspect.getdoc(obj) or ""
    return doc.strip().split("\n\n")[0].replace("\n", " ")


def _callable_for(obj: Any) -> Any:
    return obj.__init__ if inspect.isclass(obj) else obj


def config_params(entry: Any) -> list[tuple[str, str, str]]:
    """:func:`parameters` of a defense step or attack, less those the server supplies itself
    (``f``, sample weights, state, the round's generator…): the keys a config may set."""
    from shieldwall.algorithms.defense import user_params

    settable = set(user_params(entry))
    return [p for p in parameters(entry.obj) if p[0] in settable]


def parameters(obj: Any) -> list[tuple[str, str, str]]:
    """``(name, annotation, default)`` of the keyword parameters of ``obj``.

    Positional parameters without a default (``updates``, ``f``, a model's shape…) are the
    family's contract and filled by shieldwall, so they are left out.
    """
    try:
        sig = inspect.signature(_callable_for(obj))
    except (TypeError, ValueError):
        return []
    out = []
    for p in sig.parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        if p.kind == p.KEYWORD_ONLY or p.default is not p.empty:
            if p.annotation is p.empty:
                ann = ""
            elif isinstance(p.annotation, str):
                ann = p.annotation
            else:
                ann = inspect.formatannotation(p.annotation)
            default = "required" if p.default is p.empty else repr(p.default)
            out.append((p.name, ann, default))
    return out


def literal(text: str) -> str:
    """``text`` as an RST inline literal (backquotes cannot be escaped inside one)."""
    return f"``{text}``" if text and "`" not in text else (text or "")


def heading(text: str, char: str) -> str:
    return f"{text}\n{char * max(len(text), 3)}\n"


def cells(rows: list[list[str]], header: list[str], widths: str | None = None) -> str:
    lines = [".. list-table::", "   :header-rows: 1", "   :class: sw-ref"]
    if widths:
        lines.append(f"   :widths: {widths}")
    lines.append("")
    for row in [header, *rows]:
        for i, cell in enumerate(row):
            body = str(cell).strip().split("\n") if str(cell).strip() else [""]
            lead = "   * - " if i == 0 else "     - "
            lines.append(lead + body[0])
            lines.extend("       " + b if b else "" for b in body[1:])
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ FedML's defense vocabulary
def fedml_defense_plans() -> dict[str, dict[str, Any]]:
    """FedML ``defense_type`` → the shieldwall pipeline it becomes and the keys it reads.

    Each plan builder of :data:`shieldwall.config.fedml.FEDML_DEFENSES` runs on a default config
    through a reader that records every key asked for and supplies a sample value for required
    ones, so the table follows the code.
    """
    from shieldwall.config.fedml import FEDML_DEFENSES, Reader, Resolved
    from shieldwall.config.schema import ExperimentConfig

    class Recorder(Reader):
        def get(self, key, default=Reader.get.__defaults__[0], **kwargs):  # noqa: B008
            self.asked.append(key)
            if default is Reader.get.__defaults__[0]:
                self.required.append(key)
                return Resolved(1.0, "sample")
            return super().get(key, default, **kwargs)

    out = {}
    for name, builder in FEDML_DEFENSES.items():
        cfg = ExperimentConfig()
        cfg.data_args.dataset = "mnist"
        reader = Recorder(cfg, name)
        reader.asked, reader.required = [], []
        plan = builder(reader, name)
        out[name] = {
            "pre": [s.name for s in plan.pre], "aggregator": plan.aggregator.name,
            "post": [s.name for s in plan.post], "keys": list(dict.fromkeys(reader.asked)),
            "required": reader.required, "weighted": plan.weighted,
        }
    return out


def _fedml_users(family: Family, name: str, plans: dict[str, dict[str, Any]]) -> list[str]:
    stage = {"aggregators": "aggregator", "preaggregators": "pre",
             "postaggregators": "post"}.get(family.slug)
    if stage is None:
        return []
    return [fedml for fedml, plan in plans.items()
            if (plan[stage] == name if stage == "aggregator" else name in plan[stage])]


# ----------------------------------------------------------------------------- registry pages
def _min_n(entry: Any) -> str:
    """The registered ``min_n(f)`` for a few ``f`` (``f = 1: n >= 5``…), or ``""``."""
    min_n = entry.meta.get("min_n")
    if not callable(min_n):
        return ""
    try:
        return ", ".join(f"{int(min_n(f))} for f = {f}" for f in (0, 1, 2, 3))
    except Exception:  # noqa: BLE001  a rule whose bound needs other parameters
        return ""


def _natural(name: str) -> tuple:
    """Sort key putting ``resnet18`` before ``resnet110``."""
    import re

    return tuple(int(t) if t.isdigit() else t.lower() for t in re.split(r"(\d+)", name))


def _yaml_value(text: str) -> str:
    """A Python literal's ``repr`` written as YAML (``(0.0, 5.0)`` → ``[0.0, 5.0]``)."""
    import yaml

    try:
        value = ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return text
    if isinstance(value, tuple):
        value = list(value)
    return yaml.safe_dump(value, default_flow_style=True).strip().removesuffix("\n...").strip()


def _yaml_example(family: Family, name: str, params: list[tuple[str, str, str]]) -> str | None:
    if family.yaml is None:
        return None
    shown = [(p, _yaml_value(d)) for p, _, d in params if d not in ("required", "None")][:3]
    required = [(p, "...") for p, _, d in params if d == "required"]
    chosen = required + shown
    lines = "".join(f"  {p}: {d}\n" for p, d in chosen)
    inline = ", ".join(f"{p}: {d}" for p, d in chosen)
    return family.yaml.format(name=name, params=lines, inline=inline)


def entry_section(family: Family, entry: Any, plans: dict[str, dict[str, Any]],
                  no_index: bool = False) -> str:
    """The reference section of one registry entry."""
    obj = entry.obj
    target = f"{obj.__module__}.{obj.__qualname__}"
    parts = [f".. _{family.slug}-{entry.name}:\n", heading(entry.name, "-")]
    names = ", ".join(literal(n) for n in (entry.name, *entry.aliases))
    parts.append(f"**Names** (case-insensitive, ``-`` and ``_`` alike): {names}\n")
    keys = ", ".join(literal(k) for k in family.selectors)
    parts.append(f"**Selected by**: {keys}\n")
    users = _fedml_users(family, entry.name, plans)
    if users:
        parts.append("**FedML** ``defense_type`` **names that use it**: "
                     + ", ".join(literal(u) for u in users) + "\n")
    facts = {k: v for k, v in entry.meta.items() if isinstance(v, (bool, str, int, float))}
    if facts:
        parts.append("**Registry facts**: " + ", ".join(
            literal(f"{k}={v!r}") for k, v in sorted(facts.items())) + "\n")
    needs = _min_n(entry)
    if needs:
        parts.append(f"**Smallest n** (rows; default parameters): {needs}\n")
    params = entry_params(family, entry)
    if params and family.configurable:
        where = (f"as ``{{{entry.name}: {{key: value}}}}`` in ``{family.selectors[0]}``"
                 if family.selectors[0].endswith("aggregators")
                 else f"beside the name in ``{family.selectors[0].split('.')[0]}``")
        parts.append(f"**Config keys** ({where}; the server supplies the rows, ``f`` and any "
                     "state):\n")
    elif params:
        parts.append("**Parameters** (filled in by shieldwall from the config):\n")
    if params:
        parts.append(cells([[literal(p), literal(a), literal(d)] for p, a, d in params],
                            ["name", "type", "default"], "25 40 35"))
    else:
        parts.append("No parameters beyond the family's contract.\n")
    example = _yaml_example(family, entry.name, params)
    if example:
        parts.append(".. code-block:: yaml\n\n" + textwrap.indent(example, "   "))
    parts.append(_object_doc(obj, target, no_index))
    return "\n".join(parts)


def entry_params(family: Family, entry: Any) -> list[tuple[str, str, str]]:
    """What the reference lists for ``entry``: config keys, or constructor parameters."""
    return config_params(entry) if family.configurable else parameters(entry.obj)


def _importable(obj: Any) -> bool:
    found: Any = importlib.import_module(obj.__module__)
    for part in obj.__qualname__.split("."):
        found = getattr(found, part, None)
    return found is obj


def _object_doc(obj: Any, target: str, no_index: bool) -> str:
    """autodoc for ``obj``; a hand-made ``py:function`` for objects built by a factory (the
    module has no attribute of that name, so autodoc cannot import them)."""
    option = "\n   :no-index:" if no_index else ""
    if _importable(obj):
        directive = "autoclass" if inspect.isclass(obj) else "autofunction"
        return f".. {directive}:: {target}{option}\n"
    from sphinx.ext.napoleon.docstring import GoogleDocstring

    try:
        signature = str(inspect.signature(obj))
    except (TypeError, ValueError):
        signature = "()"
    body = str(GoogleDocstring(inspect.getdoc(obj) or ""))
    head = f".. py:function:: {obj.__qualname__}{signature}\n   :module: {obj.__module__}"
    return head + option + "\n\n" + textwrap.indent(body, "   ") + "\n"


def family_pages(family: Family, seen: set[str], plans: dict[str, dict[str, Any]]
                 ) -> dict[str, str]:
    """``{relative path: RST text}`` of one family: its index and one page per module."""
    reg = registry(family)
    by_module: dict[str, list[Any]] = {}
    for entry in sorted(reg, key=lambda e: _natural(e.name)):
        by_module.setdefault(entry.obj.__module__, []).append(entry)
    pages: dict[str, str] = {}
    rows = []
    modules = sorted(by_module, key=lambda m: _natural(by_module[m][0].name))  # as titled
    for module in modules:
        entries = by_module[module]
        page = module.rsplit(".", 1)[-1]
        for e in entries:
            link = f":ref:`{e.name} <{family.slug}-{e.name}>`"
            aliases = ", ".join(literal(a) for a in e.aliases) or "–"
            params = ", ".join(literal(f"{p}={d}") for p, _, d in entry_params(family, e))
            params = params or "–"
            rows.append([link, aliases, params, _summary(e.obj), _natural(e.name)])
        title = (" · ".join(e.name for e in entries) if len(entries) <= 4
                 else f"{page}: {', '.join(e.name for e in entries[:2])} … {entries[-1].name}")
        text = [".. This page is generated by docs/_ext/reference_families.py.\n",
                heading(title, "="),
                f"Module :mod:`{module}`. {family.title} registered here: "
                + ", ".join(f":ref:`{e.name} <{family.slug}-{e.name}>`" for e in entries) + ".\n"]
        if module not in seen:
            text.append(f".. automodule:: {module}\n   :no-members:\n")
        seen.add(module)
        for e in entries:
            key = f"{e.obj.__module__}.{e.obj.__qualname__}"
            text.append(entry_section(family, e, plans, no_index=key in seen))
            seen.add(key)
        pages[f"{family.slug}/{page}.rst"] = "\n".join(text)
    index = [
        ".. This page is generated by docs/_ext/reference_families.py.\n",
        heading(family.title, "="),
        family.intro + "\n",
        f"Registry ``{family.registry.replace(':', '.')}``, {len(reg)} entries; selected by "
        + ", ".join(literal(k) for k in family.selectors) + ".\n",
        cells([r[:4] for r in sorted(rows, key=lambda r: r[4])],
               ["name", "aliases", "parameters (default)", "summary"], "16 22 24 38"),
        ".. toctree::\n   :hidden:\n\n"
        + "".join(f"   {family.slug}/{m.rsplit('.', 1)[-1]}\n" for m in modules),
    ]
    pages[f"{family.slug}.rst"] = "\n".join(index)
    return pages
