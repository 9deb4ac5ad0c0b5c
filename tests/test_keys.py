"""Result hashes and stage keys are stable: a refactor must not make finished rounds,
trained checkpoints or image caches look out of date. The expected values were computed by
the code before settings carried their own metadata (commit 50befb2)."""

import pytest

from fiqa_core.config import config_hash, config_to_dict, resolve_config
from jobs import self_train
from jobs.score import ScoreConfig
from jobs.train import CACHE_KEYS, TrainConfig


def test_training_and_cache_hashes_are_stable():
    cfg = resolve_config(TrainConfig, None, ["labels=s3://b/labels.csv", "output=s3://b/m",
                                             "epochs=3", "pseudo_labels=[s3://b/a]"])
    assert config_hash(cfg) == "879e4ed917979c468813e0db93f3ed7bce33290c80dafa165ae9b01093c222c7"
    cache = config_hash(cfg, exclude=tuple(k for k in config_to_dict(cfg) if k not in CACHE_KEYS))
    assert cache == "91ed02d87ca70debfa3686b3e07ea114e7c2ca5bdf455a3af1d5f31989bccefb"
    # operational settings change how a run executes, not its hash
    again = resolve_config(TrainConfig, None, ["labels=s3://b/labels.csv", "output=s3://b/m",
                                               "epochs=3", "pseudo_labels=[s3://b/a]",
                                               "num_workers=8", "address=ray://x:10001"])
    assert config_hash(again) == config_hash(cfg)


def test_scoring_hash_is_stable():
    cfg = resolve_config(ScoreConfig, None, ["input=s3://b/lake/", "model=s3://b/m",
                                             "output=s3://b/o", "buckets=8"])
    assert config_hash(cfg) == "1e397aca2177a876ca8a106c0297df6efe0d48f514863e9a3ced577b5d34132f"
    # a setting added later (omit_default) keeps the hash at its default, changes it when set
    faces = resolve_config(ScoreConfig, None, ["input=s3://b/lake/", "model=s3://b/m",
                                               "output=s3://b/o", "buckets=8", "faces=largest"])
    assert config_hash(faces) != config_hash(cfg)


def test_round_stage_keys_are_stable(monkeypatch):
    from jobs.self_train import stages

    monkeypatch.setattr(stages, "_file_facts",
                        lambda uri: {"size": 1234, "mtime": 1700000000.0, "etag": None})
    cfg = resolve_config(self_train.RoundConfig, None, [
        "labels=s3://b/labels.csv", "unlabeled_a=s3://b/a/", "unlabeled_b=s3://b/b/",
        "output=s3://b/round", "teacher.epochs=3", "student.image_size=288",
        "pseudo_label.buckets=16",
    ])
    assert self_train.stage_keys(cfg) == {
        "holdout": "73ec5d8cb92e5c945afeeea317b38cee615790c79652cad47657a87fef6bd1a9",
        "teacher0": "15a679f51124439a646f4b965774fa69e1d00e4f3bd27dc849c55dd4b5d91ae6",
        "pseudo_a": "af1dcc02c53cbae83dc032204fbac75bf74415f9a2b318212b635e6f437ef091",
        "teacher1": "e8634588883f93de3e5bfb720656f898435ffc30290596751de0f0fa2855f63f",
        "pseudo_b": "e931ff6263001b4e0a6fba7a6d3da03a667677f2ad1591e2f933d4419843d773",
        "student": "20967c3be74f870823b0f865fb333973af6af507e004287ea14ef27caaac5201",
        "evaluate": "439b10b1912a588f060fdd7d84c5217f70e1dc43df140440b7fa9e9d19157bf8",
        "report": "55fffff33e3173b21e2a369342d9cd4398ea66c289c9b06e37a2f744da21232b",
    }


@pytest.mark.parametrize("settings, key", [(TrainConfig, "fail_at_epoch"),
                                           (ScoreConfig, "fail_after_batches")])
def test_configs_written_by_older_versions_still_load(tmp_path, settings, key):
    """Older resolved configs hold a retired test-only setting as null; they still load."""
    from fiqa_core.errors import ConfigError

    required = {"labels": "l.csv", "output": "o"} if settings is TrainConfig else {
        "input": "i/", "model": "m", "output": "o"}
    lines = [f"{k}: {v}" for k, v in required.items()]
    (tmp_path / "old.yaml").write_text("\n".join([*lines, f"{key}: null"]) + "\n")
    cfg = resolve_config(settings, str(tmp_path / "old.yaml"))
    assert cfg.output == "o" and not hasattr(cfg, key)
    (tmp_path / "set.yaml").write_text("\n".join([*lines, f"{key}: 2"]) + "\n")
    with pytest.raises(ConfigError, match=f"setting '{key}' is retired: fault injection"):
        resolve_config(settings, str(tmp_path / "set.yaml"))
