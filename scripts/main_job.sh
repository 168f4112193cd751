#!/usr/bin/env bash
# The main job on a machine without a Cloud AI 100 card: the qaic path against the emulated SDK in tests/.
# With a card, drop --sdk-root (default /opt/qti-aic) and pass your real ONNX file.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
python -c "from pathlib import Path; from autotune.synthetic import build_convnet; build_convnet(Path('.autotune/models/resnet50-synthetic.onnx'))"
autotune devices --sdk-root tests/qaic_emulator
autotune bench --model resnet50 --onnx .autotune/models/resnet50-synthetic.onnx \
  --flags "-aic-num-cores=2 -mos=1 -ols=2" --activations 7 --time 5 --sdk-root tests/qaic_emulator
