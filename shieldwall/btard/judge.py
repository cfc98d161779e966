r"""Deciding a step's accusations from common knowledge (BTARD Sec. 3, Accuse and Ban).

Every input is broadcast data (commitments, checksums, accusations with signed evidence), so
every honest peer reaches the same :class:`Verdict` and bans the same peers; in the simulator the
function runs once per process for all the peers it hosts, which changes nothing but the cost.

Rules:

* **Proven accusation** → the accused is banned; **unproven** → the accuser is banned (a false
  accusation is itself Byzantine behaviour) and its further accusations of the step are not
  examined, which bounds the work a flood of accusations can cause. Evidence is checked with the
  accused's signature, so nobody can be framed. ``bad_gradient`` is decided by recomputing the
  accused's gradient from the public seed and comparing within ``grad_rtol``.
* **CenteredClip check** for part :math:`j`: :math:`|\sum_{k \in I_j} s_k^j| \le \kappa
  \rho_j` (:func:`shieldwall.btard.clip.residual_tolerance`). When it fails, the sum is corrected
  with the true checksums of senders proven to have lied (``bad_checksum``, raised by the
  aggregator or by validators); if it still fails, the aggregator is banned.
* An aggregator must account for every present sender: included, accused of a bad part, or
  reported missing. A peer included by an aggregator that publishes no checksum for that part
  (while not disputing the aggregator's result) is banned.
* **Missing point-to-point messages** cannot be proven either way: the claimant and the peer it
  names are both removed ("eliminated"). At least one of the two is Byzantine, so with
  :math:`b < n/2` Byzantine peers the remaining ones still have :math:`b' < n'/2`. Pairs are
  disjoint: claims are taken in order and one naming a peer already out (banned this step, or
  in an earlier pair) is dropped, so a peer that withholds its messages from everybody takes
  one claimant with it, not all of them.
* An MPRNG reveal that does not match its commitment bans its sender.
* ``check_mode: simulated`` (the paper's experiments, Sec. 4): instead of validators, every
  attacking Byzantine peer is banned with probability ``check_proba`` per step, default
  :math:`1 - (1 - \frac{n-b}{n}\cdot\frac{1}{n-1})^m` for :math:`m` validators (the chance that
  an honest validator picks it), drawn from the step's shared seed.

A step with any accusation, ban, elimination or failed check is discarded (no optimizer step), at
every peer alike; each such step costs at least one Byzantine peer, so at most :math:`b`
steps are lost.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from shieldwall.btard.clip import (
    checksum,
    checksum_tolerance,
    norm_matches,
    residual_tolerance,
    split_parts,
    split_sizes,
)
from shieldwall.btard.common import GradientOracle, ProtocolConfig, RoundView
from shieldwall.btard.crypto import tensor_digest
from shieldwall.btard.messages import (
    Accusation,
    Opening,
    Part,
    Result,
    Signed,
    signed_ok,
    well_formed,
)

__all__ = ["Verdict", "judge", "check_probability"]


@dataclass
class Verdict:
    """The outcome of a step, the same at every honest peer.

    Attributes:
        step: the optimizer step is taken (nothing went wrong).
        banned: peer → reason, effective from the next step.
        eliminated: pairs removed over a missing message.
        accusations: one record per accusation (kind, accuser, accused, part, proven).
        failed_parts: parts whose CenteredClip check failed before corrections.
        silent: peers that sent nothing in a phase they had to take part in.
        aborted: the phase where the step stopped for silence, if it did.
    """

    round: int
    step: bool = False
    banned: dict[int, str] = field(default_factory=dict)
    eliminated: list[tuple[int, int]] = field(default_factory=list)
    accusations: list[dict[str, Any]] = field(default_factory=list)
    failed_parts: list[int] = field(default_factory=list)
    silent: list[int] = field(default_factory=list)
    aborted: str | None = None


def check_probability(n: int, b: int, validators: int) -> float:
    """:math:`1 - (1 - \\frac{n-b}{n}\\frac{1}{n-1})^m`: chance an honest validator picks a given
    peer (the paper's :math:`\\frac{n-b}{n}\\cdot\\frac{1}{n-1}` for :math:`m = 1`)."""
    if n < 2:
        return 0.0
    p = (n - b) / n / (n - 1)
    return 1.0 - (1.0 - p) ** max(validators, 1)


def _opened_parts(msg: Signed, view: RoundView, dim: int, dtype: Any) -> list[Tensor] | None:
    """The opening's parts, or ``None`` if it contradicts the sender's commitments."""
    g = msg.body.tensor
    if not well_formed(g, dim, dtype):
        return None
    parts = split_parts(g, len(view.present))
    hashes, norms = view.commits[msg.sender].part_hashes, view.commits[msg.sender].part_norms
    if any(tensor_digest(p) != h or not norm_matches(p, m)
           for p, h, m in zip(parts, hashes, norms)):
        return None
    return parts


def _prove(
    acc: Accusation, view: RoundView, cfg: ProtocolConfig, keyring: dict[int, bytes],
    oracle: GradientOracle, params: Tensor,
) -> tuple[bool, float | None]:
    """Whether ``acc`` is proven, and for ``bad_checksum`` the true checksum."""
    r, n, who, part = view.round, len(view.present), acc.accused, acc.part
    dtype = params.dtype

    def signed(msg: Any, sender: int, body_type: type, index: int | None = None) -> bool:
        return signed_ok(msg, sender, body_type, r, cfg.scheme, keyring, index)

    if who not in view.present or not isinstance(acc.evidence, tuple) or not acc.evidence:
        return False, None
    if part is not None and not (type(part) is int and 0 <= part < n):
        return False, None
    size = split_sizes(oracle.dim, n)[part] if part is not None else oracle.dim
    ev = acc.evidence[0]
    if acc.kind == "bad_part" and part is not None:
        if not signed(ev, who, Part, part):
            return False, None
        t = ev.body.tensor
        return (tensor_digest(t) != view.commits[who].part_hashes[part]
                or not well_formed(t, size, dtype)
                or not norm_matches(t, view.commits[who].part_norms[part])), None
    if acc.kind == "bad_result" and part is not None:
        if view.aggregator(part) != who or not signed(ev, who, Result, part):
            return False, None
        rc, t = view.result_commits[who], ev.body.tensor
        norm = float(torch.linalg.vector_norm(t.double()))
        wrong_norm = abs(norm - rc.result_norm) > 1e-6 * (1 + norm)
        bad = tensor_digest(t) != rc.result_hash or wrong_norm or not well_formed(t, size, dtype)
        return bad, None
    if acc.kind in ("bad_opening", "bad_gradient"):
        if not signed(ev, who, Opening):
            return False, None
        parts = _opened_parts(ev, view, oracle.dim, dtype)
        if parts is None:
            return True, None
        if acc.kind == "bad_opening":
            return False, None
        expected = oracle.compute(params, r, who).update.double()
        err = float(torch.linalg.vector_norm(ev.body.tensor.double() - expected))
        return err > cfg.grad_rtol * float(expected.norm()) + cfg.grad_atol, None
    if acc.kind == "bad_checksum" and part is not None and len(acc.evidence) == 2:
        res = acc.evidence[1]
        agg = view.aggregator(part)
        rc = view.result_commits[agg]
        if not signed(res, agg, Result, part) or not well_formed(res.body.tensor, size, dtype):
            return False, None
        if tensor_digest(res.body.tensor) != rc.result_hash:
            return False, None
        if signed(ev, who, Part, part):
            if tensor_digest(ev.body.tensor) != view.commits[who].part_hashes[part]:
                return True, None
            if not well_formed(ev.body.tensor, size, dtype) or not norm_matches(
                ev.body.tensor, view.commits[who].part_norms[part]
            ):
                return True, None
            x = ev.body.tensor
        elif signed(ev, who, Opening):
            parts = _opened_parts(ev, view, oracle.dim, dtype)
            if parts is None:
                return True, None
            x = parts[part]
        else:
            return False, None
        published = view.checks[who].checksums[part]
        if published is None or who not in rc.included:
            return False, None
        true = checksum(x, res.body.tensor, view.z_parts[part], cfg.tau)
        return abs(true - published) > checksum_tolerance(true, view.z_parts[part], cfg.tau), true
    return False, None


def _threshold(view: RoundView, part: int, cfg: ProtocolConfig, values: list[float]) -> float:
    rc = view.result_commits[view.aggregator(part)]
    # the rounding allowance is capped by the included rows' committed norms, never by the
    # norm the aggregator chose for its own result
    bound = max((view.commits[k].part_norms[part] for k in set(rc.included) if k in view.commits),
                default=0.0)
    rho = residual_tolerance(len(rc.included), cfg.tau, rc.result_norm, cfg.rel_tol, bound)
    return cfg.check_sigmas * rho + 1e-9 * sum(abs(v) for v in values)


def checksum_sums(view: RoundView, cfg: ProtocolConfig) -> tuple[dict[int, float], list[int]]:
    """:math:`S_j` for each checkable part and the parts whose check fails."""
    sums, failing = {}, []
    for j, agg in enumerate(view.present):
        rc = view.result_commits[agg]
        values = [view.checks[k].checksums[j] for k in rc.included if k in view.checks]
        if not values or any(v is None or not np.isfinite(v) for v in values):
            continue
        sums[j] = float(sum(values))
        if abs(sums[j]) > _threshold(view, j, cfg, values):
            failing.append(j)
    return sums, failing


def judge(
    view: RoundView, cfg: ProtocolConfig, keyring: dict[int, bytes], oracle: GradientOracle,
    params: Tensor,
) -> Verdict:
    """The step's :class:`Verdict` (see module docstring)."""
    v = Verdict(view.round)
    present = set(view.present)
    for peer in view.bad_reveals:
        _ban(v, peer, "bad_reveal", "mprng reveal does not match its commitment")
    corrections: dict[int, list[tuple[int, float]]] = {}
    bad_senders: dict[int, set[int]] = {}  # aggregator -> senders it proved sent a bad part
    disputed: set[int] = set()  # aggregators whose result someone did not get or disputes
    for sender, msg in sorted(view.accuses.items()):
        for acc in msg.accusations:
            if acc.accuser != sender or acc.accused == sender:
                continue
            if sender in v.banned and v.banned[sender].startswith("false accusation"):
                break  # one false accusation bans the sender: its others are not examined
            proven, true = _prove(acc, view, cfg, keyring, oracle, params)
            v.accusations.append({
                "round": view.round, "kind": acc.kind, "accuser": sender,
                "accused": acc.accused, "part": acc.part, "proven": proven,
            })
            if proven:
                v.banned.setdefault(acc.accused, acc.kind)
                if acc.kind == "bad_part":
                    bad_senders.setdefault(sender, set()).add(acc.accused)
                if acc.kind == "bad_checksum" and true is not None:
                    corrections.setdefault(acc.part, []).append((acc.accused, true))
            else:
                v.banned.setdefault(sender, f"false accusation ({acc.kind})")
            if acc.kind == "bad_result":
                disputed.add(acc.accused)
        for what, other in msg.missing:
            if other in present and (what != "opening" or (sender, other) in view.validation):
                v.eliminated.append((sender, other))
                if what == "result":
                    disputed.add(other)
    for agg in view.present:
        rc = view.result_commits[agg]
        # only accusations the judge examined and found proven excuse a sender: one that is not
        # examined (another accuser named, or after a false one) would let the aggregator drop
        # honest parts unpunished
        accused = bad_senders.get(agg, set())
        for missing_peer in rc.missing:
            if missing_peer in present:
                v.eliminated.append((agg, missing_peer))
        covered = set(rc.included) | set(rc.missing) | accused
        if covered != present or len(set(rc.included)) != len(rc.included):
            _ban(v, agg, "unaccounted_sender", "aggregator did not account for every sender")
    _, failing = checksum_sums(view, cfg)
    v.failed_parts = failing
    for j, agg in enumerate(view.present):
        if agg in disputed:
            continue
        rc = view.result_commits[agg]
        values = {k: view.checks[k].checksums[j] for k in rc.included if k in view.checks}
        silent = [k for k, s in values.items() if s is None or not np.isfinite(s)]
        for k in silent:
            _ban(v, k, "missing_checksum", "no checksum for an included part", j)
        if silent or j not in failing:
            continue
        for k, true in corrections.get(j, []):
            values[k] = true
        if abs(sum(values.values())) > _threshold(view, j, cfg, list(values.values())):
            _ban(v, agg, "clip_check", "CenteredClip check failed", j)
    if cfg.check_mode == "simulated" and view.shared_seed is not None:
        _simulated_checks(view, cfg, v)
    v.eliminated = _disjoint_pairs(v.eliminated, set(v.banned))
    for a, b in v.eliminated:
        for peer in (a, b):
            v.banned.setdefault(peer, "eliminated over a missing message")
    v.step = not (v.banned or v.eliminated or v.failed_parts or v.accusations)
    return v


def _disjoint_pairs(claims: list[tuple[int, int]], banned: set[int]) -> list[tuple[int, int]]:
    """The eliminations a step carries out: claims in their (common-knowledge) order, each
    skipped when either peer is already out — banned this step, or in an earlier pair. Every
    pair holds a Byzantine peer, so each costs the honest side at most one peer per Byzantine
    one; without this, one peer withholding its part from every aggregator would take all of
    them down with it."""
    gone, kept = set(banned), []
    for a, b in claims:
        if a not in gone and b not in gone:
            gone |= {a, b}
            kept.append((a, b))
    return kept


def _ban(v: Verdict, peer: int, kind: str, reason: str, part: int | None = None) -> None:
    """A ban decided from common knowledge alone (no accuser), recorded like an accusation."""
    v.banned.setdefault(peer, reason)
    v.accusations.append({
        "round": v.round, "kind": kind, "accuser": None, "accused": peer, "part": part,
        "proven": True,
    })


def _simulated_checks(view: RoundView, cfg: ProtocolConfig, v: Verdict) -> None:
    n = len(view.present)
    b = len(view.byzantine & set(view.present))
    p = cfg.check_proba if cfg.check_proba is not None else check_probability(n, b, cfg.validators)
    rng = np.random.default_rng([view.shared_seed, 7])
    for peer in view.present:
        hit = rng.random() < p
        if peer in view.attacking and hit:
            _ban(v, peer, "simulated_check", "caught by a validator (simulated)")
