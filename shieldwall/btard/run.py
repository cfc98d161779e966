"""``run_btard(cfg)``: a BTARD-SGD run from a config, in the simulator or as real processes.

``shieldwall run CONFIG`` with ``train_args.federated_optimizer: BTARD`` comes here. The
transport is chosen like the other runtimes: ``comm_args.runtime: simulator`` (all peers in this
process), ``torch_distributed`` (one peer per process, gloo; ``RANK``/``WORLD_SIZE``/
``MASTER_ADDR``/``MASTER_PORT`` from torchrun or :func:`shieldwall.btard.launch.spawn_peers`),
or ``auto`` (torch.distributed when launched with those variables). ``WORLD_SIZE`` must equal
``train_args.client_num_in_total``: every client is a peer.

Data is public (every peer can rebuild every shard from the seed, which validators need); batch
seeds are ``(seed, "batch", step, peer)``; the model is initialised from ``(seed, "init")`` at
every peer. Each step's record in ``metrics.jsonl`` holds the honest peers' mean training loss,
who took part, every accusation (kind, accuser, accused, proven) and every ban with its step and
reason, whether the optimizer step was taken, the CenteredClip statistics and the bytes sent per
phase; test loss/accuracy every ``validation_args.frequency_of_the_test`` steps. In a
multi-process run the lowest-ranked honest peer writes the run directory.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from shieldwall.algorithms.base import ClientData, evaluate
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.atomic import save_atomic
from shieldwall.attacks import AttackContext
from shieldwall.attacks.schedule import byzantine_ids
from shieldwall.btard.byzantine import Byzantine
from shieldwall.btard.common import GradientOracle, ProtocolConfig, RoundView
from shieldwall.btard.crypto import make_keypair, public_key_ok, resolve_scheme
from shieldwall.btard.judge import Verdict
from shieldwall.btard.peer import Peer
from shieldwall.btard.protocol import BanRecord, Ledger, run_step
from shieldwall.btard.state import load_into, read_state, state_file, write_state
from shieldwall.btard.transport import InMemoryTransport, TorchDistTransport, Transport
from shieldwall.checkpoint import error_line, load_tensors
from shieldwall.config import ConfigError, ExperimentConfig
from shieldwall.data import load_dataset
from shieldwall.data.split import split_clients
from shieldwall.devices import select_device
from shieldwall.metrics import MetricsLogger
from shieldwall.metrics.text import perplexities
from shieldwall.models import build_model
from shieldwall.registry import Entry
from shieldwall.rundir import (
    finished_summary,
    open_run_dir,
    release_run_dir,
    write_text_atomic,
)
from shieldwall.runtime.agreement import check_data_agreement
from shieldwall.seeding import derive_seed
from shieldwall.threads import configure_threads

__all__ = ["run_btard", "build", "build_workload", "data_attack", "BTARDRun", "protocol_config",
           "byzantine_peers", "uses_processes"]

log = logging.getLogger(__name__)


def protocol_config(cfg: ExperimentConfig) -> ProtocolConfig:
    """:class:`ProtocolConfig` from ``cfg.btard_args``."""
    b = cfg.btard_args
    if b.tau <= 0:
        raise ConfigError(f"btard_args.tau must be > 0, got {b.tau}")
    if b.silence_limit < 1:
        raise ConfigError(f"btard_args.silence_limit must be >= 1, got {b.silence_limit}")
    steps = b.save_steps if isinstance(b.save_steps, (list, tuple)) else [b.save_steps]
    if any(type(s) is not int or s < 0 for s in steps):
        raise ConfigError(f"btard_args.save_steps must be a list of step numbers >= 0, got "
                          f"{b.save_steps!r}")
    return ProtocolConfig(
        tau=b.tau, cc_iterations=b.cc_iterations, rel_tol=b.cc_rel_tol,
        check_sigmas=b.check_sigmas, validators=b.validators, check_mode=b.check_mode.lower(),
        check_proba=b.check_proba, silence_limit=b.silence_limit, grad_rtol=b.grad_rtol,
        scheme=resolve_scheme(b.signature),
    )


def initial_state(cfg: ExperimentConfig, params: torch.Tensor,
                  model: torch.nn.Module) -> dict[str, Any] | None:
    """The state ``btard_args.initial_state`` names (see :mod:`shieldwall.btard.state`), or
    ``None``; a bad file is one :class:`ConfigError` line."""
    path = cfg.btard_args.initial_state
    if not path:
        return None
    try:
        state = read_state(path, dim=params.numel(), model=model)
    except ValueError as exc:
        raise ConfigError(f"btard_args.initial_state: {exc}") from None
    state["params"] = state["params"].to(params)
    return state


def byzantine_peers(cfg: ExperimentConfig, num_classes: int) -> dict[int, Byzantine]:
    """The Byzantine peers and their behaviour, from ``attack_args`` (one seeded draw)."""
    a, n = cfg.attack_args, cfg.train_args.client_num_in_total
    name = a.attack_mode if str(a.attack_type).lower() == "byzantine" else a.attack_type
    if not a.enable_attack or not name or str(name).lower() == "none" or not a.byzantine_client_num:
        return {}
    if a.byzantine_redraw:
        raise ConfigError("attack_args.byzantine_redraw is not supported by BTARD (bans are "
                          "per peer: the Byzantine set must be fixed)")
    if 2 * a.byzantine_client_num >= n:
        raise ConfigError(f"BTARD needs fewer than half of the peers Byzantine, got "
                          f"{a.byzantine_client_num} of {n}")
    seed = cfg.common_args.random_seed
    ids = byzantine_ids(n, a.byzantine_client_num, 0, seed=seed, redraw=False)
    try:
        return {
            i: Byzantine(i, str(name), dict(a.params), start=a.attack_start, end=a.attack_end,
                         seed=seed, num_classes=num_classes)
            for i in ids
        }
    except ValueError as exc:
        raise ConfigError(f"attack_args: {exc}") from None


def data_attack(byz: dict[int, Byzantine], num_classes: int):
    """The data poisoning of the Byzantine peers' attack (label flipping…), or ``None``."""
    entry = next((b.gradient_attack for b in byz.values() if b.is_data_attack), None)
    if not isinstance(entry, Entry):
        return None
    params = next(iter(byz.values())).attack_params

    def corrupt(x: torch.Tensor, y: torch.Tensor, gen: torch.Generator):
        ctx = AttackContext(n=1, f=1, generator=gen, num_classes=num_classes)
        return entry.obj(x, y, ctx, **params)

    return corrupt


