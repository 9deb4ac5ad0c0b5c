"""S3 Inventory reports and manifests of your own as the input of a scoring run: parsing (no
Ray), then on the real S3 server of the tests, an inventory in S3's own layout against a
listing of the same prefix, over nights."""

import datetime as dt
import gzip
import hashlib
import io
import json
import uuid
from urllib.parse import quote_plus

import fsspec
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from fiqa_core import inventory
from fiqa_core import manifest as own_manifest
from fiqa_core.errors import ConfigError, InputError, NotFoundError
from fiqa_core.lake import facts
from tests import test_score

checkpoint = test_score.checkpoint  # the fixture: a student checkpoint, once per module
UTC = dt.timezone.utc
T0 = dt.datetime(2026, 12, 1, 1, 2, 3, tzinfo=UTC)
CSV_SCHEMA = ("Bucket, Key, VersionId, IsLatest, IsDeleteMarker, Size, LastModifiedDate, ETag, "
              "StorageClass")
ORC_SCHEMA = ("struct<bucket:string,key:string,version_id:string,is_latest:boolean,"
              "is_delete_marker:boolean,size:bigint,last_modified_date:timestamp,e_tag:string,"
              "storage_class:string>")
PARQUET_SCHEMA = ("message s3.inventory { required binary bucket (UTF8); required binary key "
                  "(UTF8); optional binary version_id (UTF8); optional boolean is_latest; "
                  "optional boolean is_delete_marker; optional int64 size; optional int64 "
                  "last_modified_date (TIMESTAMP_MILLIS); optional binary e_tag (UTF8); "
                  "optional binary storage_class (UTF8);}")
SCHEMAS = {"CSV": CSV_SCHEMA, "ORC": ORC_SCHEMA, "Parquet": PARQUET_SCHEMA}


def obj(key, size=10, modified=T0, etag='"0cc175b9c0f1b6a831c399e269772661"', version="v1",
        latest=True, deleted=False, bucket="lake"):
    """One inventory row, as ListObjectVersions would give the object."""
    return {"Bucket": bucket, "Key": key, "Size": size, "LastModified": modified, "ETag": etag,
            "VersionId": version, "IsLatest": latest, "IsDeleteMarker": deleted}


def _csv(rows) -> bytes:
    def field(v):
        return '"' + ("" if v is None else str(v)) + '"'

    lines = []
    for r in rows:
        modified = r["LastModified"].astimezone(UTC)
        lines.append(",".join(map(field, [
            r["Bucket"], quote_plus(r["Key"], safe="/"), r["VersionId"],
            str(r["IsLatest"]).lower(), str(r["IsDeleteMarker"]).lower(), r["Size"],
            modified.strftime("%Y-%m-%dT%H:%M:%S.") + f"{modified.microsecond // 1000:03d}Z",
            (r["ETag"] or "").strip('"'), "STANDARD"])))
    return gzip.compress(("\n".join(lines) + "\n").encode())


def _table(rows, ts_unit="ms") -> pa.Table:
    return pa.table({
        "bucket": [r["Bucket"] for r in rows],
        "key": [r["Key"] for r in rows],
        "version_id": [r["VersionId"] for r in rows],
        "is_latest": [r["IsLatest"] for r in rows],
        "is_delete_marker": [r["IsDeleteMarker"] for r in rows],
        "size": pa.array([r["Size"] for r in rows], pa.int64()),
        "last_modified_date": pa.array([r["LastModified"] for r in rows],
                                       pa.timestamp(ts_unit, "UTC")),
        "e_tag": [(r["ETag"] or "").strip('"') or None for r in rows],
        "storage_class": ["STANDARD"] * len(rows),
    })


def data_bytes(rows, fmt: str) -> bytes:
    if fmt == "CSV":
        return _csv(rows)
    buf = io.BytesIO()
    if fmt == "Parquet":
        pq.write_table(_table(rows), buf, compression="snappy")
    else:
        import pyarrow.orc as orc

        orc.write_table(_table(rows), buf, compression="zlib")
    return buf.getvalue()


