r"""One BTARD-SGD peer: what it computes and sends in each phase of a step.

Phases (BTARD-SGD, Sec. 3 of the paper; the driver is :mod:`shieldwall.btard.protocol`):

1. :meth:`Peer.hello` — presence and the MPRNG commitment :math:`c_i = h(r_i)`.
2. :meth:`Peer.commit` — gradient :math:`g_i = \nabla f(x^t; \xi_i^t)` on the batch drawn from
   the public seed :math:`\xi_i^t` = ``(seed, "batch", t, i)``, split into one part per present
   peer; broadcast the parts' hashes.
3. :meth:`Peer.scatter` — part :math:`j` (signed) to aggregator :math:`j`.
4. :meth:`Peer.aggregate` — check each received part against its sender's commitment (a mismatch
   is an accusation with the signed part as evidence), CenteredClip the valid ones, commit to the
   result's hash.
5. :meth:`Peer.send_results` / :meth:`Peer.reveal` — the aggregated part to everyone; the MPRNG
   secret to everyone.
6. :meth:`Peer.check` — verify every received result against its commitment, assemble
   :math:`\hat g`, publish :math:`s_i^j = \langle z(j), \mathrm{clip}_\tau(g_i(j) - \hat
   g(j))\rangle` for the shared direction :math:`z`.
7. :meth:`Peer.openings` — a peer drawn as a validator's target sends it its whole gradient.
8. :meth:`Peer.accuse` — validators recompute their target's gradient and checksums; aggregators
   whose checksum sum failed recheck each sender's checksum; all accusations are broadcast.
9. :meth:`Peer.apply` — step :math:`x^{t+1} = \mathrm{opt}(x^t, \hat g)` if the step is clean.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from shieldwall.algorithms.ps_sgd import PSSGD
from shieldwall.btard.byzantine import Byzantine
from shieldwall.btard.clip import (
    assemble,
    centered_clip_fixed_point,
    checksum,
    checksum_tolerance,
    norm_matches,
    part_norm,
    split_parts,
    split_sizes,
)
from shieldwall.btard.common import GradientOracle, ProtocolConfig, RoundView
from shieldwall.btard.crypto import KeyPair, mprng_commitment, mprng_secret, tensor_digest
from shieldwall.btard.messages import (
    Accusation,
    Accuse,
    Check,
    Commit,
    Hello,
    Opening,
    Part,
    Result,
    ResultCommit,
    Reveal,
    Signed,
    sign,
    signed_ok,
    well_formed,
)

__all__ = ["Peer", "GradientOracle", "ProtocolConfig", "RoundView"]  # the last three re-exported


@dataclass
class _State:
    round: int
    secret: bytes = b""
    present: tuple[int, ...] = ()
    grad: Tensor | None = None
    parts: list[Tensor] = field(default_factory=list)
    loss: float = float("nan")
    received: dict[int, Signed] = field(default_factory=dict)
    result: Tensor | None = None
    index: int = -1
    results: dict[int, Signed] = field(default_factory=dict)
    ghat: Tensor | None = None
    accusations: list[Accusation] = field(default_factory=list)
    missing: list[tuple[str, int]] = field(default_factory=list)


class Peer:
    """One peer (honest unless ``byzantine`` is given).

    Args:
        pid: peer id.
        cfg: protocol numbers.
        oracle: gradient computation (shared by the peers of a process).
        key: this peer's signing key; ``keyring`` maps every peer to its public key.
        entropy: private bytes the MPRNG secrets are derived from.
        params: the initial flat parameters (copied).
        stepper: the optimizer step (a :class:`PSSGD` whose ``server_step`` this peer calls).
        byzantine: the peer's Byzantine behaviour, if any.
    """

    def __init__(
        self,
        pid: int,
        cfg: ProtocolConfig,
        oracle: GradientOracle,
        key: KeyPair,
        keyring: dict[int, bytes],
        entropy: bytes,
        params: Tensor,
        stepper: PSSGD,
        byzantine: Byzantine | None = None,
    ) -> None:
        self.pid, self.cfg, self.oracle, self.key, self.keyring = pid, cfg, oracle, key, keyring
        self.entropy = entropy
        self.params = params.detach().clone()
        self.stepper = stepper
        self.byzantine = byzantine
        self.st = _State(-1)

    def _valid(
        self, msg: Any, sender: int, body_type: type, r: int, index: int | None = None
    ) -> bool:
        return signed_ok(msg, sender, body_type, r, self.cfg.scheme, self.keyring, index)

    def _size(self, j: int) -> int:
        return split_sizes(self.oracle.dim, len(self.st.present))[j]

    def _byz(self, behaviour: str, r: int) -> bool:
        return self.byzantine is not None and self.byzantine.has(behaviour, r)

    def hello(self, r: int) -> Hello | None:
        self.st = _State(r)
        if self.byzantine is not None and self.byzantine.silent(r):
            return None
        self.st.secret = mprng_secret(self.entropy, r, self.pid)
        return Hello(r, mprng_commitment(self.st.secret))

    def commit(self, present: tuple[int, ...], byzantine_present: list[int]) -> Commit | None:
        st, byz = self.st, self.byzantine
        poisoned = byz is not None and byz.poisoned(st.round)
        honest = self.oracle.compute(self.params, st.round, self.pid, poisoned)
        grad = honest.update
        if byz is not None and byz.forges(st.round):

            def gradients(ids: list[int]) -> Tensor:
                rows = [self.oracle.compute(self.params, st.round, p).update for p in ids]
                return torch.stack(rows)

            grad = byz.forge(
                st.round, grad, present=present, byzantine_present=byzantine_present,
                gradients=gradients,
            )
        st.present, st.grad, st.loss = present, grad, honest.loss
        st.parts = split_parts(grad, len(present))
        st.index = present.index(self.pid)
        return Commit(st.round, tuple(tensor_digest(p) for p in st.parts), float(honest.loss),
                      tuple(part_norm(p) for p in st.parts))

    def scatter(self) -> dict[int, Signed]:
        st, out = self.st, {}
        for j, dst in enumerate(st.present):
            part = st.parts[j]
            if self.byzantine is not None:
                part = self.byzantine.tamper_part(st.round, j, part)
            out[dst] = sign(self.key, self.pid, Part(st.round, j, part))
        return out

    def aggregate(self, received: dict[int, Any], commits: dict[int, Commit]) -> ResultCommit:
        st, j = self.st, self.st.index
        rows, included, missing = [], [], []
        for i in st.present:
            msg = received.get(i)
            if not self._valid(msg, i, Part, st.round, j):
                missing.append(i)
                continue
            t = msg.body.tensor
            if (
                tensor_digest(t) != commits[i].part_hashes[j]
                or not well_formed(t, self._size(j), self.params.dtype)
                or not norm_matches(t, commits[i].part_norms[j])
            ):
                st.accusations.append(Accusation("bad_part", self.pid, i, j, (msg,)))
                continue
            rows.append(msg.body.tensor)
            included.append(i)
            st.received[i] = msg
        solved = centered_clip_fixed_point(
            torch.stack(rows), self.cfg.tau, iterations=self.cfg.cc_iterations,
            rel_tol=self.cfg.rel_tol,
        )
        v = solved.vector
        if self.byzantine is not None:
            v = self.byzantine.tamper_aggregate(st.round, v, self.cfg.tau)
        st.result = v
        norm = float(torch.linalg.vector_norm(v.double()))
        return ResultCommit(
            st.round, tensor_digest(v), norm, tuple(included), tuple(missing), solved.iterations,
            solved.num_clipped,
        )

    def send_results(self) -> dict[int, Signed]:
        st, out = self.st, {}
        for dst in st.present:
            v = st.result
            if self.byzantine is not None:
                v = self.byzantine.tamper_result(st.round, dst, v, self.cfg.tau)
            out[dst] = sign(self.key, self.pid, Result(st.round, st.index, v))
        return out

    def reveal(self) -> Reveal:
        return Reveal(self.st.round, self.st.secret)

    def check(
        self, received: dict[int, Any], commits: dict[int, ResultCommit], z_parts: list[Tensor]
    ) -> Check:
        st = self.st
        for j, agg in enumerate(st.present):
            msg = received.get(agg)
            if not self._valid(msg, agg, Result, st.round, j):
                st.missing.append(("result", agg))
                continue
            rc, t = commits[agg], msg.body.tensor
            norm = float(torch.linalg.vector_norm(t.double()))
            if (
                tensor_digest(t) != rc.result_hash
                or abs(norm - rc.result_norm) > 1e-6 * (1 + norm)
                or not well_formed(t, self._size(j), self.params.dtype)
            ):
                st.accusations.append(Accusation("bad_result", self.pid, agg, j, (msg,)))
                continue
            st.results[j] = msg
        if len(st.results) == len(st.present):
            st.ghat = assemble([st.results[j].body.tensor for j in range(len(st.present))])
        values = tuple(
            checksum(st.parts[j], st.results[j].body.tensor, z_parts[j], self.cfg.tau)
            if j in st.results and self.pid in commits[agg].included
            else None
            for j, agg in enumerate(st.present)
        )
        if self.byzantine is not None:
            values = self.byzantine.tamper_checksums(st.round, values)
        return Check(st.round, values)

    def openings(self, validators: list[int]) -> dict[int, Signed]:
        if not validators:
            return {}
        msg = sign(self.key, self.pid, Opening(self.st.round, self.st.grad))
        return {v: msg for v in validators}

    def _check_checksum(
        self, accused: int, j: int, x: Tensor, evidence: Signed, view: RoundView
    ) -> Accusation | None:
        if j not in self.st.results:
            return None
        published = view.checks[accused].checksums[j]
        if published is None:
            return None
        result = self.st.results[j]
        true = checksum(x, result.body.tensor, view.z_parts[j], self.cfg.tau)
        if abs(true - published) > checksum_tolerance(true, view.z_parts[j], self.cfg.tau):
            return Accusation("bad_checksum", self.pid, accused, j, (evidence, result))
        return None

    def _validate(self, target: int, msg: Any, view: RoundView) -> list[Accusation]:
        st, n = self.st, len(view.present)
        if not self._valid(msg, target, Opening, st.round):
            st.missing.append(("opening", target))
            return []
        g = msg.body.tensor
        if not well_formed(g, self.oracle.dim, self.params.dtype):
            return [Accusation("bad_opening", self.pid, target, None, (msg,))]
        parts = split_parts(g, n)
        hashes, norms = view.commits[target].part_hashes, view.commits[target].part_norms
        if any(tensor_digest(p) != h or not norm_matches(p, m)
               for p, h, m in zip(parts, hashes, norms)):
            return [Accusation("bad_opening", self.pid, target, None, (msg,))]
        expected = self.oracle.compute(self.params, st.round, target).update
        err = float(torch.linalg.vector_norm(g.double() - expected.double()))
        if err > self.cfg.grad_rtol * float(expected.double().norm()) + self.cfg.grad_atol:
            return [Accusation("bad_gradient", self.pid, target, None, (msg,))]
        out = []
        for j in range(n):
            if target in view.result_commits[view.present[j]].included:
                acc = self._check_checksum(target, j, parts[j], msg, view)
                if acc is not None:
                    out.append(acc)
        return out

    def accuse(self, openings: dict[int, Any], view: RoundView) -> Accuse:
        st = self.st
        colluders = view.byzantine if self.byzantine is not None else frozenset()
        for validator, target in view.validation:
            if validator == self.pid and target not in colluders and self.byzantine is None:
                st.accusations.extend(self._validate(target, openings.get(target), view))
        if st.index in view.failing_parts and self.byzantine is None:
            for sender, msg in st.received.items():
                acc = self._check_checksum(sender, st.index, msg.body.tensor, msg, view)
                if acc is not None:
                    st.accusations.append(acc)
        if self.byzantine is not None:
            st.accusations.extend(
                self.byzantine.false_accusations(st.round, st.received, view.byzantine)
            )
        return Accuse(st.round, tuple(st.accusations), tuple(st.missing))

    def apply(self, step: bool) -> None:
        """Take the optimizer step with the assembled aggregate if the step was clean."""
        if step and self.st.ghat is not None:
            self.params = self.stepper.server_step(self.params, self.st.ghat, self.st.round)
