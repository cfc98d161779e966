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