def write_inventory(root: str, rows, fmt: str = "CSV", *, source="lake", config="daily",
                    prefix="inv", when=T0, parts: int = 1, dest="inventory") -> str:
    """An inventory report as S3 writes it below ``root`` (the destination bucket's root):
    ``<prefix>/<source>/<config>/data/<uuid>.<ext>`` and ``.../<YYYY-MM-DDTHH-MMZ>/
    manifest.json``; returns the manifest's URI."""
    ext = {"CSV": "csv.gz", "ORC": "orc", "Parquet": "parquet"}[fmt]
    base = f"{prefix}/{source}/{config}"
    files = []
    for i in range(parts):
        data = data_bytes(rows[i::parts], fmt)
        key = f"{base}/data/{uuid.uuid4()}.{ext}"
        _put(f"{root}/{key}", data)
        files.append({"key": key, "size": len(data), "MD5checksum": hashlib.md5(data).hexdigest()})
    manifest = {
        "sourceBucket": source, "destinationBucket": f"arn:aws:s3:::{dest}",
        "version": "2016-11-30", "creationTimestamp": str(int(when.timestamp() * 1000)),
        "fileFormat": fmt, "fileSchema": SCHEMAS[fmt], "files": files,
    }
    uri = f"{root}/{base}/{when.strftime('%Y-%m-%dT%H-%MZ')}/manifest.json"
    body = json.dumps(manifest, indent=2).encode()
    _put(uri, body)
    _put(uri.replace("manifest.json", "manifest.checksum"), hashlib.md5(body).hexdigest().encode())
    return uri


def _put(uri: str, data: bytes) -> None:
    fs, path = fsspec.core.url_to_fs(uri)
    fs.makedirs(path.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(path, data)


def read_rows(manifest: str) -> pd.DataFrame:
    inv = inventory.load_inventory(manifest)
    inventory.check_files(inv)
    tables = [t for uri, _ in inv.files for t in inventory.read_inventory_file(inv, uri)]
    table = pa.concat_tables(tables)
    assert table.schema == own_manifest.ROWS_SCHEMA
    return table.to_pandas().sort_values("path", ignore_index=True)


ODD = "faces/a b/c+d é (1)&%.jpg"
ROWS = [
    obj(ODD, size=1234, etag='"9b2cf535f27731c974343645a3985328-2"'),  # multipart
    obj(ODD, size=999, version="v0", latest=False, modified=T0 - dt.timedelta(days=3)),
    obj("faces/gone.jpg", size=None, etag=None, version="v9", deleted=True),
    obj("faces/gone.jpg", version="v8", latest=False),
    obj("faces/no-size.jpg", size=None, modified=T0 + dt.timedelta(milliseconds=250)),
    obj("faces/", size=0),  # a folder marker
    obj("faces/notes.txt", size=3),
]
WANT = {  # path -> the facts a listing of the same objects gives
    f"s3://lake/{r['Key']}": facts({"size": r["Size"], "LastModified": r["LastModified"],
                                   "ETag": r["ETag"]})
    for r in ROWS if r["IsLatest"] and not r["IsDeleteMarker"] and not r["Key"].endswith("/")
}
WANT["s3://lake/faces/no-size.jpg"]["size"] = None  # missing: a null fact, not a crash


@pytest.mark.parametrize("fmt", ["CSV", "Parquet", "ORC"])
def test_an_inventory_gives_the_latest_objects_with_a_listings_facts(tmp_path, fmt):
    manifest = write_inventory(str(tmp_path), ROWS, fmt, parts=2)
    assert inventory.inventory_manifest(str(tmp_path / "inv/lake/daily/2026-12-01T01-02Z")) == (
        manifest)
    rows = read_rows(manifest)
    got = {r.path: {"size": None if pd.isna(r.size) else int(r.size), "mtime": r.mtime,
                    "etag": r.etag} for r in rows.itertuples()}
    assert got == WANT  # exact: mtime to the bit, etags unquoted, keys decoded
    assert got[f"s3://lake/{ODD}"]["mtime"] == T0.timestamp()
    assert got["s3://lake/faces/no-size.jpg"]["mtime"] == T0.timestamp() + 0.25


def test_csv_keys_are_url_decoded_as_s3_encodes_them(tmp_path):
    """Spaces as '+', a '+' as %2B, UTF-8 bytes, and '/' whether encoded or not."""
    row = '"lake","a+b%2Bc%C3%A9%2Fd/e%20f.jpg","12","2026-12-01T01:02:03.000Z","x"\n'
    data = gzip.compress(row.encode())
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "f.csv.gz").write_bytes(data)
    (tmp_path / "when").mkdir()
    (tmp_path / "when" / "manifest.json").write_text(json.dumps({
        "sourceBucket": "lake", "destinationBucket": "arn:aws:s3:::elsewhere",
        "fileFormat": "CSV", "fileSchema": "Bucket, Key, Size, LastModifiedDate, ETag",
        "files": [{"key": "p/lake/c/data/f.csv.gz", "size": len(data)}]}))
    rows = read_rows(str(tmp_path / "when" / "manifest.json"))
    assert rows.to_dict("records") == [{"path": "s3://lake/a b+cé/d/e f.jpg", "size": 12,
                                        "mtime": T0.timestamp(), "etag": "x"}]


