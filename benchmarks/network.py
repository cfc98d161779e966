"""Networked runtime on loopback: round time and bytes on the wire against the payload size.

For 4 and 16 clients and vectors of 10^3 … 10^6 float32 values, the server
(:class:`GrpcServerRuntime`, in this process) runs rounds whose clients (threads of one spawned
process, each a real :class:`GrpcClientRuntime` whose "training" returns the vector unchanged,
so only communication is timed) fetch the global vector and upload one row each.

* *payload*: ``n × d × 4`` bytes down (the vector to each client) plus the same up (rows);
* *frames*: what the protocol writes (payload + frame headers), counted by the server;
* *wire*: TCP payload bytes between clients and server (HTTP/2 + gRPC framing + our frames),
  counted by a byte-counting TCP relay process in between (a second pass, so the relay does not
  slow the timed pass); TCP/IP headers are not counted (loopback MTU is 64 KiB);
* *overhead* = wire / payload; *round time*: median of ``--rounds`` rounds of the timed pass.

Usage: ``python benchmarks/network.py [--quick] [--out docs/benchmarks/network.txt]``.
"""

from __future__ import annotations

import argparse
import logging
import multiprocessing as mp
import os
import platform
import socket
import statistics
import threading
import time
from datetime import datetime
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

import shieldwall.train  # noqa: E402,F401  (algorithms before the runtime package)
from shieldwall.algorithms.base import LocalResult  # noqa: E402
from shieldwall.runtime.base import RoundPlan  # noqa: E402
from shieldwall.runtime.net.client import GrpcClientRuntime  # noqa: E402
from shieldwall.runtime.net.server import GrpcServerRuntime  # noqa: E402
from shieldwall.runtime.net.settings import NetSettings  # noqa: E402


class Identity:
    """A client whose update is the global vector itself (no computation)."""

    def run(self, params: torch.Tensor, plan: RoundPlan, client_id: int) -> LocalResult:
        return LocalResult(params, 1, 0.0)


def swarm(port: int, ids: list[int], mb: float) -> None:
    """Client process: one thread per client id, until the server says stop."""
    torch.set_num_threads(1)
    s = NetSettings(name="client", address="127.0.0.1", port=port, client_ids=ids,
                    max_message_bytes=int(mb * (1 << 20)), reconnect_timeout=60)
    threads = [threading.Thread(target=GrpcClientRuntime(s, Identity(), k).serve) for k in ids]
    for t in threads:
        t.start()
    for t in threads:
        t.join()


def relay(listen: socket.socket, target: int, up: mp.Value, down: mp.Value) -> None:
    """Forward TCP connections to ``127.0.0.1:target`` and count the bytes each way."""

    def pump(src: socket.socket, dst: socket.socket, counter: mp.Value) -> None:
        try:
            while data := src.recv(1 << 20):
                dst.sendall(data)
                with counter.get_lock():
                    counter.value += len(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    while True:
        conn, _ = listen.accept()
        peer = socket.create_connection(("127.0.0.1", target))
        for args in ((conn, peer, up), (peer, conn, down)):
            threading.Thread(target=pump, args=args, daemon=True).start()


def measure(
    n: int, dims: list[int], rounds: int, mb: float, via_relay: bool
) -> dict[int, dict[str, float]]:
    """Per vector length: median round time, wire and frame bytes per round (one session of
    ``n`` clients; the vector length changes between rounds)."""
    ids = list(range(1, n + 1))
    settings = NetSettings(name="server", address="127.0.0.1", port=0, client_ids=ids,
                           join_timeout=120, round_timeout=300,
                           max_message_bytes=int(mb * (1 << 20)))
    rt = GrpcServerRuntime(settings, dims[0], {i: 1 << 30 for i in range(n)})
    ctx = mp.get_context("spawn")
    port, extra = rt.port, []
    up, down = ctx.Value("q", 0), ctx.Value("q", 0)
    if via_relay:
        listen = socket.socket()
        listen.bind(("127.0.0.1", 0))
        listen.listen(64)
        proc = ctx.Process(target=relay, args=(listen, rt.port, up, down), daemon=True)
        proc.start()
        port = listen.getsockname()[1]
        extra.append(proc)
    clients = ctx.Process(target=swarm, args=(port, ids, mb))
    clients.start()
    out: dict[int, dict[str, float]] = {}
    r = 0
    for dim in dims:
        rt.hub.dim = dim  # the vector's length may change between rounds (clients follow)
        params = torch.randn(dim)
        rt.run_clients(params, RoundPlan(r, tuple(range(n))))  # warm-up
        r += 1
        times = []
        up0, down0, in0, out0 = up.value, down.value, rt.hub.bytes_in, rt.hub.bytes_out
        for _ in range(rounds):
            start = time.perf_counter()
            res = rt.run_clients(params, RoundPlan(r, tuple(range(n))))
            times.append(time.perf_counter() - start)
            assert not res.rejected, res.rejected
            r += 1
        out[dim] = {
            "time": statistics.median(times),
            "wire": (up.value - up0 + down.value - down0) / rounds,
            "frames": (rt.hub.bytes_in - in0 + rt.hub.bytes_out - out0) / rounds,
        }
    rt.close()
    clients.join(timeout=60)
    for proc in extra:
        proc.terminate()
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer sizes and rounds")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--max-message-mb", type=float, default=4.0)
    parser.add_argument("--out", default="docs/benchmarks/network.txt")
    args = parser.parse_args()
    logging.getLogger("shieldwall").setLevel(logging.ERROR)  # no per-run "no TLS" warnings
    dims = [10**3, 10**4, 10**5] if args.quick else [10**3, 10**4, 10**5, 10**6]
    rounds = 2 if args.quick else args.rounds
    head = (f"{'clients':>7} {'dim':>9} {'payload MB':>10} {'frames MB':>10} {'wire MB':>9} "
            f"{'overhead':>8} {'round s':>8} {'MB/s':>8}")
    lines = [
        f"# benchmarks/network.py — {datetime.now():%Y-%m-%d %H:%M}, {platform.node()}, "
        f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start",
        f"# loopback, no TLS, max_message_mb {args.max_message_mb:g}, float32 rows, "
        f"median of {rounds} rounds; payload = n*d*4 bytes each way",
        head,
    ]
    print("\n".join(lines), flush=True)
    for n in (4, 16):
        timed = measure(n, dims, rounds, args.max_message_mb, via_relay=False)
        counted = measure(n, dims, 1, args.max_message_mb, via_relay=True)
        for dim in dims:
            payload = 2 * n * dim * 4
            t, c = timed[dim], counted[dim]
            row = (f"{n:>7} {dim:>9} {payload / 1e6:>10.3f} {c['frames'] / 1e6:>10.3f} "
                   f"{c['wire'] / 1e6:>9.3f} {c['wire'] / payload:>8.3f} "
                   f"{t['time']:>8.3f} {payload / 1e6 / t['time']:>8.1f}")
            lines.append(row)
            print(row, flush=True)
    lines.append(f"# load average {os.getloadavg()[0]:.1f} at the end")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
