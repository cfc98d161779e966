"""The cost of BTARD's checks per step against a plain butterfly all-reduce of the same size.

Part 1 (one peer's work, synthetic gradients, n peers, d coordinates): what a peer computes in a
step besides its gradient, split by component, next to a plain all-reduce peer (average its part
of n rows). Every component is timed with the shieldwall.btard code itself:

* ``aggregate``: CenteredClip of its part (n rows of d/n) — vs the mean;
* ``hash``: sha256 of its n parts (commitments), of the n parts it receives and of the n results;
* ``sign/verify``: 2n signatures made and 2n checked (parts out/in, results out/in);
* ``checksums``: the shared direction z (d float64 normals) and n checksums;
* ``validation``: recomputing one gradient, done by ``validators`` of the n peers per step
  (listed separately: it is one gradient computation, whatever the model costs).

Part 2 (whole steps in the simulator, a real model on MNIST-sized inputs): bytes one peer sends
per step, per phase, measured by serialising every message as the torch.distributed transport
does, against a plain butterfly all-reduce (2 (n-1)/n d float32 values per peer); and wall time
per simulated step (all n peers in one process) against n gradients plus a plain all-reduce.

Usage: ``python benchmarks/btard.py [--out docs/benchmarks/btard.txt]`` (1 torch thread).
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path

import torch

from shieldwall.btard.clip import centered_clip_fixed_point, checksum, split_parts
from shieldwall.btard.crypto import make_keypair, resolve_scheme, tensor_digest
from shieldwall.btard.messages import Part, Result, sign

REPO = Path(__file__).resolve().parents[1]


def best(fn: Callable[[], object], repeat: int = 5) -> float:
    """Fastest of ``repeat`` runs, in seconds (the least disturbed by other processes)."""
    times = []
    for _ in range(repeat):
        tic = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tic)
    return min(times)


def peer_costs(n: int, d: int, scheme: str, tau: float = 1.0) -> dict[str, float]:
    gen = torch.Generator().manual_seed(0)
    grads = torch.randn(n, d, generator=gen) * 0.3 + 0.1
    mine = grads[0]
    my_parts = split_parts(mine, n)
    column = torch.stack([split_parts(g, n)[0] for g in grads])  # part 0 of every peer
    key = make_keypair(scheme, b"k" * 32)
    ring = {0: key.public}
    out: dict[str, float] = {}
    out["mean (plain all-reduce)"] = best(lambda: column.mean(0))
    out["aggregate: CenteredClip"] = best(lambda: centered_clip_fixed_point(column, tau))
    v = centered_clip_fixed_point(column, tau).vector

    def hashes() -> None:
        for p in my_parts:
            tensor_digest(p.clone())  # commitments
        for p in column:
            tensor_digest(p.clone())  # received parts
        for p in my_parts:
            tensor_digest(p.clone())  # received results (same sizes)

    out["hash: 3 d floats"] = best(hashes)
    msgs = [sign(key, 0, Part(0, j, p.clone())) for j, p in enumerate(my_parts)]
    results = [sign(key, 0, Result(0, j, p.clone())) for j, p in enumerate(my_parts)]

    def signatures() -> None:
        for j, p in enumerate(my_parts):
            sign(key, 0, Part(0, j, p.clone()))
            sign(key, 0, Result(0, j, p.clone()))
        for m in msgs + results:
            m.verify(scheme, ring)

    out[f"sign/verify: 2n {scheme}"] = best(signatures, 3)
    if scheme != "hmac":
        hkey = make_keypair("hmac", b"k" * 32)
        hmsgs = [sign(hkey, 0, Part(0, j, p.clone())) for j, p in enumerate(my_parts)] * 2

        def hmac_signatures() -> None:
            for j, p in enumerate(my_parts):
                sign(hkey, 0, Part(0, j, p.clone()))
                sign(hkey, 0, Result(0, j, p.clone()))
            for m in hmsgs:
                m.verify("hmac", {0: hkey.public})

        out["  (same with hmac, simulation only)"] = best(hmac_signatures, 3)

    def checksums() -> None:
        z = split_parts(torch.randn(d, generator=torch.Generator().manual_seed(1),
                                    dtype=torch.float64), n)
        for j in range(n):
            checksum(my_parts[j], v if j == 0 else my_parts[j], z[j], tau)

    out["checksums: z and n values"] = best(checksums)
    return out


def whole_steps(n: int, model: str, steps: int, validators: int) -> dict[str, object]:
    from shieldwall.btard.run import build
    from shieldwall.config import config_from_dict

    raw = {
        "common_args": {"random_seed": 0},
        "data_args": {"dataset": "mnist", "data_cache_dir": str(REPO.parent / "shared" /
                                                                  "datasets")},
        "model_args": {"model": model},
        "train_args": {"federated_optimizer": "BTARD", "client_num_in_total": n,
                       "batch_size": 32, "learning_rate": 0.1},
        "btard_args": {"tau": 1.0, "validators": validators, "signature": "auto",
                       "measure_bytes": True},
    }
    try:
        run = build(config_from_dict(raw))
    except FileNotFoundError:
        raw["data_args"] = {"dataset": "digits"}
        run = build(config_from_dict(raw))
    d = run.oracle.dim
    run.step(0)
    before = run.transport.traffic.snapshot()
    tic = time.perf_counter()
    for r in range(1, steps + 1):
        run.step(r)
    btard_time = (time.perf_counter() - tic) / steps
    after = run.transport.traffic.snapshot()
    per_phase = {k: (after[k] - before.get(k, 0)) / steps / n for k in after}
    params = run.peers[0].params

    def plain_step(r: int) -> None:
        grads = torch.stack([run.oracle.algorithm.client_update(
            params, run.oracle.shards[i], _task(r, i), None).update for i in range(n)])
        parts = torch.split(grads, [p.numel() for p in split_parts(grads[0], n)], dim=1)
        torch.cat([p.mean(0) for p in parts])

    plain_time = best(lambda: plain_step(steps + 1), 3)
    return {"d": d, "per_phase": per_phase, "btard_time": btard_time, "plain_time": plain_time,
            "plain_bytes": 2 * (n - 1) / n * d * 4, "dataset": raw["data_args"]["dataset"]}


def _task(r: int, i: int):
    from shieldwall.algorithms.base import ClientTask

    return ClientTask(r, i, 0, False)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="BTARD check costs vs plain all-reduce")
    p.add_argument("--peers", type=int, default=16)
    p.add_argument("--dims", default="100000,1000000")
    p.add_argument("--models", default="lr,mlp")
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--validators", type=int, default=1)
    p.add_argument("--out", default=str(REPO / "docs" / "benchmarks" / "btard.txt"))
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    n, scheme = args.peers, resolve_scheme("auto")
    lines = [
        "# BTARD-SGD: cost of the checks per step vs plain butterfly all-reduce",
        f"# python {platform.python_version()}, torch {torch.__version__}, 1 thread, "
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores (shared machine: "
        "times are the best of several runs and still noisy)",
        "",
        f"## 1. One peer's work per step besides its gradient (n = {n}, synthetic float32)",
    ]
    for d in (int(x) for x in args.dims.split(",")):
        costs = peer_costs(n, d, scheme)
        lines.append(f"\nd = {d:,} (each part d/n = {d // n:,})")
        base = costs["mean (plain all-reduce)"]
        for k, v in costs.items():
            lines.append(f"  {k:<32} {1e3 * v:9.2f} ms   ({v / base:7.1f} x the mean)")
        extra = sum(v for k, v in costs.items() if not k.startswith(("mean", " ")))
        lines.append(f"  {'total BTARD extra':<32} {1e3 * extra:9.2f} ms")
        lines.append(f"  validation: {args.validators} of {n} peers recompute one gradient per "
                     f"step and receive its {4 * d:,} bytes")
    lines += ["", f"## 2. Whole steps in the simulator (n = {n}, {args.validators} validator(s), "
              "batch 32, signatures " + scheme + ")"]
    for model in args.models.split(","):
        res = whole_steps(n, model, args.steps, args.validators)
        d, per_phase = res["d"], res["per_phase"]
        total = sum(per_phase.values())
        lines.append(f"\nmodel {model} on {res['dataset']}, d = {d:,}: bytes sent per peer "
                     "per step (exact serialised sizes)")
        for k, v in sorted(per_phase.items(), key=lambda kv: -kv[1]):
            if v:
                lines.append(f"  {k:<14} {v:14,.0f}")
        lines.append(f"  {'BTARD total':<14} {total:14,.0f}")
        lines.append(f"  {'plain':<14} {res['plain_bytes']:14,.0f}   (2 (n-1)/n d float32)")
        lines.append(f"  overhead       {total / res['plain_bytes']:14.3f} x")
        lines.append(f"wall time per step, all {n} peers in one process: BTARD "
                     f"{1e3 * res['btard_time']:.1f} ms, n gradients + plain all-reduce "
                     f"{1e3 * res['plain_time']:.1f} ms "
                     f"({res['btard_time'] / res['plain_time']:.1f} x)")
    text = "\n".join(lines) + "\n"
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
