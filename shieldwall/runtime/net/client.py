"""The networked runtime's client half: join, fetch a round, compute, upload, repeat.

:meth:`GrpcClientRuntime.serve` loops ``Join`` → (``Fetch`` → :meth:`ClientExecutor.run` →
``Upload``)* until the server answers ``STOP``. Transport failures (server down or restarting,
network loss) are retried with exponential back-off and jitter; after ``reconnect_timeout``
seconds without reaching the server the client gives up. Final, as :class:`ClientRefused`: a
refused identity (unknown id, wrong token, wrong certificate); a duplicate-session refusal
while the holder has a call open (three times), or that lasts longer than a crashed
predecessor's session could (``SESSION_TTL`` + 5 s): another live process runs this client; and
a TLS mismatch (:mod:`.tls_hint`: a plaintext client meeting a TLS server, a server certificate
that does not verify, a TLS client meeting a plaintext server, a client certificate the server
refuses), each with the setting to fix.
"""

from __future__ import annotations

import logging
import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
from torch import Tensor

from shieldwall.algorithms.base import LocalResult
from shieldwall.runtime.base import ClientExecutor, RoundPlan, Runtime
from shieldwall.runtime.net import wire
from shieldwall.runtime.net.hub import LIVE, POLL_SECONDS, SESSION_TTL
from shieldwall.runtime.net.settings import NetSettings
from shieldwall.runtime.net.tls_hint import TlsDiagnosis
from shieldwall.runtime.net.wire import Kind, WireError

__all__ = ["GrpcClientRuntime", "ClientRefused", "Backoff", "RoundTask", "Connection"]

log = logging.getLogger(__name__)

FINAL = (grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED)


class ClientRefused(RuntimeError):
    """The server refused this client's identity (unknown id, bad token or certificate)."""


@dataclass
class Backoff:
    """Exponential back-off with jitter: ``base · 2^k`` capped at ``cap``, times U(0.5, 1)."""

    base: float = 0.2
    cap: float = 5.0
    attempt: int = 0

    def next(self) -> float:
        delay = min(self.cap, self.base * 2**self.attempt)
        self.attempt += 1
        return delay * random.uniform(0.5, 1.0)

    def reset(self) -> None:
        self.attempt = 0


@dataclass
class RoundTask:
    """A round as one client received it."""

    round: int
    nonce: str
    index: int
    plan: RoundPlan
    params: Tensor


class Connection:
    """One channel to the server with this client's credentials (also used by tests)."""

    def __init__(self, settings: NetSettings, client_id: int, token: str = "") -> None:
        self.settings = settings
        self.client_id = client_id
        self.token = token
        self.session = ""
        options = settings.grpc_options()
        if settings.tls:
            creds = grpc.ssl_channel_credentials(
                root_certificates=settings.tls_ca, private_key=settings.tls_key,
                certificate_chain=settings.tls_cert,
            )
            self.channel = grpc.secure_channel(settings.target, creds, options=options)
        else:
            self.channel = grpc.insecure_channel(settings.target, options=options)
        path = f"/{wire.SERVICE}/"
        self._join = self.channel.unary_unary(path + wire.JOIN)
        self._fetch = self.channel.unary_stream(path + wire.FETCH)
        self._upload = self.channel.stream_unary(path + wire.UPLOAD)

    def metadata(self) -> tuple[tuple[str, str], ...]:
        return ((wire.META_CLIENT, str(self.client_id)), (wire.META_TOKEN, self.token),
                (wire.META_SESSION, self.session))

    def join(self, instance: str, silo: int = 1, timeout: float = 30.0,
             ready: bool = True) -> dict:
        hello = {"instance": instance, "silo": silo, "ready": ready}
        reply = self._join(wire.encode(Kind.HELLO, hello), metadata=self.metadata(),
                           timeout=timeout)
        welcome = wire.decode(reply, Kind.WELCOME).header
        self.session = str(welcome["session"])
        return welcome

    def fetch(self) -> RoundTask | int:
        """The next round for this client, or ``Kind.WAIT``/``Kind.STOP``."""
        frames = self._fetch(wire.encode(Kind.FETCH), metadata=self.metadata(),
                             timeout=POLL_SECONDS + self.settings.round_timeout)
        head = next(frames, None)
        if head is None:
            raise WireError("the server ended the fetch without a frame")
        first = wire.decode(head, (Kind.ROUND, Kind.WAIT, Kind.STOP))
        if first.kind != Kind.ROUND:
            return first.kind
        rnd = wire.check_round(first.header)
        buf = bytearray()
        for raw in frames:
            buf += wire.decode(raw, Kind.CHUNK).payload
            if len(buf) > rnd.nbytes:
                raise WireError(f"the server sent more than the {rnd.nbytes} bytes it declared")
        params = wire.tensor_from_bytes(buf, rnd.dtype, rnd.shape)
        poisoned = frozenset({rnd.index}) if rnd.poisoned else frozenset()
        plan = RoundPlan(rnd.round, rnd.clients, poisoned)
        return RoundTask(rnd.round, rnd.nonce, rnd.index, plan, params)

    def upload_frames(self, header: dict, chunks: Iterator[bytes]) -> dict:
        """Send an ``UPLOAD`` header then ``chunks`` (already framed); the server's ``ACK``."""

        def stream() -> Iterator[bytes]:
            yield wire.encode(Kind.UPLOAD, header)
            yield from chunks

        reply = self._upload(stream(), metadata=self.metadata(),
                             timeout=self.settings.round_timeout)
        return wire.decode(reply, Kind.ACK).header

    def upload(self, task: RoundTask, result: LocalResult) -> dict:
        data = wire.tensor_bytes(result.update)
        header = {
            "round": task.round, "nonce": task.nonce, "num_samples": result.num_samples,
            "loss": result.loss, "dtype": wire.dtype_name(result.update.dtype),
            "shape": list(result.update.shape), "nbytes": len(data),
        }
        return self.upload_frames(
            header, wire.chunk_frames(data, wire.chunk_size(self.settings.max_message_bytes))
        )

    def close(self) -> None:
        self.channel.close()


