"""The fault-tolerant DDP simulator's console lines, printed by ``shieldwall ddp`` (``-q`` off).

Users of the simulator (``python main.py -d mnist -w 16 -f 0 1 2 3 4 --correct``) read its run
from these lines; the same shapes are printed here, each filled with this run's facts::

    Device: cpu
    Number of workers: 16
    Number of processes: 1
    Faulty worker idxs: [0, 1, 2, 3, 4]
    Namespace(dataset='mnist', arch='mlp', epoch=3, global_batch_size=512, worker=16, …)

    Worker-to-dataBatch assignments
    W-B MAP: {0: [0, 13], 1: [1, 14], …}          a check step: [own batch, replica]
    [AGG] worker 3 convicted at step 8 (disagreed with [7, 12, 14])
    [AGG] Init correction model for worker 3
    [CORRECTION] Training ... (worker 3, 1 pair)
    [CORRECTION] Training loss (MSE, MAPE): 6.644912e-07 0.0004825247
    EP: 1/3, sub-batch: 9/117, avg sub-batch loss: 2.295
    W-B MAP: {0: 0, 1: 1, …}                      a plain step: one batch per worker
    validation accuracy: 0.9123
    Epoch: 1 done, avg loss: 0.532

Differences, on purpose: a check step's map lists two batches per worker (the simulator has one
replica scheme, ``{0: 7, 1: 7, …}``: every faulty worker recomputes one honest batch); workers
are convicted by replica comparison (the simulator is told ``-f``); the ``[CORRECTION]`` loss is
the refitted model's error on that step's pairs (the simulator's is on its 10 training pairs);
MAPE is weighted by :math:`|x|` (:mod:`.correction`); the loss is the mean of the owners'
sub-batch losses. ``sub-batch: k/K`` counts steps of the epoch, as the simulator does.
"""

from __future__ import annotations

from typing import Any, TextIO

from shieldwall.fault_tolerance.config import DDPConfig
from shieldwall.fault_tolerance.schedule import StepPlan

__all__ = ["SeedConsole", "SEED_ARGS"]

# The simulator's argparse names (its Namespace order) → DDPConfig fields.
SEED_ARGS = (
    ("dataset", "dataset"), ("arch", "arch"), ("epoch", "epoch"),
    ("global_batch_size", "global_batch_size"), ("worker", "workers"), ("faulty", "faulty"),
    ("defense", "defense"), ("proc", "proc"), ("tb", "tb"), ("device", "device"),
    ("correct", "correct"), ("data_coll_path", "data_coll_path"),
)


class SeedConsole:
    """Prints the simulator's lines to ``out`` (default: standard output)."""

    def __init__(self, out: TextIO | None = None) -> None:
        self.out = out
        self._epoch_losses: list[float] = []

    def _print(self, *parts: Any) -> None:
        print(*parts, file=self.out, flush=False)

    def start(self, cfg: DDPConfig, device: str, processes: int) -> None:
        """The start-up echo: device, workers, processes, faulty ids, the resolved settings."""
        self._print(f"Device: {device}")
        self._print(f"Number of workers: {cfg.workers}")
        self._print(f"Number of processes: {processes}")
        self._print(f"Faulty worker idxs: {cfg.faulty}")
        values = cfg.to_dict()
        seed = [f"{name}={values[field]!r}" for name, field in SEED_ARGS]
        shown = {field for _, field in SEED_ARGS}
        ours = [f"{k}={v!r}" for k, v in values.items() if k not in shown]
        self._print("Namespace(" + ", ".join(seed + ours) + ")")
        self._print()
        self._print("Worker-to-dataBatch assignments")

    def step(self, plan: StepPlan, outcome: Any, bank: Any, *, epoch: int, num_epochs: int,
             position: int, steps_per_epoch: int, loss: float, engine: Any) -> None:
        """One step: the worker → batch map, convictions, correction fits, the progress line."""
        wb = {w: (bs[0] if len(bs) == 1 else bs) for w, bs in plan.worker_map().items()}
        self._print("W-B MAP:", wb)
        for worker in outcome.new_convicted:
            accusers = sorted(engine.detector.accusers[worker])
            self._print(f"[AGG] worker {worker} convicted at step {plan.step} "
                        f"(disagreed with {accusers})")
        if outcome.f_rule != outcome.f and outcome.num_rows:
            used = "median fallback" if outcome.f_rule < 0 else f"f={outcome.f_rule}"
            self._print(f"[AGG] {engine.rule.aggregator}: n={outcome.num_rows} rows, "
                        f"f={outcome.f} not yet convicted; using {used}")
        if outcome.pairs and bank is not None:
            for worker in sorted(bank.created):
                self._print(f"[AGG] Init correction model for worker {worker}")
            for worker, (mse, mape, n) in sorted(bank.fit_errors.items()):
                self._print(f"[CORRECTION] Training ... (worker {worker}, {n} pair"
                            f"{'s' if n != 1 else ''})")
                self._print(f"[CORRECTION] Training loss (MSE, MAPE): {mse:.7g} {mape:.7g}")
        self._epoch_losses.append(loss)
        self._print(f"EP: {epoch + 1}/{num_epochs}, sub-batch: {position + 1}/{steps_per_epoch}, "
                    f"avg sub-batch loss: {round(loss, 3)}")

    def validation(self, accuracy: float) -> None:
        self._print("validation accuracy:", accuracy)

    def epoch_done(self, epoch: int) -> None:
        if self._epoch_losses:
            avg = sum(self._epoch_losses) / len(self._epoch_losses)
            self._print(f"Epoch: {epoch + 1} done, avg loss: {round(avg, 3)}")
        self._epoch_losses = []
