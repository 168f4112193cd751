#!/usr/bin/env bash
# The TensorRT backend on a real NVIDIA GPU (CI has none and does not run this). Installs the TensorRT wheel of
# trtexec's version and cuda-python of the driver's CUDA into the venv (and checks that this driver runs them), builds
# the synthetic ResNet-50, builds, runs and judges its int8 (QDQ model) and fp16 variants (autotune bench with an
# accuracy set of random inputs), runs a 12-trial offline study (about 4 minutes of trials) and a 6-trial server study
# measured by LoadGen through TensorRT's Python runtime (about 2 minutes; the whole check stays within 9 minutes on
# one H100/H200-class GPU), prints each winner against trtexec's defaults and the measured server figures beside
# the estimate trtexec's times give. Record the figures in bench/RESULTS.md.
#   bash scripts/gpu_check.sh [--dry-run] [--trtexec PATH] [--no-wheel]
# --dry-run prints what it would run and runs nothing. trtexec itself is not in the wheel: it comes with TensorRT's
# tar package (bin/trtexec), NVIDIA's libnvinfer-bin package (/usr/src/tensorrt/bin) or an NGC TensorRT container.
set -euo pipefail
cd "$(dirname "$0")/.."
DRY=0
WHEEL=1
TRTEXEC="${AUTOTUNE_TRTEXEC:-}"
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1 ;;
    --no-wheel) WHEEL=0 ;;
    --trtexec) TRTEXEC="${2:?--trtexec needs a path}"; shift ;;
    --trtexec=*) TRTEXEC="${1#*=}" ;;
    -h|--help) sed -n 2,8p "$0"; exit 0 ;;
    *) echo "gpu_check.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
  shift
done
PY=.venv/bin/python
AUTOTUNE=.venv/bin/autotune
STAMP="$(date +%Y%m%d-%H%M%S)"
STUDY="gpu-check-resnet50-offline-$STAMP"
SERVER_STUDY="gpu-check-resnet50-server-$STAMP"
STORAGE="sqlite:///studies/gpu-check.db"

say() { echo "gpu_check.sh: $*"; }
fail() { echo "gpu_check.sh: $*" >&2; exit 1; }
quoted() {  # the command as one could paste it: words with shell characters in single quotes
  local out="" word
  for word in "$@"; do
    if [[ "$word" =~ ^[A-Za-z0-9_./=:,+@%-]+$ ]]; then out+="$word "; else out+="'${word//\'/\'\\\'\'}' "; fi
  done
  echo "${out% }"
}
run() {
  echo "+ $(quoted "$@")"
  if [ "$DRY" = 0 ]; then "$@"; fi
}

[ -n "$TRTEXEC" ] || TRTEXEC="$(command -v trtexec || true)"
[ -n "$TRTEXEC" ] || { [ -x /usr/src/tensorrt/bin/trtexec ] && TRTEXEC=/usr/src/tensorrt/bin/trtexec; } || true
NOT_FOUND="trtexec not found (looked at --trtexec, \$AUTOTUNE_TRTEXEC, PATH and /usr/src/tensorrt/bin): the TensorRT \
wheel has no trtexec; install TensorRT's tar package or NVIDIA's libnvinfer-bin, or use an NGC TensorRT container, \
then pass --trtexec PATH"
if [ "$DRY" = 1 ]; then
  say "dry run: nothing is executed"
  [ -n "$TRTEXEC" ] || { say "(here: $NOT_FOUND)"; TRTEXEC="<trtexec>"; }
  WHEEL_SPEC="tensorrt==<trtexec's major.minor>.*"
  MAJOR=11
  say "(the variants' flags below are TensorRT 11's; on 10: --fp16, and precision=int8 --int8 --fp16)"
  CUDA_SPEC="cuda-python==<the driver's CUDA major>.*"
