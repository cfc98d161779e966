"""Per-round wall time and bytes sent per round: simulator vs torch_distributed (gloo).

For each model (``lr``: d = 650, ``mlp``: d = 55 210 on the embedded digits data), FedAvg with n
clients (plain mean, no attack) runs ``--warm`` untimed rounds then ``--rounds`` timed ones:

* in the simulator (one process; nothing is sent);
* on torch_distributed with 4 and 8 ranks on this machine (rank 0 serves; ranks forked from a
  fork server, gloo over 127.0.0.1).

Bytes per round are counted two ways: *payload*, what the protocol hands to gloo (the server's
counters: task headers + global vector down, 128-byte-header frames up), and *wire*, the bytes
each process wrote to its sockets (``wchar`` of ``/proc/self/io``: gloo's own framing and
control messages included; the workers' count also covers the warm-up rounds, so it is divided by
all rounds). The algorithm itself must move n·d·4 bytes per direction (float32): the global
vector to n clients, n rows back. ``down/ndb`` and ``up/ndb`` are the ratios to that.

Usage: ``python benchmarks/runtime.py [--rounds 20] [--clients 14] [--out FILE]``.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

from shieldwall.runtime.spawn import PRELOAD, free_port


def config(model: str, clients: int) -> dict:
    return {
        "common_args": {"random_seed": 0},
        "data_args": {"dataset": "digits", "partition_method": "iid"},
        "model_args": {"model": model},
        "train_args": {"federated_optimizer": "FedAvg", "client_num_in_total": clients,
                       "comm_round": 10**6, "batch_size": 16, "learning_rate": 0.05},
        "device_args": {"num_threads": 1},
        "comm_args": {"round_timeout": 600},
        "tracking_args": {"enable_tensorboard": False},
    }


def wchar() -> int:
    try:
        with open("/proc/self/io") as f:
            return next(int(line.split()[1]) for line in f if line.startswith("wchar"))
    except (OSError, StopIteration):
        return 0


def server_and_params(cfg, runtime_cls):
    from shieldwall.algorithms.server import Server
    from shieldwall.runtime import ClientExecutor
    from shieldwall.train import build_components

    parts = build_components(cfg)
    executor = ClientExecutor(parts.algorithm, parts.shards, cfg.common_args.random_seed)
    runtime = runtime_cls.from_config(cfg, executor)
    n = cfg.train_args.client_num_in_total
    server = Server(parts.algorithm, runtime, parts.defense, None, num_clients=n,
                    clients_per_round=n, f=0, seed=0)
    return server, runtime, parts.initial_params


def timed_rounds(server, params, warm: int, rounds: int) -> list[float]:
    for r in range(warm):
        params, _ = server.round(params, r)
    times = []
    for r in range(warm, warm + rounds):
        start = time.perf_counter()
        params, _ = server.round(params, r)
        times.append(time.perf_counter() - start)
    return times


def rank_main(rank: int, world: int, port: int, raw: dict, warm: int, rounds: int,
              out: str) -> None:
    """One rank of a torch_distributed measurement (run in a forked process)."""
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1")
    torch.set_num_threads(1)
    from shieldwall.config import config_from_dict
    from shieldwall.runtime import TorchDistributedRuntime

    server, runtime, params = server_and_params(config_from_dict(raw), TorchDistributedRuntime)
    result: dict = {}
    if not runtime.is_server:
        before = wchar()
        runtime.serve()
        result["wchar"] = (wchar() - before) / (warm + rounds)
    else:
        down0, up0 = runtime.bytes_down, runtime.bytes_up
        before = wchar()
        result["times"] = timed_rounds(server, params, warm, rounds)
        result["wchar"] = (wchar() - before) / rounds
        result["payload_down"] = (runtime.bytes_down - down0) / (warm + rounds)
        result["payload_up"] = (runtime.bytes_up - up0) / (warm + rounds)
    runtime.close()
    Path(out, f"rank-{rank}.json").write_text(json.dumps(result))


def measure_dist(raw: dict, world: int, warm: int, rounds: int) -> dict:
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    with tempfile.TemporaryDirectory() as out:
        port = free_port()
        procs = [ctx.Process(target=rank_main, args=(r, world, port, raw, warm, rounds, out))
                 for r in range(world)]
        for p in procs:
            p.start()
        for p in procs:
            p.join(900)
            if p.exitcode != 0:
                raise RuntimeError(f"rank {procs.index(p)} failed ({p.exitcode})")
        ranks = [json.loads(Path(out, f"rank-{r}.json").read_text()) for r in range(world)]
    server = ranks[0]
    return {
        "times": server["times"],
        "payload_down": server["payload_down"], "payload_up": server["payload_up"],
        "wire_down": server["wchar"], "wire_up": sum(r["wchar"] for r in ranks[1:]),
    }


def measure_sim(raw: dict, warm: int, rounds: int) -> dict:
    from shieldwall.config import config_from_dict
    from shieldwall.runtime import SimulatorRuntime

    torch.set_num_threads(1)
    server, _, params = server_and_params(config_from_dict(raw), SimulatorRuntime)
    zero = {"payload_down": 0, "payload_up": 0, "wire_down": 0, "wire_up": 0}
    return {"times": timed_rounds(server, params, warm, rounds), **zero}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=20)
    p.add_argument("--warm", type=int, default=3)
    p.add_argument("--clients", type=int, default=14)
    p.add_argument("--models", default="lr,mlp")
    p.add_argument("--worlds", default="4,8")
    p.add_argument("--out", help="also write the table here")
    args = p.parse_args(argv)
    from shieldwall.train import build_components  # noqa: F401  (imports before timing)

    n = args.clients
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    lines = [
        f"# benchmarks/runtime.py --rounds {args.rounds} --clients {n}  ({time.strftime('%F')})",
        f"# {platform.node()}: {os.cpu_count()} CPUs, load average {load:.1f} at start, torch "
        f"{torch.__version__}, 1 thread per process; FedAvg on digits, {n} clients, mean",
        "# ndb = n*d*4 bytes (one float32 vector per client, each direction); times: median "
        "(min-max) ms per round",
        f"{'model':<5} {'d':>6} {'runtime':<12} {'ranks':>5} {'round ms':>20} "
        f"{'down B/round':>13} {'up B/round':>12} {'wire down/ndb':>13} {'wire up/ndb':>11} "
        f"{'payload down/ndb':>16} {'payload up/ndb':>14}",
    ]
    print("\n".join(lines), flush=True)
    for model in args.models.split(","):
        raw = config(model, n)
        from shieldwall.config import config_from_dict
        from shieldwall.train import build_components as build

        d = build(config_from_dict(raw)).algorithm.flat.dim
        ndb = n * d * 4
        setups = [("simulator", 1)] + [("gloo", int(w)) for w in args.worlds.split(",")]
        for name, world in setups:
            if name == "simulator":
                m = measure_sim(raw, args.warm, args.rounds)
            else:
                m = measure_dist(raw, world, args.warm, args.rounds)
            ms = [1000 * t for t in m["times"]]
            span = f"{statistics.median(ms):.1f} ({min(ms):.1f}-{max(ms):.1f})"
            line = (
                f"{model:<5} {d:>6} {name:<12} {world:>5} {span:>20} "
                f"{m['wire_down']:>13.0f} {m['wire_up']:>12.0f} {m['wire_down'] / ndb:>13.3f} "
                f"{m['wire_up'] / ndb:>11.3f} {m['payload_down'] / ndb:>16.3f} "
                f"{m['payload_up'] / ndb:>14.3f}"
            )
            print(line, flush=True)
            lines.append(line)
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
