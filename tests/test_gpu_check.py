"""bench/gpu_check.sh --cpu: the prepared device check runs end to end here (student only,
to keep CI short; on the GPU machine it runs both presets)."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_device_check_runs_in_cpu_mode_and_writes_every_figure(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path),
           "GPU_CHECK_ARGS": "--presets student-edgenext-xxs"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["mode"] == "cpu" and result["cores"] == os.cpu_count()
    scoring = result["scoring"]["student-edgenext-xxs"]
    for key in ("end_to_end_device_decode", "end_to_end_task_decode"):
        job = scoring[key]
        assert job["rows"] == scoring["images"] and job["images_per_s"] > 0, key
        assert 0 < job["parquet_files"] <= 64
    assert scoring["model_only_bf16"] > 0 and scoring["model_only_bf16_compiled"] > 0
    assert scoring["compile_s"] > 0
    assert scoring["decode"]["batched_on_device_per_s"] > 0
    parity = scoring["parity_with_pil"]
    assert parity["zoo_status_mismatches"] == [] and parity["zoo_files"] > 20
    assert parity["max_pixel_diff"] <= 1 and parity["score_srcc"] >= 0.99
    training = result["training"]["student-edgenext-xxs"]
    assert training["cache_rows"] == 100 and training["model_only_fwd_bwd"] > 0
    assert 0 < training["job_share_of_model_only"]