else
  [ -n "$TRTEXEC" ] || fail "$NOT_FOUND"
  command -v nvidia-smi >/dev/null || fail "nvidia-smi not found: this check needs a machine with an NVIDIA GPU and its driver"
  [ -x "$PY" ] || fail "no venv in .venv: run bash scripts/setup.sh first"
  TAG="$("$TRTEXEC" --help 2>&1 | sed -n 's/.*\[TensorRT v\([0-9][0-9]*\)\].*/\1/p' | head -n 1)"
  [ -n "$TAG" ] || fail "$TRTEXEC --help printed no [TensorRT vNNNNNN] banner: is it trtexec?"
  WHEEL_SPEC="tensorrt==$((TAG / 10000)).$((TAG / 100 % 100)).*"
  MAJOR=$((TAG / 10000))
  CUDA_MAJOR="$(nvidia-smi | sed -n 's/.*CUDA Version: *\([0-9][0-9]*\).*/\1/p' | head -n 1)"
  [ -n "$CUDA_MAJOR" ] || fail "nvidia-smi printed no CUDA Version: is the driver installed?"
  CUDA_SPEC="cuda-python==$CUDA_MAJOR.*"
  say "trtexec $TRTEXEC is TensorRT $((TAG / 10000)).$((TAG / 100 % 100)).$((TAG % 100))"
fi

run nvidia-smi --query-gpu=index,name,uuid,memory.total,memory.used,utilization.gpu,compute_cap \
  --format=csv,noheader,nounits
if [ "$WHEEL" = 1 ]; then
  run "$PY" -m pip install --quiet "$WHEEL_SPEC" "$CUDA_SPEC"
  run "$PY" -c "import tensorrt as trt; trt.Builder(trt.Logger(trt.Logger.WARNING)); print('TensorRT', trt.__version__, 'runs on this driver')"
  run "$PY" -c "from autotune.backends.tensorrt.runtime import find_runtime; print(find_runtime()[1])"
fi
run "$PY" -c "from autotune.models import MODELS, synthetic_model; print(synthetic_model(MODELS['resnet50']))"
run "$AUTOTUNE" devices --backend tensorrt --trtexec "$TRTEXEC"
# the int8 (QDQ) and fp16 variants: made, built, run and judged against ONNX Runtime's fp32 outputs
MODEL="${AUTOTUNE_CACHE:-$HOME/.cache/autotune}/synthetic/resnet50-full.onnx"  # where the line above builds it
SET=studies/gpu-check-random.npz
run mkdir -p studies
run "$PY" -c "import numpy as np, pathlib; from autotune.inputs import read_inputs; \
from autotune.task_accuracy import random_set; \
np.savez('$SET', **random_set(read_inputs(pathlib.Path('$MODEL')), 40).arrays)"
if [ "$MAJOR" = 10 ]; then FP16="--fp16"; INT8="precision=int8 --int8 --fp16"; else FP16="precision=fp16"; INT8="precision=int8"; fi
for FLAGS in "$INT8" "$FP16"; do
  run "$AUTOTUNE" bench --model resnet50 --onnx "$MODEL" \
    --backend tensorrt --trtexec "$TRTEXEC" --accuracy-set "$SET" --metric cosine --batch-size 8 --time 5 \
    --flags "$FLAGS"
done
run "$AUTOTUNE" run --model resnet50 --scenario offline --synthetic --backend tensorrt --trtexec "$TRTEXEC" \
  --trials 12 --timeout 4m --compile-timeout 150 --measure-time 2 --validate-top 2 --validate-time 5 --seed 0 \
  --storage "$STORAGE" --study "$STUDY"
run "$AUTOTUNE" export "$STUDY" --storage "$STORAGE" --format cmdline
run "$AUTOTUNE" run --model resnet50 --scenario server --synthetic --backend tensorrt --trtexec "$TRTEXEC" \
  --trials 6 --timeout 2m --compile-timeout 150 --measure-time 2 --validate-top 1 --validate-time 4 --seed 0 \
  --storage "$STORAGE" --study "$SERVER_STUDY"
run "$PY" -c "from autotune.storage import load_study; from autotune.results.frame import trial_frame
from autotune.results.estimates import ESTIMATE, estimate_gap; f = trial_frame(load_study('$STORAGE', '$SERVER_STUDY'))
print(f.reindex(columns=['trial', 'value', ESTIMATE]).to_string(index=False)); print('estimate against measurement:', estimate_gap(f))"
say "done: record the winner line above (and nvidia-smi's GPU, trtexec's version, the date) in bench/RESULTS.md"
