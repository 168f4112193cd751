#!/usr/bin/env bash
# The main job on a fresh machine without a Cloud AI 100 card:
#  1. a real study on this CPU (ONNX Runtime, measured with MLPerf LoadGen) on a synthetic ResNet-50 v1.5, int8
#     included: random inputs calibrate it, and judge every compile by its top-1 agreement with fp32 (marked as
#     random inputs in every output); then its report and its exported preset;
#  2. the Cloud AI 100 path (qaic-exec / qaic-runner command lines, parsing, the study) against the emulated SDK,
#     with two emulated cards measuring while compiles run ahead (its server figures measured by LoadGen through the
#     emulated runtime, emulators/qaic/python/qaicrt.py, the estimate kept beside each), a short precision study
#     (fp16 and int8 recipes judged on random inputs by agreement with fp32), and the compile cache they filled;
#  3. the TensorRT path (trtexec / nvidia-smi) against the emulated trtexec: a short study on each of its two
#     contracts (TensorRT 10 and 11), a short precision study on 11 (the file, its fp16 conversion and its int8 QDQ
#     model, each judged on a small accuracy set), and what scripts/gpu_check.sh would run on a machine with a GPU.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$PWD/.venv/bin:$PATH"

autotune run --model resnet50 --scenario offline --trials 8 --measure-time 2 --synthetic --seed 0 --validate-top 1 \
  --validate-time 3 --validate-rounds 3 --validate-max-rounds 3
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
python -c "import numpy as np
np.savez('.autotune/models/resnet50-small-acc.npz', input=np.random.default_rng(0).random((60, 1, 3, 32, 32), 'f4'))"
autotune run --model resnet50 --scenario offline --onnx .autotune/models/resnet50-small.onnx --trials 10 \
  --accuracy-set .autotune/models/resnet50-small-acc.npz --sdk-root emulators/qaic \
  --storage sqlite:///studies/emulated.db --seed 0 --validate-rounds 3 --validate-max-rounds 3
autotune cache info
autotune export retinanet-server-qaic-16nsp --storage sqlite:///studies/emulated.db --format cmdline
autotune export resnet50-offline-qaic-16nsp --storage sqlite:///studies/emulated.db --format cmdline

TRTEXEC=emulators/trtexec/bin/trtexec
autotune devices --backend tensorrt --trtexec "$TRTEXEC"
autotune run --model resnet50 --scenario offline --onnx .autotune/models/resnet50-small.onnx --trials 6 \
  --trtexec "$TRTEXEC" --storage sqlite:///studies/emulated.db --seed 0
TRT_EMU_VERSION=11 autotune run --model retinanet --scenario server --onnx .autotune/models/retinanet-small.onnx \
  --trials 4 --trtexec "$TRTEXEC" --storage sqlite:///studies/emulated.db --seed 0
autotune export resnet50-offline-tensorrt-140gib --storage sqlite:///studies/emulated.db --format cmdline
python -c "import numpy as np, pathlib; from autotune.inputs import read_inputs; from autotune.task_accuracy import \
random_set; np.savez('.autotune/models/resnet50-small-acc5.npz', \
**random_set(read_inputs(pathlib.Path('.autotune/models/resnet50-small.onnx')), 5).arrays)"
TRT_EMU_VERSION=11 autotune run --model resnet50 --scenario singlestream --onnx .autotune/models/resnet50-small.onnx \
  --trials 3 --trtexec "$TRTEXEC" --accuracy-set .autotune/models/resnet50-small-acc5.npz --metric cosine \
  --validate-rounds 3 --validate-max-rounds 3 --storage sqlite:///studies/emulated.db --study resnet50-precision-trt11 --seed 0
autotune export resnet50-precision-trt11 --storage sqlite:///studies/emulated.db --format cmdline
bash scripts/gpu_check.sh --dry-run
