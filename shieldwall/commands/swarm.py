"""``shieldwall swarm CONFIG --peers N [--byzantine K] [--preempt-every S]``: a local swarm.

Starts N ``shieldwall peer`` processes on 127.0.0.1 (K of them ``--byzantine``), each in
``OUT/peer-<k>``, and keeps N alive as the BTARD seed's ``run_workers`` loop keeps its spot
instances: a peer that dies before the run's end is replaced by a new one (same role, a new
identity) that joins through a live peer's address. ``--preempt-every S`` kills a random peer
with SIGKILL about every S seconds (exponential gaps, seeded) to simulate preemption. Ends when
the peers finish; merge their logs with ``shieldwall swarm-plot OUT``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

__all__ = ["register", "swarm_command"]


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("swarm", help="run and keep alive N BTARD swarm peers on this machine")
    p.add_argument("config", help="BTARD YAML config")
    p.add_argument("--peers", type=int, required=True, help="peers to keep alive")
    p.add_argument("--byzantine", type=int, default=0, help="of which Byzantine (default 0)")
    p.add_argument("--preempt-every", type=float, default=0.0,
                   help="mean seconds between random SIGKILLs (default 0: none)")
    p.add_argument("--out", required=True, help="directory for the peers' run directories")
    p.add_argument("--phase-timeout", type=float, default=10.0)
    p.add_argument("--step-interval", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0, help="seed of the preemption schedule")
    p.set_defaults(func=swarm_command)


def _identity(d: Path) -> dict | None:
    try:
        return json.loads((d / "identity.json").read_text())
    except (OSError, ValueError):
        return None


def _killpg(p: subprocess.Popen) -> None:
    """SIGKILL a peer's process group (its hivemind DHT process and libp2p daemon too)."""
    try:
        os.killpg(p.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _last_error(log: Path) -> str:
    """The last ``shieldwall: …`` line (else the last line) a peer wrote to its log."""
    try:
        lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return "no log"
    said = [ln for ln in lines if ln.startswith("shieldwall: ")]
    return (said or lines or ["an empty log"])[-1][:500]


def _check_args(args: argparse.Namespace) -> None:
    """Flags and config, before anything is started or written."""
    from shieldwall.config import load_config
    from shieldwall.config.ranges import positive

    if args.peers < 2 or not 0 <= args.byzantine < args.peers / 2:
        raise ValueError(f"--peers must be >= 2 and --byzantine < peers/2, got {args.peers}, "
                         f"{args.byzantine}")
    positive("--phase-timeout", args.phase_timeout)
    positive("--step-interval", args.step_interval, allow_zero=True)
    positive("--preempt-every", args.preempt_every, allow_zero=True)
    cfg = load_config(args.config)
    if str(cfg.train_args.federated_optimizer).upper() != "BTARD":
        raise ValueError("train_args.federated_optimizer must be BTARD for shieldwall swarm, "
                         f"got {cfg.train_args.federated_optimizer!r}")


def swarm_command(args: argparse.Namespace) -> int:
    _check_args(args)
    out = Path(args.out)
    if out.exists():
        raise ValueError(f"--out {out} exists: never overwriting a run")
    out.mkdir(parents=True)
    rng = random.Random(args.seed)
    started = 0
    procs: dict[int, tuple[subprocess.Popen, Path, bool]] = {}

    def start(byzantine: bool, initial: str | None) -> None:
        nonlocal started
        d = out / f"peer-{started}"
        cmd = [sys.executable, "-m", "shieldwall.cli", "peer", args.config, "--listen",
               "/ip4/127.0.0.1/tcp/0", "--start-peers", str(args.peers), "--phase-timeout",
               str(args.phase_timeout), "--step-interval", str(args.step_interval),
               "--run-dir", str(d), *(["--initial-peers", initial] if initial else []),
               *(["--byzantine"] if byzantine else [])]
        log = open(out / f"peer-{started}.log", "w")  # noqa: SIM115 - lives with the process
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)  # its own group: killed as a machine
        procs[started] = (proc, d, byzantine)
        started += 1

    def live_addr() -> str | None:
        for p, d, byz in procs.values():
            ident = _identity(d)
            if p.poll() is None and not byz and ident:
                return ident["maddrs"][0]
        return None

    start(False, None)
    while _identity(procs[0][1]) is None:
        if procs[0][0].poll() is not None:
            log = out / "peer-0.log"
            raise ValueError(f"the first peer exited ({procs[0][0].returncode}): "
                             f"{_last_error(log)} (see {log})")
        time.sleep(0.5)
    for k in range(1, args.peers):
        start(k > args.peers - 1 - args.byzantine, live_addr())
    next_kill = time.monotonic() + rng.expovariate(1 / args.preempt_every) if (
        args.preempt_every > 0) else float("inf")
    finished = 0
    try:
        while True:
            running = {k: v for k, v in procs.items() if v[0].poll() is None}
            finished = sum(1 for p, _, _ in procs.values() if p.returncode == 0)
            if finished and not any(not v[2] for v in running.values()):
                break  # the honest peers are done (Byzantine ones may wait for company forever)
            for k, (p, _, byz) in list(procs.items()):
                if p.returncode not in (None, 0) and not finished:
                    del procs[k]
                    print(f"peer-{k} died ({p.returncode}); starting a replacement", flush=True)
                    start(byz, live_addr())
            if time.monotonic() >= next_kill and not finished and len(running) > 1:
                k = rng.choice(sorted(running))
                print(f"preempting peer-{k}", flush=True)
                _killpg(running[k][0])
                next_kill = time.monotonic() + rng.expovariate(1 / args.preempt_every)
            time.sleep(0.5)
    finally:  # leftovers: Byzantine peers waiting for company, DHT processes
        for p, _, _ in procs.values():
            _killpg(p)
    print(f"swarm done: {finished} peers finished; peers started: {started}; logs in {out}")
    return 0
