"""The simulated redundancy step's vote and ALIE's spread, against the way they were computed.

One thread, medians over ``--repeats`` (the functions take turns). ByzShield's MNIST setting:
K = 15 workers, r = 3 (MOLS: F = 25 files), q = 3 adversaries sending ALIE, d = the MLP's
parameters. Rows:

* the vote of one step: **before**, every ``(F, r, d)`` replica built with ``torch.where`` and
  compared pairwise with two ``torch.isclose`` each (``_vote`` as it was); **now**
  (:func:`shieldwall.redundancy.training._vote_simulated`) a file is settled by comparing its
  honest and adversarial rows once, and only files whose values differ are built and voted,
  with one symmetric closeness pass per pair. Floor: one copy of the ``(F, d)`` honest rows (the
  voted output has to be written).
* ALIE's per-coordinate spread over the F honest rows: ``torch.std(dim=0)`` against
  :func:`shieldwall.attacks._utils.coordinate_std` (mean, then squared deviations). Floor: one
  ``rows.sum(dim=0)``.

Usage: ``python benchmarks/redundancy_vote.py [--repeats 11] [--out PATH]`` (default
``docs/benchmarks/redundancy_vote.txt``).
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from pathlib import Path

import torch
from _timing import paired_medians  # (beside this script)
from torch import Tensor

from shieldwall.attacks._utils import coordinate_std
from shieldwall.redundancy import build_placement
from shieldwall.redundancy.training import _vote_simulated
from shieldwall.redundancy.vote import majority_threshold


def medians_ms(fns: list[Callable[[], object]], repeats: int) -> list[float]:
    """Each function's median time (ms), the functions taking turns in every round."""
    return [1e3 * t for t in paired_medians(fns, repeats)]


def vote_before(honest: Tensor, bad: Tensor, adv: Tensor, rtol: float, atol: float) -> Tensor:
    """The previous path: all replicas built, two ``isclose`` per replica pair."""
    nf, r = adv.shape
    replicas = torch.where(adv.unsqueeze(-1), bad.unsqueeze(1),
                           honest.unsqueeze(1).expand(nf, r, honest.shape[1]))
    first = replicas[:, :1]
    settled = (replicas == first).all(dim=(1, 2)) & torch.isfinite(first).all(dim=(1, 2))
    voted = replicas[:, 0].clone()
    open_files = torch.nonzero(~settled).flatten()
    sub = replicas[open_files]
    agree = torch.eye(r, dtype=torch.bool).expand(len(open_files), r, r).clone()
    for i in range(r):
        for j in range(i + 1, r):
            close = (torch.isclose(sub[:, i], sub[:, j], rtol=rtol, atol=atol)
                     | torch.isclose(sub[:, j], sub[:, i], rtol=rtol, atol=atol)).all(dim=-1)
            agree[:, i, j] = agree[:, j, i] = close
            (sub[:, i] == sub[:, j]).all(dim=-1)
    diag = (torch.isclose(sub, sub, rtol=rtol, atol=atol)).all(dim=-1)
    support = agree.sum(dim=2) + diag.long() * 0
    ref = support.argmax(dim=1)
    voted[open_files] = sub[torch.arange(len(open_files)), ref]
    assert bool((support.max(dim=1).values >= majority_threshold(r)).all())
    return voted


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=11)
    ap.add_argument("--dim", type=int, default=199_210, help="d (MNIST MLP: 199,210)")
    ap.add_argument("--out", default="docs/benchmarks/redundancy_vote.txt")
    args = ap.parse_args()
    torch.set_num_threads(1)
    placement = build_placement("mols", 15, 3)
    g = torch.Generator().manual_seed(0)
    honest = torch.randn(placement.num_files, args.dim, generator=g)
    bad = honest - 0.5 * torch.randn(args.dim, generator=g).abs()  # one ALIE row per file
    is_adv = torch.zeros(placement.num_workers, dtype=torch.bool)
    is_adv[[0, 1, 2]] = True
    adv = is_adv[placement.replica_workers]
    now = _vote_simulated(honest, bad, adv, 1e-5, 1e-8)[0]
    assert torch.equal(now, vote_before(honest, bad, adv, 1e-5, 1e-8))
    vote = medians_ms([lambda: vote_before(honest, bad, adv, 1e-5, 1e-8),
                       lambda: _vote_simulated(honest, bad, adv, 1e-5, 1e-8),
                       honest.clone], args.repeats)
    spread = medians_ms([lambda: honest.std(dim=0), lambda: coordinate_std(honest),
                         lambda: honest.sum(dim=0)], args.repeats)
    lines = [f"# {platform.machine()}, torch {torch.__version__}, 1 thread, median of "
             f"{args.repeats}; F = {placement.num_files} files, r = 3, d = {args.dim}, "
             f"{int(adv.any(dim=1).sum())} files with an adversarial replica", ""]
    for title, names, ms in (
        ("vote of one step", ["before: all replicas, 2 isclose per pair",
                              "now: _vote_simulated", "floor: copy of the honest rows"], vote),
        (f"ALIE's coordinate spread over {placement.num_files} rows",
         ["torch.std(dim=0)", "coordinate_std", "floor: rows.sum(dim=0)"], spread),
    ):
        lines.append(title)
        lines += [f"  {n:<44}{t:9.2f} ms   x {ms[0] / t:5.2f} vs before" for n, t in zip(names, ms)]
        lines.append("")
    text = "\n".join(lines)
    print(text)
    Path(args.out).write_text(text)


if __name__ == "__main__":
    main()
