"""The networked runtime's server half: the :class:`Runtime` that ``shieldwall server`` drives.

``run_clients`` publishes the round (round id, fresh nonce, plan, global vector) to the
:class:`~.hub.Hub`, which hands it to the round's clients as they poll (``Fetch``) and collects
their rows (``Upload``). The round closes by the rules of :mod:`.hub` (everyone answered; a
quorum of accepted rows after ``quorum_timeout``; only written-off clients missing; the adaptive
deadline; ``round_timeout``); clients that did not answer get NaN rows rejected as
``absent: …``, which the server's round treats like any other rejected (Byzantine) row. Each
client's sample-count claim is bounded by its shard size, which the server computes from the
same partition the clients use (:func:`sample_caps`). Attacks and aggregation stay in
:class:`~shieldwall.algorithms.server.Server`, as on every runtime.
"""

from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

import grpc
import torch
from torch import Tensor

from shieldwall.config import ConfigError, ExperimentConfig
from shieldwall.data import load_dataset
from shieldwall.data.partition import partition_indices
from shieldwall.runtime.base import RUNTIMES, ClientExecutor, RoundPlan, RoundResults, Runtime
from shieldwall.runtime.net.hub import MAX_CALLS_PER_CLIENT, Hub
from shieldwall.runtime.net.settings import NetSettings, client_ids

__all__ = ["GrpcServerRuntime", "server_credentials", "sample_caps"]

log = logging.getLogger(__name__)


def server_credentials(s: NetSettings) -> grpc.ServerCredentials | None:
    """TLS credentials when a certificate is configured; client certificates are required
    (mutual TLS) when ``tls_ca`` is set too."""
    if s.tls_cert is None or s.tls_key is None:
        return None
    return grpc.ssl_server_credentials(
        [(s.tls_key, s.tls_cert)], root_certificates=s.tls_ca,
        require_client_auth=s.tls_ca is not None,
    )


def sample_caps(cfg: ExperimentConfig, shard_sizes: list[int]) -> dict[int, int]:
    """``{client index: shard size}``: the most each networked client may claim as its sample
    count. Client ``K`` trains on part ``K - 1`` of the data split into ``partition_parts``
    parts (the clients' ``client_num_in_total``); ``shard_sizes`` are the server's own parts,
    used when its split is the clients' (else the split is recomputed from the labels)."""
    from shieldwall.config.fedml import fedml_semantics

    ids = client_ids(cfg)
    parts = cfg.comm_args.partition_parts or cfg.train_args.client_num_in_total
    sizes = list(shard_sizes)
    if parts != len(sizes):
        d = cfg.data_args
        dataset = load_dataset(d.dataset, d.data_cache_dir)
        sizes = [len(p) for p in partition_indices(
            dataset.train_y, parts, d.partition_method, alpha=d.partition_alpha,
            seed=cfg.common_args.random_seed, min_size=d.partition_min_size)]
    if fedml_semantics(cfg) and parts > len(ids):
        # FedML's data_silo_selection: a silo trains a different part each round, so its claim
        # is bounded by the largest part (still a bound: no client may claim more than that).
        return {i: max(sizes) for i in range(len(ids))}
    return {i: sizes[k - 1] if k - 1 < len(sizes) else 0 for i, k in enumerate(ids)}


