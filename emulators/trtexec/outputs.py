"""--exportOutput of the emulated trtexec: the engine's ONNX file run with onnxruntime on the loaded (else seeded
random) inputs, its outputs then rounded as the engine's precision would: TF32 (10-bit mantissa), fp16 (overflowing
to inf beyond 65504), bf16, or int8. An int8 engine of a QDQ model (explicit quantization) gives onnxruntime's run of
that model (its recipe's own error), rounded to fp16, plus seeded noise of TRT_EMU_INT8_NOISE x the share of compute
nodes in int8 x each output's standard deviation (the GPU's int8 kernels); one of 10.x's calibrator takes 8-bit
steps of each output's range after fp16 (with no calibration cache the scales are made up, as TensorRT's are, and so
are the results). Needs numpy and onnxruntime."""

import numpy as np
import onnxruntime

import gpu_model as gm

DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64, 9: np.bool_,
          10: np.float16, 11: np.float64}


def export(engine, dims, files, path, *, seed, int8_noise):
    """Write the outputs of one inference to ``path`` in trtexec's JSON form."""
    rng = np.random.default_rng(int(seed))
    feed = {}
    for spec in engine["inputs"]:
        dtype = DTYPES[spec["elem_type"]]
        shape = dims[spec["name"]]
        if spec["name"] in files:
            feed[spec["name"]] = np.fromfile(files[spec["name"]], dtype=dtype).reshape(shape)
        elif np.issubdtype(dtype, np.floating):
            feed[spec["name"]] = rng.random(shape).astype(dtype)
        else:
            feed[spec["name"]] = rng.integers(0, 4, shape).astype(dtype)
    options = onnxruntime.SessionOptions()
    options.log_severity_level = 4
    session = onnxruntime.InferenceSession(engine["onnx"], options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    results = session.run(names, feed)
    precision = gm.effective_precision(engine["precision"], engine["compute_cap"], engine.get("tf32", True))
    if engine.get("quantization") == "explicit":
        noise = np.random.default_rng([int(seed), 8])
        scale = int8_noise * engine.get("quantized_share", 1.0)
        entries = [(name, _explicit(np.asarray(value), scale, noise)) for name, value in zip(names, results)]
    else:
        entries = [(name, _degrade(np.asarray(value), precision, engine.get("calibrated", False), rng))
                   for name, value in zip(names, results)]
    with open(path, "w") as handle:
        handle.write(_document(entries))


def _degrade(value, precision, calibrated, rng):
    if value.dtype.kind != "f":
        return value
    x = value.astype(np.float32)
    if precision == "tf32":
        return _round_mantissa(x, 13)
    if precision == "bf16":
        return _round_mantissa(x, 16)
    with np.errstate(over="ignore"):
        half = x.astype(np.float16).astype(np.float32)
    if precision == "fp16":
        return half
    if precision.startswith("int8"):
        if not calibrated:
            return half * rng.uniform(0.3, 1.7, half.shape).astype(np.float32)
        finite = np.abs(half[np.isfinite(half)])
        step = (finite.max() / 127.0) if finite.size and finite.max() > 0 else 1.0
        return np.round(half / step) * step
    return x


def _explicit(value, scale, rng):
    if value.dtype.kind != "f":
        return value
    with np.errstate(over="ignore"):
        half = value.astype(np.float32).astype(np.float16).astype(np.float32)
    finite = half[np.isfinite(half)]
    spread = float(finite.std()) if finite.size else 0.0
    return half + (scale * spread * rng.standard_normal(half.shape)).astype(np.float32)


def _round_mantissa(x, dropped_bits):
    bits = x.view(np.uint32).astype(np.uint64)
    half = 1 << (dropped_bits - 1)
    rounded = ((bits + half) >> dropped_bits) << dropped_bits
    return rounded.astype(np.uint32).view(np.float32)


def _document(entries):
    """trtexec's exportJSONOutput layout; numbers as a C++ stream prints them (6 significant digits, inf, nan)."""
    lines, sep = ["["], "  "
    for name, value in entries:
        dims = "x".join(str(d) for d in value.shape)
        flat = value.ravel().tolist()
        numbers = ", ".join(f"{v:.6g}" if isinstance(v, float) else str(int(v)) for v in flat)
        lines += [f'{sep}{{ "name" : "{name}"', f'  , "dimensions" : "{dims}"', f'  , "values" : [ {numbers} ]', "  }"]
        sep = ", "
    lines.append("]")
    return "\n".join(lines) + "\n"
