"""Mimic cells of the bucketing reproduction with the paper's own random draws in ours.

Three of the paper's random draws differ from ours by construction; this script puts any of
them into our runs, to see which of them a cell's outcome follows:

* **Batches.** The paper's honest workers (``NONIIDLTSampler`` of github.com/epfml/byzantine-
  robust-noniid-optimizer) walk their label-sorted shards epoch by epoch: step ``t`` of honest
  worker ``r`` (its shard's rank) is batch ``t mod 30`` of the permutation of the shard seeded by
  ``r ** 3 + t // 30`` (30 steps per epoch, batches of 32, the rest of each permutation unused).
  That seed leaves out the run's seed, so every run of the paper sees the same batches in the
  same order; ours draws each step's batch afresh from ``(seed, step, client)``.
  ``--batches paper`` takes the paper's (``--offset K`` shifts its seeds to
  ``r ** 3 + t // 30 + K``); the Byzantine workers keep our draws.
* **Initial model.** The paper builds its ``Net`` right after ``torch.manual_seed(seed)``; ours
  is built from ``derive_seed(seed, "init")``. ``--init paper`` starts from the paper's
  initial weights for the cell's seed (the same layers built in the same order after
  ``torch.manual_seed(seed)``, which draws exactly its ``Net``'s weights).
* **Dropout masks.** Both share one set of masks among all workers; the paper's come from the
  global RNG as it stands after building the model (its simulator restores the RNG after each
  worker), moved on once per 30-step epoch by the test loader (on a CPU; on its GPUs, never);
  ours from ``derive_seed(seed, "dropout")``, drawn once. ``--masks paper`` takes the masks the
  paper's code draws on a CPU: the RNG state after ``torch.manual_seed(seed)`` and its ``Net``,
  moved on by one 64-bit draw per epoch, as its test loader's iterator does.

Cells are mimic cells with the target pinned, as ``bucketing_mimic_targets.py`` runs them
(everything else as in ``bucketing_grid.py``): to the worker the paper's logs copied at the
seed, or to ``--target K``. The paper's code on a CPU copies another worker than its logs (its
z₀ comes from the CPU generator; ``run_papers_code.py`` prints the choice); with all three draws
and that target, a run is the paper's own CPU run up to floating-point rounding (same weights,
batches and masks; the rules and attacks match its code on the same rows).

    nice -n 15 python experiments/bucketing_papers_draws.py --cells cm:none:0:0 cm:none:1:0 \
        --batches paper
    python experiments/bucketing_papers_draws.py --cells cm:none:0:0 --init paper
    python experiments/bucketing_papers_draws.py --cells cm:none:0:0 --init paper \
        --batches paper --masks paper --target 7

Every evaluation of every finished cell goes to
``experiments/results/bucketing_mnist_papers_draws.csv`` (the curves layout plus ``target``,
``batches`` — ``ours``, or ``paper+K`` for the paper's order shifted by K — ``init`` and
``masks``; rows already there whose run directory is absent are kept). Run directories:
``runs/bucketing_papers_draws/<batches>-<init>-<masks>/`` (git-ignored); finished cells are
skipped.
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import logging
import os
import re
import sys
from collections.abc import Iterator
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bucketing_grid as grid  # noqa: E402
import torch  # noqa: E402
from bucketing_grid import write_csv  # noqa: E402
from bucketing_mimic_targets import ALL, parse_cell, pinned_cell  # noqa: E402
from bucketing_report import CURVE_HEADER, cell_curve, read_curves  # noqa: E402
from torch import nn  # noqa: E402

from shieldwall.algorithms.base import ClientTask  # noqa: E402
from shieldwall.algorithms.ps_sgd import PSSGD  # noqa: E402
from shieldwall.attacks.schedule import byzantine_ids  # noqa: E402
from shieldwall.config import load_config  # noqa: E402
from shieldwall.drivers import rounds  # noqa: E402
from shieldwall.matrix import run_cells  # noqa: E402
from shieldwall.runtime import base as runtime_base  # noqa: E402
from shieldwall.seeding import derive_seed  # noqa: E402

OUT = ROOT / "experiments" / "results" / "bucketing_mnist_papers_draws.csv"
#: environment variables that carry the options into the spawned cell processes
ENV_BATCHES, ENV_INIT = "SHIELDWALL_PAPER_BATCHES", "SHIELDWALL_PAPER_INIT"
ENV_MASKS = "SHIELDWALL_PAPER_MASKS"
#: a combination's folder: ``<batches>-<init>-<masks>``
COMBO = re.compile(r"(ours|paper\+\d+)-(ours|paper)-(ours|paper)")
STEPS_PER_EPOCH = 30  # exp3.py: MAX_BATCHES_PER_EPOCH
NUM_CLIENTS, NUM_BYZANTINE = 25, 5  # bucketing_mnist.yaml
NUM_HONEST = NUM_CLIENTS - NUM_BYZANTINE


def paper_batch(rank: int, step: int, num_samples: int, size: int, offset: int) -> torch.Tensor:
    """Positions in honest worker ``rank``'s shard of its batch at ``step``, in the paper's
    order shifted by ``offset``: batch ``step mod 30`` of ``randperm(num_samples)`` seeded by
    ``rank ** 3 + step // 30 + offset``."""
    epoch, b = divmod(step, STEPS_PER_EPOCH)
    gen = torch.Generator().manual_seed(rank ** 3 + epoch + offset)
    perm = torch.randperm(num_samples, generator=gen)
    if (b + 1) * size > num_samples:
        raise ValueError(f"a shard of {num_samples} samples has no batch {b} of {size}")
    return perm[b * size:(b + 1) * size]


