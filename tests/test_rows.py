"""Row keys with faces=all (jobs.score.rows): a photo's rows are whole only with every face
0..face_count-1; duplicates are counted per (path, face); repair keeps the latest per key."""

import pandas as pd
import pyarrow as pa

from jobs.score.rows import complete_paths, counts, latest

ROWS = pd.DataFrame({
    "path": ["a.jpg", "b.jpg", "b.jpg", "c.jpg", "c.jpg", "d.jpg", "e.jpg"],
    "face": [None, 0, 1, 0, 0, 0, None],
    "face_count": [None, 2, 2, 3, 3, None, None],  # c: face 0 twice, faces 1, 2 missing
    "scored_at": ["1", "1", "1", "1", "2", "1", "1"],
    "score": [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0],
})


def test_a_photo_is_complete_only_with_all_its_faces():
    # a (no face column value: the image itself), b (both faces), d (faces=largest), e
    assert complete_paths(ROWS) == {"a.jpg", "b.jpg", "d.jpg", "e.jpg"}
    assert complete_paths(ROWS[["path", "scored_at"]]) == set(ROWS["path"])  # a night before faces
    assert complete_paths(ROWS[ROWS["path"] != "b.jpg"].iloc[:0]) == set()


def test_counts_key_on_path_and_face():
    table = pa.Table.from_pandas(ROWS[["path", "face", "face_count"]], preserve_index=False)
    assert counts(table) == {"paths": 5, "face_rows": 5, "incomplete": 1, "duplicate_rows": 1}
    whole = table.filter(pa.compute.not_equal(table["path"], "c.jpg"))
    assert counts(whole) == {"paths": 4, "face_rows": 3, "incomplete": 0, "duplicate_rows": 0}
    # faces=none: no face columns, or all null: a path twice is a duplicate
    plain = pa.table({"path": ["x", "y", "x"]})
    assert counts(plain) == {"paths": 2, "face_rows": 0, "incomplete": 0, "duplicate_rows": 1}
    nulls = pa.table({"path": ["x", "x"], "face": pa.array([None, None], pa.int64()),
                      "face_count": pa.array([None, None], pa.int64())})
    assert counts(nulls)["duplicate_rows"] == 1


def test_latest_keeps_one_row_per_face():
    kept = latest(ROWS).set_index(["path", "face"])
    assert len(kept) == len(ROWS) - 1
    assert kept.loc[("c.jpg", 0), "score"] == 5.0  # the later of the two
    assert kept.loc[("b.jpg", 1), "score"] == 3.0