#: why peers in separate processes refuse HMAC: its "public" key is the signing secret
HMAC_ACROSS_PROCESSES = (
    "btard_args.signature: hmac hands every peer the others' signing secrets (any of them could "
    "sign as another), so it is for the in-process simulator only; peers in separate processes "
    "need ed25519 (or auto with the cryptography package installed)")


def uses_processes(cfg: ExperimentConfig) -> bool:
    """Whether this process is one peer of a torch.distributed run."""
    choice = cfg.comm_args.runtime.lower()
    if choice == "torch_distributed":
        return True
    return choice == "auto" and "RANK" in os.environ and "WORLD_SIZE" in os.environ


def _build_transport(cfg: ExperimentConfig, n: int, vector_bytes: int = 0) -> Transport:
    if not uses_processes(cfg):
        return InMemoryTransport(range(n), measure=cfg.btard_args.measure_bytes)
    if resolve_scheme(cfg.btard_args.signature) != "ed25519":
        raise ConfigError(HMAC_ACROSS_PROCESSES)
    world = int(os.environ.get("WORLD_SIZE", n))
    if world != n:
        raise ConfigError(f"BTARD runs one peer per process: WORLD_SIZE={world} but "
                          f"train_args.client_num_in_total={n}")
    # every message carries at most one (part of a) model-sized tensor: 4x that, plus slack
    return TorchDistTransport(timeout=cfg.comm_args.round_timeout,
                              max_bytes=max(64 << 20, 4 * vector_bytes + (16 << 20)))


