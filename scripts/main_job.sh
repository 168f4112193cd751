#!/usr/bin/env bash
# The main job on a fresh machine without a Cloud AI 100 card:
#  1. a real study on this CPU (ONNX Runtime, measured with MLPerf LoadGen) on a synthetic ResNet-50 v1.5, int8
#     included: random inputs calibrate it, and judge every compile by its top-1 agreement with fp32 (marked as
#     random inputs in every output); then its report and its exported preset;
#  2. the Cloud AI 100 path (qaic-exec / qaic-runner command lines, parsing, the study) against the emulated SDK,
#     with two emulated cards measuring while compiles run ahead, and the compile cache it filled; the study's server
#     figures measured by LoadGen through the emulated runtime (emulators/qaic/python/qaicrt.py), the estimate kept
#     beside each;
#  3. the TensorRT path (trtexec / nvidia-smi) against the emulated trtexec: a short study on each of its two
#     contracts (TensorRT 10 and 11), and what scripts/gpu_check.sh would run on a machine with a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

autotune run --model resnet50 --scenario offline --trials 8 --measure-time 2 --synthetic --seed 0 --validate-top 1 \
  --validate-max-rounds 5
study="resnet50-offline-ort-$(python -c 'from autotune.backends._cpu import cpu_device; print(cpu_device().cores)')cores"
autotune report "$study"
autotune export "$study" --out presets/cpu-winners.yaml

python -c "from pathlib import Path; from autotune.synthetic import build_convnet
for name in ('resnet50', 'retinanet'): build_convnet(Path(f'.autotune/models/{name}-small.onnx'))"
autotune devices --sdk-root emulators/qaic
autotune bench --model resnet50 --onnx .autotune/models/resnet50-small.onnx \
  --flags "-aic-num-cores=2 -mos=1 -ols=2" --activations 7 --time 5 --sdk-root emulators/qaic
QAIC_EMU_DEVICES=Ready,Ready PYTHONPATH="$PWD/emulators/qaic/python${PYTHONPATH:+:$PYTHONPATH}" autotune run \
  --model retinanet --scenario server --onnx .autotune/models/retinanet-small.onnx --trials 4 --measure-time 0.5 \
  --validate-top 1 --validate-time 0.5 --validate-rounds 3 --validate-max-rounds 3 --sdk-root emulators/qaic \
  --storage sqlite:///studies/emulated.db --seed 0
autotune cache info
autotune export retinanet-server-qaic-16nsp --storage sqlite:///studies/emulated.db --format cmdline

TRTEXEC=emulators/trtexec/bin/trtexec
autotune devices --backend tensorrt --trtexec "$TRTEXEC"
autotune run --model resnet50 --scenario offline --onnx .autotune/models/resnet50-small.onnx --trials 6 \
  --trtexec "$TRTEXEC" --storage sqlite:///studies/emulated.db --seed 0
TRT_EMU_VERSION=11 autotune run --model retinanet --scenario server --onnx .autotune/models/retinanet-small.onnx \
  --trials 4 --trtexec "$TRTEXEC" --storage sqlite:///studies/emulated.db --seed 0
autotune export resnet50-offline-tensorrt-140gib --storage sqlite:///studies/emulated.db --format cmdline
bash scripts/gpu_check.sh --dry-run
