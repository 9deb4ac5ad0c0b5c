"""A real multi-node Ray cluster on loopback for the end-to-end tests (S3: s3server.py)."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout} s")


@contextlib.contextmanager
def environment(**values: str | None):
    """Set (or, with None, unset) environment variables for the block."""
    old = {k: os.environ.get(k) for k in values}
    for k, v in values.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _node_ports() -> list[str]:
    """Every port a Ray node opens, chosen free, so two nodes share one machine cleanly."""
    return [
        f"--node-manager-port={free_port()}",
        f"--object-manager-port={free_port()}",
        f"--metrics-export-port={free_port()}",
        f"--dashboard-agent-listen-port={free_port()}",
        f"--dashboard-agent-grpc-port={free_port()}",
        f"--runtime-env-agent-port={free_port()}",
    ]


class LocalCluster:
    """A real multi-node Ray cluster on 127.0.0.1: ``ray start --head`` plus worker nodes.

    All its processes carry its own temp dir in their command lines, so :meth:`stop` ends
    exactly them (``ray stop`` would also end any other Ray on the machine).
    """

    def __init__(self, head_cpus: int = 3):
        self.temp_dir = tempfile.mkdtemp(prefix="fiqa-ray-", dir="/tmp")  # short: socket paths
        self.gcs_port = free_port()
        self.dashboard_port = free_port()
        self.env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0"}
        self.env.pop("RAY_ADDRESS", None)
        # job entrypoints run `python` from PATH: this environment's, as a user's would
        self.env["PATH"] = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        self._ray(
            "--head",
            f"--port={self.gcs_port}",
            f"--num-cpus={head_cpus}",
            "--node-ip-address=127.0.0.1",
            "--include-dashboard=true",
            "--dashboard-host=127.0.0.1",
            f"--dashboard-port={self.dashboard_port}",
            f"--temp-dir={self.temp_dir}",
            *_node_ports(),
        )
        wait_for_port(self.dashboard_port, timeout=120)
        self.worker_manager_ports: list[int] = []

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.gcs_port}"

    @property
    def dashboard_url(self) -> str:
        return f"http://127.0.0.1:{self.dashboard_port}"

    def _ray(self, *args: str) -> None:
        proc = subprocess.run(
            [str(BIN / "ray"), "start", "--disable-usage-stats", *args],
            env=self.env, capture_output=True, text=True, timeout=180,
        )
        if proc.returncode != 0:
            raise RuntimeError(f"ray start failed:\n{proc.stdout}\n{proc.stderr}")

    def add_worker(self, cpus: int, resources: str) -> int:
        """Start a worker node; returns its node-manager port (which names its raylet)."""
        ports = _node_ports()
        self._ray(
            f"--address={self.address}",
            f"--num-cpus={cpus}",
            f"--resources={resources}",
            "--node-ip-address=127.0.0.1",
            *ports,
        )
        port = int(ports[0].split("=")[1])
        self.worker_manager_ports.append(port)
        return port

    def processes(self, marker: str | None = None) -> list[int]:
        """PIDs whose command line mentions ``marker`` (default: this cluster's temp dir)."""
        marker = marker or self.temp_dir
        pids = []
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) == os.getpid():
                continue
            try:
                cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="ignore")
            except OSError:
                continue
            if marker in cmd:
                pids.append(int(entry.name))
        return pids

    def kill_raylet(self, node_manager_port: int) -> int:
        """SIGKILL the raylet of the worker node that listens on ``node_manager_port``."""
        pids = [
            p for p in self.processes(f"--node_manager_port={node_manager_port}")
            if "raylet" in Path(f"/proc/{p}/cmdline").read_bytes().decode(errors="ignore")
        ]
        if not pids:
            raise RuntimeError(f"no raylet with node manager port {node_manager_port}")
        for p in pids:
            os.kill(p, signal.SIGKILL)
        return len(pids)

    def stop(self) -> None:
        for _ in range(3):
            pids = self.processes()
            for p in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(p, signal.SIGKILL)
            if not pids:
                break
            time.sleep(1)
        shutil.rmtree(self.temp_dir, ignore_errors=True)


def decoded_rows(decoded) -> dict:
    """A batch as the decode stage hands it to a scoring actor, from prepared images."""
    import numpy as np

    n = len(decoded)
    column = lambda values: np.array(values, dtype=object)  # noqa: E731
    return {
        "path": column([f"p{i}" for i in range(n)]), "size": np.ones(n, np.int64),
        "mtime": np.zeros(n), "etag": column([None] * n), "bucket": np.zeros(n, np.int64),
        "pixels": column([d.image.tobytes() if d.ok else b"" for d in decoded]),
        "encoded": column([b""] * n), "status": column([d.status for d in decoded]),
        "error": column([d.error for d in decoded]), "width": column([d.width for d in decoded]),
        "height": column([d.height for d in decoded]),
    }