def _make_peers(
    cfg: ExperimentConfig, transport: Transport, proto: ProtocolConfig, oracle: GradientOracle,
    model: torch.nn.Module, params: torch.Tensor, byz: dict[int, Byzantine], device: torch.device,
) -> dict[int, Peer]:
    seed, real = cfg.common_args.random_seed, isinstance(transport, TorchDistTransport)

    def secret(kind: str, pid: int) -> bytes:
        if real:
            return os.urandom(32)
        return hashlib.sha256(f"{kind}:{derive_seed(seed, kind, pid)}".encode()).digest()

    keys = {pid: make_keypair(proto.scheme, secret("key", pid)) for pid in transport.local}
    announced = transport.broadcast("keys", {pid: k.public for pid, k in keys.items()})
    keyring = {pid: pub for pid, pub in announced.items() if public_key_ok(proto.scheme, pub)}
    if missing := sorted(set(transport.peers) - set(keyring)):
        # a peer without a usable key cannot sign: build() bans it before the first step
        log.warning("peers %s announced no valid %s key", missing, proto.scheme)
    return {
        pid: Peer(pid, proto, oracle, keys[pid], keyring, secret("entropy", pid), params,
                  PSSGD(cfg.train_args, model, device), byz.get(pid))
        for pid in transport.local
    }


@dataclass
class BTARDRun:
    """Everything a run is made of (what :func:`build` returns; tests drive it step by step
    with :func:`shieldwall.btard.protocol.run_step`)."""

    cfg: ExperimentConfig
    proto: ProtocolConfig
    transport: Transport
    peers: dict[int, Peer]
    ledger: Ledger
    oracle: GradientOracle
    byzantine: dict[int, Byzantine]
    dataset: Any

    def step(self, r: int) -> tuple[Verdict, RoundView, dict[int, float]]:
        """Run step ``r`` and record its verdict in the ledger."""
        attacking = frozenset(i for i, b in self.byzantine.items() if b.attacking(r))
        out = run_step(r, self.transport, self.peers, self.ledger, self.proto, self.oracle,
                       byzantine=frozenset(self.byzantine), attacking=attacking)
        self.ledger.record(out[0])
        self.transport.set_members(self.ledger.active)
        return out


def build_workload(cfg: ExperimentConfig, device: torch.device
                   ) -> tuple[Any, dict[int, ClientData], torch.nn.Module]:
    """The data set, every peer's shard (public: anyone can recompute anyone's gradient) and
    the seeded initial model, for images or text (shared by the closed run and the swarm)."""
    seed = cfg.common_args.random_seed
    dataset = load_dataset(cfg.data_args.dataset, cfg.data_args.data_cache_dir, cfg.text_args)
    parts = split_clients(cfg, dataset.partition_labels)
    shards = {c: ClientData(c, dataset.train_x[i].to(device), dataset.train_y[i].to(device))
              for c, i in enumerate(parts)}
    torch.manual_seed(derive_seed(seed, "init"))
    model = build_model(cfg.model_args.model, dataset.input_shape, dataset.num_classes,
                        cfg.text_args, text=dataset.train_y.dim() > 1)
    return dataset, shards, model


