"""One BTARD peer of an open swarm: membership per step, joining mid-run, metrics.

Step ``t`` at a peer (every honest peer runs the same sequence):

1. *Membership.* It stores a record under the DHT key ``<prefix>.step.<t+1>`` (registering
   for the next step), signed with its libp2p identity key (:mod:`.identity`: nobody else can
   register it), and reads ``<prefix>.step.<t>``: the group of step ``t`` is every identity
   with a validly signed registration (integer id :func:`~.transport.pid_of` of its libp2p
   peer id) that is not banned in the ledger. The same identity key signs the protocol's
   messages, and each member's public key is the one its registration names: it hashes to its
   peer id, so nobody can show different keys to different peers.
2. *Publish.* It serves the state it starts the step from — parameters, optimizer state, step,
   ledger (bans, silences), the group — and its hash :func:`state_hash`.
3. *Protocol.* :func:`~shieldwall.btard.protocol.run_step` over
   :class:`~.transport.HivemindTransport`; the verdict goes into the ledger.

*Joining.* A new peer registers for a step ahead, asks every live peer (DHT key
``<prefix>.live``) at once for ``(step, hash, group, banned)`` of the state it serves, takes the
answer a strict majority of the answering identities gave (not counting those the answer itself
lists as banned), downloads the state from one of them and checks it against that answer (a
peer serving a different state is skipped and logged; :mod:`.agreement`), and joins at that
step. Limits: the majority is over answering identities (a Sybil flood of
Byzantine identities can outvote the honest ones, as in any permissionless majority scheme);
the group is read from the DHT by every peer near the same moment, so a registration landing
exactly then can be seen by some peers and not others.
"""

from __future__ import annotations

import dataclasses
import io
import json
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from shieldwall.algorithms.base import ClientData, evaluate
from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.atomic import save_atomic, write_text_atomic
from shieldwall.btard.byzantine import Byzantine
from shieldwall.btard.common import GradientOracle
from shieldwall.btard.crypto import rsa_keypair, tensor_digest
from shieldwall.btard.peer import Peer
from shieldwall.btard.protocol import Ledger, run_step
from shieldwall.btard.state import load_into, state_file, write_state
from shieldwall.btard.swarm.agreement import Answer, majority_answer, matching_state, state_hash
from shieldwall.btard.swarm.identity import (
    IdentityError,
    load_identity,
    owner_public,
    peer_id_of,
    signed_validator,
)
from shieldwall.btard.swarm.transport import HivemindTransport, pid_of
from shieldwall.btard.wire import to_bytes
from shieldwall.config import ExperimentConfig
from shieldwall.metrics import MetricsLogger
from shieldwall.metrics.text import perplexities

__all__ = ["SwarmError", "SwarmOptions", "SwarmNode", "state_hash"]

log = logging.getLogger(__name__)


class SwarmError(RuntimeError):
    """This peer cannot take part: its identity is banned, or no agreed state could be had."""


@dataclass
class SwarmOptions:
    """How a peer joins the swarm.

    Attributes:
        listen: multiaddrs to listen on (``/ip4/0.0.0.0/tcp/31337``; port 0: any free one).
        initial_peers: multiaddrs of peers already in the swarm (empty: this is the first).
        prefix: the run's name in the DHT (peers of one run share it).
        byzantine: run this peer with ``attack_args``'s behaviour.
        phase_timeout: seconds a protocol phase waits for silent members.
        run_dir: where this peer writes metrics.jsonl, TensorBoard and summary.json.
        join_timeout: seconds a new peer tries to download an agreed state.
        start_peers: a swarm's first step waits until this many peers registered for it.
        step_interval: the least wall time of a step in seconds (paces a swarm whose steps are
            much faster than peers can join; 0: as fast as the protocol goes).
        identity: a file holding this peer's libp2p private key (created if absent), so that it
            keeps its peer id across restarts (and its bans: a banned identity stays banned).
        announce: multiaddrs others should dial instead of the listening ones (a public
            address, a port forwarded through NAT).
        use_relay: use libp2p circuit relays (hivemind's default).
        use_auto_relay: find relays among the peers and advertise itself through them (a peer
            behind NAT that cannot forward a port).
        use_ipfs: also bootstrap through the public IPFS DHT.
    """

    listen: list[str] = field(default_factory=lambda: ["/ip4/127.0.0.1/tcp/0"])
    initial_peers: list[str] = field(default_factory=list)
    prefix: str = "btard"
    byzantine: bool = False
    phase_timeout: float = 30.0
    run_dir: Path = Path("runs/swarm")
    join_timeout: float = 300.0
    start_peers: int = 2
    step_interval: float = 0.0
    identity: str | None = None
    announce: list[str] = field(default_factory=list)
    use_relay: bool = True
    use_auto_relay: bool = False
    use_ipfs: bool = False