class GrpcClientRuntime(Runtime):
    """A client process: serves the server's rounds (see module docstring).

    Args:
        settings: resolved ``comm_args`` for this client (``name`` = ``client-K``).
        executor: hosts this client's shard under its round index (may be set after
            :meth:`check_in`, so that a refused client never loads its data).
        client_id: FedML's client id ``K`` (an entry of ``client_id_list``).
        token: this client's secret.
        silo: DDP processes behind this client (reported to the server).
    """

    is_server = False

    def __init__(
        self, settings: NetSettings, executor: ClientExecutor | None, client_id: int,
        token: str = "", silo: int = 1,
    ) -> None:
        if client_id not in settings.client_ids:
            raise ValueError(
                f"client id {client_id} is not in train_args.client_id_list "
                f"{settings.client_ids}"
            )
        self.settings = settings
        self.executor = executor
        self.client_id = client_id
        self.token = token
        self.silo = silo
        self.instance = secrets.token_hex(8)
        self.rounds_done = 0

    @classmethod
    def from_config(cls, cfg, executor):  # type: ignore[no-untyped-def]
        raise NotImplementedError("client processes are built by `shieldwall client`")

    def run_clients(self, params, plan):  # type: ignore[no-untyped-def]
        raise NotImplementedError("a client process does not run rounds")

    def check_in(self) -> None:
        """Join once (retrying while the server is away), not yet ready for rounds: a refused
        identity fails here, before the client loads its data."""
        self._loop(join_only=True)

    def serve(self) -> None:
        self._loop(join_only=False)

    def _loop(self, join_only: bool) -> None:
        backoff = Backoff(cap=min(5.0, self.settings.reconnect_timeout))
        last_contact = time.monotonic()
        duplicate_since: float | None = None
        live_refusals = 0
        tls = TlsDiagnosis(self.settings)
        while True:
            conn = Connection(self.settings, self.client_id, self.token)
            try:
                conn.join(self.instance, self.silo, ready=not join_only)
                duplicate_since, live_refusals = None, 0
                tls.reset()
                if join_only:
                    return
                log.info("client %d joined %s", self.client_id, self.settings.target)
                while True:
                    task = conn.fetch()
                    last_contact = time.monotonic()
                    backoff.reset()
                    if task == Kind.STOP:
                        log.info("client %d: server says training is over (%d rounds done)",
                                 self.client_id, self.rounds_done)
                        return
                    if isinstance(task, RoundTask):
                        self._answer(conn, task)
            except grpc.RpcError as exc:
                code, details = exc.code(), exc.details()
                if code in FINAL:
                    raise ClientRefused(
                        f"server refused client {self.client_id}: {details}"
                    ) from None
                if code == grpc.StatusCode.FAILED_PRECONDITION:
                    log.info("client %d: %s", self.client_id, details)
                    continue
                if code == grpc.StatusCode.ALREADY_EXISTS:
                    now = time.monotonic()
                    duplicate_since = duplicate_since or now
                    live_refusals += LIVE in (details or "")
                    if live_refusals >= 3 or now - duplicate_since > SESSION_TTL + 5:
                        raise ClientRefused(
                            f"server refused client {self.client_id}: {details}; that process "
                            "is alive (stop it, or start this one with another --rank)"
                        ) from None
                hint = tls.observe(code, details or "")
                if hint is not None:
                    raise ClientRefused(f"client {self.client_id}: {hint}") from None
                waited = time.monotonic() - last_contact
                if waited > self.settings.reconnect_timeout:
                    raise ConnectionError(
                        f"client {self.client_id}: no contact with {self.settings.target} for "
                        f"{waited:.0f}s (last error: {code.name}: {details})"
                    ) from None
                delay = backoff.next()
                log.info("client %d: %s (%s); retrying in %.1fs", self.client_id, code.name,
                         details, delay)
                time.sleep(delay)
            except WireError as exc:
                log.warning("client %d: malformed message from the server: %s", self.client_id,
                            exc)
                time.sleep(backoff.next())
            finally:
                conn.close()

    def _answer(self, conn: Connection, task: RoundTask) -> None:
        started = time.perf_counter()
        assert self.executor is not None, "check_in() first, then set the executor"
        result = self.executor.run(task.params, task.plan, task.index)
        ack = conn.upload(task, result)
        self.rounds_done += 1
        if ack.get("accepted"):
            log.debug("client %d: round %d uploaded (%.2fs)", self.client_id, task.round,
                      time.perf_counter() - started)
        else:
            log.warning("client %d: round %d row refused: %s", self.client_id, task.round,
                        ack.get("reason"))
