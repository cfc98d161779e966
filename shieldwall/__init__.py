"""shieldwall: Byzantine-robust distributed and federated training.

Layers, bottom up:

* pure math — :mod:`shieldwall.aggregators`, :mod:`shieldwall.preaggregators`,
  :mod:`shieldwall.attacks`, :mod:`shieldwall.redundancy` (tensors in, tensors out);
* components — :mod:`shieldwall.data`, :mod:`shieldwall.models`, :mod:`shieldwall.config`;
* algorithms — :mod:`shieldwall.algorithms` (what one round does), written against the
  communication contract of :mod:`shieldwall.runtime.base`;
* runtimes — the in-process simulator, torch.distributed, networked;
* run plumbing — :mod:`shieldwall.rundir` (run directory, round loop, checkpoints), below
  every driver;
* drivers — :mod:`shieldwall.drivers` (the server round loop, BTARD, redundancy training), one
  registry entry each;
* entry points — :mod:`shieldwall.train` and :mod:`shieldwall.cli`.
"""

__version__ = "0.1.0"
