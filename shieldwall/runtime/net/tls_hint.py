"""Telling a TLS mismatch from a server that is away, so that a misconfigured client stops at
once with the setting to fix instead of retrying "Socket closed" until ``reconnect_timeout``.

gRPC reports every failed connection as ``UNAVAILABLE``; the details tell the cases apart:

* ``Connection refused`` (nothing listens: the server is down or restarting) — retry;
* ``Tls handshake failed … WRONG_VERSION_NUMBER`` (this client speaks TLS, the server does not);
* ``Tls handshake failed …`` with a certificate error (``CERTIFICATE_VERIFY_FAILED``,
  ``BAD_SIGNATURE``…: the server's certificate does not chain to ``comm_args.tls_ca``);
* ``Socket closed`` (the TCP connection opened, then the server hung up): a plaintext client
  meeting a TLS server, a TLS client whose certificate the server refuses (mutual TLS), or a
  server going down at that moment. :func:`speaks_tls` settles it: it opens one TLS handshake
  itself (no verification; it only asks whether the other side answers in TLS).

A verdict is given after :data:`REPEATS` identical failures in a row (a fraction of a second
with the client's back-off), so that a server restarting between two attempts is never taken
for a misconfiguration.
"""

from __future__ import annotations

import socket
import ssl

import grpc

from shieldwall.runtime.net.settings import NetSettings

__all__ = ["TlsDiagnosis", "speaks_tls", "REPEATS"]

REPEATS = 3
"""Identical TLS-looking failures in a row before the client gives up with a hint."""

_CERT_ERRORS = ("CERTIFICATE_VERIFY_FAILED", "BAD_SIGNATURE", "certificate signature failure",
                "unable to get local issuer", "self signed", "self-signed", "CERTIFICATE_",
                "Peer name", "hostname")


def speaks_tls(host: str, port: int, timeout: float = 3.0) -> bool | None:
    """Whether ``host:port`` answers a TLS handshake (``None``: cannot connect at all)."""
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["h2"])
    try:
        sock = socket.create_connection((host.strip("[]"), port), timeout=timeout)
    except OSError:
        return None
    try:
        with ctx.wrap_socket(sock, server_hostname=None) as tls:
            tls.settimeout(timeout)
            return True  # handshake done: a TLS server (it may still want a certificate)
    except ssl.SSLError as exc:
        # An alert from the peer (it wants a client certificate, …) is a TLS answer; a plaintext
        # server's reply is not a TLS record (WRONG_VERSION_NUMBER, record layer failure).
        text = f"{exc.reason} {exc}".upper()
        return "ALERT" in text and "WRONG_VERSION" not in text
    except OSError:
        return False
    finally:
        sock.close()


class TlsDiagnosis:
    """Watches a client's failed calls; :meth:`observe` returns a hint once it is sure."""

    def __init__(self, settings: NetSettings) -> None:
        self.settings = settings
        self.last: str | None = None
        self.count = 0

    def reset(self) -> None:
        self.last, self.count = None, 0

    def observe(self, code: grpc.StatusCode, details: str) -> str | None:
        """The hint for this failure if it is the :data:`REPEATS`-th of one kind in a row."""
        kind = self._kind(code, details)
        if kind is None:
            self.reset()
            return None
        self.count = self.count + 1 if kind == self.last else 1
        self.last = kind
        if self.count < REPEATS:
            return None
        return self._hint(kind, details)

    def _kind(self, code: grpc.StatusCode, details: str) -> str | None:
        if code != grpc.StatusCode.UNAVAILABLE:
            return None
        if "handshake failed" in details.lower():
            if "WRONG_VERSION_NUMBER" in details:
                return "server-plaintext"
            if any(e.lower() in details.lower() for e in _CERT_ERRORS):
                return "bad-server-cert"
            return None
        if "socket closed" in details.lower():
            return "closed"
        return None

    def _hint(self, kind: str, details: str) -> str | None:
        s = self.settings
        target = f"{s.target}"
        if kind == "server-plaintext":
            return (f"TLS handshake with {target} failed: the server does not speak TLS. Remove "
                    "comm_args.tls_ca/tls_cert/tls_key on this client, or configure the server "
                    "with tls_cert/tls_key (see docs/networked.md)")
        if kind == "bad-server-cert":
            short = details.rsplit("SSL_ERROR_SSL:", 1)[-1].strip()[:160]
            return (f"TLS handshake with {target} failed: the server's certificate does not "
                    f"verify against comm_args.tls_ca (a CA other than the one that signed the "
                    f"server's certificate, or a host name not in it?): {short}")
        tls = speaks_tls(s.address, s.port)
        if not tls:
            self.count = 0 if tls is None else self.count  # down: not a TLS question
            return None
        if not s.tls:
            return (f"the server at {target} speaks TLS but this client is configured without "
                    "it: set comm_args.tls_ca (the CA of the server's certificate) and, for "
                    "mutual TLS, comm_args.tls_cert/tls_key (this client's certificate, "
                    "{name} -> client-K) (see docs/networked.md)")
        if s.tls_cert is None:
            return (f"the server at {target} closes the connection after the TLS handshake: it "
                    "requires a client certificate (mutual TLS); set comm_args.tls_cert/"
                    "tls_key to this client's certificate and key")
        return (f"the server at {target} closes the connection after the TLS handshake: it "
                "refuses this client's certificate (not signed by the CA in the server's "
                "comm_args.tls_ca?)")
