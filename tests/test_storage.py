"""Reading objects: transient errors are retried, then recorded; never raised."""

import fsspec
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from fiqa_core import storage


class FlakyFileSystem(MemoryFileSystem):
    """An object store whose reads fail the first ``failures`` times per path."""

    protocol = "flaky"
    failures = 2
    calls: dict = {}

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(path.removeprefix("flaky://"))

    def cat_file(self, path, start=None, end=None, **kwargs):
        n = self.calls.get(path, 0)
        self.calls[path] = n + 1
        if n < self.failures:
            raise ConnectionError("connection reset by peer")
        return super().cat_file(path, start, end, **kwargs)


@pytest.fixture
def flaky():
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    fs = fsspec.filesystem("flaky")
    fs.pipe_file("/lake/a.jpg", b"bytes")
    FlakyFileSystem.calls = {}
    yield FlakyFileSystem
    fs.rm("/lake", recursive=True)


def test_transient_errors_are_retried(flaky):
    flaky.failures = 2
    assert storage.read_bytes_retrying("flaky:///lake/a.jpg", attempts=3, backoff_s=0) == (
        b"bytes",
        "ok",
        None,
    )
    assert flaky.calls["/lake/a.jpg"] == 3


def test_persistent_errors_become_a_status(flaky):
    flaky.failures = 10
    data, status, error = storage.read_bytes_retrying(
        "flaky:///lake/a.jpg", attempts=3, backoff_s=0
    )
    assert data is None and status == "read_error"
    assert error == "after 3 attempts: ConnectionError: connection reset by peer"


def test_missing_objects_are_not_retried(tmp_path):
    data, status, error = storage.read_bytes_retrying(str(tmp_path / "gone.jpg"), backoff_s=0)
    assert (data, status) == (None, "missing") and "no such file" in error
