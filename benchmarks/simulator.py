"""Simulator throughput: the batched executor against the per-client loop and the compute floor.

    python benchmarks/simulator.py [--threads 2] [--quick] [--out docs/benchmarks/simulator.txt]

For PS-SGD and FedAvg, models LR, MLP and CNN on MNIST-shaped inputs (the real MNIST training
set when ``--data-root`` holds it, else random data of that shape), and 10, 100 and 1,000
clients, it prints rounds per second of ``SimulatorRuntime.run_clients`` batched and looped
(their ratio), and the *compute floor*: one forward/backward of the plain model over all the
round's samples as a single batch (best of three). Times exclude aggregation and the server step.

Workloads: FedAvg splits 60,000 samples evenly over the clients (600 each at 100 clients), one
local epoch of batch 10, momentum 0.9; PS-SGD draws one batch of 32 per client. CNN (FedML's
``CNN_OriginalFedAvg``, 1.66 M parameters) uses 20 samples per client and batch 10, and stops at
100 clients: 1,000 clients' update rows alone would take 6.6 GB. The loop at 1,000 clients is
timed on 100 of them and scaled by 10 (marked ``~``); clients are independent, so loop time is
linear in their number.

Where ByzFL is installed (``pip install byzfl --no-deps``; its package ``__init__`` needs
torchvision, so its federated framework is loaded without it), the same job is also run by its
own simulation: one ``byzfl.Client`` per client (its own model copy, ``DataLoader`` and
``torch.optim.SGD``) with our model injected into its model zoo by name; a round sets each
client's parameters, then ``compute_gradients`` (PS-SGD) or ``compute_model_update`` over the
same number of local steps (FedAvg), and reads the flat row. ``ours/byzfl`` is that time over
our batched time. Flower's simulation needs Ray and its app runner, and is not timed here.
``--scale`` also runs two memory checks in fresh processes (peak RSS):
FedAvg MLP with 1,000 clients in one round, and a full ``train()`` of FedAvg LR on MNIST with
10,000 clients, 1,000 sampled per round.

The machine this was written on had 2 cores shared with other jobs: expect noise of tens of
percent between runs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
import types
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from byzfl_import import import_byzfl  # beside this script

import shieldwall.algorithms  # noqa: F401  (imports algorithms before the runtime package)
from shieldwall.algorithms.base import ClientData
from shieldwall.algorithms.fedavg import FedAvg
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.config.schema import TrainArgs
from shieldwall.models import build_model
from shieldwall.runtime.base import ClientExecutor, RoundPlan
from shieldwall.runtime.simulator import SimulatorRuntime

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "datasets"
SHAPE = (1, 28, 28)


def load_data(root: Path | None, n: int) -> tuple[torch.Tensor, torch.Tensor, str]:
    if root is not None and (root / "mnist").is_dir():
        from shieldwall.data import load_dataset

        ds = load_dataset("mnist", str(root))
        return ds.train_x[:n].contiguous(), ds.train_y[:n].contiguous(), "MNIST"
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, *SHAPE, generator=gen)
    return x, torch.randint(0, 10, (n,), generator=gen), "random data of MNIST shape"


CLOCK = time.perf_counter
"""Wall clock, or process CPU time with ``--cpu-time`` (robust to other jobs on the cores)."""


def best(fn: Callable[[], object], reps: int) -> float:
    times = []
    for _ in range(reps):
        start = CLOCK()
        fn()
        times.append(CLOCK() - start)
    return min(times)


def floor_time(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """One forward/backward of the plain model over ``x`` as a single batch (best of 3)."""

    def once() -> None:
        model.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), y).backward()

    once()
    return best(once, 3)


def load_byzfl_framework() -> types.ModuleType | None:
    """ByzFL's ``fed_framework`` package (see :mod:`byzfl_import`), or ``None``."""
    modules = import_byzfl("fed_framework")
    return None if modules is None else modules[0]


