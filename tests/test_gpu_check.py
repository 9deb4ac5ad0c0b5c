"""bench/gpu_check.sh: the prepared device check writes every figure, here on the CPU
with the smallest inputs (``--tiny``, the student only); the figures themselves are a
benchmark's (the GPU machine runs both presets at full size), and the parity of the device
decoding path with PIL is asserted in tests/test_batch_decode.py."""

import json
import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_device_check_runs_in_cpu_mode_and_writes_every_figure(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path),
           "GPU_CHECK_ARGS": "--presets student-edgenext-xxs --tiny"}
    env.pop("RAY_ADDRESS", None)
    r = subprocess.run(["bash", "bench/gpu_check.sh", "--cpu"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    result = json.loads((tmp_path / "gpu_check.json").read_text())
    assert result["mode"] == "cpu" and result["cores"] == os.cpu_count()
    assert set(result) >= {"date", "device", "torch", "scoring", "training"}
    scoring = result["scoring"]["student-edgenext-xxs"]
    assert set(scoring) == {
        "size", "images", "model_only_bf16", "model_only_bf16_compiled", "compile_s",
        "decode", "parity_with_pil", "end_to_end_device_decode", "end_to_end_task_decode",
        "end_to_end_share_of_model_only"}, scoring
    for key in ("end_to_end_device_decode", "end_to_end_task_decode"):
        job = scoring[key]
        assert set(job) == {"images_per_s", "seconds", "rows", "parquet_files"}
        assert job["rows"] == scoring["images"] == 8 and 0 < job["parquet_files"] <= 64, key
    assert set(scoring["decode"]) == {"batched_on_device_per_s", "pil_one_core_per_s", "cores"}
    assert set(scoring["parity_with_pil"]) == {
        "zoo_files", "zoo_status_mismatches", "max_pixel_diff", "mean_pixel_diff",
        "score_srcc", "images"}
    assert scoring["parity_with_pil"]["zoo_status_mismatches"] == []
    training = result["training"]["student-edgenext-xxs"]
    assert set(training) == {"size", "batch", "model_only_fwd_bwd", "job",
                             "job_share_of_model_only", "cache_rows", "job_seconds"}
    assert training["cache_rows"] == 96
    # figures, not zeros: a throughput, a compile time, parity of the device decoding path
    for figure in (scoring["model_only_bf16"], scoring["model_only_bf16_compiled"],
                   scoring["compile_s"], scoring["decode"]["batched_on_device_per_s"],
                   scoring["end_to_end_device_decode"]["images_per_s"],
                   training["model_only_fwd_bwd"], training["job"]):
        assert figure > 0, figure
    faces = result["faces"]  # detection + alignment beside the scorer, on 3 photos
    assert set(faces) == {"photos", "device", "threads", "batch", "detect_torch",
                          "detect_onnxruntime", "align", "actor_path", "score_student_fp32"}
    assert faces["detect_torch"]["faces"] == faces["detect_onnxruntime"]["faces"] == 6
    for figure in (faces["align"]["faces_per_s"], faces["actor_path"]["faces_per_s"],
                   faces["score_student_fp32"]["faces_per_s"]):
        assert figure > 0, figure
    parity = scoring["parity_with_pil"]
    assert parity["max_pixel_diff"] <= 1 and parity["score_srcc"] >= 0.99
