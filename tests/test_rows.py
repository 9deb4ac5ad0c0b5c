"""Row keys with faces=all (jobs.score.rows): an image's rows are one attempt's, whole (one
row for the image, or faces exactly 0..k-1 each saying face_count k); repair keeps each
path's newest whole attempt, one row per key, and never mixes two attempts of a photo."""

import pandas as pd
import pyarrow as pa

from jobs.score.rows import complete_paths, counts, kept


def frame(rows):
    return pd.DataFrame(rows, columns=["path", "face", "face_count", "scored_at", "score"])


ROWS = frame([
    ("a.jpg", None, None, "1", 1.0),  # the image itself (faces=none, no_face, a bad file)
    ("b.jpg", 0, 2, "1", 2.0), ("b.jpg", 1, 2, "1", 3.0),  # both faces
    ("c.jpg", 0, 3, "1", 4.0), ("c.jpg", 0, 3, "1", 5.0),  # face 0 twice, faces 1, 2 missing
    ("d.jpg", 0, None, "1", 6.0),  # faces=largest: one row
])


def table(rows: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(rows, preserve_index=False)


def test_a_photo_is_complete_only_with_all_its_faces():
    assert complete_paths(ROWS) == {"a.jpg", "b.jpg", "d.jpg"}
    plain = ROWS[["path", "scored_at"]]  # a night written before faces: a row per image
    assert complete_paths(plain) == set(ROWS["path"])
    assert counts(table(ROWS)) == {"paths": 4, "face_rows": 5, "incomplete": 1,
                                   "duplicate_rows": 1}
    # one attempt's faces must be exactly 0..k-1 with one k
    assert complete_paths(frame([("e", 0, 2, "1", 0), ("e", 5, 2, "1", 0)])) == set()
    assert complete_paths(frame([("e", 0, 2, "1", 0), ("e", 1, 1, "1", 0)])) == set()


def test_attempts_of_one_photo_are_never_mixed():
    # attempt 1 found 3 faces and wrote them; attempt 2 (newer) found 2: only attempt 2 stays
    rows = frame([("a", 0, 3, "1", 1.0), ("a", 1, 3, "1", 2.0), ("a", 2, 3, "1", 3.0),
                  ("a", 0, 2, "2", 4.0), ("a", 1, 2, "2", 5.0)])
    assert complete_paths(rows) == {"a"}
    assert list(kept(rows)["score"]) == [4.0, 5.0]
    assert counts(table(rows))["duplicate_rows"] == 3
    # attempt 1 wrote face 1 of 2, attempt 2 found no face: its no_face row is the photo's
    rows = frame([("a", 1, 2, "1", 1.0), ("a", None, None, "2", None)])
    assert complete_paths(rows) == {"a"} and len(kept(rows)) == 1
    assert kept(rows)["face"].isna().all()
    assert counts(table(rows)) == {"paths": 1, "face_rows": 1, "incomplete": 0,
                                   "duplicate_rows": 1}
    # a photo cut short and not scored again: its rows stay (verify refuses to commit it)
    cut = frame([("a", 1, 2, "1", 1.0)])
    assert complete_paths(cut) == set() and len(kept(cut)) == 1
    assert counts(table(cut))["incomplete"] == 1


def test_one_row_per_image_without_faces_all():
    # faces=none or largest: a second row of a path is a duplicate, whatever its face
    rows = frame([("x", 0, None, "1", 1.0), ("x", None, None, "2", None), ("y", None, None,
                                                                             "1", 2.0)])
    assert counts(table(rows)) == {"paths": 2, "face_rows": 1, "incomplete": 0,
                                   "duplicate_rows": 1}
    assert sorted(kept(rows)["path"]) == ["x", "y"] and kept(rows)["score"].isna().sum() == 1
    plain = pa.table({"path": ["x", "y", "x"]})
    assert counts(plain) == {"paths": 2, "face_rows": 0, "incomplete": 0, "duplicate_rows": 1}


def test_kept_keeps_one_row_per_face_of_the_newest_whole_attempt():
    out = kept(ROWS).set_index(["path", "face"], drop=False)
    assert len(out) == len(ROWS) - 1
    assert out.loc[("c.jpg", 0), "score"] == 5.0  # incomplete: kept, the later copy
    assert out.loc[("b.jpg", 1), "score"] == 3.0
