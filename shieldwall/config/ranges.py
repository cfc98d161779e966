"""Value ranges of the sections whose drivers would otherwise meet a bad value mid-run (or
never, or only after the data is loaded, which ``shieldwall check`` skips): BTARD's protocol
settings, the redundancy schedule, the attack window and the text/ALBERT settings. Checked when
the config loads, so a bad value is one line naming the key and its allowed range."""

from __future__ import annotations

from shieldwall.config.errors import ConfigError
from shieldwall.config.schema import ExperimentConfig

__all__ = ["check_ranges", "positive", "at_least_one"]


def positive(where: str, value: int | float | None, *, allow_zero: bool = False) -> None:
    """``value`` (unless ``None``) must be > 0, or >= 0 with ``allow_zero`` (NaN is neither);
    ``where`` names it: a config key or a command-line flag."""
    if value is None:
        return
    if not (value >= 0 if allow_zero else value > 0):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{where} must be {bound}, got {value}")


def at_least_one(where: str, value: int | float | None) -> None:
    """``value`` (unless ``None``) must be >= 1."""
    if value is not None and not value >= 1:
        raise ConfigError(f"{where} must be >= 1, got {value}")


def check_ranges(cfg: ExperimentConfig) -> None:
    """The ranges of ``btard_args``, ``redundancy_args``, ``text_args`` and
    ``attack_args.attack_end``."""
    a = cfg.attack_args
    if a.attack_end is not None and a.attack_end < a.attack_start:
        raise ConfigError(
            f"attack_args.attack_end ({a.attack_end}) is before attack_args.attack_start "
            f"({a.attack_start}): the attack would never run (attack_end is inclusive; "
            "leave it unset to attack until the end)"
        )
    b = cfg.btard_args
    positive("btard_args.tau", b.tau)
    positive("btard_args.cc_iterations", b.cc_iterations, allow_zero=True)
    positive("btard_args.cc_rel_tol", b.cc_rel_tol)
    positive("btard_args.check_sigmas", b.check_sigmas)
    positive("btard_args.validators", b.validators, allow_zero=True)
    positive("btard_args.grad_rtol", b.grad_rtol, allow_zero=True)
    at_least_one("btard_args.silence_limit", b.silence_limit)
    if b.check_proba is not None and not 0.0 <= b.check_proba <= 1.0:
        raise ConfigError(f"btard_args.check_proba must be a probability in [0, 1] (or unset "
                          f"for the validators' own rate), got {b.check_proba}")
    r = cfg.redundancy_args
    at_least_one("redundancy_args.group_size", r.group_size)
    positive("redundancy_args.worker_fail", r.worker_fail, allow_zero=True)
    if r.rama_m is not None and r.rama_m != -1 and r.rama_m < 1:
        raise ConfigError(f"redundancy_args.rama_m must be >= 1 (or -1, ByzShield's m = r), "
                          f"got {r.rama_m}")
    at_least_one("redundancy_args.files_batch_size", r.files_batch_size)
    at_least_one("redundancy_args.epochs", r.epochs)
    at_least_one("redundancy_args.lr_step", r.lr_step)
    at_least_one("redundancy_args.eval_freq", r.eval_freq)
    positive("redundancy_args.gamma", r.gamma)
    positive("redundancy_args.vote_rtol", r.vote_rtol, allow_zero=True)
    positive("redundancy_args.vote_atol", r.vote_atol, allow_zero=True)
    positive("redundancy_args.aggregator_f", r.aggregator_f, allow_zero=True)
    _check_text(cfg)


def _check_text(cfg: ExperimentConfig) -> None:
    x = cfg.text_args
    if not 0.0 < x.mlm_probability < 1.0:
        raise ConfigError(f"text_args.mlm_probability must lie in (0, 1), got {x.mlm_probability}")
    if x.max_seq_length < 3:
        raise ConfigError(f"text_args.max_seq_length must be at least 3 ([CLS], a token, [SEP]), "
                          f"got {x.max_seq_length}")
    for key in ("vocab_size", "dupe_factor", "max_documents", "embedding_size", "hidden_size",
                "num_hidden_layers", "num_attention_heads", "intermediate_size",
                "max_position_embeddings"):
        at_least_one(f"text_args.{key}", getattr(x, key))
    if x.hidden_size and x.num_attention_heads and x.hidden_size % x.num_attention_heads:
        raise ConfigError(f"text_args.hidden_size={x.hidden_size} is not a multiple of "
                          f"num_attention_heads={x.num_attention_heads}")
