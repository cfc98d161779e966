"""Fault-tolerant data-parallel training: find faulty workers by redundant sub-batches, fix them.

Not every bad worker is malicious: a worker with a broken accelerator adds noise to every gradient
it computes. This package runs data-parallel SGD over ``w`` workers (simulated in one batched
computation, or in gloo processes) where some sub-batches are computed twice:

* :mod:`.schedule` — which worker computes which sub-batch; rotating replica pairs on check steps
  (``check_every``), costing a known extra ``1/check_every`` of compute.
* :mod:`.detection` — replicas that disagree accuse each other; a worker accused by more distinct
  unconvicted partners than there can be unconvicted faulty workers is convicted (sound).
* :mod:`.correction` — a convicted worker's gradient is replaced by an honest replica when there is
  one, otherwise by a per-coordinate ridge regression fitted on the check steps.
* :mod:`.engine` — one step: detect, pick/correct rows, aggregate.
* :mod:`.trainer`, :mod:`.distributed` — the loop, in-process or over torch.distributed.

See ``docs/fault_tolerance.md``.
"""

from __future__ import annotations

from shieldwall.fault_tolerance.config import DDPConfig, load_ddp_config
from shieldwall.fault_tolerance.correction import CorrectionBank, RidgeCorrector
from shieldwall.fault_tolerance.detection import FaultDetector, compare_replicas
from shieldwall.fault_tolerance.engine import FaultTolerantStep, StepOutcome
from shieldwall.fault_tolerance.faults import FaultInjector
from shieldwall.fault_tolerance.schedule import Assignment, RedundancySchedule, StepPlan

__all__ = [
    "Assignment",
    "CorrectionBank",
    "DDPConfig",
    "FaultDetector",
    "FaultInjector",
    "FaultTolerantStep",
    "RedundancySchedule",
    "RidgeCorrector",
    "StepOutcome",
    "StepPlan",
    "compare_replicas",
    "load_ddp_config",
]
