"""Run the bucketing paper's own exp3 code on this machine, to check the reproduction against it.

Karimireddy, He & Jaggi's repository (github.com/epfml/byzantine-robust-noniid-optimizer) is not
a dependency and nothing is downloaded: pass the path of a checkout you have. Its code needs
torchvision only for MNIST and two transforms; this script stands in for them with shieldwall's
MNIST reader (``../shared/datasets``, already normalised by (0.1307, 0.3081), as the paper's
``Normalize`` does), so the paper's ``Net``, workers, attacks, aggregators, bucketing and
simulator run unchanged, on the CPU with one thread.

    python experiments/run_papers_code.py --repo PATH cp IPM 0.9 0 --seed 0 --epochs 1
    python experiments/run_papers_code.py --repo PATH cp IPM 0.9 0 --clip-scaling linear
    python experiments/run_papers_code.py --repo PATH cm mimic 0.0 0 --shuffle-offset 100000

The paper's honest workers walk their shards in an order that does not depend on ``--seed``:
epoch ``e`` of worker ``r`` is the permutation seeded by ``r ** 3 + e`` (its
``NONIIDLTSampler``), so all of its seeds share one sequence of batches. ``--shuffle-offset K``
seeds it by ``r ** 3 + e + K`` instead (0: the paper's), to tell that shared order's effect from
the seed's.

Prints the validation top-1 after each 30-step epoch (the paper's ``stats`` entries); the
paper's logs are under ``outputs/exp3/all/<agg>_<attack>_<β>_s<s>_seed<k>/stats`` of the same
checkout. docs/reproductions.md records what this found (CClip's τ scaling in the exp3 logs).
"""

from __future__ import annotations

import argparse
import ast
import sys
import tempfile
import types
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent


def _torchvision(data_dir: str) -> types.ModuleType:
    """A ``torchvision`` with just what the paper's code touches: ``datasets.MNIST`` (also under
    the name ``CIFAR10``, which one of its modules subclasses at import) and no-op transforms."""
    from shieldwall.data import load_dataset

    cache: dict[bool, tuple[torch.Tensor, torch.Tensor]] = {}

    class MNIST(torch.utils.data.Dataset):
        def __init__(self, root, train=True, download=False, transform=None, **_):
            if not cache:
                d = load_dataset("mnist", data_dir)
                cache[True] = (d.train_x.float(), d.train_y.long())
                cache[False] = (d.test_x.float(), d.test_y.long())
            self.data, self.targets = cache[bool(train)]
            self.classes = [str(i) for i in range(10)]

        def __len__(self) -> int:
            return len(self.targets)

        def __getitem__(self, i: int):
            return self.data[i], int(self.targets[i])

    def identity(*_args, **_kwargs):
        return lambda x: x

    tv = types.ModuleType("torchvision")
    tv.datasets = types.ModuleType("torchvision.datasets")
    tv.datasets.MNIST = tv.datasets.CIFAR10 = MNIST
    tv.transforms = types.SimpleNamespace(Compose=identity, ToTensor=identity,
                                          Normalize=identity)
    return tv


def _shifted(sampler: type, offset: int) -> type:
    """The paper's ``NONIIDLTSampler`` with its per-epoch permutations seeded by
    ``rank ** 3 + epoch + offset`` (it seeds them by ``rank ** 3 + epoch``)."""

    class Shifted(sampler):
        def __iter__(self):
            epoch = self.epoch
            self.epoch = epoch + offset
            try:
                return super().__iter__()  # draws the whole permutation before returning
            finally:
                self.epoch = epoch

    return Shifted


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("agg", help="cm, cp, krum, rfa, avg, tm")
    ap.add_argument("attack", help="NA, BF, LF, mimic, IPM, ALIE")
    ap.add_argument("momentum", help="worker momentum β, e.g. 0.9")
    ap.add_argument("bucketing", help="bucket size s (0: none)")
    ap.add_argument("--repo", required=True, help="checkout of the paper's repository")
    ap.add_argument("--seed", default="0")
    ap.add_argument("--epochs", type=int, default=1, help="30-step epochs (exp3: 20)")
    ap.add_argument("--clip-scaling", default=None, help="linear or sqrt (CClip's τ)")
    ap.add_argument("--shuffle-offset", type=int, default=0,
                    help="added to the seed of every honest worker's per-epoch permutation "
                    "(default 0: the paper's batches)")
    ap.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "datasets"))
    args = ap.parse_args()
    repo = Path(args.repo).expanduser().resolve()
    if not (repo / "utils.py").is_file() or not (repo / "codes").is_dir():
        print(f"run_papers_code: {str(repo)!r} is not a checkout of the paper's repository "
              "(no utils.py and codes/)", file=sys.stderr)
        return 2
    torch.set_num_threads(1)
    tv = _torchvision(args.data_dir)
    sys.modules.update({"torchvision": tv, "torchvision.datasets": tv.datasets})
    sys.path.insert(0, str(repo))
    sys.argv = ["exp3", "-n", "25", "-f", "5", "--noniid", "--agg", args.agg, "--attack",
                args.attack, "--momentum", args.momentum, "--bucketing", args.bucketing,
                "--seed", args.seed]
    if args.clip_scaling:
        sys.argv += ["--clip-scaling", args.clip_scaling]
    import utils  # the paper's utils.py

    paper_args = utils.get_args()
    if args.shuffle_offset:
        utils.NONIIDLTSampler = _shifted(utils.NONIIDLTSampler, args.shuffle_offset)
    with tempfile.TemporaryDirectory(prefix="papers_code") as log_dir:
        utils.main(paper_args, log_dir + "/", args.epochs, 30)
        targets = []
        for line in Path(log_dir, "stats").read_text().splitlines():
            entry = ast.literal_eval(line)  # the paper logs Python dict reprs
            if entry["_meta"]["type"] == "validation":
                print(f"epoch {entry['E']} (step {30 * entry['E']}): top-1 {entry['top1']:.2f}")
            elif entry["_meta"]["type"] == "mmc_count":  # mimic's choice, once per warm-up step
                targets.append(entry["select"])
        if targets:
            print(f"mimic copied honest worker {targets[-1]} (its choices: {targets})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
