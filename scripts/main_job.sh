#!/usr/bin/env bash
# The main job on a machine without a Cloud AI 100 card: the qaic path against the emulated SDK in tests/.
# With a card, drop --sdk-root (default /opt/qti-aic) and pass your real ONNX file.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"
python -c "from pathlib import Path; from autotune.synthetic import build_convnet
for name in ('resnet50', 'retinanet'): build_convnet(Path(f'.autotune/models/{name}-synthetic.onnx'))"
autotune devices --sdk-root tests/qaic_emulator
autotune bench --model resnet50 --onnx .autotune/models/resnet50-synthetic.onnx \
  --flags "-aic-num-cores=2 -mos=1 -ols=2" --activations 7 --time 5 --sdk-root tests/qaic_emulator
autotune run --model retinanet --scenario server --onnx .autotune/models/retinanet-synthetic.onnx --trials 12 \
  --sdk-root tests/qaic_emulator --storage sqlite:///studies/main-job.db --seed 0
autotune export retinanet-server-qaic-16nsp --storage sqlite:///studies/main-job.db --format cmdline
