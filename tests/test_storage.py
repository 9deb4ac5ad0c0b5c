"""Store access: one retry policy (botocore's), errors that never pass for "absent", and
Parquet files published whole or not at all."""

import io
import os

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from fsspec.implementations.memory import MemoryFileSystem

from fiqa_core import storage


class FlakyFileSystem(MemoryFileSystem):
    """An object store whose calls fail the first ``failures`` times per path."""

    protocol = "flaky"
    failures = 2
    calls: dict = {}

    @classmethod
    def _strip_protocol(cls, path):
        return MemoryFileSystem._strip_protocol(path.removeprefix("flaky://"))

    def _fail(self, path):
        n = self.calls.get(path, 0)
        self.calls[path] = n + 1
        if n < self.failures:
            raise ConnectionError("SlowDown: please reduce your request rate")

    def cat_file(self, path, start=None, end=None, **kwargs):
        self._fail(path)
        return super().cat_file(path, start, end, **kwargs)

    def info(self, path, **kwargs):
        self._fail(path)
        return super().info(path, **kwargs)


@pytest.fixture
def flaky():
    fsspec.register_implementation("flaky", FlakyFileSystem, clobber=True)
    fs = fsspec.filesystem("flaky")
    fs.pipe_file("/lake/a.jpg", b"bytes")
    FlakyFileSystem.calls = {}
    yield FlakyFileSystem
    fs.rm("/lake", recursive=True)


def test_s3_filesystems_retry_in_botocore_only():
    import s3fs

    fs = fsspec.filesystem("s3", key="k", secret="s", client_kwargs={"endpoint_url": "http://x"})
    assert isinstance(fs, s3fs.S3FileSystem) and fs.retries == 1  # s3fs's own loop: a single pass
    assert fs.config_kwargs["retries"] == {"mode": "standard", "total_max_attempts": 8}
    assert not fs.dircache.use_listings_cache
    via_url, _ = fsspec.core.url_to_fs("s3://bucket/key")
    assert via_url.config_kwargs["retries"]["mode"] == "standard"


def test_a_failed_read_is_a_status_after_one_call(flaky):
    """No retry loop of ours on top of the store client's: one call, then a status."""
    flaky.failures = 1
    data, status, error = storage.read_object("flaky:///lake/a.jpg")
    assert (data, status) == (None, "read_error")
    assert error == "ConnectionError: SlowDown: please reduce your request rate"
    assert flaky.calls["/lake/a.jpg"] == 1
    assert storage.read_object("flaky:///lake/a.jpg") == (b"bytes", "ok", None)


def test_missing_objects_are_missing(tmp_path):
    data, status, error = storage.read_object(str(tmp_path / "gone.jpg"))
    assert (data, status) == (None, "missing") and "no such file" in error


def test_local_reads_by_path_and_file_uri(tmp_path):
    (tmp_path / "a.jpg").write_bytes(b"jpeg bytes")
    (tmp_path / "folder.jpg").mkdir()
    assert storage.read_object(str(tmp_path / "a.jpg")) == (b"jpeg bytes", "ok", None)
    assert storage.read_object(f"file://{tmp_path}/a.jpg") == (b"jpeg bytes", "ok", None)
    assert storage.read_object(f"file://{tmp_path}/gone.jpg")[1] == "missing"
    assert storage.read_object(str(tmp_path / "folder.jpg")) == (
        None, "missing", "is a directory, not a file")
    assert storage.local_path("s3://bucket/a.jpg") is None
    assert storage.local_path(f"file://{tmp_path}/a.jpg") == f"{tmp_path}/a.jpg"


def test_a_store_error_never_passes_for_absent(flaky):
    """fsspec's exists() answers False on any error: a throttled HEAD of a _SUCCESS would
    make a committed partition look unfinished, and a run would write into it."""
    flaky.failures = 1
    with pytest.raises(ConnectionError, match="SlowDown"):
        storage.exists("flaky:///lake/a.jpg")
    flaky.failures = 0
    assert storage.exists("flaky:///lake/a.jpg")
    assert not storage.exists("flaky:///lake/none.jpg")


