r"""Byzantine peers: what they send instead of what the protocol says.

``attack_args.attack_type`` names one behaviour or several joined by ``+`` (e.g.
``sign_flip+false_accuser``); ``attack_args.params`` holds their parameters. Byzantine peers
collude: as validators they never accuse each other. Outside ``[attack_start, attack_end]`` they
follow the protocol.

Gradient attacks (the peer commits to the forged gradient and sends it consistently, so only
validators can catch it — BTARD Sec. 3; the experiments of Sec. 4 use the first four):

* any *update* attack of :data:`shieldwall.attacks.ATTACKS` (``sign_flip`` with ``scale``,
  ``gaussian``, ``constant``, ``alie``, ``ipm``, …). Omniscient ones see the honest gradients of
  the step, which the colluders can compute themselves: data and batch seeds are public;
* any *data* attack (``label_flip``): the peer's batch is corrupted before the gradient;
* ``random_direction``: a fresh random direction each step, :math:`g' = s\|g\| u_t/\|u_t\|`;
* ``constant_direction``: one random direction for the whole run (shared by all attackers),
  scaled the same way. ``scale`` (default 1000) is the authors' choice for both, as for their
  sign flipping (``sign_flip`` with ``scale: 1000``).

Protocol attacks (caught by the commitments and checks, whatever the gradient):

* ``wrong_aggregation``: as an aggregator, returns :math:`\hat g(j) + \mathrm{shift}\cdot\tau u`
  to everyone (and commits to it) — caught by the CenteredClip check;
* ``inconsistent_parts``: commits to its gradient's parts but sends aggregators with odd index a
  different part — caught by the aggregator's hash check;
* ``inconsistent_results``: commits to its aggregated part but sends a modified one to peers with
  odd id — caught by the receivers' hash check;
* ``wrong_checksum``: publishes CenteredClip checksums off by ``shift`` — caught by validators, or
  by its aggregators when the sum fails;
* ``false_accuser``: accuses an honest peer every step, showing that peer's genuine signed part as
  "evidence" — the accusation fails and the accuser is banned;
* ``silent``: sends nothing — excluded from each step, banned after ``silence_limit`` steps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from shieldwall.algorithms.params import convert_params
from shieldwall.attacks import ATTACKS, AttackContext
from shieldwall.attacks.schedule import attack_active
from shieldwall.btard.messages import Accusation, Signed
from shieldwall.registry import Entry, closest
from shieldwall.seeding import torch_generator

__all__ = ["Byzantine", "parse_behaviours", "PROTOCOL_BEHAVIOURS", "DIRECTION_ATTACKS"]

PROTOCOL_BEHAVIOURS = frozenset(
    {
        "wrong_aggregation",
        "inconsistent_parts",
        "inconsistent_results",
        "wrong_checksum",
        "false_accuser",
        "silent",
    }
)
DIRECTION_ATTACKS = frozenset({"random_direction", "constant_direction"})
_OWN_PARAMS = {"scale": 1000.0, "shift": 10.0}


def parse_behaviours(
    text: str, params: dict[str, Any]
) -> tuple[str | Entry | None, frozenset[str], dict[str, Any], dict[str, Any]]:
    """Split ``a+b+…`` into (gradient attack, protocol behaviours, attack params, own params).

    Raises ``ValueError`` naming the closest known name for an unknown one, or a parameter that
    nothing takes.
    """
    gradient: str | Entry | None = None
    protocol: set[str] = set()
    for raw in str(text).split("+"):
        name = raw.strip().lower().replace("-", "_")
        if name in PROTOCOL_BEHAVIOURS:
            protocol.add(name)
            continue
        if gradient is not None:
            raise ValueError(f"attack_type {text!r} names two gradient attacks")
        if name in DIRECTION_ATTACKS:
            gradient = name
        elif name in ATTACKS:
            gradient = ATTACKS.entry(name)
        else:
            known = [*PROTOCOL_BEHAVIOURS, *DIRECTION_ATTACKS, *ATTACKS.names()]
            hint = closest(name, known)
            raise ValueError(
                f"unknown BTARD behaviour {raw!r}" + (f" (did you mean {hint!r}?)" if hint else "")
                + f"; known: {', '.join(sorted(known))}"
            )
    accepted = gradient.param_names() if isinstance(gradient, Entry) else []
    attack_params = {k: v for k, v in params.items() if k in accepted}
    if isinstance(gradient, Entry):  # typed like every attack's parameters (one line if not)
        attack_params = convert_params(gradient, attack_params, "attack_args")
    own = dict(_OWN_PARAMS)
    for key, value in params.items():
        if key in _OWN_PARAMS:
            own[key] = float(value)
        elif key not in accepted:
            raise ValueError(
                f"attack_args.{key} is not a parameter of {text!r} "
                f"(takes: {', '.join([*accepted, *_OWN_PARAMS])})"
            )
    return gradient, frozenset(protocol), attack_params, own


class Byzantine:
    """One Byzantine peer's behaviour (see module docstring).

    Args:
        peer: its id.
        text: ``attack_args.attack_type``.
        params: ``attack_args.params``.
        start, end: the attack window (inclusive).
        seed: the run's seed (attack randomness is drawn from ``(seed, "btard_attack", …)``).
        num_classes: classes of the task (label flipping).
    """

    def __init__(
        self,
        peer: int,
        text: str,
        params: dict[str, Any],
        *,
        start: int = 0,
        end: int | None = None,
        seed: int = 0,
        num_classes: int = 10,
    ) -> None:
        self.peer = peer
        self.name = text
        self.gradient_attack, self.protocol, self.attack_params, self.own = parse_behaviours(
            text, params
        )
        self.start, self.end, self.seed, self.num_classes = start, end, seed, num_classes

    def active(self, r: int) -> bool:
        return attack_active(r, self.start, self.end)

    def has(self, behaviour: str, r: int) -> bool:
        return behaviour in self.protocol and self.active(r)

    @property
    def is_data_attack(self) -> bool:
        g = self.gradient_attack
        return isinstance(g, Entry) and g.meta.get("kind", "update") == "data"

    def poisoned(self, r: int) -> bool:
        """Corrupt this step's batch (data attacks)."""
        return self.is_data_attack and self.active(r)

    def forges(self, r: int) -> bool:
        """Replace this step's gradient (update and direction attacks)."""
        return self.gradient_attack is not None and not self.is_data_attack and self.active(r)

    def attacking(self, r: int) -> bool:
        """Whether the peer deviates from the protocol in step ``r`` at all."""
        return self.active(r) and (self.gradient_attack is not None or bool(self.protocol))

    def _direction(self, r: int, d: int, like: Tensor) -> Tensor:
        gen = (
            torch_generator(self.seed, "btard_attack", "constant")
            if self.gradient_attack == "constant_direction"
            else torch_generator(self.seed, "btard_attack", r, self.peer)
        )
        u = torch.randn(d, generator=gen, dtype=torch.float64)
        return (u / u.norm()).to(like.dtype)

    def forge(
        self,
        r: int,
        own: Tensor,
        *,
        present: tuple[int, ...],
        byzantine_present: list[int],
        gradients: Callable[[list[int]], Tensor],
    ) -> Tensor:
        """The gradient to commit to and send instead of ``own`` (its honest gradient).

        Library attacks see what a colluding server-side adversary sees (:mod:`shieldwall.
        algorithms.adversary`): the Byzantine peers' own honest gradients first, then, for
        omniscient attacks, the honest peers'; ``gradients(ids)`` computes them from the public
        seeds. All colluders draw from one generator per step and each sends its own row.
        """
        g = self.gradient_attack
        if isinstance(g, str):
            return self._direction(r, own.numel(), own) * (self.own["scale"] * own.norm())
        assert isinstance(g, Entry)
        b = len(byzantine_present)
        ids = list(byzantine_present)
        if g.meta.get("omniscient", False):
            ids += [p for p in present if p not in byzantine_present]
        ctx = AttackContext(
            n=len(present), f=b, round=r, num_classes=self.num_classes,
            generator=torch_generator(self.seed, "btard_attack", r),
        )
        rows = g.obj(gradients(ids), b, ctx, **self.attack_params)
        return rows[byzantine_present.index(self.peer)].to(own.dtype)

    def _shifted(self, r: int, v: Tensor, tau: float) -> Tensor:
        return v + self._direction(r, v.numel(), v) * (self.own["shift"] * tau)

    def tamper_part(self, r: int, index: int, part: Tensor) -> Tensor:
        if self.has("inconsistent_parts", r) and index % 2 == 1:
            return -self.own["scale"] * part
        return part

    def tamper_aggregate(self, r: int, v: Tensor, tau: float) -> Tensor:
        return self._shifted(r, v, tau) if self.has("wrong_aggregation", r) else v

    def tamper_result(self, r: int, dst: int, v: Tensor, tau: float) -> Tensor:
        if self.has("inconsistent_results", r) and dst % 2 == 1:
            return self._shifted(r, v, tau)
        return v

    def tamper_checksums(self, r: int, values: tuple[float | None, ...]) -> tuple:
        if not self.has("wrong_checksum", r):
            return values
        return tuple(None if s is None else s + self.own["shift"] for s in values)

    def silent(self, r: int) -> bool:
        return self.has("silent", r)

    def false_accusations(
        self, r: int, received_parts: dict[int, Signed], colluders: frozenset[int]
    ) -> list[Accusation]:
        """As ``false_accuser``: blame the lowest-id honest sender whose part it holds."""
        if not self.has("false_accuser", r):
            return []
        for sender in sorted(received_parts):
            if sender not in colluders:
                msg = received_parts[sender]
                return [Accusation("bad_part", self.peer, sender, msg.body.index, (msg,))]
        return []
