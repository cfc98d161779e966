"""``shieldwall run`` on a ``runtime: grpc`` config: FedML's ``--rank``/``--role`` pick the role."""

from __future__ import annotations

import pytest

from shieldwall.commands._net import networked_role


@pytest.mark.parametrize(
    ("rank", "role", "expected"),
    [(None, None, 0), (None, "server", 0), (0, None, 0), (0, "Server", 0), (3, None, 3),
     (2, "client", 2)],
)
def test_rank_and_role_give_the_role(rank, role, expected):
    assert networked_role(rank, role) == expected


@pytest.mark.parametrize(
    ("rank", "role", "message"),
    [(None, "client", r"--role client needs --rank K"),
     (2, "server", r"--role server with --rank 2: the server is rank 0"),
     (0, "client", r"--role client with --rank 0"),
     (-1, None, r"--rank: -1 is negative"),
     (1, "worker", r"--role: 'worker' is not one of: server, client")],
)
def test_inconsistent_rank_and_role_are_one_line_errors(rank, role, message):
    with pytest.raises(ValueError, match=message):
        networked_role(rank, role)


def _decide(monkeypatch, *, runtime="auto", training_type="simulation", scenario="horizontal",
            rank=None, role=None, launched=False):
    from argparse import Namespace

    from shieldwall.commands.run import _is_networked
    from shieldwall.config import config_from_dict

    for key in ("OMPI_COMM_WORLD_SIZE", "RANK", "WORLD_SIZE"):
        monkeypatch.delenv(key, raising=False)
    if launched:
        monkeypatch.setenv("RANK", "0")
        monkeypatch.setenv("WORLD_SIZE", "3")
    cfg = config_from_dict({
        "common_args": {"training_type": training_type, "scenario": scenario},
        "comm_args": {"runtime": runtime},
    })
    return _is_networked(Namespace(rank=rank, role=role), cfg)


def test_runtime_grpc_is_networked_whatever_the_flags(monkeypatch):
    assert _decide(monkeypatch, runtime="grpc")
    assert _decide(monkeypatch, runtime="grpc", rank=2, launched=True)


def test_a_cross_silo_config_with_fedml_rank_or_role_is_networked_as_fedml_runs_it(monkeypatch):
    """FedML's ``torch_client.py --cf fedml_config.yaml --rank 1 --role client``, typed as
    ``shieldwall run``: the process is client 1, as FedMLRunner decides."""
    assert _decide(monkeypatch, training_type="cross_silo", rank=1, role="client")
    assert _decide(monkeypatch, training_type="cross_silo", rank=0)
    assert _decide(monkeypatch, training_type="cross_silo", role="server")
    # without --rank/--role it is a one-machine study in the simulator
    assert not _decide(monkeypatch, training_type="cross_silo")
    # under mpirun/torchrun a horizontal cross_silo config is torch.distributed (FedML's MPI)
    assert not _decide(monkeypatch, training_type="cross_silo", rank=1, launched=True)
    # hierarchical silos are networked even under a launcher (DDP inside the silo)
    assert _decide(monkeypatch, training_type="cross_silo", scenario="hierarchical", rank=1,
                   launched=True)
    # simulation configs, and an explicit runtime, are never switched
    assert not _decide(monkeypatch, rank=1)
    assert not _decide(monkeypatch, runtime="simulator", training_type="cross_silo", rank=1)