def _parquet_bytes(rows: int) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.table({"x": list(range(rows))}), buf)
    return buf.getvalue()


@pytest.mark.parametrize("where", ["local", "memory"])
def test_parquet_files_are_published_whole_or_not_at_all(tmp_path, where):
    root = str(tmp_path) if where == "local" else "memory://publish-test"
    fs, path = fsspec.core.url_to_fs(f"{root}/bucket=1/part.parquet")
    whole = _parquet_bytes(100)
    with storage.ParquetOutput(fs, path) as f:
        for i in range(0, len(whole), 7):  # in pieces, as a writer streams it
            f.write(whole[i:i + 7])
        if where == "local":  # not visible under its name until it is whole
            assert not os.path.exists(path)
            assert [storage.is_temporary(p) for p in os.listdir(tmp_path / "bucket=1")] == [True]
    assert pq.read_table(fs.open(path, "rb")).num_rows == 100

    cut = f"{path.rsplit('/', 1)[0]}/cut.parquet"
    with pytest.raises(OSError, match="not a whole Parquet file.*not published"):
        with storage.ParquetOutput(fs, cut) as f:
            f.write(whole[: len(whole) // 2])  # a writer that stopped half way
    assert not fs.exists(cut)
    names = sorted(p.rsplit("/", 1)[-1] for p in fs.find(f"{root}/bucket=1"))
    assert names == ["part.parquet"]  # no temporary left behind
    fs.rm(f"{root}/bucket=1", recursive=True)


def test_ray_writes_go_through_the_publishing_filesystem(tmp_path):
    """pyarrow's dataset writer, as Ray Data calls it, through arrow_filesystem."""
    import pyarrow.dataset as ds

    fs, path = storage.arrow_filesystem(str(tmp_path / "out"))
    table = pa.Table.from_pandas(pd.DataFrame({"x": range(10), "bucket": [0, 1] * 5}))
    ds.write_dataset(table, path, filesystem=fs, format="parquet", partitioning=["bucket"],
                     partitioning_flavor="hive", basename_template="part-{i}.parquet")
    files = sorted(p.relative_to(tmp_path / "out").as_posix()
                   for p in (tmp_path / "out").rglob("*") if p.is_file())
    assert files == ["bucket=0/part-0.parquet", "bucket=1/part-0.parquet"]
    assert pq.read_table(tmp_path / "out" / "bucket=1" / "part-0.parquet").num_rows == 5


def test_a_failed_write_is_never_published(tmp_path):
    """The footer's write fails (a full disk) but closing works: still not published."""
    whole = _parquet_bytes(50)
    fs, path = fsspec.core.url_to_fs(str(tmp_path / "part.parquet"))
    out = storage.ParquetOutput(fs, path)
    real = out.f

    class FullDisk:
        def write(self, data):
            if len(data) < 100:  # the last, short write: the footer
                raise OSError(28, "No space left on device")
            return real.write(data)

        def close(self):
            real.close()

    out.f = FullDisk()
    out.write(whole[:-20])
    with pytest.raises(OSError, match="No space"):
        out.write(whole[-20:])
    with pytest.raises(OSError, match="a write failed.*not published"):
        out.close()
    assert list(tmp_path.iterdir()) == []  # neither the file nor its temporary


def test_a_response_cut_off_mid_body_is_read_again(flaky):
    """botocore retries a request until its headers arrive; a body that breaks off after
    them is read again here (and only that: other errors are the client's to retry)."""

    class ClientPayloadError(Exception):  # aiohttp's name for a body cut short
        pass

    def cut(self, path):
        n = self.calls.get(path, 0)
        self.calls[path] = n + 1
        if n < self.failures:
            raise OSError("read failed") from ClientPayloadError("received 100 of 5 bytes")

    flaky._fail = cut
    flaky.failures = 2
    assert storage.read_object("flaky:///lake/a.jpg") == (b"bytes", "ok", None)
    assert flaky.calls["/lake/a.jpg"] == 3
    flaky.calls, flaky.failures = {}, 3
    assert storage.read_object("flaky:///lake/a.jpg")[1] == "read_error"
    assert flaky.calls["/lake/a.jpg"] == storage.BODY_TRIES