def build(cfg: ExperimentConfig, transport: Transport | None = None) -> BTARDRun:
    """Data, model, peers, transport and ledger for ``cfg`` (the transport from the config
    unless given)."""
    t, seed = cfg.train_args, cfg.common_args.random_seed
    configure_threads(cfg.device_args.num_threads)  # or from the launch (shared cores)
    device = select_device(cfg.device_args.device or "cpu", "device_args.device")
    n = t.client_num_in_total
    proto = protocol_config(cfg)
    dataset, shards, model = build_workload(cfg, device)
    byz = byzantine_peers(cfg, dataset.num_classes)
    oracle = GradientOracle(PSSGD(t, model, device), shards, seed,
                            data_attack(byz, dataset.num_classes))
    params = oracle.algorithm.flat.vector()
    transport = transport if transport is not None else _build_transport(
        cfg, n, params.numel() * params.element_size())
    try:
        check_data_agreement(dataset)  # one vocabulary on every peer process
        peers = _make_peers(cfg, transport, proto, oracle, model, params, byz, device)
    except BaseException:
        transport.close()
        raise
    ledger = Ledger(tuple(range(n)), proto.silence_limit)
    ring = next(iter(peers.values())).keyring if peers else {}
    for pid in sorted(set(ledger.peers) - set(ring)):  # the keys were broadcast: all agree
        ledger.banned[pid] = BanRecord(pid, 0, "announced no valid signing key")
    return BTARDRun(cfg, proto, transport, peers, ledger, oracle, byz, dataset)


def run_btard(cfg: ExperimentConfig, resume: str | Path | None = None) -> dict[str, Any]:
    """Run BTARD-SGD for ``train_args.comm_round`` steps; returns the summary (``{}`` on
    processes that do not write the run directory)."""
    run, run_dir = build(cfg), None
    try:
        honest = [p for p in range(cfg.train_args.client_num_in_total) if p not in run.byzantine]
        writer = honest[0] in run.transport.local
        start = 0
        if resume is not None:
            start = _resume(Path(resume), run.peers, run.ledger, run.transport)
        else:
            start = _start_from(run)
        run_dir = open_run_dir(cfg, resume, start) if writer else None
        if run_dir is not None and start >= cfg.train_args.comm_round:
            return finished_summary(run_dir, cfg, start)
        return _loop(run, run_dir, start)
    finally:
        run.transport.close()
        if run_dir is not None:
            release_run_dir(run_dir)


def _resume(run_dir: Path, peers: dict[int, Peer], ledger: Ledger, transport: Transport) -> int:
    path = run_dir / "btard_checkpoint.pt"
    if not path.is_file():
        raise FileNotFoundError(f"no checkpoint to resume from: {str(path)!r} does not exist")
    try:
        state = load_tensors(path, map_location=None)
        for p in peers.values():
            if state["params"].numel() != p.params.numel():
                raise ConfigError(
                    f"the checkpoint of {str(run_dir)!r} holds {state['params'].numel()} "
                    f"parameters but the model of this config has {p.params.numel()}: the "
                    "model cannot change on --resume, even with --force"
                )
            p.params = state["params"].clone()
            p.stepper.load_state_dict(state["optimizer"])
        ledger.load_state_dict(state["ledger"])
        int(state["round"])
    except ConfigError:
        raise
    except Exception as exc:  # truncated, corrupt or foreign file: one line naming it
        raise ValueError(f"checkpoint {str(path)!r} cannot be read ({type(exc).__name__}: "
                         f"{error_line(exc)}); the run cannot be resumed from it") from None
    transport.set_members(ledger.active)
    return int(state["round"]) + 1


def _start_from(run: BTARDRun) -> int:
    """Load ``btard_args.initial_state`` into every local peer; the step to run first."""
    model = run.oracle.algorithm.model
    state = initial_state(run.cfg, next(iter(run.peers.values())).params, model)
    if state is None:
        return 0
    step = load_into(state, run.peers.values())  # a closed run keeps its own ledger (ids 0..n-1)
    log.info("started from %s at step %d", run.cfg.btard_args.initial_state, step)
    return step