def test_data_files_resolve_in_the_destination_bucket_or_beside_a_copy():
    key = "inv/lake/daily/data/u.csv.gz"
    on_s3 = "s3://inventory/inv/lake/daily/2026-12-01T01-02Z/manifest.json"
    assert inventory.data_file_uri(on_s3, "inventory", key) == f"s3://inventory/{key}"
    copy = "/copies/daily/2026-12-01T01-02Z/manifest.json"
    assert inventory.data_file_uri(copy, "inventory", key) == "/copies/daily/data/u.csv.gz"
    moved = "s3://other/x/2026-12-01T01-02Z/manifest.json"
    assert inventory.data_file_uri(moved, "inventory", key) == "s3://other/x/data/u.csv.gz"
    assert inventory.schema_columns("CSV", CSV_SCHEMA)[:8] == (
        "bucket", "key", "version_id", "is_latest", "is_delete_marker", "size",
        "last_modified_date", "e_tag")
    assert inventory.schema_columns("ORC", ORC_SCHEMA) == inventory.schema_columns(
        "Parquet", PARQUET_SCHEMA) == inventory.schema_columns("CSV", CSV_SCHEMA)


def test_inventory_errors_name_the_input_and_what_is_wrong(tmp_path):
    manifest = write_inventory(str(tmp_path), ROWS[:1])
    good = json.loads(open(manifest).read())

    def load(**changes):  # the manifest changed, in its place
        with open(manifest, "w") as f:
            json.dump({**good, **changes}, f)
        return inventory.load_inventory(manifest)

    bad = {k: v for k, v in good.items() if k not in ("files", "fileFormat")}
    (tmp_path / "bad.json").write_text(json.dumps(bad))
    with pytest.raises(InputError, match=r"bad.json: not an S3 Inventory manifest: fileFormat, "
                                         r"files missing \(have: sourceBucket"):
        inventory.load_inventory(str(tmp_path / "bad.json"))
    with pytest.raises(InputError, match="fileFormat 'JSON' is not one of CSV, ORC, Parquet"):
        load(fileFormat="JSON")
    with pytest.raises(InputError, match=r"no key column \(have: bucket, size\)"):
        load(fileSchema="Bucket, Size")
    with pytest.raises(InputError, match="'files' must be a list"):
        load(files=[{"size": 3}])
    with pytest.raises(NotFoundError, match="manifest not found"):
        inventory.load_inventory(str(tmp_path / "nope" / "manifest.json"))
    (tmp_path / "text.json").write_text("not json")
    with pytest.raises(InputError, match="text.json: not JSON"):
        inventory.load_inventory(str(tmp_path / "text.json"))
    gone = good["files"][0]["key"].replace("/data/", "/data/x")
    with pytest.raises(NotFoundError, match=r"data/x.*: data file of .*manifest.json not found"):
        inventory.check_files(load(files=[{"key": gone, "size": 5}]))
    with pytest.raises(InputError, match=r"bytes, .*manifest.json says 5: a partial copy"):
        inventory.check_files(load(files=[{**good["files"][0], "size": 5}]))
    # a Parquet file without a key column, whatever the manifest said
    pq.write_table(pa.table({"bucket": ["lake"]}), tmp_path / "inv/lake/daily/data/k.parquet")
    inv = load(fileFormat="Parquet", fileSchema=PARQUET_SCHEMA,
               files=[{"key": "inv/lake/daily/data/k.parquet"}])
    with pytest.raises(InputError, match=r"k.parquet: no key column \(have: bucket\)"):
        list(inventory.read_inventory_file(inv, inv.files[0][0]))


