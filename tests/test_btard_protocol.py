"""BTARD-SGD in the simulator: checks catch each misbehaviour, bans are right, honest peers are
never banned and always agree."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from shieldwall.btard.run import BTARDRun, build, run_btard
from shieldwall.config import ConfigError, config_from_dict, config_to_dict
from shieldwall.config.schema import ExperimentConfig

torch.set_num_threads(1)


def make_cfg(tmp: Path | None = None, *, n: int = 6, b: int = 2, attack: str | None = "sign_flip",
             rounds: int = 6, seed: int = 0, params: dict[str, Any] | None = None,
             **btard: Any) -> ExperimentConfig:
    raw: dict[str, Any] = {
        "common_args": {"random_seed": seed},
        "data_args": {"dataset": "digits", "partition_method": "iid"},
        "model_args": {"model": "lr"},
        "train_args": {"federated_optimizer": "BTARD", "client_num_in_total": n,
                       "comm_round": rounds, "batch_size": 16, "learning_rate": 0.1,
                       "checkpoint_frequency": 0},
        "validation_args": {"frequency_of_the_test": rounds},
        "tracking_args": {"log_file_dir": str(tmp or "/tmp"), "run_name": f"btard{seed}",
                          "enable_tensorboard": False, "progress_bar": False},
        "btard_args": {"tau": 1.0, "signature": "hmac", **btard},
    }
    if attack is not None:
        raw["attack_args"] = {"enable_attack": True, "attack_type": attack,
                              "byzantine_client_num": b, **(params or {})}
    return config_from_dict(raw)


def steps(run: BTARDRun, rounds: int) -> list:
    return [run.step(r)[0] for r in range(rounds)]


def honest_params_agree(run: BTARDRun) -> bool:
    honest = [p.params for i, p in run.peers.items() if i not in run.byzantine]
    return all(torch.equal(honest[0], h) for h in honest[1:])


def test_clean_run_steps_every_round_and_peers_agree() -> None:
    run = build(make_cfg(attack=None, validators=2))
    verdicts = steps(run, 4)
    assert all(v.step and not v.banned and not v.accusations for v in verdicts)
    assert honest_params_agree(run)
    # the butterfly assembly equals the concatenation of per-part CenteredClips (reference)
    from shieldwall.btard.clip import butterfly_clip

    before = run.peers[0].params.clone()
    _, view, _ = run.step(4)
    grads = torch.stack([run.oracle.compute(before, 4, i).update for i in view.present])
    ref = butterfly_clip(grads, 1.0, iterations=run.proto.cc_iterations)
    assert torch.allclose(run.peers[0].st.ghat, ref, atol=1e-5)


def test_tampered_aggregate_fails_the_check_and_bans_the_aggregator() -> None:
    run = build(make_cfg(attack="wrong_aggregation", b=1))
    v = run.step(0)[0]
    (bad,) = run.byzantine
    assert not v.step and v.failed_parts and v.banned == {bad: "CenteredClip check failed"}
    assert any(a["kind"] == "clip_check" and a["accused"] == bad for a in v.accusations)
    assert run.step(1)[0].step and honest_params_agree(run)


def first_ban(run: BTARDRun, rounds: int = 12):
    for r in range(rounds):
        v = run.step(r)[0]
        if v.banned:
            return v
    raise AssertionError("nobody was banned")


def test_validator_catches_a_forged_gradient() -> None:
    run = build(make_cfg(attack="sign_flip", b=1, validators=6, params={"scale": 1000}))
    v = first_ban(run)
    (bad,) = run.byzantine
    assert v.banned == {bad: "bad_gradient"} and not v.step
    acc = [a for a in v.accusations if a["kind"] == "bad_gradient"]
    assert acc and all(a["accused"] == bad and a["proven"] for a in acc)


def test_label_flipping_is_caught_by_recomputation() -> None:
    run = build(make_cfg(attack="label_flip", b=1, validators=6))
    (bad,) = run.byzantine
    assert first_ban(run).banned == {bad: "bad_gradient"}


@pytest.mark.parametrize(
    ("attack", "kind"),
    [("inconsistent_parts", "bad_part"), ("inconsistent_results", "bad_result"),
     ("wrong_checksum", "bad_checksum")],
)
def test_equivocation_and_lies_are_proven_with_signed_evidence(attack: str, kind: str) -> None:
    run = build(make_cfg(attack=attack, b=2))
    v = run.step(0)[0]
    assert set(v.banned) == set(run.byzantine)
    assert any(a["kind"] == kind and a["proven"] for a in v.accusations)
    assert all(a["accused"] in run.byzantine for a in v.accusations if a["proven"])


def test_false_accuser_is_banned_and_the_accused_is_not() -> None:
    run = build(make_cfg(attack="false_accuser", b=1))
    (bad,) = run.byzantine
    v = run.step(0)[0]
    (acc,) = v.accusations
    assert acc["accuser"] == bad and not acc["proven"] and acc["accused"] not in run.byzantine
    assert v.banned == {bad: "false accusation (bad_part)"}


def test_silent_peer_is_excluded_then_banned_after_the_limit() -> None:
    run = build(make_cfg(attack="silent", b=1, silence_limit=2))
    (bad,) = run.byzantine
    v0, v1, v2 = steps(run, 3)
    assert v0.step and v0.silent == [bad] and not v0.banned
    assert v1.banned == {bad: "silent in 2 steps"} and v1.step
    assert bad not in run.ledger.active and v2.step and honest_params_agree(run)


def test_attack_start_delays_misbehaviour() -> None:
    run = build(make_cfg(attack="wrong_aggregation", b=1, params={"attack_start": 2}))
    v = steps(run, 3)
    assert v[0].step and v[1].step and not v[2].step and set(v[2].banned) == set(run.byzantine)


def test_simulated_check_mode_bans_attackers_only() -> None:
    run = build(make_cfg(attack="sign_flip", b=2, check_mode="simulated", check_proba=0.5))
    steps(run, 12)
    assert set(run.ledger.banned) == set(run.byzantine)
    assert all(b.reason.startswith("caught") for b in run.ledger.banned.values())


BEHAVIOURS = ["sign_flip", "label_flip", "random_direction", "constant_direction", "gaussian",
              "alie", "ipm", "wrong_aggregation", "inconsistent_parts", "inconsistent_results",
              "wrong_checksum", "false_accuser", "silent", "sign_flip+false_accuser",
              "constant_direction+wrong_checksum"]


def test_honest_peers_are_never_banned_across_seeded_runs() -> None:
    false_bans, caught = [], 0
    for seed, attack in enumerate(BEHAVIOURS):
        n = 5 + seed % 4
        run = build(make_cfg(attack=attack, n=n, b=(n - 1) // 2, seed=seed, validators=2))
        for r in range(5):
            run.step(r)
        false_bans += [(seed, attack, p) for p in run.ledger.banned if p not in run.byzantine]
        caught += len(run.ledger.banned)
        assert honest_params_agree(run), (seed, attack)
    assert false_bans == []
    assert caught > 0


def test_config_errors() -> None:
    with pytest.raises(ConfigError, match="fewer than half"):
        build(make_cfg(n=6, b=3))
    with pytest.raises(ConfigError, match="did you mean 'sign_flip'"):
        build(make_cfg(attack="sign_flp"))
    with pytest.raises(ConfigError, match="not a parameter"):
        build(make_cfg(attack="silent", params={"bogus": 1}))


def test_shieldwall_run_dispatches_and_logs_bans(tmp_path: Path) -> None:
    from shieldwall.cli import main

    cfg_path = tmp_path / "btard.yaml"
    cfg = make_cfg(tmp_path, attack="sign_flip", b=2, rounds=8, validators=6,
                   params={"scale": 1000})
    cfg_path.write_text(yaml.safe_dump(config_to_dict(cfg)))
    assert main(["run", str(cfg_path), "--run-name", "cli"]) == 0
    text = (tmp_path / "cli" / "metrics.jsonl").read_text()
    records = [json.loads(x) for x in text.splitlines()]
    bans = [b for r in records for b in r["banned"]]
    assert len(bans) == 2 and all(b["byzantine"] and b["reason"] == "bad_gradient" for b in bans)
    assert records[-1]["byzantine_active"] == []
    assert records[-1]["test_accuracy"] is not None
    assert records[-1]["bytes"]["scatter"] > 0


def test_resume_continues_from_the_checkpoint(tmp_path: Path) -> None:
    cfg = make_cfg(tmp_path, attack="wrong_aggregation", b=1, rounds=3)
    cfg.train_args.checkpoint_frequency = 1
    first = run_btard(cfg)
    cfg.train_args.comm_round = 5
    second = run_btard(cfg, resume=first["run_dir"])
    assert second["banned"] == first["banned"]
    lines = (Path(first["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [0, 1, 2, 3, 4]


def test_malformed_messages_never_crash_or_frame_honest_peers() -> None:
    """A peer committing to NaN or wrong-length parts is proven guilty by the aggregators; a
    peer broadcasting garbage is treated as silent. Honest peers are untouched."""
    import dataclasses

    from shieldwall.btard.clip import split_parts
    from shieldwall.btard.crypto import tensor_digest
    from shieldwall.btard.messages import Accuse, Check

    run = build(make_cfg(attack=None, n=6))
    nan_peer, long_peer, garbage_peer = 1, 3, 4

    def committing(peer, make):
        original = peer.commit

        def commit(present, byz_present):
            c = original(present, byz_present)
            peer.st.grad = make(peer.st.grad)
            peer.st.parts = split_parts(peer.st.grad, len(present))
            return dataclasses.replace(
                c, part_hashes=tuple(tensor_digest(p) for p in peer.st.parts)
            )

        peer.commit = commit

    committing(run.peers[nan_peer], lambda g: torch.full_like(g, float("nan")))
    committing(run.peers[long_peer], lambda g: torch.cat([g, g[:7]]))
    v = run.step(0)[0]
    assert v.banned == {nan_peer: "bad_part", long_peer: "bad_part"} and not v.step
    assert all(a["proven"] for a in v.accusations)

    garbage = run.peers[garbage_peer]
    garbage.check = lambda *a, **k: Check(1, ("x",) * 4)  # type: ignore[assignment]
    v = run.step(1)[0]
    assert v.aborted == "check" and v.silent == [garbage_peer] and not v.banned
    garbage.check = lambda *a, **k: Check(2, (None,) * 4)  # type: ignore[assignment]
    garbage.accuse = lambda *a, **k: Accuse(2, (5,))  # type: ignore[assignment]
    v = run.step(2)[0]
    assert v.aborted == "accuse" and v.silent == [garbage_peer]
    assert set(run.ledger.banned) == {nan_peer, long_peer}


def test_save_steps_keep_states_and_initial_state_continues_bit_exactly(tmp_path: Path) -> None:
    """The seed's STEPS_TO_SAVE / --initial_state_path: a run started from the state kept at
    step 3 ends where the run that kept it ends (same batches, same checks)."""
    cfg = make_cfg(tmp_path, attack=None, rounds=6, save_steps=[0, 3])
    cfg.tracking_args.run_name = "whole"
    whole = run_btard(cfg)
    kept = Path(whole["run_dir"]) / "state_step_3.pt"
    assert kept.is_file() and (Path(whole["run_dir"]) / "state_step_0.pt").is_file()
    assert torch.load(kept, weights_only=True)["step"] == 3
    cfg = make_cfg(tmp_path, attack=None, rounds=6, initial_state=str(kept))
    cfg.tracking_args.run_name = "tail"
    tail = run_btard(cfg)
    lines = (Path(tail["run_dir"]) / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(x)["round"] for x in lines] == [3, 4, 5]
    assert torch.equal(torch.load(Path(whole["run_dir"]) / "final_params.pt"),
                       torch.load(Path(tail["run_dir"]) / "final_params.pt"))


def test_initial_state_reads_params_state_dicts_and_refuses_bad_files(tmp_path: Path) -> None:
    from shieldwall.btard.state import read_state

    model = torch.nn.Sequential(torch.nn.Linear(3, 2))
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    torch.save(model.state_dict(), tmp_path / "model.pt")
    got = read_state(tmp_path / "model.pt", dim=8, model=model)
    assert torch.equal(got["params"], flat) and got["step"] == 0 and got["optimizer"] is None
    torch.save(flat, tmp_path / "final_params.pt")
    assert torch.equal(read_state(tmp_path / "final_params.pt", dim=8)["params"], flat)
    torch.save({"round": 4, "params": flat, "optimizer": {}, "ledger": {}}, tmp_path / "ck.pt")
    assert read_state(tmp_path / "ck.pt", dim=8)["step"] == 5  # a closed run's checkpoint
    (tmp_path / "junk.pt").write_bytes(b"not a torch file")
    torch.save(torch.full((8,), float("nan")), tmp_path / "nan.pt")
    for name, message in [("absent.pt", "does not exist"), ("junk.pt", "cannot be read"),
                          ("nan.pt", "non-finite"), ("final_params.pt", "this model has 9")]:
        with pytest.raises(ValueError, match=message):
            read_state(tmp_path / name, dim=9 if name == "final_params.pt" else 8)
    cfg = make_cfg(tmp_path, attack=None, rounds=2, initial_state=str(tmp_path / "junk.pt"))
    with pytest.raises(ConfigError, match=r"btard_args.initial_state: .*junk.pt' cannot be read"):
        run_btard(cfg)
    with pytest.raises(ConfigError, match="btard_args.save_steps"):
        build(make_cfg(tmp_path, attack=None, save_steps=[-1]))


def test_a_peer_withholding_its_parts_takes_one_claimant_down_not_all() -> None:
    """Missing messages eliminate disjoint pairs: the withholder and the first aggregator that
    reported it, not every aggregator it skipped (which would end the run)."""
    run = build(make_cfg(attack=None, n=6))
    run.peers[2].scatter = lambda: {}  # present, committed, sends its parts to nobody
    v = run.step(0)[0]
    assert v.eliminated == [(0, 2)] and set(v.banned) == {0, 2} and not v.step
    assert run.ledger.active == (1, 3, 4, 5)
    assert all(run.step(r)[0].step for r in (1, 2))
    active = [run.peers[i].params for i in run.ledger.active]
    assert all(torch.equal(active[0], p) for p in active[1:])


@pytest.mark.parametrize("shift", [1e8, 1e12])
def test_a_huge_aggregate_cannot_widen_its_own_check(shift: float) -> None:
    """The CenteredClip check's rounding allowance grows with a norm; were it the result's own
    norm, an aggregator returning its part plus a vector of norm >~ 1e7 tau would pass every
    check with honest checksums only, so no validator could ever catch it."""
    import dataclasses

    from shieldwall.btard.crypto import tensor_digest

    run = build(make_cfg(attack=None, n=6, validators=6))
    bad = 3
    peer = run.peers[bad]
    aggregate = peer.aggregate

    def huge(received: dict, commits: dict) -> Any:
        rc = aggregate(received, commits)
        v = peer.st.result
        u = torch.randn(v.numel(), generator=torch.Generator().manual_seed(1))
        peer.st.result = t = (v.double() + shift * u / u.norm()).to(v.dtype)
        return dataclasses.replace(rc, result_hash=tensor_digest(t),
                                   result_norm=float(t.double().norm()))

    peer.aggregate = huge  # type: ignore[method-assign]
    before = run.peers[0].params.clone()
    v = run.step(0)[0]
    assert not v.step and v.banned == {bad: "CenteredClip check failed"}
    assert torch.equal(run.peers[0].params, before)


def test_a_lie_about_a_part_norm_is_proven() -> None:
    """A sender committing to a wrong norm of a part (to widen its aggregator's check) is
    caught by the aggregator with its signed part."""
    import dataclasses

    run = build(make_cfg(attack=None, n=5))
    bad = 1
    peer = run.peers[bad]
    commit = peer.commit

    def inflated(present: tuple[int, ...], byz: list[int]) -> Any:
        c = commit(present, byz)
        return dataclasses.replace(c, part_norms=tuple(1e9 for _ in c.part_norms))

    peer.commit = inflated  # type: ignore[method-assign]
    v = run.step(0)[0]
    assert v.banned == {bad: "bad_part"} and not v.step
    assert all(a["proven"] and a["accused"] == bad for a in v.accusations)

def test_an_aggregator_cannot_drop_senders_behind_accusations_the_judge_skips() -> None:
    """A ``bad_part`` accusation naming another accuser is never examined, so it must not count
    as accounting for the sender: an aggregator dropping every other part that way is banned."""
    import dataclasses

    from shieldwall.btard.messages import Accusation

    run = build(make_cfg(attack=None, n=5))
    bad = 2
    peer = run.peers[bad]
    aggregate, accuse = peer.aggregate, peer.accuse

    def only_mine(received: dict, commits: dict) -> Any:
        rc = aggregate({bad: received[bad]}, commits)  # its own part alone; the rest "missing"
        return dataclasses.replace(rc, missing=())

    def covering(openings: dict, view: Any) -> Any:
        msg = accuse(openings, view)
        ev = peer.st.received[bad]
        fake = tuple(Accusation("bad_part", 0 if k else 1, k, peer.st.index, (ev,))
                     for k in view.present if k != bad)
        return dataclasses.replace(msg, accusations=msg.accusations + fake)

    peer.aggregate, peer.accuse = only_mine, covering  # type: ignore[method-assign]
    v = run.step(0)[0]
    assert not v.step and v.banned == {bad: "aggregator did not account for every sender"}


def test_huge_ints_in_broadcasts_are_malformed_not_a_crash(tmp_path: Path) -> None:
    """Well-typed but unbounded ints (solver statistics, an accused id) are silence: logged as
    they were, they made the metrics writer's json.dumps raise (Python's int->str limit)."""
    import dataclasses

    from shieldwall.btard.messages import Accusation
    from shieldwall.btard.run import _loop
    from shieldwall.btard.transport import InMemoryTransport

    cfg = make_cfg(tmp_path, attack=None, n=4, rounds=3, silence_limit=2)
    run = build(cfg, InMemoryTransport(range(4), measure=True))  # through the wire codec
    bad = 2
    peer = run.peers[bad]
    aggregate, accuse = peer.aggregate, peer.accuse
    peer.aggregate = lambda received, commits: dataclasses.replace(  # type: ignore[method-assign]
        aggregate(received, commits), iterations=10**5000
    )

    def huge_accused(openings: dict, view: Any) -> Any:
        msg = accuse(openings, view)
        ev = peer.st.received[bad]
        return dataclasses.replace(
            msg, accusations=(Accusation("bad_part", bad, 10**5000, None, (ev,)),)
        )

    peer.accuse = huge_accused  # type: ignore[method-assign]
    out = _loop(run, tmp_path, 0)  # two silences (aborted steps), then banned
    assert out["banned"] == {bad: 1}
    assert len((tmp_path / "metrics.jsonl").read_text().splitlines()) == 3