def paper_init(seed: int) -> list[torch.Tensor]:
    """The paper's initial ``Net`` weights for ``seed``, in parameter order: its layers built
    in its order (conv 1→32, conv 32→64, fc 9216→128, fc 128→10; dropout draws nothing) right
    after ``torch.manual_seed(seed)``. The global RNG is left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        layers = [nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1), nn.Linear(9216, 128),
                  nn.Linear(128, 10)]
    return [p.detach() for layer in layers for p in layer.parameters()]


def paper_mask_states(seed: int, epochs: int = 20) -> list[torch.Tensor]:
    """The global RNG state each of the paper's 30-step epochs draws its dropout masks from, on
    a CPU: after ``torch.manual_seed(seed)`` and its ``Net`` (:func:`paper_init`), then one
    64-bit draw per epoch (the test loader's iterator takes its base seed; everything else
    between two epochs runs inside the simulator's save/restore). The global RNG is left as it
    was."""
    states = []
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _ = [nn.Conv2d(1, 32, 3, 1), nn.Conv2d(32, 64, 3, 1), nn.Linear(9216, 128),
             nn.Linear(128, 10)]
        for _epoch in range(epochs):
            states.append(torch.get_rng_state())
            torch.empty((), dtype=torch.int64).random_()
    return states


def install_masks() -> None:
    """Make every client run of this process draw the paper's CPU dropout masks for the run's
    seed and the step's epoch (in place of ``shared_dropout_rng``'s)."""
    cache: dict[int, list[torch.Tensor]] = {}

    @contextlib.contextmanager
    def paper_masks(seed: int, round: int, period: int,
                    device: torch.device | None = None) -> Iterator[None]:
        states = cache.setdefault(seed, paper_mask_states(seed))
        with torch.random.fork_rng(devices=[]):
            torch.set_rng_state(states[min(max(round, 0) // STEPS_PER_EPOCH, len(states) - 1)])
            yield

    runtime_base.shared_dropout_rng = paper_masks  # type: ignore[assignment]


def install_batches(offset: int) -> None:
    """Make every PS-SGD honest worker of this process take the paper's batches (shifted by
    ``offset``); Byzantine workers keep their own draws."""
    ours = PSSGD.batch_indices

    def batch_indices(self: PSSGD, num_samples: int, size: int, task: ClientTask,
                      gen: torch.Generator) -> torch.Tensor:
        byz = byzantine_ids(NUM_CLIENTS, NUM_BYZANTINE, 0, seed=task.seed, redraw=False)
        if task.client_id in byz:
            return ours(self, num_samples, size, task, gen)
        rank = sorted(set(range(NUM_CLIENTS)) - set(byz)).index(task.client_id)
        return paper_batch(rank, task.round, num_samples, size, offset)

    PSSGD.batch_indices = batch_indices  # type: ignore[method-assign]


def run_seed(init_seed: int, limit: int = 1000) -> int:
    """The run's seed whose ``derive_seed(seed, "init")`` is ``init_seed`` (the rounds driver
    seeds the global RNG with it right before building the model)."""
    for seed in range(limit):
        if derive_seed(seed, "init") == init_seed:
            return seed
    raise ValueError(f"no run seed below {limit} derives the init seed {init_seed}")


def install_init() -> None:
    """Make the rounds driver of this process start from the paper's initial model for the
    run's seed (the model must have the paper's ``Net`` shapes: ``bucketing_cnn`` on MNIST)."""
    build = rounds.build_model

    def build_model(*args, **kwargs) -> nn.Module:
        model = build(*args, **kwargs)
        weights = paper_init(run_seed(torch.initial_seed()))
        params = list(model.parameters())
        if [p.shape for p in params] != [w.shape for w in weights]:
            raise ValueError("--init paper needs the paper's Net shapes (bucketing_cnn, MNIST)")
        with torch.no_grad():
            for p, w in zip(params, weights, strict=True):
                p.copy_(w)
        return model

    rounds.build_model = build_model  # type: ignore[assignment]


if os.environ.get(ENV_BATCHES) is not None:  # a spawned cell process re-imports this module
    install_batches(int(os.environ[ENV_BATCHES]))
if os.environ.get(ENV_INIT):
    install_init()
if os.environ.get(ENV_MASKS):
    install_masks()


def write_results(root: Path) -> int:
    """Every finished cell under ``root`` (a folder ``<batches>-<init>-<masks>`` per
    combination) into :data:`OUT`, beside the rows already there (so two runs of this script
    that finish together lose nothing: each rescans every combination); the number of curves in
    the file."""
    header = [*CURVE_HEADER[:5], "target", "batches", "init", "masks", *CURVE_HEADER[5:]]
    curves = read_curves(OUT, {"target": int, "batches": str, "init": str, "masks": str})
    combos = [d for d in sorted(root.glob("*-*")) if COMBO.fullmatch(d.name)] if \
        root.is_dir() else []
    for out in combos:
        batches, init, masks = out.name.rsplit("-", 2)
        for (agg, s, seed, beta), target in itertools.product(ALL, range(NUM_HONEST)):
            run = out / "cells" / pinned_cell(agg, s, seed, beta, target).name
            if (run / "summary.json").is_file():
                key = ("mimic", agg, s, beta, seed, target, batches, init, masks)
                curves[key] = cell_curve(run)[0]
    rows = ([*key, step, f"{curves[key][step]:.2f}"]
            for key in sorted(curves, key=lambda k: (-k[3], k[1], k[2], k[6:], k[4]))
            for step in sorted(curves[key]))
    write_csv(OUT, header, rows, comment="Mimic (target pinned to the paper's) with the paper's "
              "batches (paper+K: permutations seeded by rank**3 + epoch + K), initial model or "
              "dropout masks (experiments/bucketing_papers_draws.py): test top-1 (%) every 30 "
              "steps")
    return len(curves)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", nargs="+", type=parse_cell, metavar="AGG:S:SEED[:BETA]",
                    required=True, help="which cells, as in bucketing_mimic_targets.py")
    ap.add_argument("--batches", choices=("ours", "paper"), default="ours",
                    help="the honest workers' batches (default ours)")
    ap.add_argument("--offset", type=int, default=0,
                    help="with --batches paper: added to the seed of each permutation "
                    "(default 0: the paper's exact batches)")
    ap.add_argument("--init", choices=("ours", "paper"), default="ours",
                    help="the initial model (default ours)")
    ap.add_argument("--masks", choices=("ours", "paper"), default="ours",
                    help="the dropout masks (default ours)")
    ap.add_argument("--target", type=int, default=None, metavar="K",
                    help="mimic copies honest worker K (default: the one the paper's logs name "
                    "for the seed; its code on a CPU picks others, see run_papers_code.py)")
    ap.add_argument("--jobs", type=int, default=1, help="parallel cell processes (default 1)")
    ap.add_argument("--out", default=str(ROOT / "runs" / "bucketing_papers_draws"),
                    help="run directories, one folder <batches>-<init>-<masks> per combination "
                    "(default runs/bucketing_papers_draws)")
    args = ap.parse_args()
    if args.jobs < 1:
        ap.error(f"--jobs must be >= 1, got {args.jobs}")
    if args.offset < 0 or (args.offset and args.batches != "paper"):
        ap.error(f"--offset must be >= 0 and goes with --batches paper, got {args.offset}")
    if args.target is not None and not 0 <= args.target < NUM_HONEST:
        ap.error(f"--target must be an honest worker in [0, {NUM_HONEST}), got {args.target}")
    if args.batches == args.init == args.masks == "ours":
        ap.error("nothing of the paper's to put in: give --batches, --init or --masks paper "
                 "(bucketing_mimic_targets.py runs these cells with all of our own draws)")
    batches = f"paper+{args.offset}" if args.batches == "paper" else "ours"
    out = Path(args.out) / f"{batches}-{args.init}-{args.masks}"
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    if args.batches == "paper":  # the cell processes are spawned: they read these
        os.environ[ENV_BATCHES] = str(args.offset)
    if args.init == "paper":
        os.environ[ENV_INIT] = "1"
    if args.masks == "paper":
        os.environ[ENV_MASKS] = "1"
    base = load_config(str(grid.BASE), [])
    cells = [pinned_cell(*c, target=args.target) for c in args.cells]
    run_cells(base, cells, out, jobs=args.jobs)
    print(f"{write_results(Path(args.out))} curves in {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
