"""A real S3-compatible server for the tests (SeaweedFS's ``weed mini``) behind a fault proxy.

``SeaweedS3`` runs SeaweedFS's single binary as a separate process, on 127.0.0.1 only, with
request signatures checked (access key and secret ``testing``). Clients talk to it through
``FaultProxy``, a small TCP-level HTTP proxy in the test process: it looks at each request's
head and either relays the connection byte for byte (bodies are never parsed, so chunked and
aws-chunked uploads and SigV4 signatures pass untouched) or injects a fault, a real S3 XML
error (503 SlowDown by default) or a connection reset. Because the faults are injected on the
wire, every client in every process sees them: boto3, s3fs/aiobotocore, pyarrow's native S3
client, Ray workers.

    with SeaweedS3() as s3:
        make_bucket(s3.endpoint, "lake")
        rule = s3.faults.add(Fault(method="GET", key=r"\\.parquet$", times=1))
        ...
        assert rule.fired == 1
"""

from __future__ import annotations

import atexit
import collections
import contextlib
import http.client
import json
import os
import random
import re
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.sax.saxutils import escape

ACCESS_KEY = "testing"
SECRET_KEY = "testing"
REGION = "us-east-1"

WEED = Path(sys.executable).parent / "weed"

# weed mini's components, each with an HTTP and a gRPC port.
_PORT_FLAGS = (
    "master.port", "master.port.grpc",
    "volume.port", "volume.port.grpc",
    "filer.port", "filer.port.grpc",
    "s3.port", "s3.port.grpc",
    "admin.port", "admin.port.grpc",
)


# ---------------------------------------------------------------------------------------------
# ports


def _ephemeral_range() -> tuple[int, int]:
    try:
        lo, hi = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(lo), int(hi)
    except (OSError, ValueError):
        return 32768, 60999