UNREACHABLE_SKIP = 30.0
"""Seconds a joining peer does not ask again a live peer that failed to answer."""


class _Shards(dict):
    """A peer's data shard: identity ``pid`` trains on shard ``pid % n`` (public data)."""

    def __init__(self, shards: list[ClientData]) -> None:
        super().__init__()
        self.list = shards

    def __getitem__(self, pid: int) -> ClientData:
        return self.list[pid % len(self.list)]


class SwarmNode:
    """One swarm peer (see the module docstring)."""

    def __init__(self, cfg: ExperimentConfig, opts: SwarmOptions) -> None:
        import hivemind
        from hivemind.p2p import P2P

        from shieldwall.btard.run import build_workload, data_attack, protocol_config

        self.cfg, self.opts = cfg, opts
        t, seed = cfg.train_args, cfg.common_args.random_seed
        torch.set_num_threads(cfg.device_args.num_threads or 1)
        # messages are signed with the libp2p identity key, whatever btard_args.signature says
        self.proto = dataclasses.replace(protocol_config(cfg), scheme="rsa")
        self.dataset, parts, model = build_workload(cfg, torch.device("cpu"))
        ds = self.dataset
        with tempfile.TemporaryDirectory() as tmp:
            path = opts.identity or os.path.join(tmp, "identity.key")
            fresh = not os.path.isfile(path)
            if fresh:  # made here, so that this process knows the key that signs its records
                try:
                    P2P.generate_identity(path)
                except OSError as e:
                    raise SwarmError(f"cannot create identity file {path}: {e}") from None
            try:
                private = load_identity(path)
            except IdentityError as e:
                raise SwarmError(str(e)) from None
            self.validator = signed_validator(private)
            self.key = rsa_keypair(private)  # signs DHT records and protocol messages alike
            self._public: dict[int, bytes] = {}  # pid -> identity key, from its registration
            self.dht = hivemind.DHT(
                start=True, host_maddrs=opts.listen, initial_peers=opts.initial_peers,
                identity_path=path, check_if_identity_free=not fresh,
                record_validators=[self.validator], announce_maddrs=opts.announce or None,
                use_relay=opts.use_relay, use_auto_relay=opts.use_auto_relay,
                use_ipfs=opts.use_ipfs)
        self.maddrs = [str(m) for m in self.dht.get_visible_maddrs()]
        # a message carries at most one (part of a) model-sized tensor: 4x that, plus slack
        vector_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        self.transport = tr = HivemindTransport(
            self.dht, opts.prefix, phase_timeout=opts.phase_timeout,
            max_bytes=min(64 << 20, 4 * vector_bytes + (1 << 20)))
        self.pid = tr.pid
        if peer_id_of(self.key.public) != tr.peer_id:  # the key that signs is the libp2p key
            self.close()
            raise SwarmError(f"the DHT signing key does not match peer id {tr.peer_id}")
        a = cfg.attack_args
        byz = None
        if opts.byzantine:
            name = a.attack_mode if str(a.attack_type).lower() == "byzantine" else a.attack_type
            byz = Byzantine(self.pid, str(name), dict(a.params), start=a.attack_start,
                            end=a.attack_end, seed=seed, num_classes=ds.num_classes)
        poison = data_attack({self.pid: byz} if byz is not None else {}, ds.num_classes)
        self.oracle = GradientOracle(PSSGD(t, model, torch.device("cpu")),
                                     _Shards(list(parts.values())), seed, poison)
        self.peer = Peer(self.pid, self.proto, self.oracle, self.key, {self.pid: self.key.public},
                         os.urandom(32), self.oracle.algorithm.flat.vector(),
                         PSSGD(t, model, torch.device("cpu")), byz)
        self.ledger = Ledger((self.pid,), self.proto.silence_limit)
        self.step = 0
        self._first_step = 0  # the swarm's first step (initial_state may move it)
        self._served: tuple[bytes, bytes] = (b"", b"")  # (hash reply, state bytes)
        self._unsigned: set[tuple[str, str]] = set()  # unsigned DHT records seen (counted)
        self.bad_servers: list[int] = []  # peers that served a state not matching the majority
        tr.handlers.update({"hash": lambda: self._served[0],
                            "state": lambda: self._served[1]})

    # ---- DHT membership -------------------------------------------------------------------
    @property
    def _owner(self) -> bytes:
        """This peer's subkey in membership records (signed: see :mod:`.identity`)."""
        return self.validator.local_public_key

    def _store(self, key: str, value: Any, ttl: float = 600.0) -> None:
        from hivemind.utils import get_dht_time

        self.dht.store(f"{self.opts.prefix}.{key}", value, get_dht_time() + ttl,
                       subkey=self._owner)

    def _read(self, key: str) -> dict[str, Any]:
        """``{peer id: value}`` of the signed records under ``key`` (other subkeys ignored);
        each signer's public key goes to the protocol's key ring source ``_public``."""
        got = self.dht.get(f"{self.opts.prefix}.{key}", latest=True)
        if got is None or not isinstance(got.value, dict):
            return {}
        out, keys = {}, {}
        for subkey, item in got.value.items():
            public = owner_public(subkey)
            if public is None:  # counted once with the dropped messages, never logged
                seen = (key, repr(subkey)[:256])
                if seen not in self._unsigned and len(self._unsigned) < 4096:
                    self._unsigned.add(seen)
                    self.transport.rejected["unsigned record"] += 1
                continue
            peer_id = peer_id_of(public)
            keys[pid_of(peer_id)] = public  # its protocol key: bound to it by the hash
            out[peer_id] = item.value
        if len(self._public) + len(keys) > 65536:  # a flood of identities: keep this read's
            self._public = {}
        self._public.update(keys)
        return out

    def _group(self, step: int) -> dict[int, Any]:
        from hivemind.p2p import PeerID

        out = {pid_of(peer_id): PeerID.from_base58(peer_id)
               for peer_id in self._read(f"step.{step}")}
        return {p: i for p, i in out.items() if p not in self.ledger.banned}

    def _keys(self, group: dict[int, Any]) -> None:
        """Members' protocol keys: the identity keys their registrations were signed with."""
        ring = self.peer.keyring
        self.transport.ids.update(group)
        for pid in group:
            if pid not in ring and pid in self._public:
                ring[pid] = self._public[pid]

    # ---- state ----------------------------------------------------------------------------
    def _state(self, group: tuple[int, ...]) -> dict[str, Any]:
        return {"step": self.step, "params": self.peer.params,
                "optimizer": self.peer.stepper.state_dict(), "ledger": self.ledger.state_dict(),
                "group": list(group)}

    def _publish(self, group: tuple[int, ...]) -> None:
        state = self._state(group)
        buf = io.BytesIO()
        torch.save(state, buf)
        banned = tuple(sorted(self.ledger.banned))
        self._served = (to_bytes((self.step, state_hash(state), tuple(group), banned)),
                        buf.getvalue())

    def _agreed(self) -> tuple[Answer, list[int]] | None:
        """The state answer of a strict majority of the answering live peers
        (:func:`~.agreement.majority_answer`)."""
        from hivemind.p2p import PeerID

        live = {pid_of(k): k for k in self._read("live") if k != self.transport.peer_id}
        for pid, peer_id in live.items():
            self.transport.ids.setdefault(pid, PeerID.from_base58(peer_id))
        # all at once, and a peer that just failed (killed, its live record not expired yet)
        # not again for a while: a joiner's polls stay faster than the swarm's steps
        return majority_answer(self.transport.ask_many(
            list(live), "hash", timeout=10, skip_unreachable=UNREACHABLE_SKIP))

    def has_swarm(self) -> bool:
        """Whether live peers are already training (then this peer joins rather than starts)."""
        return any(k != self.transport.peer_id for k in self._read("live"))

    def join(self) -> tuple[int, ...]:
        """Register for a step ahead and download the agreed state it starts from; returns
        that step's group (this peer in it)."""
        deadline = time.monotonic() + self.opts.join_timeout
        target = None
        while time.monotonic() < deadline:
            found = self._agreed()
            if found is None:
                time.sleep(0.5)
                continue
            (step, digest, group, banned), voters = found
            if self.pid in banned:  # bans stick: the swarm's agreed ledger names this identity
                raise SwarmError(f"identity {self.transport.peer_id} (pid {self.pid}) is banned "
                                 f"in this swarm (agreed state of step {step}); start a peer "
                                 f"with another --identity")
            if target is None or (step >= target and self.pid not in group):
                target = step + 1
                with self.transport._cond:
                    self.transport.step = target
                self._store(f"step.{target}", time.time())
                log.info("registered for step %d", target)
                continue
            if step < target:
                time.sleep(0.3)
                continue
            if self._download(step, digest, voters, group, banned):
                return group
        raise SwarmError(f"could not download an agreed state from the swarm within "
                         f"{self.opts.join_timeout:.0f} s")

    def _download(self, step: int, digest: bytes, voters: list[int],
                  group: tuple[int, ...] = (), banned: tuple[int, ...] = ()) -> bool:
        for pid in voters:
            raw = self.transport.ask(pid, "state", timeout=60)
            state = matching_state(raw, (step, digest, group, banned), self.peer.params.shape)
            if state is not None:
                try:
                    self.step = load_into(state, [self.peer], self.ledger)
                    return True
                except Exception:  # noqa: BLE001 - a state that does not load is wrong too
                    pass
            log.warning("peer %s served a state that does not match the agreed hash", pid)
            self.bad_servers.append(pid)
        return False

    def _start_from_file(self) -> None:
        """A starting peer loads ``btard_args.initial_state`` (every peer that starts the swarm
        reads the same file, so their states agree)."""
        from shieldwall.btard.run import initial_state

        state = initial_state(self.cfg, self.peer.params, self.oracle.algorithm.model)
        if state is None:
            return
        self.step = load_into(state, [self.peer], self.ledger)
        log.info("started from %s at step %d", self.cfg.btard_args.initial_state, self.step)

    # ---- the loop -------------------------------------------------------------------------
    def run(self, steps: int | None = None, joining: bool = False) -> dict[str, Any]:
        cfg, opts = self.cfg, self.opts
        last = steps if steps is not None else cfg.train_args.comm_round
        opts.run_dir.mkdir(parents=True, exist_ok=False)
        (opts.run_dir / "identity.json").write_text(json.dumps(
            {"peer_id": self.transport.peer_id, "pid": self.pid, "maddrs": self.maddrs,
             "byzantine": opts.byzantine}))
        group: tuple[int, ...] | None = None
        if joining:
            group = self.join()
        else:
            self._start_from_file()
            self._first_step = self.step
            self._store(f"step.{self.step}", time.time())
        metrics = MetricsLogger(opts.run_dir, total_rounds=last, start_round=self.step,
                                tensorboard=cfg.tracking_args.enable_tensorboard, progress=False)
        every = cfg.validation_args.frequency_of_the_test
        try:
            while self.step < last:
                tic = time.monotonic()
                metrics.log_round(self._one_step(every, last, group))
                group = None
                time.sleep(max(0.0, opts.step_interval - (time.monotonic() - tic)))
        finally:
            metrics.close()
        summary = {"pid": self.pid, "peer_id": self.transport.peer_id, "steps": last,
                   "byzantine": self.opts.byzantine,
                   "banned": {str(p): b.round for p, b in self.ledger.banned.items()},
                   "params_hash": tensor_digest(self.peer.params).hex(),
                   "rejected": dict(self.transport.rejected), "bad_servers": self.bad_servers}
        save_atomic(self.peer.params, opts.run_dir / "final_params.pt")
        # Last: a summary means the run is complete.
        write_text_atomic(opts.run_dir / "summary.json", json.dumps(summary, indent=1))
        return summary

    def _one_step(self, every: int, last: int, agreed: tuple[int, ...] | None) -> dict[str, Any]:
        r, tr = self.step, self.transport
        tic = time.perf_counter()
        if r + 1 < last:
            self._store(f"step.{r + 1}", time.time())
        group = self._group(r)
        # the swarm's first step waits for its first peers; any step waits for a second peer
        need = self.opts.start_peers if r == self._first_step and agreed is None else 2
        deadline = time.monotonic() + self.opts.join_timeout
        if len(group | {self.pid: None}) < need:
            log.info("step %d: waiting for %d peers to register", r, need)
            while len(group | {self.pid: None}) < need and time.monotonic() < deadline:
                time.sleep(0.5)
                group = self._group(r)
        if agreed is not None:  # a newcomer: the group the state it downloaded names
            group = {p: i for p, i in group.items() if p in agreed}
        group.setdefault(self.pid, tr.p2p.peer_id)
        self._keys(group)
        pids = tuple(sorted(group))
        self.ledger.peers = pids
        self._publish(pids)
        if r in self.cfg.btard_args.save_steps:
            write_state(state_file(self.opts.run_dir, r), step=r, params=self.peer.params,
                        optimizer=self.peer.stepper.state_dict(), ledger=self.ledger.state_dict())
        self._store("live", r, ttl=3 * self.opts.phase_timeout + 60)
        tr.begin_step(r, pids, group)
        known = set(self.ledger.banned)
        me = frozenset({self.pid}) if self.peer.byzantine is not None else frozenset()
        attacking = me if self.peer.byzantine is not None and self.peer.byzantine.active(r) else (
            frozenset())
        verdict, view, losses = run_step(r, tr, {self.pid: self.peer}, self.ledger, self.proto,
                                         self.oracle, byzantine=me, attacking=attacking)
        self.ledger.record(verdict)
        self.step = r + 1
        honest = [v for v in losses.values()]
        entry: dict[str, Any] = {
            "round": r, "train_loss": sum(honest) / len(honest) if honest else None,
            "step_taken": verdict.step, "group": len(pids), "present": len(view.present),
            "aborted": verdict.aborted, "silent": list(verdict.silent),
            "banned": [{"peer": p, "round": self.ledger.banned[p].round,
                        "reason": self.ledger.banned[p].reason}
                       for p in sorted(set(self.ledger.banned) - known)],
            "banned_total": len(self.ledger.banned),
            "dropped_messages": sum(tr.rejected.values()),
            "round_time": time.perf_counter() - tic,
        }
        if (r + 1) % every == 0 or r + 1 == last:
            self.oracle.algorithm.flat.load(self.peer.params)
            loss, acc = evaluate(self.oracle.algorithm.model, self.dataset.test_x,
                                 self.dataset.test_y)
            entry.update(test_loss=loss, test_accuracy=acc)
            entry.update(perplexities(self.dataset, entry))
        return entry

    def close(self) -> None:
        self.transport.close()
        self.dht.shutdown()