def test_a_manifest_of_your_own_names_its_columns(tmp_path):
    csv = tmp_path / "m.csv"
    csv.write_text("uri,bytes,modified,md5,other\n"
                   '/l/a.jpg,10,2026-12-01T01:02:03Z,"""abc""",x\n'
                   "/l/b.jpg,,2026-12-01 01:02:03.5,,y\n"
                   "/l/c.jpg,12,2026-12-01T02:02:03+01:00,def,z\n")
    spec = "path=uri, size=bytes, mtime=modified, etag=md5"
    columns = own_manifest.check_manifest(str(csv), spec)
    rows = pa.concat_tables(own_manifest.read_manifest_file(str(csv), columns)).to_pylist()
    assert rows == [
        {"path": "/l/a.jpg", "size": 10, "mtime": T0.timestamp(), "etag": "abc"},
        {"path": "/l/b.jpg", "size": None, "mtime": T0.timestamp() + 0.5, "etag": None},
        {"path": "/l/c.jpg", "size": 12, "mtime": T0.timestamp(), "etag": "def"},
    ]
    # Parquet, default names: an Arrow timestamp (no zone: UTC) or seconds; no etag column
    for mtime in (pa.array([T0.replace(tzinfo=None)], pa.timestamp("us")),
                  pa.array([T0.timestamp()])):
        pq.write_table(pa.table({"path": ["/l/a.jpg"], "size": [10], "mtime": mtime}),
                       tmp_path / "m.parquet")
        columns = own_manifest.check_manifest(str(tmp_path / "m.parquet"), None)
        assert columns == {"path": "path", "size": "size", "mtime": "mtime"}
        got = pa.concat_tables(own_manifest.read_manifest_file(str(tmp_path / "m.parquet"),
                                                            columns))
        assert got.to_pylist() == [{"path": "/l/a.jpg", "size": 10, "mtime": T0.timestamp(),
                                    "etag": None}]
    with pytest.raises(InputError, match="not seconds since the epoch"):
        own_manifest.seconds(pa.array([T0.timestamp() * 1000]))
    with pytest.raises(ConfigError, match=r"'sz=bytes' is not fact=column"):
        own_manifest.check_manifest(str(csv), "sz=bytes")
    with pytest.raises(ConfigError, match=r"m.csv: column 'nope' missing \(have: uri, bytes, "
                                          r"modified, md5, other\); manifest_columns names it "
                                          r"for mtime"):
        own_manifest.check_manifest(str(csv), "path=uri,mtime=nope")
    with pytest.raises(ConfigError, match=r"column 'path' missing .* manifest_columns=path="):
        own_manifest.check_manifest(str(csv), None)
    with pytest.raises(NotFoundError, match="manifest not found"):
        own_manifest.check_manifest(str(tmp_path / "absent.csv"), None)


# -- on the real S3 server: an inventory of a lake against a listing of it, over nights -----

LAKE, DEST = "inv-lake", "inv-dest"


def s3_inventory(client, fmt: str, when: dt.datetime) -> str:
    """An inventory of ``LAKE/faces/`` as S3 would deliver it to ``DEST``, from a
    ListObjectsV2 of the lake (what an inventory reports: key, size, LastModified, ETag)."""
    rows = [obj(o["Key"], o["Size"], o["LastModified"], o["ETag"], bucket=LAKE)
            for page in client.get_paginator("list_objects_v2").paginate(Bucket=LAKE,
                                                                        Prefix="faces/")
            for o in page.get("Contents", [])]
    return write_inventory(f"s3://{DEST}", rows, fmt, source=LAKE, when=when, parts=2)