def byzfl_time(
    framework: types.ModuleType, alg_name: str, model_name: str, shards: dict,
    batch: int, params: torch.Tensor,
) -> float:
    """One round of ByzFL's own clients doing the same job (see module docstring)."""
    from torch.utils.data import DataLoader, TensorDataset

    name = f"shieldwall_{model_name}"
    setattr(framework.models, name, lambda: build_model(model_name, SHAPE, 10))
    clients = []
    for data in shards.values():
        loader = DataLoader(TensorDataset(data.x, data.y), batch_size=batch, shuffle=True)
        clients.append(framework.Client({
            "model_name": name, "device": "cpu", "learning_rate": 0.01, "weight_decay": 0.0,
            "milestones": [10**9], "learning_rate_decay": 1.0, "optimizer_name": "SGD",
            "optimizer_params": {"momentum": 0.9}, "loss_name": "CrossEntropyLoss",
            "LabelFlipping": False, "nb_labels": 10, "momentum": 0.0,
            "training_dataloader": loader, "store_per_client_metrics": False,
        }))
    steps = -(-len(next(iter(shards.values()))) // batch)  # one local epoch

    def one_round() -> None:
        for client in clients:
            client.set_parameters(params)
            if alg_name == "FedAvg":
                client.compute_model_update(steps)
                client.get_flat_parameters()
            else:
                client.compute_gradients()
                client.get_flat_gradients_with_momentum()

    one_round()
    return best(one_round, 1)


def case(
    alg_name: str, model_name: str, clients: int, data: tuple[torch.Tensor, torch.Tensor],
    framework: types.ModuleType | None = None,
) -> dict:
    cnn = model_name == "cnn"
    per = 20 if cnn else (60_000 // clients if alg_name == "FedAvg" else 60)
    batch = 10 if (cnn or alg_name == "FedAvg") else 32
    x_all, y_all = data
    shards = {
        c: ClientData(c, x_all[c * per : (c + 1) * per].clone(), y_all[c * per : (c + 1) * per])
        for c in range(clients)
    }
    torch.manual_seed(0)
    model = build_model(model_name, SHAPE, 10)
    args = TrainArgs(batch_size=batch, learning_rate=0.01, momentum=0.9)
    alg = (FedAvg if alg_name == "FedAvg" else PSSGD)(args, model, torch.device("cpu"))
    ex = ClientExecutor(alg, shards, seed=0)
    params = alg.flat.vector()
    plan = RoundPlan(0, tuple(range(clients)))
    batched = SimulatorRuntime(ex, batched="on")
    batched.run_clients(params, plan)  # warm-up (probe, pool, allocator)
    once = best(lambda: batched.run_clients(params, plan), 1)
    t_batched = best(lambda: batched.run_clients(params, plan), 3 if once < 2 else 1)
    loop = SimulatorRuntime(ex, batched="off")
    sub = min(clients, 100)
    sub_plan = RoundPlan(0, tuple(range(sub)))
    loop.run_clients(params, RoundPlan(0, (0,)))
    t_loop = best(lambda: loop.run_clients(params, sub_plan), 1) * clients / sub
    t_byzfl = None
    if framework is not None:
        sub_shards = {c: shards[c] for c in range(sub)}
        t_byzfl = byzfl_time(framework, alg_name, model_name, sub_shards, batch, params)
        t_byzfl *= clients / sub
    n_samples = clients * (per if alg_name == "FedAvg" else min(batch, per))
    fx, fy = x_all[:n_samples], y_all[:n_samples]
    t_floor = floor_time(model, fx, fy)
    return {
        "alg": alg_name, "model": model_name, "clients": clients, "per_client": per,
        "batch": batch, "samples": n_samples, "batched_s": t_batched, "loop_s": t_loop,
        "loop_extrapolated": sub < clients, "floor_s": t_floor, "byzfl_s": t_byzfl,
    }


def row(r: dict) -> str:
    loop = ("~" if r["loop_extrapolated"] else " ") + f"{1 / r['loop_s']:9.3f}"
    return (
        f"{r['alg']:7s} {r['model']:4s} {r['clients']:6d} {r['per_client']:6d} {r['batch']:4d} "
        f"{1 / r['batched_s']:9.3f} {loop} {r['loop_s'] / r['batched_s']:7.1f}x "
        f"{r['batched_s'] * 1e3:10.1f} {r['floor_s'] * 1e3:9.1f} "
        f"{r['batched_s'] / r['floor_s']:7.2f}x"
        + ("" if r["byzfl_s"] is None else
           f" {1 / r['byzfl_s']:9.3f} {r['byzfl_s'] / r['batched_s']:7.1f}x")
    )


HEADER = (
    "alg     model clients /client  B   batched r/s  loop r/s  speedup  batched ms  floor ms"
    "  vs floor"
)
BYZFL_HEADER = "  byzfl r/s  ours/byzfl"


def peak_rss_gib() -> float:
    """This process's peak resident memory (``VmHWM``: unlike ``ru_maxrss``, not inherited
    from the parent across fork/exec)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def scale_child(kind: str, root: str, threads: int) -> None:
    """Runs in a fresh process; prints one JSON line with timings and peak RSS."""
    torch.set_num_threads(threads)
    out: dict = {"kind": kind}
    if kind == "mlp1000":
        x, y, _ = load_data(Path(root) if root else None, 60_000)
        shards = {c: ClientData(c, x[c * 60 : (c + 1) * 60].clone(), y[c * 60 : (c + 1) * 60])
                  for c in range(1000)}
        torch.manual_seed(0)
        args = TrainArgs(batch_size=10, learning_rate=0.01, momentum=0.9)
        alg = FedAvg(args, build_model("mlp", SHAPE, 10), torch.device("cpu"))
        rt = SimulatorRuntime(ClientExecutor(alg, shards, seed=0), batched="on")
        params, plan = alg.flat.vector(), RoundPlan(0, tuple(range(1000)))
        rt.run_clients(params, plan)
        out["round_s"] = best(lambda: rt.run_clients(params, plan), 2)
    else:
        from shieldwall.config import config_from_dict
        from shieldwall.train import train

        cfg = config_from_dict({
            "data_args": {"dataset": "mnist", "data_cache_dir": root, "partition_method": "iid"},
            "model_args": {"model": "lr"},
            "train_args": {"federated_optimizer": "FedAvg", "client_num_in_total": 10_000,
                           "client_num_per_round": 1000, "comm_round": 4, "batch_size": 10,
                           "learning_rate": 0.03},
            "device_args": {"num_threads": threads, "batched": "on"},
            "validation_args": {"frequency_of_the_test": 4},
            "tracking_args": {"log_file_dir": "/tmp/shieldwall-bench", "progress_bar": False,
                              "enable_tensorboard": False},
        })
        summary = train(cfg)
        lines = (Path(summary["run_dir"]) / "metrics.jsonl").read_text().split("\n")
        times = [json.loads(s)["round_time"] for s in lines if s]
        out["round_s"] = min(times[1:])
        out["accuracy"] = summary["final_test_accuracy"]
    out["peak_rss_gib"] = peak_rss_gib()
    print(json.dumps(out))


def run_scale(root: Path | None, threads: int) -> list[str]:
    lines = []
    for kind in ("mlp1000", "train10k"):
        if kind == "train10k" and (root is None or not (root / "mnist").is_dir()):
            lines.append("train10k: skipped (no MNIST under --data-root)")
            continue
        proc = subprocess.run(
            [sys.executable, __file__, "--child", kind, "--data-root", str(root or ""),
             "--threads", str(threads)],
            capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            lines.append(f"{kind}: failed\n{proc.stderr[-2000:]}")
            continue
        r = json.loads(proc.stdout.strip().splitlines()[-1])
        if kind == "mlp1000":
            lines.append(f"FedAvg MLP, 1,000 clients x 60 samples in one round: "
                         f"{r['round_s']:.2f} s/round (wall), peak RSS {r['peak_rss_gib']:.2f} GiB")
        else:
            lines.append(f"train(): FedAvg LR on MNIST, 10,000 clients, 1,000 sampled per round: "
                         f"{r['round_s']:.2f} s/round (wall, incl. aggregation), peak RSS "
                         f"{r['peak_rss_gib']:.2f} GiB, test accuracy after 4 rounds "
                         f"{r['accuracy']:.3f}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--data-root", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--quick", action="store_true", help="10 and 100 clients, LR only")
    parser.add_argument("--no-scale", action="store_true", help="skip the memory checks")
    parser.add_argument("--no-byzfl", action="store_true", help="do not time ByzFL's clients")
    parser.add_argument("--out", type=Path, default=None, help="also write the report here")
    parser.add_argument(
        "--cpu-time", action="store_true",
        help="time with process CPU time instead of wall clock (for busy machines; with one "
        "thread it is the single-core work, without the waits for a core)",
    )
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    root = args.data_root if args.data_root and str(args.data_root) else None
    if args.child:
        scale_child(args.child, str(root or ""), args.threads)
        return
    torch.set_num_threads(args.threads)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.process_time
    x, y, source = load_data(root, 60_000)
    framework = None if args.no_byzfl else load_byzfl_framework()
    lines = [
        f"shieldwall simulator benchmark: torch {torch.__version__}, {args.threads} threads, "
        f"{platform.processor() or platform.machine()}, data: {source}, clock: "
        f"{'process CPU time' if args.cpu_time else 'wall'}; load average at start "
        f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores",
        "r/s: rounds per second of run_clients; speedup: loop time / batched time; "
        "floor: one fwd/bwd over the round's samples as one batch; ~: loop timed on 100 "
        "clients and scaled.",
        HEADER + (BYZFL_HEADER if framework is not None else ""),
    ]
    if framework is not None:
        from importlib.metadata import version

        lines.insert(2, f"byzfl {version('byzfl')}: its own clients, same model and data; "
                        "its times at 1,000 clients are scaled from 100 like the loop's.")
    print("\n".join(lines), flush=True)
    models = ["lr"] if args.quick else ["lr", "mlp", "cnn"]
    for alg in ("PS-SGD", "FedAvg"):
        for model in models:
            for clients in (10, 100, 1000):
                if (model == "cnn" and clients > 100) or (args.quick and clients > 100):
                    continue
                r = case(alg, model, clients, (x, y), framework)
                lines.append(row(r))
                print(lines[-1], flush=True)
    if not args.no_scale and not args.quick:
        for line in run_scale(root, args.threads):
            lines.append(line)
            print(line, flush=True)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
