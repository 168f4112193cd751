"""The emulated engine build (``--onnx --saveEngine``) and engine load (``--loadEngine``), stdlib only.

A plan is a JSON file: the TensorRT version and GPU that built it, the network profile, the build settings and the
inputs' optimisation profile. A plan of another version or compute capability fails to load, as a real one does.
"""

import datetime
import json
import os
import signal
import sys
import time

import gpu_model as gm
import onnx_graph

FLOAT16, BFLOAT16 = 10, 16  # TensorProto.DataType
QDQ_OPS = {"QuantizeLinear", "DequantizeLinear"}
COMPUTE_OPS = {"Conv", "ConvTranspose", "MatMul", "Gemm"}


class Failed(Exception):
    """A build or inference error: its [E] lines, then &&&& FAILED and exit 1."""


def stamp():
    return datetime.datetime.now().strftime("[%m/%d/%Y-%H:%M:%S]")


def log(severity, text=""):
    sys.stdout.write(f"{stamp()} [{severity}] {text}\n")
    sys.stdout.flush()


def parse_shapes(spec, flag):
    """``x:1x3x224x224,'in:0':8x16`` -> {name: [dims]}."""
    shapes = {}
    rest = spec
    while rest:
        if rest.startswith("'"):
            name, _, rest = rest[1:].partition("'")
            rest = rest[1:] if rest.startswith(":") else rest
        else:
            name, _, rest = rest.partition(":")
        dims, _, rest = rest.partition(",")
        try:
            shapes[name] = [int(d) for d in dims.split("x")] if dims else []
        except ValueError:
            raise Failed([f"Invalid shape {dims!r} for {name} in {flag}"]) from None
    return shapes


def _precision(opts, major, graph_file):
    """(precision, quantization, share of compute nodes in int8). A file with Q/DQ nodes builds as int8 under both
    contracts (explicit quantization: the scales are the file's); otherwise 10.x from the builder flags (int8 with the
    calibrator's scales: implicit), 11.x from the file's fp16/bf16 weights (weak typing gone)."""
    nodes, kinds = _graph(graph_file)
    if {op for op, _, _ in nodes} & QDQ_OPS:
        return "int8", "explicit", _quantized_share(nodes)
    if major == 10:
        if opts.get("--best") or opts.get("--int8"):
            return ("int8" if opts.get("--fp16") or opts.get("--best") else "int8-fp32"), "implicit", 1.0
        return ("bf16" if opts.get("--bf16") else "fp16" if opts.get("--fp16") else "fp32"), None, 0.0
    return ("bf16" if BFLOAT16 in kinds else "fp16" if FLOAT16 in kinds else "fp32"), None, 0.0


def _quantized_share(nodes):
    """The share of compute nodes (Conv, MatMul, Gemm) whose data and weight come through DequantizeLinear: those
    run in int8, the others (a QDQ model's layers kept in float) do not."""
    dequantized = {name for op, _, outputs in nodes if op == "DequantizeLinear" for name in outputs}
    compute = [inputs for op, inputs, _ in nodes if op in COMPUTE_OPS]
    if not compute:
        return 1.0
    return sum(all(name in dequantized for name in inputs[:2]) for inputs in compute) / len(compute)


def _graph(path):
    """The model's nodes as (op type, inputs, outputs) and its initializers' data types (GraphProto.node = 1:
    input = 1, output = 2, op_type = 4; initializer = 5: data_type = 2)."""
    with open(path, "rb") as handle:
        data = memoryview(handle.read())
    nodes, types = [], set()
    try:
        graph = next((v for n, v in onnx_graph.fields(data) if n == 7 and not isinstance(v, int)), b"")
        for number, value in onnx_graph.fields(graph):
            if number == 1:
                parts = [(n, bytes(v).decode()) for n, v in onnx_graph.fields(value) if n in (1, 2, 4)]
                nodes.append((next((v for n, v in parts if n == 4), ""), [v for n, v in parts if n == 1],
                              [v for n, v in parts if n == 2]))
            elif number == 5:
                types |= {v for n, v in onnx_graph.fields(value) if n == 2 and isinstance(v, int)}
    except onnx_graph.NotOnnx:
        return [], set()
    return nodes, types


def _profile_inputs(graph, opts):
    """Each input with its min/opt/max dims (a dynamic one without shapes set to 1, with trtexec's warning)."""
    given = {flag: parse_shapes(opts[flag], flag) for flag in ("--minShapes", "--optShapes", "--maxShapes")
             if flag in opts}
    names = {i["name"] for i in graph["inputs"]}
    for shapes in given.values():
        for name in shapes:
            if name not in names:
                raise Failed([f'Cannot find input tensor with name "{name}" in the network inputs! Please make sure '
                              f'the input tensor names are correct.'])
    dynamic = [i for i in graph["inputs"] if not all(isinstance(d, int) for d in i["dims"])]
    if given and not dynamic:
        raise Failed(["Static model does not take explicit shapes since the shape of inference tensors will be "
                      "determined by the model itself"])
    inputs = []
    for spec in graph["inputs"]:
        dims = spec["dims"]
        if spec in dynamic and not any(spec["name"] in s for s in given.values()):
            ones = [d if isinstance(d, int) else 1 for d in dims]
            log("W", f"Dynamic dimensions required for input: {spec['name']}, but no shapes were provided. "
                     f"Automatically overriding shape to: {'x'.join(map(str, ones))}")
            low = opt = high = ones
        else:
            picked = [given.get(f, {}).get(spec["name"]) for f in ("--minShapes", "--optShapes", "--maxShapes")]
            opt = picked[1] or picked[2] or picked[0] or [d if isinstance(d, int) else 1 for d in dims]
            low, high = picked[0] or opt, picked[2] or opt
        _check_profile(spec, low, opt, high)
        inputs.append({"name": spec["name"], "elem_type": spec["elem_type"], "dims": dims, "min": low, "opt": opt,
                       "max": high})
    return inputs


