#!/usr/bin/env bash
# The main job on a fresh machine without a Cloud AI 100 card:
#  1. a real study on this CPU (ONNX Runtime, measured with MLPerf LoadGen) on a synthetic ResNet-50 v1.5,
#     then its report and its exported preset;
#  2. the Cloud AI 100 path (qaic-exec / qaic-runner command lines, parsing, the study) against the emulated SDK,
#     with two emulated cards measuring while compiles run ahead, and the compile cache it filled.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

autotune run --model resnet50 --scenario offline --trials 12 --synthetic --seed 0
study="resnet50-offline-ort-$(python -c 'from autotune.backends._cpu import cpu_device; print(cpu_device().cores)')cores"
autotune report "$study"
autotune export "$study" --out presets/cpu-winners.yaml

python -c "from pathlib import Path; from autotune.synthetic import build_convnet
for name in ('resnet50', 'retinanet'): build_convnet(Path(f'.autotune/models/{name}-small.onnx'))"
autotune devices --sdk-root tests/qaic_emulator
autotune bench --model resnet50 --onnx .autotune/models/resnet50-small.onnx \
  --flags "-aic-num-cores=2 -mos=1 -ols=2" --activations 7 --time 5 --sdk-root tests/qaic_emulator
QAIC_EMU_DEVICES=Ready,Ready autotune run --model retinanet --scenario server \
  --onnx .autotune/models/retinanet-small.onnx --trials 30 --sdk-root tests/qaic_emulator \
  --storage sqlite:///studies/emulated.db --seed 0
autotune cache info
autotune export retinanet-server-qaic-16nsp --storage sqlite:///studies/emulated.db --format cmdline
