"""The networked runtime's protocol, in one process: a real gRPC server on 127.0.0.1 and
clients speaking to it directly (honest, refused, replaying, duplicate, garbage, TLS)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
import torch

import shieldwall.train  # noqa: F401  (imports the algorithms before the runtime package)
from shieldwall.algorithms.base import LocalResult
from shieldwall.cli import main
from shieldwall.config import config_from_dict
from shieldwall.runtime.base import RoundPlan
from shieldwall.runtime.net import wire
from shieldwall.runtime.net.client import ClientRefused, Connection, GrpcClientRuntime, RoundTask
from shieldwall.runtime.net.server import GrpcServerRuntime
from shieldwall.runtime.net.settings import NetSettings, network_view
from shieldwall.runtime.net.wire import Kind, WireError

DIM = 6
REPO = Path(__file__).resolve().parents[1]


def settings(ids=(1, 2, 3), **kw) -> NetSettings:
    base = dict(name="server", address="127.0.0.1", port=0, client_ids=list(ids),
                join_timeout=0.0, round_timeout=10.0, quorum_timeout=10.0,
                max_message_bytes=4096)
    base.update(kw)
    return NetSettings(**base)


@pytest.fixture
def server():
    made: list[GrpcServerRuntime] = []

    def make(dim: int = DIM, caps: int = 1000, **kw) -> GrpcServerRuntime:
        s = settings(**kw)
        rt = GrpcServerRuntime(s, dim, {i: caps for i in range(len(s.client_ids))})
        rt.hub.poll = 0.3  # WAIT answers come quickly
        made.append(rt)
        return rt

    yield make
    for rt in made:
        rt.hub.finish(grace=0.0)
        rt._server.stop(grace=0).wait()


def client_settings(rt: GrpcServerRuntime, name: str = "client", **kw) -> NetSettings:
    s = settings(rt.settings.client_ids, port=rt.port, name=name,
                 max_message_bytes=rt.settings.max_message_bytes, **kw)
    return s


def connect(rt: GrpcServerRuntime, client: int, token: str = "", instance: str = "") -> Connection:
    conn = Connection(client_settings(rt), client, token)
    conn.join(instance or f"instance-{client}")
    return conn


def start_round(rt: GrpcServerRuntime, r: int = 0, ids=(0, 1, 2)) -> Future:
    pool = ThreadPoolExecutor(1)
    future = pool.submit(rt.run_clients, torch.zeros(DIM), RoundPlan(r, tuple(ids)))
    pool.shutdown(wait=False)
    return future


def fetch_round(conn: Connection) -> RoundTask:
    for _ in range(20):
        task = conn.fetch()
        if isinstance(task, RoundTask):
            return task
    raise AssertionError("no round")


def answer(conn: Connection, task: RoundTask, row: torch.Tensor, **head) -> dict:
    return conn.upload(task, LocalResult(row, head.get("num_samples", 10), 0.5))


class Echo:
    """An executor whose row is ``params + client index + 1``."""

    def run(self, params, plan, client_id):
        return LocalResult(params + client_id + 1, 10 * (client_id + 1), 0.1)


def test_clients_answer_rounds_in_plan_order(server):
    big = 3000  # 12 kB rows travel as several chunks of the 4 kB message limit
    rt = server(dim=big)
    threads = [threading.Thread(target=GrpcClientRuntime(client_settings(rt), Echo(), k).serve,
                                daemon=True) for k in (1, 2, 3)]
    for t in threads:
        t.start()
    for r in range(3):
        res = rt.run_clients(torch.full((big,), float(r)), RoundPlan(r, (2, 0)))
        assert res.rejected == {}
        assert torch.equal(res.updates, torch.stack([torch.full((big,), r + 3.0),
                                                     torch.full((big,), r + 1.0)]))
        assert res.num_samples.tolist() == [30.0, 10.0]
    assert rt.hub.bytes_out > 3 * 2 * big * 4 and rt.hub.bytes_in > 3 * 2 * big * 4
    rt.close()
    for t in threads:
        t.join(timeout=10)
        assert not t.is_alive()  # every client heard STOP


def test_wrong_token_and_unknown_client_are_refused_and_logged(server, caplog):
    rt = server(tokens={1: "one", 2: "two", 3: "three"})
    caplog.set_level(logging.WARNING)
    for client, token, why in [(1, "two", "bad token for client 1"), (9, "one", "unknown client 9"),
                               (2, "", "bad token for client 2")]:
        with pytest.raises(grpc.RpcError) as err:
            connect(rt, client, token)
        assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
        assert why in err.value.details() and why in caplog.text
    with pytest.raises(ClientRefused, match="bad token"):
        GrpcClientRuntime(client_settings(rt), Echo(), 3, "wrong").serve()
    connect(rt, 1, "one")  # the right token works


def test_duplicate_client_is_refused_and_stale_sessions_rejoin(server, caplog):
    rt = server()
    first = connect(rt, 1, instance="a")
    with pytest.raises(grpc.RpcError) as err:
        connect(rt, 1, instance="b")
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    assert "duplicate client 1" in caplog.text
    old_session = first.session
    first.join("a")  # the same process may rejoin; its old session is then stale
    first.session, new = old_session, first.session
    with pytest.raises(grpc.RpcError) as err:
        first.fetch()
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    first.session = new
    assert first.fetch() == Kind.WAIT


def test_replayed_stale_and_duplicate_uploads_are_refused(server, caplog):
    rt = server()
    conns = [connect(rt, k) for k in (1, 2, 3)]
    future = start_round(rt, 0)
    tasks = [fetch_round(c) for c in conns]
    assert answer(conns[0], tasks[0], torch.ones(DIM))["accepted"]
    dup = answer(conns[0], tasks[0], torch.ones(DIM))
    assert not dup["accepted"] and "duplicate upload" in dup["reason"]
    for c, t in zip(conns[1:], tasks[1:]):
        assert answer(c, t, torch.ones(DIM))["accepted"]
    assert future.result(timeout=10).rejected == {}
    future = start_round(rt, 1)
    replay = answer(conns[0], tasks[0], torch.ones(DIM))  # round 0's header, replayed
    assert not replay["accepted"] and "stale round 0" in replay["reason"]
    forged = RoundTask(1, "0" * 32, 0, tasks[0].plan, tasks[0].params)  # right round, wrong nonce
    assert "stale round" in answer(conns[0], forged, torch.ones(DIM))["reason"]
    assert "refused upload from client 1: stale round" in caplog.text
    for c in conns:
        answer(c, fetch_round(c), torch.ones(DIM))
    assert future.result(timeout=10).rejected == {}


def raw_upload(conn: Connection, task: RoundTask, head: dict, chunks: list[bytes]) -> dict:
    header = {"round": task.round, "nonce": task.nonce, "num_samples": 1, "loss": 0.1,
              "dtype": "float32", "shape": [DIM], "nbytes": DIM * 4, **head}
    return conn.upload_frames(header, iter(chunks))


def test_garbage_rows_are_rejected_with_reasons(server):
    ids = list(range(1, 10))
    # A short round timeout: gRPC may kill the oversize stream before our handler starts, and
    # then client 6 is simply absent until the round times out.
    rt = server(ids=ids, max_update_norm=100.0, round_timeout=5.0, quorum_timeout=5.0)
    conns = [connect(rt, k) for k in ids]
    future = start_round(rt, 0, ids=tuple(range(9)))
    tasks = [fetch_round(c) for c in conns]
    good = wire.tensor_bytes(torch.ones(DIM))

    def chunk(data: bytes) -> bytes:
        return wire.encode(Kind.CHUNK, None, data)

    assert answer(conns[0], tasks[0], torch.ones(DIM))["accepted"]
    answer(conns[1], tasks[1], torch.full((DIM,), float("nan")))
    answer(conns[2], tasks[2], torch.ones(DIM + 3))  # wrong shape (too long)
    answer(conns[3], tasks[3], torch.ones(2))  # wrong shape
    raw_upload(conns[4], tasks[4], {}, [chunk(good[:10])])  # truncated stream
    with pytest.raises(grpc.RpcError) as err:  # one message above the limit
        raw_upload(conns[5], tasks[5], {}, [chunk(b"\0" * 8000)])
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    answer(conns[6], tasks[6], torch.full((DIM,), 1e3))  # norm above the bound
    raw_upload(conns[7], tasks[7], {"nbytes": 7}, [chunk(good)])  # lying header
    raw_upload(conns[8], tasks[8], {}, [chunk(good), chunk(b"\0" * 8)])  # more than declared
    res = future.result(timeout=10)
    reasons = res.rejected
    assert set(reasons) == set(range(1, 9)) and not torch.isnan(res.updates[0]).any()
    assert "non-finite" in reasons[1]
    assert "oversize upload" in reasons[2] and "shape (2,)" in reasons[3]
    assert "truncated upload: 10 of 24 bytes" in reasons[4]
    # Whether the handler sees the broken stream or gRPC fails the call before the handler runs
    # is a race inside gRPC; either way the row is not used.
    assert any(word in reasons[5] for word in ("truncated", "stream broken", "absent"))
    assert "norm" in reasons[6] and "nbytes" in reasons[7] and "oversize stream" in reasons[8]
    assert torch.isnan(res.updates[1:]).all()


def test_round_closes_at_quorum_or_timeout_without_stalled_clients(server):
    rt = server(quorum=2, quorum_timeout=0.3, round_timeout=1.0)
    conns = [connect(rt, k) for k in (1, 2, 3)]
    future = start_round(rt, 0)
    tasks = [fetch_round(c) for c in conns]  # client 3 fetches and then stalls
    for c, t in zip(conns[:2], tasks[:2]):
        answer(c, t, torch.ones(DIM))
    res = future.result(timeout=5)
    assert list(res.rejected) == [2] and "fetched the round but sent no row" in res.rejected[2]
    late = answer(conns[2], tasks[2], torch.ones(DIM))
    assert not late["accepted"] and "closed" in late["reason"]
    future = start_round(rt, 1)  # nobody answers: the round timeout closes it
    res = future.result(timeout=5)
    assert set(res.rejected) == {0, 1, 2}


def test_certs_never_overwrite_keys_and_create_private_files_private(tmp_path, capsys):
    out = tmp_path / "pki"
    assert main(["certs", str(out), "--clients", "2", "--tokens"]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert {oct(p.stat().st_mode & 0o777) for p in out.glob("*.key")} == {"0o600"}
    assert oct((out / "tokens.yaml").stat().st_mode & 0o777) == "0o600"
    capsys.readouterr()
    for argv in (["--clients", "2"], ["--clients", "3", "--tokens"]):
        assert main(["certs", str(out), *argv]) == 2
        err = capsys.readouterr().err
        assert "already exists" in err and "never overwritten" in err
        assert len(err.strip().splitlines()) == 1, err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # nothing replaced or added
    (out / "tokens.yaml").unlink()  # tokens.yaml is checked before any certificate is written
    assert main(["certs", str(out), "--clients", "2", "--tokens"]) == 2
    assert not (out / "tokens.yaml").exists()


@pytest.mark.parametrize(("clients", "days", "message"), [
    ("0", "30", "no client ids given"), ("1,1", "30", "duplicate client ids"),
    ("2", "0", "valid for >= 1 day"), ("-1", "30", "client ids start at 1"),
])
def test_certs_bad_clients_or_days_are_one_line(tmp_path, capsys, clients, days, message):
    assert main(["certs", str(tmp_path / "pki"), f"--clients={clients}", "--days", days]) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "pki").exists()


def test_mutual_tls_binds_certificates_to_client_ids(server, tmp_path, capsys):
    assert main(["certs", str(tmp_path), "--clients", "2", "--tokens"]) == 0
    assert "wrote" in capsys.readouterr().out
    pem = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    rt = server(ids=(1, 2), tls_ca=pem["ca.crt"], tls_cert=pem["server.crt"],
                tls_key=pem["server.key"])

    def tls_conn(client: int, cert: str | None) -> Connection:
        s = client_settings(rt, tls_ca=pem["ca.crt"],
                            tls_cert=pem[f"{cert}.crt"] if cert else None,
                            tls_key=pem[f"{cert}.key"] if cert else None)
        conn = Connection(s, client)
        conn.join(f"i{client}", timeout=5)
        return conn

    assert tls_conn(1, "client-1").fetch() == Kind.WAIT
    with pytest.raises(grpc.RpcError) as err:  # client 2's certificate claiming to be client 1
        tls_conn(1, "client-2")
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "is not client-1's" in err.value.details()
    with pytest.raises(grpc.RpcError) as err:  # no client certificate: the handshake fails
        tls_conn(2, None)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE
    with pytest.raises(grpc.RpcError):  # plaintext to a TLS server
        connect(rt, 2)


def test_wire_frames_are_checked():
    frame = wire.encode(Kind.ROUND, {"round": 3}, b"xyz")
    got = wire.decode(frame, Kind.ROUND)
    assert got.header == {"round": 3} and bytes(got.payload) == b"xyz"
    for bad in [b"", b"XX" + frame[2:], frame[:2] + b"\x09" + frame[3:], frame[:9]]:
        with pytest.raises(WireError):
            wire.decode(bad)
    with pytest.raises(WireError, match="expected"):
        wire.decode(frame, Kind.ACK)
    t = torch.randn(5, dtype=torch.float64)
    assert torch.equal(wire.tensor_from_bytes(wire.tensor_bytes(t), "float64", [5]), t)
    with pytest.raises(WireError):
        wire.tensor_from_bytes(b"\0" * 7, "float32", [2])
    chunks: Iterator[bytes] = wire.chunk_frames(b"a" * 2500, 1000)
    assert [len(wire.decode(c).payload) for c in chunks] == [1000, 1000, 500]


def test_network_view_counts_the_listed_clients():
    raw = {"train_args": {"client_id_list": "[1, 2]", "client_num_in_total": 1000,
                          "client_num_per_round": 2},
           "attack_args": {"enable_attack": True, "attack_type": "byzantine",
                           "attack_mode": "random", "byzantine_client_num": 1}}
    view = network_view(config_from_dict(raw))
    assert view.train_args.client_num_in_total == 2 and view.train_args.client_num_per_round == 2
    assert view.comm_args.runtime == "grpc" and network_view(view) == view
    assert view.comm_args.partition_parts == 1000  # the clients' split, kept for sample bounds
    raw["attack_args"]["byzantine_client_num"] = 3
    with pytest.raises(ValueError, match="exceeds"):
        network_view(config_from_dict(raw))


# ------------------------------------------------------------ issue 15: claims, quorum, waits
def test_sample_claims_above_the_shard_are_rejected(server):
    rt = server(caps=30)
    conns = [connect(rt, k) for k in (1, 2, 3)]
    future = start_round(rt, 0)
    tasks = [fetch_round(c) for c in conns]
    assert answer(conns[0], tasks[0], torch.ones(DIM), num_samples=30)["accepted"]
    liar = answer(conns[1], tasks[1], torch.ones(DIM), num_samples=1e15)
    assert not liar["accepted"] and "num_samples 1e+15 outside [1, 30]" in liar["reason"]
    half = answer(conns[2], tasks[2], torch.ones(DIM), num_samples=2.5)
    assert "not a whole number" in half["reason"]
    res = future.result(timeout=10)
    assert res.num_samples.tolist() == [30.0, 0.0, 0.0] and set(res.rejected) == {1, 2}


def test_sample_caps_come_from_the_clients_partition():
    from shieldwall.data.partition import partition_indices
    from shieldwall.runtime.net.server import sample_caps
    from shieldwall.train import build_components

    raw = {"data_args": {"dataset": "digits", "partition_method": "hetero",
                         "partition_alpha": 0.5},
           "train_args": {"client_id_list": [3, 7], "client_num_in_total": 10}}
    view = network_view(config_from_dict(raw))
    parts = build_components(view)  # the server's own split: 2 parts
    caps = sample_caps(view, [len(parts.shards[c]) for c in sorted(parts.shards)])
    split = partition_indices(parts.dataset.train_y, 10, "hetero", alpha=0.5, seed=0,
                              min_size=view.data_args.partition_min_size)
    assert caps == {0: len(split[2]), 1: len(split[6])}  # client K holds part K - 1 of 10


def test_rejected_rows_do_not_count_toward_the_quorum(server):
    rt = server(quorum=2, quorum_timeout=0.2, round_timeout=20.0)
    conns = [connect(rt, k) for k in (1, 2, 3)]
    future = start_round(rt, 0)
    tasks = [fetch_round(c) for c in conns]
    assert answer(conns[0], tasks[0], torch.ones(DIM))["accepted"]
    assert not answer(conns[1], tasks[1], torch.full((DIM,), float("nan")))["accepted"]
    time.sleep(1.0)  # two answers, one accepted: the quorum of 2 is not met
    assert not future.done()
    assert answer(conns[2], tasks[2], torch.ones(DIM))["accepted"]  # not "late"
    res = future.result(timeout=10)
    assert list(res.rejected) == [1]


def test_a_quorum_waits_for_the_rows_the_defense_needs(server):
    # quorum 1, but the defense needs 3 rows for its f (the plan's min_accepted): one fast
    # (e.g. Byzantine) row does not close the round
    rt = server(quorum=1, quorum_timeout=0.2, round_timeout=10.0)
    conns = [connect(rt, k) for k in (1, 2, 3)]
    pool = ThreadPoolExecutor(1)
    future = pool.submit(rt.run_clients, torch.zeros(DIM), RoundPlan(0, (0, 1, 2),
                                                                      min_accepted=3))
    tasks = [fetch_round(c) for c in conns]
    assert answer(conns[0], tasks[0], torch.full((DIM,), 5.0))["accepted"]
    time.sleep(1.0)
    assert not future.done()
    for c, t in zip(conns[1:], tasks[1:]):
        assert answer(c, t, torch.ones(DIM))["accepted"]
    assert future.result(timeout=10).rejected == {}
    pool.shutdown()


def test_a_silent_client_is_written_off_after_one_adaptive_deadline(server, monkeypatch, caplog):
    from shieldwall.runtime.net import hub

    monkeypatch.setattr(hub, "ADAPTIVE_SLACK", 1.0)
    rt = server(round_timeout=120.0)
    caplog.set_level(logging.INFO)
    conns = [connect(rt, k) for k in (1, 2, 3)]

    def play(r: int, who: list[int]):
        future = start_round(rt, r)
        for k in who:
            answer(conns[k], fetch_round(conns[k]), torch.ones(DIM))
        started = time.monotonic()
        return future.result(timeout=60), time.monotonic() - started

    res, _ = play(0, [0, 1, 2])  # every client answers: each has an answer time
    assert res.rejected == {}
    res, took = play(1, [0, 1])  # client 3 went silent: the adaptive deadline, not 120 s
    assert took < 30 and res.rejected[2] == "absent: did not fetch the round in time"
    assert "adaptive deadline" in caplog.text
    res, took = play(2, [0, 1])  # written off: the round closes as soon as the others answer
    assert took < 5 and "written off, not waited for" in res.rejected[2]
    assert "written-off clients [2]" in caplog.text
    res, _ = play(3, [2, 0, 1])  # it calls again: waited for again, and its row counts
    assert res.rejected == {}


def test_a_client_that_never_connected_costs_one_adaptive_deadline(server, monkeypatch):
    # as after a server restart: client 3 died before it and never connects to this server
    from shieldwall.runtime.net import hub

    monkeypatch.setattr(hub, "ADAPTIVE_SLACK", 1.0)
    rt = server(round_timeout=120.0)
    conns = [connect(rt, k) for k in (1, 2)]
    future = start_round(rt, 0)
    started = time.monotonic()
    for c in conns:
        answer(c, fetch_round(c), torch.ones(DIM))
    res = future.result(timeout=60)
    assert time.monotonic() - started < 30  # 4 x the others' answer time + 1 s, not 120 s
    assert res.rejected == {2: "absent: never connected"}
    future = start_round(rt, 1)  # written off from then on: not waited for at all
    started = time.monotonic()
    for c in conns:
        answer(c, fetch_round(c), torch.ones(DIM))
    assert "not waited for" in future.result(timeout=60).rejected[2]
    assert time.monotonic() - started < 5


def test_the_first_round_waits_for_clients_to_be_ready(server):
    rt = server()
    for k in (1, 2):
        connect(rt, k)
    loading = Connection(client_settings(rt), 3)
    loading.join("i3", ready=False)  # joined, still loading its data
    assert rt.hub.wait_joined(0.3) == [3]
    loading.join("i3")
    assert rt.hub.wait_joined(0.3) == []


def test_a_duplicate_of_a_live_client_gives_up_with_a_clear_line(server):
    rt = server()
    holder, stop = connect(rt, 1, instance="a"), threading.Event()

    def poll() -> None:  # a live client: always in a long poll, as the real one is
        while not stop.is_set():
            holder.fetch()

    thread = threading.Thread(target=poll, daemon=True)
    thread.start()
    time.sleep(0.2)
    started = time.monotonic()
    try:
        with pytest.raises(ClientRefused, match="duplicate client 1.*connected now.*is alive"):
            GrpcClientRuntime(client_settings(rt), Echo(), 1).check_in()
        assert time.monotonic() - started < 10
    finally:
        stop.set()
        thread.join(timeout=10)


@pytest.fixture(scope="module")
def two_cas(tmp_path_factory):
    pems = []
    for name in ("a", "b"):
        d = tmp_path_factory.mktemp(f"ca-{name}")
        assert main(["certs", str(d), "--clients", "1,2"]) == 0
        pems.append({p.name: p.read_bytes() for p in d.iterdir()})
    return pems


@pytest.mark.parametrize(("case", "hint"), [
    ("plaintext", "speaks TLS but this client is configured without it"),
    ("wrong-ca", "does not verify against comm_args.tls_ca"),
    ("no-cert", "requires a client certificate"),
    ("other-ca-cert", "refuses this client's certificate"),
    ("tls-to-plaintext", "the server does not speak TLS"),
])
def test_tls_mismatches_end_at_once_with_the_setting_to_fix(server, two_cas, case, hint):
    a, b = two_cas
    if case == "tls-to-plaintext":
        rt = server(ids=(1, 2))
    else:
        rt = server(ids=(1, 2), tls_ca=a["ca.crt"], tls_cert=a["server.crt"],
                    tls_key=a["server.key"])
    client = {
        "plaintext": {},
        "wrong-ca": dict(tls_ca=b["ca.crt"], tls_cert=a["client-1.crt"],
                         tls_key=a["client-1.key"]),
        "no-cert": dict(tls_ca=a["ca.crt"]),
        "other-ca-cert": dict(tls_ca=a["ca.crt"], tls_cert=b["client-1.crt"],
                              tls_key=b["client-1.key"]),
        "tls-to-plaintext": dict(tls_ca=a["ca.crt"]),
    }[case]
    started = time.monotonic()
    with pytest.raises(ClientRefused, match=hint):
        GrpcClientRuntime(client_settings(rt, reconnect_timeout=120.0, **client), Echo(),
                          1).check_in()
    assert time.monotonic() - started < 20  # not reconnect_timeout


def test_handshake_lines_are_summarised_not_repeated(tmp_path):
    script = (
        "import os, time\n"
        "from shieldwall.runtime.net.grpc_log import HandshakeSummary\n"
        "line = b'E1204 ssl_transport_security.cc:1] Handshake failed with error SSL_ERROR_SSL: "
        "error:100000f7:SSL routines:OPENSSL_internal:WRONG_VERSION_NUMBER: x\\n'\n"
        "with HandshakeSummary(window_s=60):\n"
        "    for _ in range(6):\n"
        "        os.write(2, line)\n"
        "        time.sleep(0.05)\n"
        "    os.write(2, b'an ordinary line\\n')\n"
        "    time.sleep(0.3)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env=env, timeout=60, cwd=REPO)
    assert out.returncode == 0, out.stderr
    assert "Handshake failed" not in out.stderr and "an ordinary line" in out.stderr
    lines = [x for x in out.stderr.splitlines() if "TLS handshake" in x]
    assert lines[0].startswith("WARNING") and "1 TLS handshake failed" in lines[0]
    assert "a client without TLS?" in lines[0]
    assert "5 TLS handshakes failed in the last 60s" in lines[-1] and len(lines) == 2


def test_hello_fields_are_bounded_and_calls_per_client_capped(server):
    rt = server()
    conn = Connection(client_settings(rt), 1)
    reply = conn._join(wire.encode(Kind.HELLO, {"instance": "x" * 3000, "silo": 10**12,
                                                "ready": "no"}), metadata=conn.metadata())
    conn.session = wire.decode(reply, Kind.WELCOME).header["session"]
    session = rt.hub.sessions[1]
    assert len(session.instance) == 64 and session.silo == 1 and session.ready
    rt.hub.poll = 3.0  # four long polls stay open while a fifth call comes
    pool = ThreadPoolExecutor(4)
    polls = [pool.submit(conn.fetch) for _ in range(4)]
    time.sleep(0.5)
    with pytest.raises(grpc.RpcError) as err:
        conn.fetch()
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert [p.result(timeout=10) for p in polls] == [Kind.WAIT] * 4
    pool.shutdown()


def test_calls_that_never_send_their_message_hold_no_worker_thread(server):
    # gRPC reads a unary request in a worker thread before the handler runs, with no deadline:
    # calls opened without their message used to hold every thread, then every RPC slot, before
    # any credential was checked (honest joins then timed out, then were RESOURCE_EXHAUSTED)
    from shieldwall.runtime.net.hub import MAX_CALLS_PER_CLIENT

    rt = server(ids=(1, 2), tokens={1: "one", 2: "two"})
    channel = grpc.insecure_channel(f"127.0.0.1:{rt.port}")
    release = threading.Event()

    def silent() -> Iterator[bytes]:  # opens the call, never sends a message
        release.wait(30)
        yield from ()

    def open_calls(method: str, count: int, metadata=()) -> list[grpc.Future]:
        call = channel.stream_unary(f"/{wire.SERVICE}/{method}")
        return [call.future(silent(), metadata=metadata) for _ in range(count)]

    try:
        strangers = open_calls(wire.JOIN, 30) + open_calls(wire.FETCH, 30)
        for call in strangers:  # refused at once, not after the message that never comes
            assert call.exception(timeout=10).code() == grpc.StatusCode.UNAUTHENTICATED
        rogue = open_calls(wire.JOIN, 10, ((wire.META_CLIENT, "2"), (wire.META_TOKEN, "two")))
        time.sleep(0.5)
        refused = [c for c in rogue if c.done()]
        assert len(refused) == 10 - MAX_CALLS_PER_CLIENT  # its calls beyond its cap
        assert all(c.exception().code() == grpc.StatusCode.RESOURCE_EXHAUSTED for c in refused)
        conn = Connection(client_settings(rt), 1, "one")
        assert conn.join("honest", timeout=5.0)["dim"] == DIM  # not starved by either
    finally:
        release.set()
        channel.close()


def test_a_row_that_never_finishes_neither_holds_the_server_nor_loops(server):
    rt = server(round_timeout=1.0, quorum_timeout=1.0)
    conns = [connect(rt, k) for k in (1, 2, 3)]
    future = start_round(rt, 0)
    tasks = [fetch_round(c) for c in conns]
    good = wire.tensor_bytes(torch.ones(DIM))
    release = threading.Event()

    def trickle() -> Iterator[bytes]:  # a few bytes, then nothing: the stream stays open
        yield wire.encode(Kind.CHUNK, None, good[:4])
        release.wait(30)

    assert answer(conns[0], tasks[0], torch.ones(DIM))["accepted"]
    empty = raw_upload(conns[1], tasks[1], {}, [wire.encode(Kind.CHUNK, None, b"")] * 50)
    assert not empty["accepted"] and "empty chunk" in empty["reason"]
    start = time.monotonic()
    with ThreadPoolExecutor(1) as pool:
        slow = pool.submit(conns[2].upload_frames,
                           {"round": tasks[2].round, "nonce": tasks[2].nonce, "num_samples": 1,
                            "loss": 0.1, "dtype": "float32", "shape": [DIM], "nbytes": DIM * 4},
                           trickle())
        res = future.result(timeout=10)
        try:  # the round's close cancels the upload still reading: the handler returns
            outcome = slow.result(timeout=10)
            assert not outcome["accepted"]
        except grpc.RpcError as exc:
            assert exc.code() == grpc.StatusCode.CANCELLED
        finally:
            release.set()
    assert time.monotonic() - start < 8
    assert "empty chunk" in res.rejected[1] and 2 in res.rejected
    assert rt.hub.current is None or not rt.hub.current.uploads


@pytest.mark.parametrize("head", [b"[" * 30000, b'{"num_samples": ' + b"9" * 5000 + b"}"],
                         ids=["nested-30000", "int-5000-digits"])
def test_headers_json_cannot_parse_are_wire_errors(head):
    # a RecursionError or a ValueError out of json.loads used to escape the handlers
    magic, version, kind, _ = wire._PREFIX.unpack_from(wire.encode(Kind.UPLOAD, {}))
    frame = wire._PREFIX.pack(magic, version, kind, len(head)) + head
    with pytest.raises(WireError, match="header is not JSON"):
        wire.decode(frame)


def test_a_round_is_handed_to_a_client_at_most_three_times(server):
    from shieldwall.runtime.net.hub import MAX_HANDOUTS

    rt = server(round_timeout=3.0, quorum_timeout=3.0)
    conns = [connect(rt, k) for k in (1, 2, 3)]
    future = start_round(rt, 0)
    tasks = [fetch_round(c) for c in conns]
    for _ in range(MAX_HANDOUTS - 1):  # a fetch cut off mid-stream may be fetched again
        assert isinstance(conns[0].fetch(), RoundTask)
    assert conns[0].fetch() == Kind.WAIT  # then no more copies of the vector
    for c, t in zip(conns, tasks):
        assert answer(c, t, torch.ones(DIM))["accepted"]
    assert future.result(timeout=10).rejected == {}