def _check_profile(spec, low, opt, high):
    dims = spec["dims"]
    for i, d in enumerate(dims):
        if len(low) != len(dims) or len(opt) != len(dims) or len(high) != len(dims):
            raise Failed([f"Error[4]: [network.cpp::validate::3526] Error Code 4: Internal Error ({spec['name']}: "
                          f"the profile's rank does not match the network's ({len(dims)}))"])
        fixed = isinstance(d, int)
        if (fixed and not low[i] == opt[i] == high[i] == d) or not 1 <= low[i] <= opt[i] <= high[i]:
            want = f"expected min=opt=max={d}" if fixed else "expected min <= opt <= max"
            raise Failed([f"Error[4]: [network.cpp::validate::3526] Error Code 4: Internal Error ({spec['name']}: "
                          f"for dimension number {i} in profile 0 does not match network definition (got "
                          f"min={low[i]}, opt={opt[i]}, max={high[i]}), {want}.)"])


def batch_of(inputs):
    """The max batch the profile allows: the largest max/min ratio of a dimension (1 for a static model)."""
    return max([h // lo for i in inputs for lo, h in zip(i["min"], i["max"]) if lo] + [1])


def _model_bytes(path, graph):
    folder = os.path.dirname(path)
    extra = [os.path.join(folder, name) for name in graph["external_data"]]
    for data in extra:
        if not os.path.isfile(data):
            raise Failed([f"Failed to open external data file {data}", "Failed to parse onnx file"])
    return os.path.getsize(path) + sum(os.path.getsize(p) for p in extra)


def build(opts, version, kind, state, argv, env):
    """Build (and save) an engine; the plan dict."""
    path = opts["--onnx"]
    if not os.path.isfile(path):
        raise Failed([f"Cannot open ONNX file {path}", "Failed to parse onnx file"])
    graph = onnx_graph.read_graph(path)
    if graph is None:
        raise Failed(["[TRT] ModelImporter.cpp:914: ERROR: Failed to parse ONNX model", "Failed to parse onnx file",
                      "Parsing model failed", "Failed to create engine from model or file.", "Engine set up failed"])
    log("I", "Start parsing network model.")
    profile = gm.profile_for_model(path, _model_bytes(path, graph))
    inputs = _profile_inputs(graph, opts)
    for spec in inputs:
        if spec["min"] != spec["max"]:
            log("I", f"Set shape of input tensor {spec['name']} for optimization profile 0 to: "
                     f"MIN={'x'.join(map(str, spec['min']))} OPT={'x'.join(map(str, spec['opt']))} "
                     f"MAX={'x'.join(map(str, spec['max']))}")
    precision, quantization, share = _precision(opts, version[0], path)
    calib = opts.get("--calib")
    if calib and not os.path.isfile(calib):
        raise Failed([f"Could not open the calibration cache file {calib}", "Engine set up failed"])
    if quantization == "implicit" and not calib:
        log("W", "[TRT] Calibrator is not being used. Users must provide dynamic range for all tensors that are not "
                 "Int32 or Bool.")
    int8 = {"quantization": quantization, "quantized_share": round(share, 4),
            "int8_speedup": gm.int8_speedup(profile, share)} if quantization else {}
    cfg = {"precision": precision, **int8, "batch": batch_of(inputs), "tf32": not opts.get("--noTF32"),
           "workspace_mib": _workspace(opts.get("--memPoolSize")), "opt_level": opts.get("--builderOptimizationLevel", 3),
           "tiling_level": opts.get("--tilingOptimizationLevel", 0), "aux_streams": opts.get("--maxAuxStreams")}
    _check_memory(profile, cfg, kind, state)
    _record(env.get("TRT_EMU_BUILD_LOG"), argv)
    if gm_matches(env.get("TRT_EMU_BUILD_KILL"), argv):
        os.kill(os.getpid(), signal.SIGKILL)
    cache, hit = _timing_cache(opts.get("--timingCacheFile"), version, kind, profile, cfg)
    seconds = gm.build_seconds(profile, cfg, cache_hit=hit)
    time.sleep(seconds * gm.env_float(env, "TRT_EMU_TIME_SCALE", 0.01))
    engine = {"emulated_engine": 1, "tensorrt": list(version), "gpu": kind.name, "compute_cap": kind.compute_cap,
              "profile": profile._asdict(), "onnx": os.path.abspath(path),
              "calibrated": bool(calib) or quantization == "explicit",
              "inputs": inputs, **cfg}
    log("I", f"Engine built in {seconds:.6g} sec.")
    size_mb = profile.weights_mb * gm.PRECISION_MEMORY[gm.effective_precision(precision, kind.compute_cap, True)]
    log("I", f"Created engine with size: {size_mb:.6g} MiB")
    if cache is not None:
        _save_timing_cache(cache, version, kind, profile, cfg)
    if "--saveEngine" in opts:
        with open(opts["--saveEngine"], "w") as handle:
            json.dump(engine, handle)
        log("I", f"Engine saved to {opts['--saveEngine']}")
    return engine


def gm_matches(value, argv):
    """``1``, or a text found in the command line."""
    return value == "1" or (bool(value) and value in " ".join(argv))


def _workspace(spec):
    if not spec:
        return None
    pool, _, size = spec.partition(":")
    if pool != "workspace":
        return None
    scale = {"K": 1 / 1024, "M": 1, "G": 1024}.get(size[-1:], 1)
    try:
        return float(size.rstrip("KMG")) * scale
    except ValueError:
        raise Failed([f"Invalid --memPoolSize {spec}"]) from None


def _check_memory(profile, cfg, kind, state):
    need = gm.build_memory_mb(profile, cfg, kind)
    free = kind.memory_mib - (gm.BUSY_USED_MIB if state == "busy" else 0) - gm.RESERVED_MIB
    if need > free:
        raise Failed([f"Error[2]: [virtualMemoryBuffer.cpp::resizePhysical] Error Code 2: OutOfMemory "
                      f"(requested {need:.0f} MiB, {free} MiB free: out of memory)",
                      "Engine could not be created from network", "Building engine failed",
                      "Failed to create engine from model or file.", "Engine set up failed"])


def _timing_key(profile, cfg):
    return f"{profile.name}/{cfg['precision']}/{cfg['opt_level']}"


def _timing_cache(path, version, kind, profile, cfg):
    """(cache contents or None without --timingCacheFile, whether it holds this network's timings)."""
    if not path:
        log("I", "[TRT] Local timing cache in use. Profiling results in this builder pass will not be stored.")
        return None, False
    contents = {"tensorrt": list(version), "compute_cap": kind.compute_cap, "entries": []}
    if os.path.isfile(path):
        try:
            with open(path) as handle:
                loaded = json.load(handle)
            log("I", f"Loaded {os.path.getsize(path)} bytes of timing cache from {path}")
            if loaded.get("tensorrt") == list(version) and loaded.get("compute_cap") == kind.compute_cap:
                contents = loaded
            else:
                log("W", "[TRT] The timing cache was created by another TensorRT version or GPU: it is ignored")
        except (OSError, ValueError):
            log("W", f"[TRT] Could not read the timing cache {path}: starting an empty one")
    contents["path"] = path
    return contents, _timing_key(profile, cfg) in contents["entries"]


def _save_timing_cache(cache, version, kind, profile, cfg):
    path = cache.pop("path")
    cache["entries"] = sorted(set(cache["entries"]) | {_timing_key(profile, cfg)})
    partial = f"{path}.{os.getpid()}.part"
    with open(partial, "w") as handle:
        json.dump(cache, handle)
    os.replace(partial, path)
    log("I", f"Saved {os.path.getsize(path)} bytes of timing cache to {path}")


def load(path, version, kind):
    """The plan at ``path``; one of another TensorRT version or compute capability fails to deserialize."""
    try:
        with open(path) as handle:
            engine = json.load(handle)
        if engine.get("emulated_engine") != 1:
            raise ValueError
    except (OSError, ValueError):
        raise Failed(["Error[1]: IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                      "assertion plan magic tag failed.)", "Engine deserialization failed"]) from None
    tag = version[0] * 10000 + version[1] * 100 + version[2]
    built = engine["tensorrt"]
    if list(version) != built:
        raise Failed([f"Error[1]: IRuntime::deserializeCudaEngine: Error Code 1: Serialization (Serialization "
                      f"assertion stdVersionRead == kSERIALIZATION_VERSION failed.Version tag does not match. Note: "
                      f"Current Version: {tag}, Serialized Engine Version: "
                      f"{built[0] * 10000 + built[1] * 100 + built[2]})", "Engine deserialization failed"])
    if engine["compute_cap"] != kind.compute_cap:
        raise Failed([f"Error[6]: IRuntime::deserializeCudaEngine: Error Code 6: API Usage Error (The engine plan "
                      f"file is generated on an incompatible device, expecting compute {kind.compute_cap} got "
                      f"compute {engine['compute_cap']}, please rebuild.)", "Engine deserialization failed"])
    if engine["gpu"] != kind.name:
        log("W", "[TRT] Using an engine plan file across different models of devices is not recommended and is "
                 "likely to affect performance or even cause errors.")
    log("I", f"Loaded engine size: {os.path.getsize(path) / 2 ** 20:.6g} MiB")
    return engine


def _record(path, argv):
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"argv": argv}) + "\n")