def _can_bind(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


# Ports are drawn from [20000, start of the kernel's ephemeral range): ports the kernel hands
# out itself (bind(0), outgoing connections) come from the ephemeral range, and one could take
# a killed server's port before restart() binds it again; below 20000 are Ray's worker ports
# (10002-19999 by default).
_PORT_LOW = 20000


def _port_ceiling() -> int:
    lo, _ = _ephemeral_range()
    return min(lo, 32768) - 1


def _free_ports(n: int, exclude: set[int] = frozenset()) -> list[int]:
    """``n`` distinct ports that are free on 127.0.0.1 now (see ``_PORT_LOW``).

    Falls back to ``bind(0)`` where the ephemeral range leaves no room below it.
    """
    top = _port_ceiling()
    ports: list[int] = []
    if top - _PORT_LOW > 1000:
        for _ in range(5000):
            p = random.randint(_PORT_LOW, top)
            if p not in exclude and p not in ports and _can_bind(p):
                ports.append(p)
                if len(ports) == n:
                    return ports
    socks = []
    try:
        while len(ports) < n:
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            socks.append(s)
            p = s.getsockname()[1]
            if p not in exclude and p not in ports:
                ports.append(p)
    finally:
        for s in socks:
            s.close()
    return ports


def _pick_weed_ports() -> dict[str, int]:
    """A port for each of weed mini's ``-*.port*`` flags.

    weed mini's plugin worker dials the admin server at admin.port + 10000 whatever
    ``-admin.port.grpc`` says, so the admin gRPC port is chosen to be exactly that (otherwise
    the worker retries forever and, worse, could reach another server's admin port).
    """
    top = _port_ceiling() - 10000
    lo, hi = (_PORT_LOW, top) if top - _PORT_LOW > 500 else (1025, 55535)
    admin = None
    for _ in range(5000):
        p = random.randint(lo, hi)
        if _can_bind(p) and _can_bind(p + 10000):
            admin = p
            break
    if admin is None:
        raise RuntimeError("found no free pair of ports for weed's admin server")
    rest = _free_ports(len(_PORT_FLAGS) - 2, exclude={admin, admin + 10000})
    ports = dict(zip(_PORT_FLAGS[:-2], rest, strict=True))
    ports["admin.port"] = admin
    ports["admin.port.grpc"] = admin + 10000
    return ports


# ---------------------------------------------------------------------------------------------
# the fault proxy


@dataclass
class ProxyRequest:
    """What the proxy knows of a request: its method, bucket, URL-decoded key and raw query."""

    method: str
    bucket: str
    key: str
    query: str
    headers: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> str:
        """``bucket/key`` (just ``bucket`` for bucket-level requests, ``""`` for the service)."""
        return f"{self.bucket}/{self.key}" if self.key else self.bucket


@dataclass(eq=False)
class Fault:
    """A rule of the fault proxy.

    It matches a request when ``method`` (None: any) is the request's method, ``key`` (a
    regular expression, ``re.search``-ed against ``bucket/key``; None: any) matches, and
    ``query`` (None: any) is a substring of the raw query string ("list-type" for listings,
    "uploadId" for multipart parts, "uploads" for multipart starts...).

    It fires at most ``times`` times for each distinct (method, bucket/key) (None: every time).
    ``action`` is what firing does: "error" answers with a real S3 XML error (``status``,
    ``code``, ``message``), "reset" closes the client's connection abruptly (TCP RST) without
    answering, and a callable is called with the ``ProxyRequest`` before the request is
    forwarded normally (it may return "error" or "reset" to have that done instead; if it
    raises, the connection is reset and the exception kept in ``FaultProxy.errors``). Rules are
    tried in the order added; callables that match all run, the first error/reset rule that
    fires answers the request (later rules don't see it).

    ``seen`` counts matching requests, ``fired`` the ones it acted on.
    """

    method: str | None = None
    key: str | None = None
    query: str | None = None
    times: int | None = 1
    status: int = 503
    code: str = "SlowDown"
    message: str = "Please reduce your request rate."
    action: str | Callable[[ProxyRequest], Any] = "error"
    fired: int = field(default=0, init=False)
    seen: int = field(default=0, init=False)
    counts: collections.Counter = field(default_factory=collections.Counter, init=False,
                                        repr=False)

    def __post_init__(self):
        if self.method is not None:
            self.method = self.method.upper()
        if not callable(self.action) and self.action not in ("error", "reset"):
            raise ValueError(f"unknown fault action {self.action!r}")
        if self.key is not None:
            re.compile(self.key)  # a bad pattern fails here, not in the proxy

    def matches(self, req: ProxyRequest) -> bool:
        if self.method is not None and req.method != self.method:
            return False
        if self.query is not None and self.query not in req.query:
            return False
        return self.key is None or re.search(self.key, req.path) is not None


_HEAD_LIMIT = 256 * 1024
_DRAIN_LIMIT = 64 * 1024 * 1024
_BUF = 256 * 1024


def _reset(sock: socket.socket) -> None:
    """Close ``sock`` abruptly: SO_LINGER 0 makes close() send a TCP RST."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _shutdown(sock: socket.socket, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


def _read_head(sock: socket.socket) -> tuple[bytes, bytes] | None:
    """The request head (through the blank line) and whatever of the body came with it."""
    buf = b""
    while True:
        i = buf.find(b"\r\n\r\n")
        if i >= 0:
            return buf[: i + 4], buf[i + 4:]
        if len(buf) > _HEAD_LIMIT:
            return None
        chunk = sock.recv(65536)
        if not chunk:
            return None
        buf += chunk


def _parse_head(head: bytes) -> tuple[ProxyRequest, list[bytes]]:
    lines = head[:-4].split(b"\r\n")
    parts = lines[0].decode("latin-1").split(" ")
    if len(parts) != 3:
        raise ValueError(f"not an HTTP request line: {lines[0][:200]!r}")
    method, target, _version = parts
    if "://" in target:  # absolute form: drop scheme and authority
        target = "/" + target.split("://", 1)[1].partition("/")[2]
    raw_path, _, query = target.partition("?")
    bucket, _, key = unquote(raw_path).lstrip("/").partition("/")
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.decode("latin-1").partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    return ProxyRequest(method.upper(), bucket, key, query, headers), lines


class FaultProxy:
    """A TCP-level HTTP proxy on 127.0.0.1 in front of ``upstream`` that can inject S3 faults.

    One request per connection: the request head is read and matched against the rules; when
    none fires, the head is sent on with its ``Connection`` header replaced by
    ``Connection: close`` (every other header byte for byte, so SigV4 signatures still verify)
    and the bytes are relayed raw both ways until the connection ends. Clients reconnect for
    the next request. Runs in daemon threads of the test process.
    """

    def __init__(self, upstream_host: str, upstream_port: int, port: int = 0,
                 max_requests: int = 100_000):
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._rules: list[Fault] = []
        self._requests: collections.deque = collections.deque(maxlen=max_requests)
        self._conns: set[socket.socket] = set()
        self.errors: list[BaseException] = []  # what callable actions raised
        self._stopped = threading.Event()
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(512)
        self._listener.settimeout(0.2)
        self.port = self._listener.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name=f"fault-proxy-{self.port}",
                                        daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # rules ------------------------------------------------------------------------------------

    def add(self, rule: Fault) -> Fault:
        with self._lock:
            self._rules.append(rule)
        return rule

    def remove(self, rule: Fault) -> None:
        with self._lock:
            with contextlib.suppress(ValueError):
                self._rules.remove(rule)

    def clear(self) -> None:
        """Drop every rule and forget the requests seen and errors: a clean proxy."""
        with self._lock:
            self._rules.clear()
            self._requests.clear()
            self.errors.clear()

    @property
    def rules(self) -> list[Fault]:
        with self._lock:
            return list(self._rules)

    @property
    def requests(self) -> list[tuple[str, str, str]]:
        """(method, bucket/key, query) of each request seen, oldest first (a copy)."""
        with self._lock:
            return list(self._requests)

    def _decide(self, req: ProxyRequest) -> tuple[list[Fault], Fault | None]:
        """The callables to call and the error/reset rule that fires, if any."""
        calls: list[Fault] = []
        with self._lock:
            self._requests.append((req.method, req.path, req.query))
            for rule in self._rules:
                if not rule.matches(req):
                    continue
                rule.seen += 1
                counter = (req.method, req.path)
                if rule.times is not None and rule.counts[counter] >= rule.times:
                    continue
                rule.counts[counter] += 1
                rule.fired += 1
                if callable(rule.action):
                    calls.append(rule)
                else:
                    return calls, rule
        return calls, None

    # serving ----------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                if self._stopped.is_set():
                    return
                time.sleep(0.05)
                continue
            conn.settimeout(None)
            with self._lock:
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True,
                             name=f"fault-proxy-{self.port}-conn").start()

    def _serve(self, client: socket.socket) -> None:
        upstream = None
        try:
            client.settimeout(60)
            got = _read_head(client)
            if got is None:
                return
            head, rest = got
            req, lines = _parse_head(head)
            calls, rule = self._decide(req)
            for call in calls:
                try:
                    outcome = call.action(req)
                except Exception as e:  # noqa: BLE001 - kept for the test to look at
                    with self._lock:
                        self.errors.append(e)
                    outcome = "reset"
                if rule is None and outcome in ("error", "reset"):
                    rule = Fault(action=outcome)
            if rule is not None and rule.action == "reset":
                _reset(client)
                return
            if rule is not None:
                self._answer_error(client, req, rule)
                return
            try:
                upstream = socket.create_connection(self.upstream, timeout=10)
            except OSError:
                _reset(client)  # the server is down: the client sees its connection drop
                return
            with self._lock:
                self._conns.add(upstream)
            kept = [ln for ln in lines[1:] if ln.split(b":", 1)[0].strip().lower() != b"connection"]
            new_head = b"\r\n".join([lines[0], *kept, b"Connection: close"]) + b"\r\n\r\n"
            upstream.sendall(new_head + rest)
            self._relay(client, upstream)
        except Exception:  # noqa: BLE001 - a broken connection must not kill the proxy
            _reset(client)
        finally:
            for s in (client, upstream):
                if s is not None:
                    with self._lock:
                        self._conns.discard(s)
                    with contextlib.suppress(OSError):
                        s.close()

    def _relay(self, client: socket.socket, upstream: socket.socket) -> None:
        client.settimeout(None)
        upstream.settimeout(None)
        client_done = threading.Event()

        def downstream() -> None:  # server -> client
            try:
                while True:
                    data = upstream.recv(_BUF)
                    if not data:
                        break
                    client.sendall(data)
            except OSError:
                pass
            # the response is complete (the server closes after it): let the client read it,
            # then wake the other direction if the client lingers
            _shutdown(client, socket.SHUT_WR)
            if not client_done.wait(10):
                _shutdown(client, socket.SHUT_RDWR)

        t = threading.Thread(target=downstream, daemon=True, name="fault-proxy-down")
        t.start()
        sink = False  # upstream stopped taking bytes: discard the rest so the client can't RST
        try:
            while True:
                data = client.recv(_BUF)
                if not data:
                    break
                if not sink:
                    try:
                        upstream.sendall(data)
                    except OSError:
                        sink = True
        except OSError:
            pass
        client_done.set()
        # HTTP clients never half-close: the client is gone, so is the exchange
        _shutdown(upstream, socket.SHUT_RDWR)
        t.join()

    def _answer_error(self, client: socket.socket, req: ProxyRequest, rule: Fault) -> None:
        request_id = uuid.uuid4().hex[:16].upper()
        resource = "/" + req.path
        body = (
            '<?xml version="1.0" encoding="UTF-8"?>\n'
            f"<Error><Code>{escape(rule.code)}</Code><Message>{escape(rule.message)}</Message>"
            f"<Resource>{escape(resource)}</Resource><RequestId>{request_id}</RequestId></Error>"
        ).encode()
        reason = http.client.responses.get(rule.status, "Error")
        head = (
            f"HTTP/1.1 {rule.status} {reason}\r\n"
            f"Content-Type: application/xml\r\n"
            f"Content-Length: {0 if req.method == 'HEAD' else len(body)}\r\n"
            f"x-amz-request-id: {request_id}\r\n"
            f"Date: {formatdate(usegmt=True)}\r\n"
            f"Server: fiqa-fault-proxy\r\n"
            f"Connection: close\r\n\r\n"
        ).encode()
        client.sendall(head if req.method == "HEAD" else head + body)
        # Read (and drop) whatever body the client still sends, until it closes: closing with
        # unread bytes would RST the connection before the client reads the answer. A client
        # that sent "Expect: 100-continue" gets the answer instead of a 100 and sends nothing.
        _shutdown(client, socket.SHUT_WR)
        client.settimeout(10)
        drained = 0
        with contextlib.suppress(OSError):
            while drained < _DRAIN_LIMIT:
                data = client.recv(_BUF)
                if not data:
                    break
                drained += len(data)

    def stop(self) -> None:
        """Stop accepting, and cut the connections in flight. Idempotent."""
        if self._stopped.is_set():
            return
        self._stopped.set()
        with contextlib.suppress(OSError):
            self._listener.close()
        self._thread.join(timeout=5)
        with self._lock:
            conns = list(self._conns)
        for s in conns:
            _shutdown(s, socket.SHUT_RDWR)


# ---------------------------------------------------------------------------------------------
# the server

_LIVE: weakref.WeakSet = weakref.WeakSet()


@atexit.register
def _kill_leftovers() -> None:
    """A test process that exits without stop() must not leave servers behind."""
    for server in list(_LIVE):
        with contextlib.suppress(Exception):
            server.kill()
            if server._owns_dir:
                shutil.rmtree(server.data_dir, ignore_errors=True)


class SeaweedS3:
    """SeaweedFS (``weed mini``: master, volume, filer and S3 gateway in one process) on loopback.

    Started on construction; request signatures are checked (credentials ``testing`` /
    ``testing``); buckets are not created on upload. ``endpoint`` is the fault proxy's URL,
    which is what clients should use; ``direct_endpoint`` is the server's own.
    """

    def __init__(self, data_dir: str | os.PathLike | None = None, *, timeout: float = 60.0,
                 access_key: str = ACCESS_KEY, secret_key: str = SECRET_KEY):
        self.access_key = access_key
        self.secret_key = secret_key
        self.region = REGION
        self.timeout = timeout
        self._owns_dir = data_dir is None
        if data_dir is None:
            # short: weed's unix sockets live here and their paths must stay under ~100 bytes
            data_dir = tempfile.mkdtemp(prefix="fiqa-s3-", dir="/tmp")
        self.data_dir = Path(data_dir).resolve()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if len(str(self.data_dir / "filer.sock")) > 100:
            raise ValueError(f"data dir {self.data_dir} is too long a path for unix sockets")
        self.log_path = self.data_dir / "weed.log"
        self.proc: subprocess.Popen | None = None
        self.ports: dict[str, int] = {}
        self.faults: FaultProxy | None = None
        self._stopped = False
        # kill/restart/stop may come from any thread (a Fault callable runs in a proxy thread,
        # a restart in a timer's): one at a time, so that no weed process is ever orphaned
        self._life = threading.RLock()
        self._last_topology: Any = None
        self.restart_seconds: float | None = None
        try:
            self.start_seconds = self._start(pick_ports=True)
            self.faults = FaultProxy("127.0.0.1", self.s3_port)
        except BaseException:
            self.stop()
            raise
        _LIVE.add(self)

    # addresses --------------------------------------------------------------------------------

    @property
    def s3_port(self) -> int:
        return self.ports["s3.port"]

    @property
    def endpoint(self) -> str:
        """The URL clients should use: the fault proxy in front of the server."""
        return self.faults.endpoint

    @property
    def direct_endpoint(self) -> str:
        """The server's own S3 URL, bypassing the fault proxy."""
        return f"http://127.0.0.1:{self.s3_port}"

    @property
    def storage_options(self) -> dict:
        """fsspec/s3fs options for ``endpoint``."""
        return {"key": self.access_key, "secret": self.secret_key,
                "client_kwargs": {"endpoint_url": self.endpoint, "region_name": self.region}}

    def client(self, max_attempts: int | None = None, direct: bool = False, **config):
        """A boto3 S3 client for ``endpoint`` (``direct_endpoint`` with ``direct``)."""
        return s3_client(self.direct_endpoint if direct else self.endpoint, max_attempts,
                         access_key=self.access_key, secret_key=self.secret_key, **config)

    # lifecycle --------------------------------------------------------------------------------

    def _command(self) -> list[str]:
        d = self.data_dir
        return [
            str(WEED), "mini", f"-dir={d}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-master.telemetry=false", "-webdav=false", "-admin.ui=false",
            "-s3.autoCreateBucket=false", "-s3.port.iceberg=0", "-s3.port.lance=0",
            "-volume.preStopSeconds=0",  # a graceful stop in ~1.4 s instead of ~2.4 s
            # Resuming the master's raft state makes the volume server's first heartbeat fail
            # now and then after a restart, and it retries only ~5 s later; the master rebuilds
            # the topology (max volume id included) from the heartbeats anyway.
            "-master.resumeState=false",
            f"-s3.localSocket={d}/s3.sock", f"-filer.localSocket={d}/filer.sock",
            *(f"-{flag}={port}" for flag, port in self.ports.items()),
        ]

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        for name in ("S3_BUCKET", "S3_TABLE_BUCKET", "S3_EXTERNAL_URL", "AWS_SESSION_TOKEN"):
            env.pop(name, None)
        env["AWS_ACCESS_KEY_ID"] = self.access_key
        env["AWS_SECRET_ACCESS_KEY"] = self.secret_key
        return env

    def _spawn(self) -> None:
        if self.running:  # never lose track of a live process
            self._signal(signal.SIGKILL)
            self.proc.wait()
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self._command(), stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env=self._env(), cwd=self.data_dir, start_new_session=True,
            )

    def _answers(self) -> bool:
        conn = http.client.HTTPConnection("127.0.0.1", self.s3_port, timeout=2)
        try:
            conn.request("GET", "/")
            conn.getresponse().read()
            return True
        except (OSError, http.client.HTTPException):
            return False
        finally:
            conn.close()

    def _volumes_known(self) -> bool:
        """Whether the master knows the volume server and every volume on disk.

        The S3 port answers before the volume server has reported in: after a restart, reads
        would fail with 500 InternalError ("volume 1 not found") and writes stall for seconds.
        """
        on_disk = sum(1 for p in self.data_dir.glob("*.dat"))
        url = f"http://127.0.0.1:{self.ports['master.port']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                topology = json.load(r).get("Topology") or {}
        except (OSError, ValueError, http.client.HTTPException) as e:
            self._last_topology = repr(e)
            return False
        self._last_topology = topology
        nodes = [node for dc in topology.get("DataCenters") or []
                 for rack in dc.get("Racks") or [] for node in rack.get("DataNodes") or []]
        known = sum(int(node.get("Volumes") or 0) for node in nodes)  # VolumeIds: " 1-2"
        return bool(nodes) and known >= on_disk

    def _start(self, pick_ports: bool) -> float:
        """Start weed and wait until its S3 port answers; retry while ports are not yet free."""
        t0 = time.monotonic()
        deadline = t0 + self.timeout
        for attempt in range(1, 11):
            if pick_ports or not self.ports:
                self.ports = _pick_weed_ports()
            self._spawn()
            while time.monotonic() < deadline and self.proc.poll() is None:
                if self._answers() and self._volumes_known():
                    return time.monotonic() - t0
                time.sleep(0.05)
            if self.proc.poll() is None or time.monotonic() >= deadline:
                self._signal(signal.SIGKILL)
                with contextlib.suppress(subprocess.TimeoutExpired):
                    self.proc.wait(timeout=10)
                raise TimeoutError(
                    f"SeaweedFS was not ready on {self.direct_endpoint} within "
                    f"{self.timeout:.0f} s (S3 port answers: {self._answers()}; master's "
                    f"topology: {self._last_topology}); log {self.log_path}:\n"
                    f"{self.log_tail()}")
            # it exited (typically: a port taken meanwhile); a first start picks other ports
            time.sleep(0.25 * attempt)
        raise RuntimeError(f"SeaweedFS exited at start {attempt} times (exit status "
                           f"{self.proc.returncode}); log {self.log_path}:\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def _signal(self, sig: int) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, sig)  # its own session: the whole group
        except (ProcessLookupError, PermissionError):
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(sig)

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the server (a crash: nothing flushed, nothing shut down) and reap it."""
        with self._life:
            if self.proc is None:
                return
            self._signal(signal.SIGKILL)
            self.proc.wait()

    def restart(self) -> float:
        """Start the server again on the same data dir and ports (killing it first if it runs).

        Thread-safe: concurrent calls run one after the other (each kills what the previous
        one started). Raises RuntimeError after stop(). Returns the seconds it took.
        """
        with self._life:
            if self._stopped:
                raise RuntimeError("restart() after stop()")
            self.kill()
            self.restart_seconds = self._start(pick_ports=False)
            return self.restart_seconds

    def pause(self) -> None:
        """SIGSTOP the server: connections are accepted by the kernel but never answered."""
        with self._life:
            self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        with self._life:
            self._signal(signal.SIGCONT)

    def stop(self) -> None:
        """Stop the server (SIGTERM, SIGKILL after 10 s) and the proxy; remove the data dir if
        this object made it. Idempotent."""
        with self._life:
            self._stop()

    def _stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        if self.faults is not None:
            self.faults.stop()
        if self.proc is not None:
            self._signal(signal.SIGTERM)
            self._signal(signal.SIGCONT)  # a paused process only sees SIGTERM once continued
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._signal(signal.SIGKILL)
                self.proc.wait()
            # anything left in its process group
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.proc.pid, signal.SIGKILL)
        if self._owns_dir:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        _LIVE.discard(self)

    def __enter__(self) -> SeaweedS3:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()

    def __del__(self):  # a last resort: never leave a server behind
        with contextlib.suppress(Exception):
            if not self._stopped and self.running:
                self._signal(signal.SIGKILL)


# ---------------------------------------------------------------------------------------------
# clients


def s3_client(endpoint: str, max_attempts: int | None = None, *, access_key: str = ACCESS_KEY,
              secret_key: str = SECRET_KEY, **config):
    """A boto3 S3 client for ``endpoint``.

    ``max_attempts`` is the total number of tries (standard retry mode), 1 for no retry. Mind
    that botocore's own ``Config(retries={"max_attempts": n})`` counts retries, not tries:
    it makes up to n + 1 tries; ``total_max_attempts`` is the total.
    """
    import boto3
    from botocore.config import Config

    if max_attempts is not None:
        config.setdefault("retries", {"mode": "standard", "total_max_attempts": max_attempts})
    return boto3.client(
        "s3", endpoint_url=endpoint, aws_access_key_id=access_key,
        aws_secret_access_key=secret_key, region_name=REGION, config=Config(**config),
    )


def make_bucket(endpoint: str, name: str) -> str:
    """Create bucket ``name`` at ``endpoint`` (credentials testing/testing); returns the name."""
    client = s3_client(endpoint)
    try:
        client.create_bucket(Bucket=name)
    except client.exceptions.BucketAlreadyOwnedByYou:
        pass
    return name