def _loop(run: BTARDRun, run_dir: Path | None, start: int) -> dict[str, Any]:
    cfg, transport, peers, ledger = run.cfg, run.transport, run.peers, run.ledger
    t, dataset, oracle = cfg.train_args, run.dataset, run.oracle
    byzantine = frozenset(run.byzantine)
    honest_local = [p for p in peers.values() if p.byzantine is None]
    me = honest_local[0] if honest_local else next(iter(peers.values()))
    every = cfg.validation_args.frequency_of_the_test
    metrics = None
    if run_dir is not None:
        metrics = MetricsLogger(run_dir, total_rounds=t.comm_round, start_round=start,
                                tensorboard=cfg.tracking_args.enable_tensorboard,
                                progress=cfg.tracking_args.progress_bar)
    last: dict[str, Any] = {}
    started = time.perf_counter()
    try:
        for r in range(start, t.comm_round):
            if transport.departed:
                break
            if run_dir is not None and r in cfg.btard_args.save_steps:
                write_state(state_file(run_dir, r), step=r, params=me.params,
                            optimizer=me.stepper.state_dict(), ledger=ledger.state_dict())
            before = transport.traffic.snapshot()
            tic = time.perf_counter()
            known = set(ledger.banned)
            verdict, view, losses = run.step(r)
            bans = [ledger.banned[p] for p in sorted(set(ledger.banned) - known)]
            if metrics is None:
                continue
            honest_losses = [v for i, v in losses.items() if i not in byzantine]
            rcs = list(view.result_commits.values())
            entry: dict[str, Any] = {
                "round": r,
                "train_loss": sum(honest_losses) / len(honest_losses) if honest_losses else None,
                "step_taken": verdict.step,
                "present": len(view.present),
                "active": len(ledger.active),
                "byzantine_active": sorted(byzantine & set(ledger.active)),
                "banned": [{"peer": b.peer, "round": b.round, "reason": b.reason,
                            "byzantine": b.peer in byzantine} for b in bans],
                "accusations": verdict.accusations,
                "eliminated": [list(p) for p in verdict.eliminated],
                "failed_parts": verdict.failed_parts,
                "silent": verdict.silent,
                "aborted": verdict.aborted,
                "cc_iterations": max((rc.iterations for rc in rcs), default=0),
                "cc_clipped": sum(rc.num_clipped for rc in rcs),
                "bytes": {k: v - before.get(k, 0) for k, v in transport.traffic.snapshot().items()
                          if v != before.get(k, 0)},
                "round_time": time.perf_counter() - tic,
            }
            if (r + 1) % every == 0 or r == t.comm_round - 1:
                oracle.algorithm.flat.load(me.params)
                loss, acc = evaluate(oracle.algorithm.model, dataset.test_x, dataset.test_y)
                entry.update(test_loss=loss, test_accuracy=acc)
                entry.update(perplexities(dataset, entry))
            entry["wall_time"] = time.perf_counter() - started
            metrics.log_round(entry)
            last = entry
            if t.checkpoint_frequency and (r + 1) % t.checkpoint_frequency == 0:
                _checkpoint(run_dir, r, me, ledger)
    finally:
        if metrics is not None:
            metrics.close()
    if run_dir is None:  # a peer process that does not write the run directory
        for p in peers:
            if p in ledger.banned:
                log.info("peer %d banned at step %d: %s", p, ledger.banned[p].round,
                         ledger.banned[p].reason)
        return {}
    _checkpoint(run_dir, last.get("round", start - 1), me, ledger)
    summary = {
        "run_dir": str(run_dir),
        "rounds": t.comm_round,
        "final_test_accuracy": last.get("test_accuracy"),
        "final_test_loss": last.get("test_loss"),
        "banned": {int(p): int(b.round) for p, b in sorted(ledger.banned.items())},
        "byzantine": sorted(byzantine),
        "honest_banned": sorted(p for p in ledger.banned if p not in byzantine),
        "wall_time": time.perf_counter() - started,
    }
    save_atomic(me.params.cpu(), run_dir / "final_params.pt")
    write_text_atomic(run_dir / "summary.json",  # last: a summary means the run is complete
                      json.dumps(summary, indent=2, default=str) + "\n")
    return summary


def _checkpoint(run_dir: Path, r: int, me: Peer, ledger: Ledger) -> None:
    state = {"round": r, "params": me.params.cpu(), "optimizer": me.stepper.state_dict(),
             "ledger": ledger.state_dict()}
    save_atomic(state, run_dir / "btard_checkpoint.pt")
