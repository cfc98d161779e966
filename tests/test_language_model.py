"""ALBERT masked LM, LAMB and the schedule, accumulation, and short end-to-end text runs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from shieldwall.optim import Lamb, TensorwiseStepper, lr_factor

pytest.importorskip("transformers", reason="the 'text' extra (transformers) is not installed")
pytest.importorskip("tokenizers", reason="the 'text' extra (tokenizers) is not installed")

from shieldwall.cli import main  # noqa: E402
from shieldwall.config import config_from_dict  # noqa: E402
from shieldwall.config.schema import TextArgs  # noqa: E402
from shieldwall.models import build_model  # noqa: E402
from shieldwall.train import train  # noqa: E402


@pytest.fixture(scope="module")
def token_cache(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("tokenizers"))


def text_config(tmp_path: Path, cache: str, **sections) -> dict:
    raw = {
        "data_args": {"dataset": "pydoc_topics", "partition_method": "document"},
        "text_args": {"tokenizer_cache_dir": cache, "vocab_size": 1000, "max_seq_length": 32,
                      "dupe_factor": 1},
        "model_args": {"model": "albert"},
        "train_args": {"federated_optimizer": "PS-SGD", "client_num_in_total": 4,
                       "comm_round": 12, "batch_size": 8, "client_optimizer": "adamw",
                       "learning_rate": 0.003, "warmup_steps": 2, "max_grad_norm": 1.0},
        "validation_args": {"frequency_of_the_test": 4},
        "device_args": {"num_threads": 1},
        "tracking_args": {"log_file_dir": str(tmp_path), "enable_tensorboard": False,
                          "progress_bar": False},
    }
    for section, body in sections.items():
        raw.setdefault(section, {}).update(body)
    return raw


def records(run_dir: str | Path) -> list[dict]:
    return [json.loads(x) for x in (Path(run_dir) / "metrics.jsonl").read_text().split("\n") if x]


def test_albert_forward_backward_on_a_tiny_config():
    torch.manual_seed(0)
    model = build_model("albert", (16,), 50, TextArgs(hidden_size=32, intermediate_size=64))
    x = torch.randint(5, 50, (3, 16))
    x[0, 12:] = 0  # padding
    y = torch.full_like(x, -100)
    y[:, 3] = x[:, 3]
    logits = model(x)
    assert logits.shape == (3, 50, 16)
    loss = F.cross_entropy(logits, y)
    assert abs(float(loss.detach()) - math.log(50)) < 1.0  # a random model is near uniform
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    assert float(model.mlm.albert.embeddings.word_embeddings.weight.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="max_position_embeddings"):
        model(torch.randint(5, 50, (1, 17)))


def test_albert_shapes_and_bad_sizes():
    from shieldwall.models.albert import albert_config

    large = albert_config("albert_large_v2", 128, 30000)
    assert (large.hidden_size, large.num_hidden_layers, large.num_attention_heads,
            large.embedding_size, large.intermediate_size) == (1024, 24, 16, 128, 4096)
    with pytest.raises(ValueError, match="longer than the model's max_position_embeddings=64"):
        albert_config("albert_tiny", 128, 100, TextArgs(max_position_embeddings=64))
    with pytest.raises(ValueError, match="not a multiple"):
        albert_config("albert_tiny", 16, 100, TextArgs(hidden_size=30, num_attention_heads=4))
    with pytest.raises(ValueError, match="token blocks"):
        build_model("albert", (1, 8, 8), 10)


def test_lamb_matches_a_hand_computed_step():
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0], dtype=torch.float64))
    opt = Lamb([p], lr=0.01, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.1)
    p.grad = torch.tensor([1.0, 2.0], dtype=torch.float64)
    opt.step()
    # Step 1: bias-corrected moments are g and g^2, so r = g / (|g| + eps).
    r = [1 / (1 + 1e-6), 2 / (2 + 1e-6)]
    u = [r[0] + 0.1 * 3, r[1] + 0.1 * 4]
    trust = 5.0 / math.hypot(*u)
    want = [3 - 0.01 * trust * u[0], 4 - 0.01 * trust * u[1]]
    assert p.tolist() == pytest.approx(want, rel=1e-12)
    # Step 2 with gradient (-1, 0): m = 0.9*0.1*g1 + 0.1*g2, v = 0.999*0.001*g1^2 + 0.001*g2^2.
    x1 = list(want)
    p.grad = torch.tensor([-1.0, 0.0], dtype=torch.float64)
    opt.step()
    m = [0.09 * 1 - 0.1, 0.09 * 2]
    v = [0.000999 * 1 + 0.001, 0.000999 * 4]
    mh = [mi / (1 - 0.9**2) for mi in m]
    vh = [vi / (1 - 0.999**2) for vi in v]
    u = [mh[i] / (math.sqrt(vh[i]) + 1e-6) + 0.1 * x1[i] for i in range(2)]
    trust = math.hypot(*x1) / math.hypot(*u)
    want = [x1[i] - 0.01 * trust * u[i] for i in range(2)]
    assert p.tolist() == pytest.approx(want, rel=1e-12)


def test_lamb_clamps_the_weight_norm_and_zero_tensors_take_adam_steps():
    big = torch.nn.Parameter(torch.tensor([300.0, 400.0], dtype=torch.float64))
    zero = torch.nn.Parameter(torch.zeros(2, dtype=torch.float64))
    opt = Lamb([big, zero], lr=0.1, clamp_value=10.0)
    big.grad = torch.tensor([1.0, 0.0], dtype=torch.float64)
    zero.grad = torch.tensor([0.0, -3.0], dtype=torch.float64)
    opt.step()
    assert big.tolist() == pytest.approx([300 - 0.1 * 10.0, 400.0], rel=1e-12)  # phi = 10
    assert zero.tolist() == pytest.approx([0.0, 0.1 * 3 / (3 + 1e-6)], rel=1e-12)  # trust 1


def test_warmup_then_linear_decay():
    assert [lr_factor(s, 4, 10, "linear") for s in range(11)] == pytest.approx(
        [0.25, 0.5, 0.75, 1.0, 1.0, 5 / 6, 4 / 6, 3 / 6, 2 / 6, 1 / 6, 0.0])
    assert lr_factor(7, 0, 10, "constant") == 1.0


def test_stepper_clips_the_gradient_and_keeps_state():
    from shieldwall.config.schema import TrainArgs

    shapes = [torch.zeros(2, 2), torch.zeros(3)]
    args = TrainArgs(client_optimizer="sgd", learning_rate=1.0, max_grad_norm=2.0, comm_round=5)
    stepper = TensorwiseStepper(shapes, args)
    grad = torch.tensor([3.0, 0, 0, 0, 4.0, 0, 0])  # norm 5, clipped to 2
    new = stepper.step(torch.zeros(7), grad)
    assert new.tolist() == pytest.approx([-1.2, 0, 0, 0, -1.6, 0, 0])
    assert stepper.state_dict()["num_steps"] == 1


def test_pssgd_accumulation_equals_one_big_batch():
    from shieldwall.algorithms.base import ClientData, ClientTask
    from shieldwall.algorithms.ps_sgd import PSSGD
    from shieldwall.config.schema import TrainArgs

    torch.manual_seed(0)
    x, y = torch.randn(50, 6), torch.randint(0, 3, (50,))
    model = torch.nn.Linear(6, 3)
    data = ClientData(0, x, y)
    task = ClientTask(round=2, client_id=0, seed=7)
    big = PSSGD(TrainArgs(batch_size=20), model, torch.device("cpu"))
    params = big.flat.vector()
    want = big.client_update(params, data, task)
    acc = PSSGD(TrainArgs(batch_size=7, target_batch_size=20), model, torch.device("cpu"))
    got = acc.client_update(params, data, task)
    assert got.num_samples == want.num_samples == 20
    assert torch.allclose(got.update, want.update, atol=1e-6)
    assert got.loss == pytest.approx(want.loss, rel=1e-5)


def test_text_run_lowers_validation_perplexity_under_attack(tmp_path, token_cache):
    raw = text_config(tmp_path, token_cache,
                      attack_args={"enable_attack": True, "attack_type": "sign_flip",
                                   "byzantine_client_num": 1, "scale": 10},
                      defense_args={"enable_defense": True, "defense_type": "centered_clip",
                                    "tau": 1.0})
    summary = train(config_from_dict(raw))
    recs = records(summary["run_dir"])
    evals = [r for r in recs if r.get("test_perplexity") is not None]
    assert [r["round"] for r in evals] == [3, 7, 11]
    assert evals[-1]["test_perplexity"] < 0.5 * evals[0]["test_perplexity"]
    assert evals[0]["test_perplexity"] == pytest.approx(math.exp(evals[0]["test_loss"]))
    assert all(r["train_perplexity"] > 1 for r in evals)
    assert summary["eval_split"] == "valid" and summary["test_perplexity"] > 1


@pytest.mark.parametrize("algorithm", ["FedAvg", "BTARD"])
def test_fedavg_and_btard_train_albert(tmp_path, token_cache, algorithm):
    extra = {"btard_args": {"tau": 1.0, "signature": "hmac"}} if algorithm == "BTARD" else {}
    raw = text_config(tmp_path, token_cache, **extra, validation_args={"frequency_of_the_test": 1},
                      train_args={"federated_optimizer": algorithm, "comm_round": 4,
                                  "client_optimizer": "lamb", "learning_rate": 0.02,
                                  "batch_size": 16})
    if algorithm == "FedAvg":  # 4 of 60 small shards per round: a few local steps each
        raw["data_args"]["partition_method"] = "iid"
        raw["train_args"].update(client_num_in_total=60, client_num_per_round=4)
    summary = train(config_from_dict(raw))
    evals = [r for r in records(summary["run_dir"]) if r.get("test_loss") is not None]
    assert len(evals) == 4
    assert evals[-1]["test_loss"] < evals[0]["test_loss"] - 0.1
    assert evals[-1]["test_perplexity"] == pytest.approx(math.exp(evals[-1]["test_loss"]))


def test_bad_text_input_is_one_line_exit_2(tmp_path, token_cache, capsys):
    base = ["run", "--set", f"text_args.tokenizer_cache_dir={token_cache}"]
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_args: {{dataset: wikitext103, data_cache_dir: {tmp_path}}}\n"
                   "model_args: {model: albert}\n")
    assert main([*base, str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "wiki.train.tokens" in err
    cfg.write_text("data_args: {dataset: pydoc_topics}\nmodel_args: {model: albert}\n"
                   "text_args: {max_seq_length: 64, max_position_embeddings: 32, "
                   "vocab_size: 1000}\n")
    assert main([*base, str(cfg)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "max_position_embeddings=32" in err


def _agree_worker(rank: int, init: str, values: list[str], out: str) -> None:
    import torch.distributed as dist

    from shieldwall.runtime.agreement import check_agreement

    def unpickling_forbidden(*_args, **_kwargs):
        raise AssertionError("check_agreement must not unpickle what other ranks send")

    # all_gather_object unpickles every rank's bytes: a hostile rank would run code here
    dist.all_gather_object = unpickling_forbidden
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=len(values))
    try:
        check_agreement("the tokenizer (vocabulary)", values[rank])
        result = "ok"
    except ValueError as exc:
        result = str(exc)
    finally:
        dist.destroy_process_group()
    Path(out, f"{rank}.txt").write_text(result)


def test_processes_with_different_vocabularies_refuse_the_run(tmp_path):
    import torch.multiprocessing as mp

    for k, values in enumerate([["abc", "abc"], ["abc", "abd"]]):
        out = tmp_path / str(k)
        out.mkdir()
        init = f"file://{out / 'rendezvous'}"
        mp.start_processes(_agree_worker, args=(init, values, str(out)), nprocs=2, join=True,
                           start_method="fork")
        results = [(out / f"{r}.txt").read_text() for r in range(2)]
        if k == 0:
            assert results == ["ok", "ok"]
        else:
            assert all("differs between processes" in r and "rank(s) 1" in r for r in results)


def test_models_and_data_that_do_not_fit_are_one_line(tmp_path, token_cache, capsys):
    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_args: {{dataset: pydoc_topics}}\nmodel_args: {{model: mlp}}\n"
                   f"text_args: {{vocab_size: 1000, tokenizer_cache_dir: {token_cache}}}\n")
    assert main(["run", str(cfg)]) == 2
    assert "does not model text" in capsys.readouterr().err
    cfg.write_text("data_args: {dataset: digits}\nmodel_args: {model: albert}\n")
    assert main(["run", str(cfg)]) == 2
    assert "needs token blocks" in capsys.readouterr().err


def test_text_run_resumes_bit_exactly_with_lamb_schedule_and_clipping(tmp_path, token_cache):
    def raw(rounds: int, name: str) -> dict:
        return text_config(tmp_path, token_cache, tracking_args={"run_name": name},
                           train_args={"client_num_in_total": 3, "comm_round": rounds,
                                       "batch_size": 4, "client_optimizer": "lamb",
                                       "lr_schedule": "linear"},
                           validation_args={"frequency_of_the_test": 2})

    full = train(config_from_dict(raw(4, "full")))
    train(config_from_dict(raw(2, "part")))
    part = train(config_from_dict(raw(4, "part")), resume=tmp_path / "part")
    assert torch.equal(torch.load(Path(full["run_dir"]) / "final_params.pt"),
                       torch.load(Path(part["run_dir"]) / "final_params.pt"))


@pytest.mark.slow
def test_quickstart_text_lowers_validation_perplexity_well_below_its_start(tmp_path, capsys,
                                                                          token_cache):
    assert main(["quickstart", "--text", "--log-dir", str(tmp_path), "--run-name", "qs",
                 "--set", f"text_args.tokenizer_cache_dir={token_cache}"]) == 0
    assert "validation perplexity" in capsys.readouterr().out
    evals = [r for r in records(tmp_path / "qs") if r.get("test_perplexity") is not None]
    assert evals[0]["test_perplexity"] > 500  # near the vocabulary size (2000) after 10 steps
    assert evals[-1]["test_perplexity"] < 0.25 * evals[0]["test_perplexity"]
    assert all(len(r["byzantine"]) == 3 for r in records(tmp_path / "qs"))
