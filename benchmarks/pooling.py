"""CPU max-pooling: ``shieldwall.models.pooling.MaxPool2d`` against ``torch.nn.MaxPool2d``.

Two measurements, one thread, medians over ``--repeats``:

* the layer alone, forward + backward on the bucketing CNN's ``(32, 64, 24, 24)`` activation;
  the floor is a copy of that activation there and back (what any layout change costs);
* one PS-SGD step of the bucketing paper's CNN as the simulator runs it: 25 workers, each a
  forward and backward on 32 MNIST-sized images (the per-client loop; the model has dropout).
  The floor is the same step with the pooling replaced by a strided view (``x[..., ::2, ::2]``:
  the same shapes everywhere else, next to no cost), i.e. the step's cost without pooling.

Usage: ``python benchmarks/pooling.py [--repeats 7] [--out docs/benchmarks/pooling.txt]``.
"""

from __future__ import annotations

import argparse
import platform
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from _timing import paired_medians  # (beside this script)
from torch import nn

from shieldwall.models.cnn import BucketingCNN
from shieldwall.models.pooling import MaxPool2d


def medians_ms(fns: list[Callable[[], object]], repeats: int, inner: int) -> list[float]:
    """Each function's median time (ms) per call over ``repeats`` rounds of ``inner`` calls,
    the functions taking turns so that anything else the machine does slows them alike."""
    return [1e3 * t for t in paired_medians(fns, repeats, inner=inner)]


def layer_rows(repeats: int) -> list[tuple[str, float]]:
    x = torch.randn(32, 64, 24, 24, requires_grad=True)
    g = torch.randn(32, 64, 12, 12)

    def run(pool: nn.Module) -> Callable[[], object]:
        return lambda: torch.autograd.grad(pool(x), x, g)

    def floor() -> object:
        return x.detach().contiguous(memory_format=torch.channels_last).contiguous()

    names = ["torch.nn.MaxPool2d", "shieldwall MaxPool2d", "floor: layout copy there and back"]
    return list(zip(names, medians_ms([run(nn.MaxPool2d(2)), run(MaxPool2d(2)), floor],
                                      repeats, 20)))


def step_rows(repeats: int) -> list[tuple[str, float]]:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(25, 32, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (25, 32), generator=gen)

    def step(model: nn.Module) -> Callable[[], object]:
        def run() -> None:
            for c in range(25):
                model.zero_grad()
                F.cross_entropy(model(x[c]), y[c]).backward()
        return run

    model = BucketingCNN((1, 28, 28), 10)
    plain = BucketingCNN((1, 28, 28), 10)
    plain.load_state_dict(model.state_dict())
    plain.features[3] = nn.MaxPool2d(2)
    without = BucketingCNN((1, 28, 28), 10)
    without.load_state_dict(model.state_dict())
    without.features[3] = _Subsample()
    names = ["step, torch.nn.MaxPool2d", "step, shieldwall MaxPool2d",
             "floor: step with a strided view for pooling"]
    return list(zip(names, medians_ms([step(plain), step(model), step(without)], repeats, 1)))


class _Subsample(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., ::2, ::2]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = [f"# {platform.processor() or platform.machine()}, torch {torch.__version__}, "
             f"1 thread, median of {args.repeats}"]
    for title, rows in (("layer: (32, 64, 24, 24), forward + backward", layer_rows(args.repeats)),
                        ("one step of the bucketing CNN, 25 workers x 32 images",
                         step_rows(args.repeats))):
        base = rows[0][1]
        lines.append(f"\n{title}")
        for name, ms in rows:
            lines.append(f"  {name:<52} {ms:9.2f} ms   x{base / ms:5.2f} vs torch")
    text = "\n".join(lines)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
