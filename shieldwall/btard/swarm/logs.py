"""Merge the per-peer run directories of a swarm into one timeline and the seed's two figures.

Every swarm peer writes its own directory (``metrics.jsonl``, ``identity.json``): peers join and
leave, so a step is seen by a varying set of peers. :func:`merge` reads them all into one record
per step — the peers that logged it, the mean training loss they report (each peer's
``train_loss`` is already the mean over the step's present peers; honest peers report the same
value, a disagreeing one is counted in ``disagree``), the identities banned by then (union of the
peers' bans) and whether the step was taken. :func:`plot` draws the BTARD paper/seed's two W&B
figures: loss per step with the attack window shaded, and bans over time.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from shieldwall.metrics import read_metrics

__all__ = ["merge", "plot", "peer_dirs"]


def peer_dirs(paths: list[str | Path]) -> list[Path]:
    """The peer directories among ``paths`` and their sub-directories (holding identity.json)."""
    out: list[Path] = []
    for p in map(Path, paths):
        if not p.exists():
            raise FileNotFoundError(f"no such run directory: {p}")
        out += [p] if (p / "identity.json").exists() else sorted(
            d for d in p.iterdir() if (d / "identity.json").exists())
    if not out:
        raise FileNotFoundError(f"no swarm peer directories (with identity.json) in {paths}")
    return out


def merge(paths: list[str | Path]) -> list[dict[str, Any]]:
    """One record per step over every peer directory (see the module docstring)."""
    steps: dict[int, dict[str, Any]] = {}
    for d in peer_dirs(paths):
        if _identity(d).get("byzantine"):
            continue  # a Byzantine peer's own log is not evidence of anything
        for e in read_metrics(d):
            step = _round(e, d)
            rec = steps.setdefault(step, {"round": step, "peers": 0,
                                          "losses": [], "banned": set(), "taken": 0})
            rec["peers"] += 1
            if e.get("train_loss") is not None:
                rec["losses"].append(float(e["train_loss"]))
            rec["banned"] |= {b["peer"] for b in e.get("banned", [])}
            rec["taken"] += bool(e.get("step_taken"))
    out, banned = [], set()
    for r in sorted(steps):
        rec = steps[r]
        banned |= rec["banned"]
        losses = rec["losses"]
        out.append({"round": r, "peers": rec["peers"],
                    "train_loss": sum(losses) / len(losses) if losses else None,
                    "disagree": len(set(losses)) > 1, "banned_total": len(banned),
                    "step_taken": rec["taken"] * 2 > rec["peers"]})
    return out


def _identity(d: Path) -> dict[str, Any]:
    """``d/identity.json``; a torn or foreign file is one ``ValueError`` naming it."""
    path = d / "identity.json"
    try:
        ident = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{str(path)!r} is not valid JSON ({exc}); repair or remove that peer "
                         "directory") from None
    if not isinstance(ident, dict):
        raise ValueError(f"{str(path)!r} must hold a JSON object, got {type(ident).__name__}")
    return ident


def _round(record: dict[str, Any], d: Path) -> int:
    step = record.get("round")
    if isinstance(step, bool) or not isinstance(step, int):
        raise ValueError(f"{str(d / 'metrics.jsonl')!r}: a record without an integer 'round' "
                         f"(got {step!r}); repair or remove that line")
    return step


def plot(records: list[dict[str, Any]], output: str | Path,
         attack: tuple[int, int | None] | None = None) -> Path:
    """Loss per step (attack window shaded) and cumulative bans, side by side, as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_loss, ax_bans) = plt.subplots(1, 2, figsize=(10, 3.5))
    xs = [r["round"] for r in records if r["train_loss"] is not None]
    ax_loss.plot(xs, [r["train_loss"] for r in records if r["train_loss"] is not None])
    if attack is not None:
        end = attack[1] if attack[1] is not None else max((r["round"] for r in records), default=0)
        ax_loss.axvspan(attack[0], end, color="red", alpha=0.1, label="attack")
        ax_loss.legend()
    ax_loss.set(xlabel="step", ylabel="training loss (honest peers)", title="loss")
    ax_bans.step([r["round"] for r in records], [r["banned_total"] for r in records], where="post")
    ax_bans.set(xlabel="step", ylabel="banned identities", title="bans over time")
    fig.tight_layout()
    output = Path(output)
    fig.savefig(output, dpi=120)
    plt.close(fig)
    return output
