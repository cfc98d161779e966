"""Networked-mode settings read from ``comm_args`` and ``train_args.client_id_list``.

Clients are named by FedML's ids (``client_id_list``, default ``1..client_num_in_total``); the
server is rank 0. The client at position ``i`` of ``client_id_list`` is the round's client index
``i`` (the row index the server plans, attacks and aggregates), and hosts part ``K - 1`` of the
training partition for its id ``K``: the data are partitioned over ``client_num_in_total`` parts
exactly as in the simulator. So with ``client_id_list = [1..N]`` and ``client_num_in_total = N`` a
networked run is the simulator's run, row for row. With more parts than clients (FedML's
cross-silo MNIST config: 1000 parts, 2 silos), a FedML config has every silo train the part
FedML's per-round ``data_silo_selection`` gives it (:mod:`.parts`), shieldwall's own configs keep
part ``K - 1``; the server counts only the listed clients (:func:`network_view`).
"""

from __future__ import annotations

import dataclasses
import hmac
import logging
from dataclasses import dataclass, field
from pathlib import Path

from shieldwall.config import ConfigError, ExperimentConfig
from shieldwall.config.loader import int_keys, read_yaml

__all__ = ["NetSettings", "client_ids", "network_view", "load_tokens", "read_pem"]

log = logging.getLogger(__name__)


def client_ids(cfg: ExperimentConfig) -> list[int]:
    """The networked clients' ids (``client_id_list`` or ``1..client_num_in_total``)."""
    ids = cfg.train_args.client_id_list or list(range(1, cfg.train_args.client_num_in_total + 1))
    if len(set(ids)) != len(ids) or any(k < 1 for k in ids):
        raise ConfigError(f"train_args.client_id_list must hold distinct ids >= 1, got {ids}")
    return list(ids)


def network_view(cfg: ExperimentConfig) -> ExperimentConfig:
    """The server's view of ``cfg``: runtime ``grpc``, and one client per listed id.

    ``client_num_in_total`` becomes ``len(client_id_list)`` (the clients the server plans over,
    draws Byzantine clients from and aggregates), its former value is kept as
    ``comm_args.partition_parts`` (the clients' data split); ``client_num_per_round`` is capped.
    Idempotent, so a resumed run's recorded config maps to itself.
    """
    ids = client_ids(cfg)
    t = cfg.train_args
    per_round = min(t.client_num_per_round or len(ids), len(ids))
    if cfg.attack_args.byzantine_client_num > len(ids):
        raise ConfigError(
            f"attack_args.byzantine_client_num ({cfg.attack_args.byzantine_client_num}) exceeds "
            f"the {len(ids)} networked clients of train_args.client_id_list"
        )
    train_args = dataclasses.replace(
        t, client_id_list=ids, client_num_in_total=len(ids), client_num_per_round=per_round
    )
    parts = cfg.comm_args.partition_parts or t.client_num_in_total
    comm_args = dataclasses.replace(cfg.comm_args, runtime="grpc", partition_parts=parts)
    return dataclasses.replace(cfg, train_args=train_args, comm_args=comm_args)


def load_tokens(cfg: ExperimentConfig) -> dict[int, str]:
    """``auth_tokens`` merged with ``token_file`` (``client_id: token`` YAML)."""
    tokens = {int(k): str(v) for k, v in cfg.comm_args.auth_tokens.items()}
    if cfg.comm_args.token_file:
        where = f"comm_args.token_file {str(cfg.comm_args.token_file)!r}"
        raw = read_yaml(cfg.comm_args.token_file, "comm_args.token_file") or {}
        if not isinstance(raw, dict):
            raise ConfigError(f"{where} must map client ids to tokens")
        tokens.update({k: str(v) for k, v in int_keys(where, raw).items()})
    return tokens


def read_pem(template: str | None, name: str, what: str) -> bytes | None:
    """The PEM file at ``template`` with ``{name}`` filled in, or ``None`` if not configured."""
    if not template:
        return None
    path = Path(template.replace("{name}", name)).expanduser()
    if not path.is_file():
        raise ConfigError(f"comm_args.{what}: {str(path)!r} does not exist")
    return path.read_bytes()


@dataclass
class NetSettings:
    """Everything the networked runtime needs, resolved for one process (``name``)."""

    name: str
    address: str
    port: int
    client_ids: list[int]
    tokens: dict[int, str] = field(default_factory=dict)
    tls_ca: bytes | None = None
    tls_cert: bytes | None = None
    tls_key: bytes | None = None
    quorum: int | None = None
    quorum_timeout: float = 10.0
    round_timeout: float = 300.0
    max_message_bytes: int = 4 << 20
    join_timeout: float = 60.0
    reconnect_timeout: float = 600.0
    max_update_norm: float = 1e12

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, name: str = "server") -> NetSettings:
        c = cfg.comm_args
        ca = read_pem(c.tls_ca, name, "tls_ca")
        cert = read_pem(c.tls_cert, name, "tls_cert")
        key = read_pem(c.tls_key, name, "tls_key")
        if (cert is None) != (key is None):
            raise ConfigError("comm_args.tls_cert and comm_args.tls_key go together")
        if name == "server" and ca is not None and cert is None:
            raise ConfigError("comm_args.tls_ca is set but the server has no tls_cert/tls_key")
        if c.quorum is not None and c.quorum < 1:
            raise ConfigError(f"comm_args.quorum must be >= 1 (or none), got {c.quorum}")
        if c.max_message_mb <= 0:
            raise ConfigError(f"comm_args.max_message_mb must be positive, got {c.max_message_mb}")
        return cls(
            name=name,
            address=c.server_address,
            port=c.server_port,
            client_ids=client_ids(cfg),
            tokens=load_tokens(cfg),
            tls_ca=ca,
            tls_cert=cert,
            tls_key=key,
            quorum=c.quorum,
            quorum_timeout=c.quorum_timeout,
            round_timeout=c.round_timeout,
            max_message_bytes=max(int(c.max_message_mb * (1 << 20)), 4096),
            join_timeout=c.join_timeout,
            reconnect_timeout=c.reconnect_timeout,
            max_update_norm=c.max_update_norm,
        )

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None or self.tls_ca is not None

    @property
    def target(self) -> str:
        host = self.address
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    def token_ok(self, client: int, token: str) -> bool:
        """Constant-time check of ``client``'s token (true when no tokens are configured)."""
        if not self.tokens:
            return True
        expected = self.tokens.get(client)
        return expected is not None and hmac.compare_digest(expected.encode(), token.encode())

    def grpc_options(self) -> list[tuple[str, int]]:
        return [
            ("grpc.max_send_message_length", self.max_message_bytes),
            ("grpc.max_receive_message_length", self.max_message_bytes),
        ]