@RUNTIMES.register("grpc", aliases=("network", "networked"))
class GrpcServerRuntime(Runtime):
    """Serves rounds to networked clients over gRPC (see module docstring).

    Args:
        settings: the resolved ``comm_args`` (address, port, tokens, TLS, quorum, timeouts).
        dim: length of the global vector.
        sample_caps: client index → the largest sample count it may claim (its shard size).
    """

    is_server = True

    def __init__(self, settings: NetSettings, dim: int, sample_caps: dict[int, int]) -> None:
        self.settings = settings
        self.hub = Hub(settings, dim, sample_caps)
        # a thread for every call the clients may hold open at once (MAX_CALLS_PER_CLIENT
        # each, counted before any message is read), so that no client's calls can starve
        # another's; calls refused at once (unauthenticated, over the cap) get the spare slots
        workers = MAX_CALLS_PER_CLIENT * len(settings.client_ids) + 8
        self._server = grpc.server(
            ThreadPoolExecutor(max_workers=workers, thread_name_prefix="sw-grpc"),
            handlers=(self.hub.handler(),),
            options=[*settings.grpc_options(), ("grpc.so_reuseport", 0)],
            maximum_concurrent_rpcs=2 * workers,
        )
        creds = server_credentials(settings)
        try:
            if creds is None:
                self.port = self._server.add_insecure_port(settings.target)
            else:
                self.port = self._server.add_secure_port(settings.target, creds)
        except RuntimeError as exc:
            raise ConfigError(f"cannot listen on {settings.target}: {exc}") from None
        if self.port == 0:
            raise ConfigError(f"cannot listen on {settings.target} (address in use?)")
        self._server.start()
        self._waited = False
        if creds is None:
            log.warning("serving on %s:%d WITHOUT TLS (configure comm_args.tls_cert/tls_key "
                        "and tls_ca; see docs/networked.md)", settings.address, self.port)
        else:
            log.info("serving on %s:%d with TLS%s", settings.address, self.port,
                     " and client certificates" if settings.tls_ca else "")
        if not settings.tokens:
            log.warning("no client tokens configured (comm_args.auth_tokens/token_file)")
        log.info("a round waits at most comm_args.round_timeout = %gs (less once clients have "
                 "answered: adaptive deadline; quorum %s after %gs; see docs/networked.md)",
                 settings.round_timeout, settings.quorum or "all", settings.quorum_timeout)

    @classmethod
    def from_config(cls, cfg: ExperimentConfig, executor: ClientExecutor) -> GrpcServerRuntime:
        ids = client_ids(cfg)
        if cfg.train_args.client_num_in_total != len(ids):
            raise ConfigError(
                "runtime grpc plans over the clients of train_args.client_id_list "
                f"({len(ids)}) but client_num_in_total is {cfg.train_args.client_num_in_total}; "
                "start the server with `shieldwall server CONFIG`, which maps one to the other"
            )
        sizes = [len(executor.shards[c]) for c in sorted(executor.shards)]
        return cls(NetSettings.from_config(cfg, "server"), executor.dim, sample_caps(cfg, sizes))

    def run_clients(self, params: Tensor, plan: RoundPlan) -> RoundResults:
        hub, s = self.hub, self.settings
        if not self._waited:
            self._waited = True
            missing = hub.wait_joined(s.join_timeout)
            if missing:
                log.warning("starting without clients %s (not connected or not ready after "
                            "%gs: comm_args.join_timeout)", missing, s.join_timeout)
        r = hub.open_round(plan, params.detach().cpu())
        why = hub.wait_round(r)
        n = len(plan.client_ids)
        updates = torch.full((n, hub.dim), float("nan"), dtype=params.dtype)
        num_samples = torch.zeros(n, dtype=torch.float64)
        losses = torch.full((n,), float("nan"), dtype=torch.float64)
        rejected: dict[int, str] = {}
        with hub.cond:
            answers = dict(r.answers)
        for i, index in enumerate(plan.client_ids):
            answer = answers.get(index)
            if answer is None:
                rejected[index] = hub.absent_reason(r, index)
            elif answer.row is None:
                rejected[index] = str(answer.reason)
            else:
                updates[i] = answer.row.to(params.dtype)
                num_samples[i] = answer.num_samples
                losses[i] = answer.loss
        log.info("round %d closed (%s) after %.2fs: %d of %d rows accepted%s", plan.round, why,
                 time.monotonic() - r.started, n - len(rejected), n,
                 f"; rejected {rejected}" if rejected else "")
        return RoundResults(updates.to(params.device), num_samples, losses, rejected)

    def close(self) -> None:
        self.hub.finish(grace=5.0)
        self._server.stop(grace=1.0).wait()
