"""The emulated card's numerics: how far a QPC's outputs are from the model's fp32 outputs, by its precision and int8
recipe (stdlib), and qaic-runner's ``--write-output-dir`` files: the QPC's ONNX file run with onnxruntime on the
``-i`` inputs (else seeded random ones), each output perturbed by seeded noise of that size (needs numpy and
onnxruntime: ``ensure_onnxruntime`` re-runs the runner under $QAIC_EMU_PYTHON where this python lacks them).

The error is the emulator's own model, not the SDK's: a relative standard deviation (of each sample's output RMS)
that is tiny at fp16 and, at int8, a model-dependent base scaled by the calibration, the two schemas, per-channel
constants and the nodes kept in fp16. Power-of-two scales on the activations are the recipe that clearly loses
top-1 (60x the base error); per-channel constants, MSE, KL and a 99.99 percentile gain a little over MinMax."""

import hashlib
import json
import os
import sys

FP16_ERROR = 0.0002
INT8_ERROR = {"resnet50": 0.002, "retinanet": 0.003, "bert": 0.004, "generic": 0.0025}  # by performance profile
CALIBRATION = {"None": 1.0, "KLMinimization": 0.8, "KLMinimizationV2": 0.8, "MSE": 0.75, "SQNR": 0.9}
PERCENTILE = {100.0: 1.0, 99.999: 0.8, 99.99: 0.7, 99.9: 0.9}  # below 99.9 clipping costs more
ACTIVATION_SCHEMA = {"symmetric_with_uint8": 1.0, "asymmetric": 0.85, "symmetric": 1.5,
                     "symmetric_with_power2_scale": 60.0}
CONSTANT_SCHEMA = {"symmetric_with_uint8": 1.0, "asymmetric": 1.0, "symmetric": 1.1, "symmetric_with_power2_scale": 3.0}
CHANNELWISE = 0.7
FP16_NODE = 0.6  # each node the node-precision file keeps in fp16
FP16_NODE_SLOWDOWN = 0.03  # each such node costs this share of the int8 speed


def relative_error(qpc):
    """The relative noise of a QPC's outputs: its precision, and at int8 its recipe (``qpc["recipe"]``)."""
    if qpc.get("precision") != "int8":
        return FP16_ERROR
    recipe = qpc.get("recipe") or {}
    error = INT8_ERROR.get(qpc.get("profile"), INT8_ERROR["generic"])
    calibration = recipe.get("calibration") or "None"
    if calibration == "Percentile":
        value = float(recipe.get("percentile") or 100.0)
        error *= PERCENTILE.get(value, 1.0 + (99.9 - value))
    else:
        error *= CALIBRATION[calibration]
    error *= ACTIVATION_SCHEMA[recipe.get("schema_activations") or "symmetric_with_uint8"]
    error *= CONSTANT_SCHEMA[recipe.get("schema_constants") or "symmetric_with_uint8"]
    error *= CHANNELWISE if recipe.get("channelwise") else 1.0
    return error * FP16_NODE ** len(recipe.get("fp16_nodes") or [])


def speed_factor(qpc):
    """What the nodes kept in fp16 cost an int8 QPC's speed (1.0 without)."""
    return 1.0 / (1.0 + FP16_NODE_SLOWDOWN * len((qpc.get("recipe") or {}).get("fp16_nodes") or []))


def ensure_onnxruntime(argv, script):
    """--write-output-dir runs the model with onnxruntime: re-run under $QAIC_EMU_PYTHON when this python lacks it."""
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        python = os.environ.get("QAIC_EMU_PYTHON")
        if python and (os.path.abspath(python) != os.path.abspath(sys.executable) or sys.flags.no_site):
            os.execv(python, [python, script, *argv])
        sys.stderr.write("the emulated qaic-runner needs numpy and onnxruntime for --write-output-dir: run it with "
                         "the venv's python3 on PATH or set QAIC_EMU_PYTHON\nInference run failed\n")
        sys.exit(1)


def write_outputs(qpc, input_files, out_dir, *, count, seed):
    """Write ``count`` inferences' outputs of activation 0 to ``out_dir`` (``<name>-activation-0-inf-<i>.bin``, a raw
    array in the output's dtype); every inference of the same inputs gives the same outputs."""
    import numpy as np
    import onnxruntime

    dtypes = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
              10: np.float16, 11: np.float64}
    digest = hashlib.sha256(json.dumps([seed, qpc.get("precision"), qpc.get("recipe")], sort_keys=True).encode())
    feed, random_inputs = {}, np.random.default_rng(int(seed))
    for spec, path in zip(qpc["inputs"], list(input_files) + [None] * len(qpc["inputs"])):
        dtype = dtypes[spec["elem_type"]]
        if path is not None:
            with open(path, "rb") as handle:
                raw = handle.read()
            digest.update(raw)
            feed[spec["name"]] = np.frombuffer(raw, dtype=dtype).reshape(spec["dims"])
        else:
            feed[spec["name"]] = random_inputs.random(spec["dims"]).astype(dtype)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(qpc["model"], options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    rng = np.random.default_rng(int.from_bytes(digest.digest()[:8], "big"))
    error = relative_error(qpc)
    os.makedirs(out_dir, exist_ok=True)
    for name, value in zip(names, session.run(names, feed)):
        value = np.asarray(value)
        if value.dtype.kind == "f":
            rows = value.reshape(value.shape[0], -1) if value.ndim > 1 else value.reshape(1, -1)
            scale = np.sqrt(np.mean(np.square(rows.astype(np.float64)), axis=1, keepdims=True))
            noisy = rows + error * scale * rng.standard_normal(rows.shape)
            value = noisy.reshape(value.shape).astype(value.dtype)
        for inference in range(count):
            path = os.path.join(out_dir, f"{name}-activation-0-inf-{inference}.bin")
            value.tofile(path)
            print(f"Writing file:{path}")
