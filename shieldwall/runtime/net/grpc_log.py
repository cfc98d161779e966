"""Summarising gRPC's own handshake lines on the server's standard error.

gRPC's C core writes one raw line to file descriptor 2 for every failed TLS handshake
(``ssl_transport_security.cc:…] Handshake failed with error SSL_ERROR_SSL: …``): a client without
TLS or with the wrong CA, retrying every second, fills the server's console. Python's logging
never sees these lines, so :class:`HandshakeSummary` sits on the descriptor itself: it points fd 2
at a pipe, passes every other line through unchanged, and turns handshake failures into at most
one log line per :data:`WINDOW_S` seconds (``N TLS handshakes failed in the last 60 s (last:
WRONG_VERSION_NUMBER): a client without TLS, or with another CA?``). The first failure is
reported at once. Leaving the context restores fd 2 and forwards what is still in the pipe.
"""

from __future__ import annotations

import logging
import os
import re
import select
import sys
import threading
import time

__all__ = ["HandshakeSummary", "WINDOW_S"]

log = logging.getLogger(__name__)

WINDOW_S = 60.0
"""At most one summary line per this many seconds."""

_HANDSHAKE = re.compile(r"Handshake failed with (?:fatal )?error (\S+): (.*)$")
_HINTS = {
    "WRONG_VERSION_NUMBER": "a client without TLS?",
    "PEER_DID_NOT_RETURN_A_CERTIFICATE": "a client without a certificate (mutual TLS)?",
    "BAD_SIGNATURE": "a client certificate from another CA?",
    "CERTIFICATE_VERIFY_FAILED": "a client certificate from another CA?",
}


def _reason(detail: str) -> str:
    for key in _HINTS:
        if key in detail:
            return key
    return detail.split(":")[-1].strip()[:80] or "unknown"


class HandshakeSummary:
    """Context manager: summarise gRPC handshake failures written to fd 2 (module docstring)."""

    def __init__(self, window_s: float = WINDOW_S) -> None:
        self.window_s = window_s
        self.failures = 0
        self._pending = 0
        self._last_reason = ""
        self._last_report = -float("inf")
        self._saved: int | None = None
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def __enter__(self) -> HandshakeSummary:
        try:
            sys.stderr.flush()
            self._saved = os.dup(2)
            read, write = os.pipe()
            os.dup2(write, 2)
            os.close(write)
        except OSError as exc:  # no fd 2 to wrap (embedded interpreters): leave it alone
            log.debug("not summarising gRPC handshake lines: %s", exc)
            self._saved = None
            return self
        self._thread = threading.Thread(target=self._pump, args=(read,), daemon=True,
                                        name="sw-grpc-stderr")
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self._saved is None:
            return
        sys.stderr.flush()
        os.dup2(self._saved, 2)  # closes the pipe's last write end: the pump sees EOF
        if self._thread is not None:
            self._thread.join(timeout=5.0)
        os.close(self._saved)
        self._saved = None
        self._flush(force=True)

    def _write(self, data: bytes) -> None:
        fd = self._saved if self._saved is not None else 2
        try:
            os.write(fd, data)
        except OSError:
            pass

    def _pump(self, read: int) -> None:
        buf = b""
        with os.fdopen(read, "rb", buffering=0) as pipe:
            while True:
                try:
                    ready, _, _ = select.select([pipe], [], [], 5.0)
                    data = pipe.read(65536) if ready else None
                except (OSError, ValueError):
                    data = b""
                if data is None:  # quiet: report what is pending once the window is over
                    self._flush()
                    continue
                if not data:
                    break
                buf += data
                *lines, buf = buf.split(b"\n")
                for line in lines:
                    self._line(line + b"\n")
                self._flush()
        if buf:
            self._line(buf)

    def _line(self, line: bytes) -> None:
        match = _HANDSHAKE.search(line.decode(errors="replace").rstrip())
        if match is None:
            self._write(line)
            return
        with self._lock:
            self.failures += 1
            self._pending += 1
            self._last_reason = _reason(match.group(2))

    def _flush(self, force: bool = False) -> None:
        with self._lock:
            now = time.monotonic()
            if not self._pending or (not force and now - self._last_report < self.window_s):
                return
            first = self._last_report == -float("inf")
            count, reason = self._pending, self._last_reason
            self._pending, self._last_report = 0, now
        span = "" if first else f" in the last {self.window_s:g}s"
        hint = _HINTS.get(reason, "a client with another TLS configuration?")
        text = (f"WARNING shieldwall.runtime.net: {count} TLS handshake"
                f"{'s' if count > 1 else ''} failed{span} (last: {reason}): {hint} "
                f"(gRPC's handshake lines are summarised, one line per {self.window_s:g}s)\n")
        self._write(text.encode())
