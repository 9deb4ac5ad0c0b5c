"""The SeaweedFS test server and its fault proxy (tests/s3server.py), with real clients."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from botocore.exceptions import ClientError, ConnectionError, HTTPClientError, ReadTimeoutError

from tests.s3server import ACCESS_KEY, SECRET_KEY, Fault, SeaweedS3, make_bucket, s3_client

BUCKET = "fiqa-test"


def weed_pids(data_dir: Path) -> list[int]:
    """Processes whose command line names ``data_dir``."""
    needle = str(data_dir).encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline and b"weed" in cmdline:
            pids.append(int(entry.name))
    return pids


@pytest.fixture(scope="module")
def server():
    s3 = SeaweedS3()
    try:
        make_bucket(s3.endpoint, BUCKET)
        yield s3
    finally:
        s3.stop()


@pytest.fixture(autouse=True)
def _no_rules_left(request):
    yield
    if "server" in request.fixturenames:
        request.getfixturevalue("server").faults.clear()


def code_of(err: ClientError) -> tuple[str, int]:
    return err.response["Error"]["Code"], err.response["ResponseMetadata"]["HTTPStatusCode"]


def test_starts_fast_and_only_on_loopback(server):
    assert server.start_seconds < 10
    assert server.endpoint != server.direct_endpoint
    assert len(str(server.data_dir / "filer.sock")) < 100
    listening = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            if state == "0A":  # LISTEN
                listening.add((local.rsplit(":", 1)[0], int(local.rsplit(":", 1)[1], 16)))
    ours = {(addr, port) for addr, port in listening if port in set(server.ports.values())}
    assert ours, "weed listens on none of its ports"
    assert {addr for addr, _ in ours} == {"0100007F"}  # 127.0.0.1 only


def test_put_get_and_signatures_are_checked(server):
    c = server.client()
    c.put_object(Bucket=BUCKET, Key="hello/a.txt", Body=b"hello")
    assert c.get_object(Bucket=BUCKET, Key="hello/a.txt")["Body"].read() == b"hello"
    assert ("GET", f"{BUCKET}/hello/a.txt", "") in server.faults.requests
    big = os.urandom(3 * 2**20)  # botocore sends "Expect: 100-continue" for this one
    c.put_object(Bucket=BUCKET, Key="hello/big", Body=big)
    assert c.get_object(Bucket=BUCKET, Key="hello/big")["Body"].read() == big

    bad = s3_client(server.endpoint, max_attempts=1, secret_key="wrong")
    with pytest.raises(ClientError) as e:
        bad.get_object(Bucket=BUCKET, Key="hello/a.txt")
    assert code_of(e.value) == ("SignatureDoesNotMatch", 403)
    with pytest.raises(ClientError) as e:
        bad.put_object(Bucket=BUCKET, Key="hello/b.txt", Body=b"x" * 100_000)
    assert code_of(e.value) == ("SignatureDoesNotMatch", 403)
    # and anonymous requests too
    from botocore import UNSIGNED

    anon = s3_client(server.endpoint, max_attempts=1, signature_version=UNSIGNED)
    with pytest.raises(ClientError) as e:
        anon.get_object(Bucket=BUCKET, Key="hello/a.txt")
    assert code_of(e.value)[1] == 403


def test_no_bucket_is_created_on_upload(server):
    c = server.client(max_attempts=1)
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket="fiqa-no-such-bucket", Key="k", Body=b"1")
    assert code_of(e.value) == ("NoSuchBucket", 404)


def test_conditional_writes(server):
    c = server.client(max_attempts=1)
    first = c.put_object(Bucket=BUCKET, Key="cond/k", Body=b"v1", IfNoneMatch="*")["ETag"]
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=BUCKET, Key="cond/k", Body=b"v2", IfNoneMatch="*")
    assert code_of(e.value) == ("PreconditionFailed", 412)
    second = c.put_object(Bucket=BUCKET, Key="cond/k", Body=b"v2", IfMatch=first)["ETag"]
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=BUCKET, Key="cond/k", Body=b"v3", IfMatch=first)  # stale
    assert code_of(e.value) == ("PreconditionFailed", 412)
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=BUCKET, Key="cond/missing", Body=b"v", IfMatch=first)
    assert code_of(e.value)[1] in (404, 412)  # AWS: 404 NoSuchKey; SeaweedFS 4.48: 412
    assert c.get_object(Bucket=BUCKET, Key="cond/k")["Body"].read() == b"v2"
    c.put_object(Bucket=BUCKET, Key="cond/k", Body=b"v3", IfMatch=second)
    assert c.get_object(Bucket=BUCKET, Key="cond/k")["Body"].read() == b"v3"


def test_conditional_writes_race(server):
    """Of writers racing through the proxy, exactly one wins a create and a compare-and-swap.

    SeaweedFS serializes contended conditional writes with a lock it retries about once a
    second: a losing writer may wait a second or more per writer ahead of it. Hence only 3.
    """
    c = server.client(max_attempts=1, max_pool_connections=8)

    def race(tag: str, **condition) -> list[str]:
        start = threading.Barrier(3)

        def put(i: int) -> str:
            start.wait()
            try:  # distinct bodies: a winner rewriting the same bytes would keep the ETag
                c.put_object(Bucket=BUCKET, Key="race/k", Body=f"{tag}{i}".encode(), **condition)
                return "ok"
            except ClientError as e:
                return e.response["Error"]["Code"]

        with ThreadPoolExecutor(3) as pool:
            return sorted(pool.map(put, range(3)))

    assert race("create", IfNoneMatch="*") == ["PreconditionFailed"] * 2 + ["ok"]
    etag = c.head_object(Bucket=BUCKET, Key="race/k")["ETag"]
    assert race("swap", IfMatch=etag) == ["PreconditionFailed"] * 2 + ["ok"]


def test_s3fs_multipart_through_a_faulty_proxy(server):
    import s3fs

    fs = s3fs.S3FileSystem(skip_instance_cache=True, **server.storage_options)
    data = os.urandom(12 * 2**20)
    # the first try of each part upload gets a 503 SlowDown: aiobotocore retries it
    part_fault = server.faults.add(Fault(method="PUT", key=r"big\.bin$", query="uploadId"))
    with fs.open(f"{BUCKET}/s3fs/big.bin", "wb", block_size=5 * 2**20) as f:
        for i in range(0, len(data), 2**20):  # 5 MB parts as the buffer fills
            f.write(data[i:i + 2**20])
    assert part_fault.fired == 1 and part_fault.seen >= 4  # 3 parts, one retried
    with fs.open(f"{BUCKET}/s3fs/big.bin", "rb") as f:
        back = f.read()
    assert hashlib.sha256(back).digest() == hashlib.sha256(data).digest()
    assert fs.find(f"{BUCKET}/s3fs") == [f"{BUCKET}/s3fs/big.bin"]
    assert fs.info(f"{BUCKET}/s3fs/big.bin")["size"] == len(data)


def test_pyarrow_native_s3_parquet(server):
    import pyarrow as pa
    import pyarrow.parquet as pq
    from pyarrow import fs as pafs

    s3 = pafs.S3FileSystem(
        endpoint_override=server.endpoint.removeprefix("http://"), access_key=ACCESS_KEY,
        secret_key=SECRET_KEY, region="us-east-1", scheme="http")
    table = pa.table({"id": list(range(10_000)), "score": [i / 3 for i in range(10_000)]})
    pq.write_table(table, f"{BUCKET}/arrow/t.parquet", filesystem=s3)
    # the AWS SDK inside pyarrow sees the injected 503s too, and retries them
    rule = server.faults.add(Fault(method="GET", key=r"arrow/t\.parquet$", times=1))
    assert pq.read_table(f"{BUCKET}/arrow/t.parquet", filesystem=s3).equals(table)
    assert rule.fired == 1 and rule.seen >= 2
    infos = s3.get_file_info(pafs.FileSelector(f"{BUCKET}/arrow", recursive=True))
    assert [i.path for i in infos] == [f"{BUCKET}/arrow/t.parquet"]


def test_slowdown_once_per_key_is_retried(server):
    c = server.client()
    for name in ("a.bin", "b.bin", "c.txt"):
        c.put_object(Bucket=BUCKET, Key=f"slow/{name}", Body=name.encode())
    rule = server.faults.add(Fault(method="GET", key=r"\.bin$", times=1))

    # as the jobs configure botocore; its "max_attempts" counts retries: 1 + 3 tries
    retrying = s3_client(server.endpoint, retries={"mode": "standard", "max_attempts": 3})
    assert retrying.get_object(Bucket=BUCKET, Key="slow/a.bin")["Body"].read() == b"a.bin"
    assert (rule.fired, rule.seen) == (1, 2)
    assert retrying.get_object(Bucket=BUCKET, Key="slow/a.bin")["Body"].read() == b"a.bin"
    assert (rule.fired, rule.seen) == (1, 3)
    assert retrying.get_object(Bucket=BUCKET, Key="slow/c.txt")["Body"].read() == b"c.txt"
    assert rule.seen == 3  # not a .bin
    assert retrying.head_object(Bucket=BUCKET, Key="slow/b.bin")["ContentLength"] == 5
    assert rule.fired == 1  # a HEAD is no GET

    once = server.client(max_attempts=1)  # total_max_attempts=1: no retry
    with pytest.raises(ClientError) as e:
        once.get_object(Bucket=BUCKET, Key="slow/b.bin")
    assert code_of(e.value) == ("SlowDown", 503)
    assert e.value.response["Error"]["Message"] == "Please reduce your request rate."
    assert rule.fired == 2
    assert once.get_object(Bucket=BUCKET, Key="slow/b.bin")["Body"].read() == b"b.bin"
    # botocore's retries={"max_attempts": 1} is one retry: a single SlowDown is absorbed
    c.put_object(Bucket=BUCKET, Key="slow/d.bin", Body=b"d.bin")
    one_retry = s3_client(server.endpoint, retries={"mode": "standard", "max_attempts": 1})
    assert one_retry.get_object(Bucket=BUCKET, Key="slow/d.bin")["Body"].read() == b"d.bin"
    assert rule.fired == 3

    server.faults.clear()
    always = server.faults.add(Fault(method="GET", key=r"slow/a\.bin$", times=None,
                                     status=500, code="InternalError", message="boom"))
    for _ in range(2):
        with pytest.raises(ClientError) as e:
            once.get_object(Bucket=BUCKET, Key="slow/a.bin")
        assert code_of(e.value) == ("InternalError", 500)
    assert always.fired == always.seen == 2


def test_faults_on_heads_and_bodies(server):
    c = server.client(max_attempts=1)
    c.put_object(Bucket=BUCKET, Key="hb/x", Body=b"x")
    server.faults.add(Fault(method="HEAD", key="hb/x$", code="NotFound", status=404))
    with pytest.raises(ClientError) as e:
        c.head_object(Bucket=BUCKET, Key="hb/x")
    assert code_of(e.value)[1] == 404
    # a refused upload with a body the proxy never forwards: the client still reads the answer
    put = server.faults.add(Fault(method="PUT", key="hb/big$", times=None))
    for body in (b"y" * 3 * 2**20, b"z" * 100):
        with pytest.raises(ClientError) as e:
            c.put_object(Bucket=BUCKET, Key="hb/big", Body=body)
        assert code_of(e.value) == ("SlowDown", 503)
    assert put.fired == 2
    listing = server.faults.add(Fault(method="GET", query="list-type", times=None))
    with pytest.raises(ClientError) as e:
        c.list_objects_v2(Bucket=BUCKET, Prefix="hb/")
    assert code_of(e.value) == ("SlowDown", 503)
    assert listing.fired == 1
    server.faults.clear()
    assert [o["Key"] for o in c.list_objects_v2(Bucket=BUCKET, Prefix="hb/")["Contents"]] == [
        "hb/x"]


def test_reset_is_a_connection_error(server):
    c = server.client()
    c.put_object(Bucket=BUCKET, Key="reset/k", Body=b"k")
    rule = server.faults.add(Fault(method="GET", key="reset/k$", times=1, action="reset"))
    with pytest.raises((HTTPClientError, ConnectionError)):
        server.client(max_attempts=1).get_object(Bucket=BUCKET, Key="reset/k")
    assert rule.fired == 1
    rule.times = 2
    assert c.get_object(Bucket=BUCKET, Key="reset/k")["Body"].read() == b"k"  # retried
    assert rule.fired == 2


def test_callable_action_sees_the_request(server):
    seen = []
    rule = server.faults.add(Fault(method="PUT", key=r"\.parquet$", times=None,
                                   action=lambda req: seen.append((req.method, req.path))))
    c = server.client(max_attempts=1)
    c.put_object(Bucket=BUCKET, Key="call/x y+z.parquet", Body=b"p")  # forwarded normally
    assert seen == [("PUT", f"{BUCKET}/call/x y+z.parquet")]
    assert c.get_object(Bucket=BUCKET, Key="call/x y+z.parquet")["Body"].read() == b"p"
    assert rule.fired == rule.seen == 1

    server.faults.add(Fault(method="PUT", key=r"refuse$", action=lambda req: "error"))
    with pytest.raises(ClientError) as e:
        c.put_object(Bucket=BUCKET, Key="call/refuse", Body=b"r")
    assert code_of(e.value) == ("SlowDown", 503)

    def broken(req):
        raise RuntimeError(f"bug in a test's callable, at {req.path}")

    server.faults.add(Fault(method="GET", key=r"call/broken$", action=broken))
    with pytest.raises((HTTPClientError, ConnectionError)):
        c.get_object(Bucket=BUCKET, Key="call/broken")
    assert [str(e) for e in server.faults.errors] == [
        f"bug in a test's callable, at {BUCKET}/call/broken"]


def test_many_clients_at_once(server):
    c = server.client(max_pool_connections=32)
    keys = [f"many/{i:03d}" for i in range(16)]
    rule = server.faults.add(Fault(method="GET", key="^" + BUCKET + "/many/", times=1))

    def roundtrip(key: str) -> bytes:
        c.put_object(Bucket=BUCKET, Key=key, Body=key.encode())
        return c.get_object(Bucket=BUCKET, Key=key)["Body"].read()

    with ThreadPoolExecutor(16) as pool:
        assert list(pool.map(roundtrip, keys)) == [k.encode() for k in keys]
    assert rule.fired == 16 and rule.seen == 32
    assert sum(1 for m, path, _ in server.faults.requests if path.startswith(f"{BUCKET}/many/")
               and m == "PUT") == 16


def test_pause_and_resume(server):
    c = server.client()
    c.put_object(Bucket=BUCKET, Key="pause/k", Body=b"k")
    impatient = server.client(max_attempts=1, read_timeout=1, connect_timeout=1)
    server.pause()
    try:
        with pytest.raises((ReadTimeoutError, ConnectionError)):
            impatient.get_object(Bucket=BUCKET, Key="pause/k")
    finally:
        server.resume()
    assert impatient.get_object(Bucket=BUCKET, Key="pause/k")["Body"].read() == b"k"


def test_kill_and_restart_keep_the_data(server):
    c = server.client()
    c.put_object(Bucket=BUCKET, Key="durable/k", Body=b"before the crash")
    ports = dict(server.ports)

    # a crash in the middle of a job: the first PUT of a .parquet kills the server
    crash = server.faults.add(Fault(method="PUT", key=r"\.parquet$",
                                    action=lambda req: server.kill()))
    once = server.client(max_attempts=1)
    with pytest.raises((HTTPClientError, ConnectionError)):
        once.put_object(Bucket=BUCKET, Key="durable/x.parquet", Body=b"p")
    assert crash.fired == 1 and not server.running
    with pytest.raises((HTTPClientError, ConnectionError)):  # down: connections drop
        once.get_object(Bucket=BUCKET, Key="durable/k")

    # the S3 port is still taken for a moment: weed exits at start, restart() tries again
    blocker = socket.socket()
    blocker.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # past TIME_WAIT, as weed
    blocker.bind(("127.0.0.1", server.s3_port))
    blocker.listen(1)
    threading.Timer(1.0, blocker.close).start()
    assert 0.9 <= server.restart() < 30
    assert server.ports == ports
    assert c.get_object(Bucket=BUCKET, Key="durable/k")["Body"].read() == b"before the crash"
    c.put_object(Bucket=BUCKET, Key="durable/x.parquet", Body=b"p")  # times=1: not again
    assert c.get_object(Bucket=BUCKET, Key="durable/x.parquet")["Body"].read() == b"p"

    # restarts from several threads at once (timers, proxy threads): one server in the end
    threads = [threading.Thread(target=server.restart) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert weed_pids(server.data_dir) == [server.proc.pid]
    assert c.get_object(Bucket=BUCKET, Key="durable/x.parquet")["Body"].read() == b"p"


def test_stop_leaves_nothing_behind():
    with SeaweedS3() as s3:
        data_dir, proxy_port = s3.data_dir, s3.faults.port
        make_bucket(s3.endpoint, "stop-me")
        assert weed_pids(data_dir) == [s3.proc.pid]
        s3.pause()  # stop() copes with a paused server too
    assert weed_pids(data_dir) == []
    assert not data_dir.exists()
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", proxy_port)) != 0
    s3.stop()  # idempotent

    # a given data dir is kept: a crash, then a new server (new ports) on it sees the objects
    given = Path("/tmp") / f"fiqa-s3-given-{os.getpid()}-{time.monotonic_ns() % 10**6}"
    try:
        crashed = SeaweedS3(given)
        make_bucket(crashed.endpoint, "kept")
        crashed.client().put_object(Bucket="kept", Key="k", Body=b"kept")
        crashed.kill()
        crashed.stop()
        assert given.is_dir() and weed_pids(given) == []
        with SeaweedS3(given) as s3:
            assert s3.client().get_object(Bucket="kept", Key="k")["Body"].read() == b"kept"
            s3.kill()  # (the graceful stop is tested above; spare its 1.4 s)
        assert given.is_dir() and weed_pids(given) == []
    finally:
        shutil.rmtree(given, ignore_errors=True)