def test_a_night_from_an_inventory_reuses_a_listed_night_and_back(s3_env, checkpoint,
                                                                   tmp_path):
    import boto3

    from jobs import score as score_job
    from jobs.ray_env import init_ray
    from jobs.score.listing import list_images
    from tests import imagegen
    from tests.s3server import make_bucket
    from tests.test_score import cfg, read_partition

    for b in (LAKE, DEST):
        make_bucket(s3_env.endpoint, b)
    client = boto3.client("s3")
    imagegen.write_labeled_set(tmp_path / "src", 6, seed=3, size=(40, 48))
    photos = sorted((tmp_path / "src").iterdir())
    keys = [f"faces/p{i}/{f.name}" for i, f in enumerate(photos)]
    keys[0] = ODD  # spaces, '+', '&', '%', UTF-8: URL-encoded in the CSV
    for key, f in zip(keys, photos, strict=True):
        client.upload_file(str(f), LAKE, key)
    client.put_object(Bucket=LAKE, Key="faces/notes.txt", Body=b"not an image")
    listing = f"s3://{LAKE}/faces/"
    csv = s3_inventory(client, "CSV", T0)
    init_ray(None, min_cpus=2)  # inside the S3 environment, as the jobs start it

    def listed(uri, **settings):
        images, n_files = list_images(cfg(input=uri, model=checkpoint, output="unused",
                                          **settings))
        return images.to_pandas().sort_values("path", ignore_index=True), n_files

    # the same rows, facts to the bit: SeaweedFS's LastModified is whole seconds in both
    by_listing, n_listed = listed(listing)
    by_csv, n_csv = listed(csv.rsplit("/", 1)[0])  # the folder holding manifest.json
    assert n_listed == n_csv == 7 and sorted(by_listing["path"]) == [f"s3://{LAKE}/{k}"
                                                                     for k in sorted(keys)]
    pd.testing.assert_frame_equal(by_csv, by_listing)
    info = fsspec.filesystem("s3").info(f"{LAKE}/{ODD}")  # s3fs's HeadObject: the same facts
    row = by_csv.set_index("path").loc[f"s3://{LAKE}/{ODD}"]
    assert (row["size"], row["mtime"], row["etag"]) == (
        info["size"], info["LastModified"].timestamp(), info["ETag"].strip('"'))
    # a manifest of your own, from the same ListObjectsV2: ISO times, quoted etags, own names
    own = pd.DataFrame([{"uri": f"s3://{LAKE}/{o['Key']}", "bytes": o["Size"],
                         "modified": o["LastModified"].isoformat(), "md5": o["ETag"]}
                        for o in client.list_objects_v2(Bucket=LAKE, Prefix="faces/")["Contents"]])
    _put(f"s3://{DEST}/own.csv", own.to_csv(index=False).encode())
    by_own, _ = listed(f"s3://{DEST}/own.csv",
                       manifest_columns="path=uri,size=bytes,mtime=modified,etag=md5")
    pd.testing.assert_frame_equal(by_own, by_listing)

    out = tmp_path / "scores"

    def night(uri, date):
        return score_job.run(cfg(input=uri, model=checkpoint, output=out, run_date=date))

    first = night(csv, "2026-12-01")
    assert (first["scored"], first["skipped_non_image"]) == (6, 1)
    second = night(listing, "2026-12-02")  # a listed night after an inventory's
    assert (second["images"], second["reused"], second["scored"]) == (6, 6, 0)
    cols = ["path", "score", "size", "mtime", "etag", "pipeline"]
    a, b = (read_partition(str(out / f"date={d}"))[cols].sort_values("path", ignore_index=True)
            for d in ("2026-12-01", "2026-12-02"))
    pd.testing.assert_frame_equal(a, b)
    # one object changed (other bytes), a new inventory, in Parquet: only it is scored again
    client.upload_file(str(photos[1]), LAKE, ODD)
    parquet = s3_inventory(client, "Parquet", T0 + dt.timedelta(days=1))
    pd.testing.assert_frame_equal(listed(parquet)[0], listed(listing)[0])
    third = night(parquet, "2026-12-03")  # an inventory's night after a listed one
    assert (third["images"], third["reused"], third["scored"]) == (6, 5, 1)
    rows = read_partition(str(out / "date=2026-12-03")).set_index("path")
    assert not rows.at[f"s3://{LAKE}/{ODD}", "reused"] and rows["reused"].sum() == 5


def test_a_folder_of_images_with_a_manifest_json_of_its_own_is_listed(tmp_path):
    (tmp_path / "manifest.json").write_text(json.dumps({"app": "photos", "version": 3}))
    assert inventory.inventory_manifest(str(tmp_path)) is None  # listed as a folder
    (tmp_path / "manifest.json").write_text("not json either")
    assert inventory.inventory_manifest(str(tmp_path)) is None
    # named as the input itself, it must be an inventory's
    named = str(tmp_path / "manifest.json")
    assert inventory.inventory_manifest(named) == named
    with pytest.raises(InputError, match="not JSON"):
        inventory.load_inventory(named)
    manifest = write_inventory(str(tmp_path / "report"), ROWS[:1])
    folder = manifest.rsplit("/", 1)[0]
    assert inventory.inventory_manifest(folder) == manifest


def test_a_manifest_row_without_a_path_is_refused_by_name():
    with pytest.raises(InputError, match=r"2 manifest row\(s\) without a path"):
        own_manifest.facts_table(pa.array(["a.jpg", None, ""]), None, None, None)
