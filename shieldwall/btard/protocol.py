r"""One BTARD-SGD step over a :class:`~shieldwall.btard.transport.Transport`.

The step is a fixed sequence of phases (BTARD-SGD, Sec. 3); which phase comes next depends only
on broadcast data, so every process — one hosting all peers (simulator) or one per peer
(``torch.distributed``) — runs the same collectives in the same order:

====  ===============  =========  =====================================================
 #    phase            kind       content
====  ===============  =========  =====================================================
 0    hello            broadcast  presence, MPRNG commitment :math:`h(r_i)`
 1    commit           broadcast  hashes of the gradient's :math:`n` parts
 2    scatter          p2p        part :math:`j` → aggregator :math:`j` (signed)
 3    result_commit    broadcast  hash/norm of :math:`\hat g(j)`, included senders
 4    results          p2p        :math:`\hat g(j)` → every peer (signed)
 5    reveal           broadcast  MPRNG secrets :math:`r_i` → shared seed, :math:`z`, validators
 6    check            broadcast  checksums :math:`s_i^j`
 7    opening          p2p        validated peer → its validator: its gradient (real checks)
 8    accuse           broadcast  accusations with evidence, missing-message claims
====  ===============  =========  =====================================================

A peer silent in *hello* sits the step out (a silence is counted); a present peer that is
silent or sends a malformed message in a later broadcast phase aborts the step (no optimizer
step, a silence counted). ``silence_limit`` silences ban a peer. The :class:`Ledger` holds who is
banned, from which step and why — the same at every honest peer.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from shieldwall.btard.clip import split_parts
from shieldwall.btard.common import GradientOracle, ProtocolConfig, RoundView
from shieldwall.btard.crypto import mprng_commitment, mprng_seed
from shieldwall.btard.judge import Verdict, checksum_sums, judge
from shieldwall.btard.messages import (
    Accusation,
    Accuse,
    Check,
    Commit,
    Hello,
    ResultCommit,
    Reveal,
    Signed,
)
from shieldwall.btard.peer import Peer
from shieldwall.btard.transport import Transport

__all__ = ["Ledger", "BanRecord", "run_step", "shared_directions", "draw_validators"]


@dataclass
class BanRecord:
    peer: int
    round: int
    reason: str


@dataclass
class Ledger:
    """Who takes part: the active peers, bans and silence counts (common knowledge)."""

    peers: tuple[int, ...]
    silence_limit: int = 3
    banned: dict[int, BanRecord] = field(default_factory=dict)
    silences: Counter = field(default_factory=Counter)

    @property
    def active(self) -> tuple[int, ...]:
        return tuple(p for p in self.peers if p not in self.banned)

    def record(self, verdict: Verdict) -> list[BanRecord]:
        """Apply a verdict; returns the new bans."""
        new = []
        for peer in verdict.silent:
            self.silences[peer] += 1
            if self.silences[peer] >= self.silence_limit and peer not in verdict.banned:
                verdict.banned[peer] = f"silent in {self.silences[peer]} steps"
        for peer, reason in sorted(verdict.banned.items()):
            if peer not in self.banned:
                self.banned[peer] = BanRecord(peer, verdict.round, reason)
                new.append(self.banned[peer])
        return new

    def state_dict(self) -> dict[str, Any]:
        return {
            "banned": {p: (b.round, b.reason) for p, b in self.banned.items()},
            "silences": dict(self.silences),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.banned = {int(p): BanRecord(int(p), r, why) for p, (r, why) in state["banned"].items()}
        self.silences = Counter({int(k): v for k, v in state["silences"].items()})


_Z_CACHE: dict[tuple[int, int], torch.Tensor] = {}


def shared_directions(seed: int, dim: int) -> torch.Tensor:
    """The check direction :math:`z \\sim \\mathcal N(0, I_d)` (float64) of a shared seed."""
    key = (seed, dim)
    if key not in _Z_CACHE:
        _Z_CACHE.clear()
        gen = torch.Generator().manual_seed(seed)
        _Z_CACHE[key] = torch.randn(dim, generator=gen, dtype=torch.float64)
    return _Z_CACHE[key]


def draw_validators(seed: int, present: tuple[int, ...], m: int) -> tuple[tuple[int, int], ...]:
    """``m`` distinct validators and one target each (≠ itself), from the shared seed."""
    if m <= 0 or len(present) < 2:
        return ()
    rng = np.random.default_rng([seed, 1])
    validators = rng.permutation(np.array(present))[: min(m, len(present))]
    pairs = []
    for v in validators.tolist():
        others = [p for p in present if p != v]
        pairs.append((int(v), int(others[int(rng.integers(len(others)))])))
    return tuple(pairs)


def _ok(msg: Any, cls: type, r: int) -> bool:
    return isinstance(msg, cls) and type(msg.round) is int and msg.round == r


#: Peer ids, part indices and counters are below 2**63: Python ints are unbounded and one of
#: 5,000 digits (a few kB on the wire) is well typed but makes ``json.dumps`` of the step's
#: record raise, which would crash the honest peer that writes the metrics.
_INT_LIMIT = 1 << 63


def _small(value: Any) -> bool:
    return type(value) is int and 0 <= value < _INT_LIMIT


def _ints(values: Any) -> bool:
    return isinstance(values, tuple) and all(_small(i) for i in values)


def _valid_commit(msg: Any, r: int, n: int) -> bool:
    return (
        _ok(msg, Commit, r)
        and isinstance(msg.part_hashes, tuple)
        and len(msg.part_hashes) == n
        and all(isinstance(h, bytes) for h in msg.part_hashes)
        and isinstance(msg.loss, float)
        and isinstance(msg.part_norms, tuple)
        and len(msg.part_norms) == n
        and all(isinstance(x, float) and np.isfinite(x) and x >= 0 for x in msg.part_norms)
    )


def _valid_rc(msg: Any, r: int) -> bool:
    return (
        _ok(msg, ResultCommit, r)
        and isinstance(msg.result_hash, bytes)
        and isinstance(msg.result_norm, float)
        and bool(np.isfinite(msg.result_norm))
        and _ints(msg.included)
        and _ints(msg.missing)
        and _small(msg.iterations)
        and _small(msg.num_clipped)
    )


def _valid_check(msg: Any, r: int, n: int) -> bool:
    return (
        _ok(msg, Check, r)
        and isinstance(msg.checksums, tuple)
        and len(msg.checksums) == n
        and all(s is None or isinstance(s, float) for s in msg.checksums)
    )


def _valid_accusation(a: Any) -> bool:
    return (
        isinstance(a, Accusation)
        and isinstance(a.kind, str)
        and _small(a.accuser)
        and _small(a.accused)
        and (a.part is None or _small(a.part))
        and isinstance(a.evidence, tuple)
        and 1 <= len(a.evidence) <= 2
        and all(isinstance(e, Signed) for e in a.evidence)
    )


def _valid_accuse(msg: Any, r: int, n: int) -> bool:
    return (
        _ok(msg, Accuse, r)
        and isinstance(msg.accusations, tuple)
        and len(msg.accusations) <= 4 * n
        and all(_valid_accusation(a) for a in msg.accusations)
        and isinstance(msg.missing, tuple)
        and len(msg.missing) <= 4 * n
        and all(isinstance(m, tuple) and len(m) == 2 and isinstance(m[0], str)
                and _small(m[1]) for m in msg.missing)
    )


def _silent(view: RoundView, received: dict[int, Any], ok: Any) -> list[int]:
    """Present peers whose message is missing or malformed (either is silence)."""
    out = []
    for p in view.present:
        try:
            good = ok(received.get(p))
        except Exception:  # noqa: BLE001 - a message crafted to raise is malformed
            good = False
        if not good:
            out.append(p)
    return out


def run_step(
    r: int,
    transport: Transport,
    peers: dict[int, Peer],
    ledger: Ledger,
    cfg: ProtocolConfig,
    oracle: GradientOracle,
    *,
    byzantine: frozenset[int] = frozenset(),
    attacking: frozenset[int] = frozenset(),
) -> tuple[Verdict, RoundView, dict[int, float]]:
    """Run step ``r`` for the local ``peers``; returns the verdict, the common view and the
    losses every present peer reported.

    ``byzantine``/``attacking`` are the ground truth, known to colluding Byzantine peers and used
    by ``check_mode: simulated``; honest peers' decisions never read them.
    """
    members = ledger.active
    local = {i: p for i, p in peers.items() if i in members}
    view = RoundView(r, byzantine=byzantine, attacking=attacking)
    hellos = transport.broadcast("hello", {i: p.hello(r) for i, p in local.items()})
    view.present = tuple(
        i for i in members
        if _ok(hellos.get(i), Hello, r) and isinstance(hellos[i].mprng_commitment, bytes)
    )
    verdict = Verdict(r, silent=[i for i in members if i not in view.present])

    def abort(phase: str, silent: list[int]) -> tuple[Verdict, RoundView, dict[int, float]]:
        verdict.silent.extend(silent)
        verdict.aborted = phase
        return verdict, view, {}

    if len(view.present) < 2:
        return abort("hello", [])
    n = len(view.present)
    byz_present = [p for p in view.present if p in byzantine]
    here = {i: p for i, p in local.items() if i in view.present}
    commits = transport.broadcast(
        "commit", {i: p.commit(view.present, byz_present) for i, p in here.items()}
    )
    if silent := _silent(view, commits, lambda m: _valid_commit(m, r, n)):
        return abort("commit", silent)
    view.commits = {i: commits[i] for i in view.present}
    parts = transport.exchange("scatter", {i: p.scatter() for i, p in here.items()})
    rcs = transport.broadcast(
        "result_commit",
        {j: p.aggregate(parts.get(j, {}), view.commits) for j, p in here.items()},
    )
    if silent := _silent(view, rcs, lambda m: _valid_rc(m, r)):
        return abort("result_commit", silent)
    view.result_commits = {j: rcs[j] for j in view.present}
    results = transport.exchange("results", {j: p.send_results() for j, p in here.items()})
    reveals = transport.broadcast("reveal", {i: p.reveal() for i, p in here.items()})
    if silent := _silent(view, reveals, lambda m: _ok(m, Reveal, r)):
        return abort("reveal", silent)
    good = {
        i: reveals[i].secret
        for i in view.present
        if isinstance(reveals[i].secret, bytes)
        and mprng_commitment(reveals[i].secret) == hellos[i].mprng_commitment
    }
    view.bad_reveals = tuple(i for i in view.present if i not in good)
    view.shared_seed = mprng_seed(r, good)
    view.z_parts = split_parts(shared_directions(view.shared_seed, oracle.dim), n)
    if cfg.check_mode == "real":
        view.validation = draw_validators(view.shared_seed, view.present, cfg.validators)
    checks = transport.broadcast(
        "check",
        {k: p.check(results.get(k, {}), view.result_commits, view.z_parts)
         for k, p in here.items()},
    )
    if silent := _silent(view, checks, lambda m: _valid_check(m, r, n)):
        return abort("check", silent)
    view.checks = {k: checks[k] for k in view.present}
    view.failing_parts = tuple(checksum_sums(view, cfg)[1])
    openings: dict[int, dict[int, Any]] = {}
    if cfg.check_mode == "real":
        targets: dict[int, list[int]] = {}
        for v, t in view.validation:
            targets.setdefault(t, []).append(v)
        openings = transport.exchange(
            "opening", {t: p.openings(targets.get(t, [])) for t, p in here.items()}
        )
    accuses = transport.broadcast(
        "accuse", {k: p.accuse(openings.get(k, {}), view) for k, p in here.items()}
    )
    if silent := _silent(view, accuses, lambda m: _valid_accuse(m, r, n)):
        return abort("accuse", silent)
    view.accuses = {k: accuses[k] for k in view.present}
    # the parameters x_t the verdict recomputes gradients at: an honest local peer's if any
    # (every peer holds the same x_t unless it skipped steps by misbehaving)
    hosts = sorted(here.values(), key=lambda p: (p.byzantine is not None, p.pid)) or list(
        peers.values()
    )
    judge_params = hosts[0].params
    decided = judge(view, cfg, transport_keyring(peers), oracle, judge_params)
    decided.silent = verdict.silent
    for p in here.values():
        p.apply(decided.step)
    return decided, view, {i: view.commits[i].loss for i in view.present}


def transport_keyring(peers: dict[int, Peer]) -> dict[int, bytes]:
    """The public keys every local peer knows (the same key ring at every peer)."""
    return next(iter(peers.values())).keyring
