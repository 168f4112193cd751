"""The emulated inference phase: shapes and inputs checked against the engine, the runtime settings of the version
contract, the seeded performance model, the Performance summary and its warnings, --exportTimes and --exportOutput
(the latter through outputs.py, which needs onnxruntime)."""

import json
import math
import os
import statistics
import sys
import time

import gpu_model as gm
import onnx_graph
from plan import Failed, log, parse_shapes

TRACE_LIMIT = 4000  # queries written by --exportTimes (a real trtexec writes every one)
STATS_LIMIT = 20000  # queries drawn for the summary's statistics


def ensure_onnxruntime(argv, script):
    """--exportOutput runs the model with onnxruntime: re-run under $TRT_EMU_PYTHON when this python lacks it."""
    try:
        import numpy  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        python = os.environ.get("TRT_EMU_PYTHON")
        if python and os.path.abspath(python) != os.path.abspath(sys.executable):
            os.execv(python, [python, script, *argv])
        sys.stdout.write("[E] the emulated trtexec needs onnxruntime and numpy for --exportOutput: run it with the "
                         "venv's python3 on PATH or set TRT_EMU_PYTHON\n")
        sys.exit(1)


def _runtime(opts, major):
    """The effective runtime settings: TensorRT 10 defaults to no CUDA graph, no spin wait, transfers included;
    TensorRT 11 flipped all three."""
    if major == 10:
        graph, spin, transfers = bool(opts.get("--useCudaGraph")), bool(opts.get("--useSpinWait")), \
            not opts.get("--noDataTransfers")
    else:
        graph, spin = not opts.get("--noCudaGraph"), not opts.get("--noSpinWait")
        transfers = bool(opts.get("--includeDataTransfers")) and not opts.get("--noDataTransfers")
    if "--streams" in opts and major >= 11:
        log("W", "--streams flag has been deprecated, use --infStreams flag instead.")
    streams = opts.get("--infStreams", opts.get("--streams", 1))
    return {"streams": streams, "cuda_graph": graph, "spin_wait": spin, "transfers": transfers}


def _shapes(engine, opts):
    """The run's dims per input (dynamic ones from --shapes, else the profile's opt), checked against the profile."""
    given = parse_shapes(opts["--shapes"], "--shapes") if "--shapes" in opts else {}
    names = {i["name"] for i in engine["inputs"]}
    for name in given:
        if name not in names:
            raise Failed([f'Cannot find input tensor with name "{name}" in the engine bindings! Please make sure the '
                          f'input tensor names are correct.'])
    dims = {}
    for spec in engine["inputs"]:
        shape = given.get(spec["name"], spec["opt"])
        if len(shape) != len(spec["min"]) or not all(lo <= d <= hi for lo, d, hi in zip(spec["min"], shape,
                                                                                       spec["max"])):
            raise Failed([f"Error[3]: [executionContext.cpp::setInputShape::2068] Error Code 3: API Usage Error "
                          f"(Parameter check failed, condition: shape within the optimization profile. Set "
                          f"dimensions of {spec['name']} are [{','.join(map(str, shape))}], the profile allows "
                          f"[{','.join(map(str, spec['min']))}] to [{','.join(map(str, spec['max']))}].)"])
        dims[spec["name"]] = shape
    return dims


def _loaded_inputs(engine, dims, opts):
    """--loadInputs files by input name, each checked to hold the input's bytes."""
    files = parse_shapes_files(opts.get("--loadInputs", ""))
    for name, path in files.items():
        spec = next((i for i in engine["inputs"] if i["name"] == name), None)
        if spec is None:
            raise Failed([f"Cannot find input tensor with name \"{name}\" for --loadInputs"])
        need = onnx_graph.byte_size({"elem_type": spec["elem_type"], "dims": dims[name]})
        if not os.path.isfile(path) or (need is not None and os.path.getsize(path) != need):
            have = os.path.getsize(path) if os.path.isfile(path) else "no"
            raise Failed([f"Cannot load input {name} from {path}: {have} bytes, the input takes {need}"])
    return files


def parse_shapes_files(spec):
    """``x:/path/0-x.raw,'in:0':/path/1.raw`` -> {name: path}."""
    files, rest = {}, spec
    while rest:
        if rest.startswith("'"):
            name, _, rest = rest[1:].partition("'")
            rest = rest[1:]
        else:
            name, _, rest = rest.partition(":")
        path, _, rest = rest.partition(",")
        files[name] = path
    return files


def _batch(engine, dims):
    return max([d // lo for spec in engine["inputs"] for lo, d in zip(spec["min"], dims[spec["name"]])
                if lo and spec["min"] != spec["max"]] + [1])


def infer(engine, opts, version, kind, state, argv, env):
    dims = _shapes(engine, opts)
    files = _loaded_inputs(engine, dims, opts)
    run = _runtime(opts, version[0]) | {"batch": _batch(engine, dims), "busy": state == "busy"}
    _record(env.get("TRT_EMU_RUN_LOG"), argv)
    profile = gm.Profile(**engine["profile"])
    if run["streams"] > 1:
        log("W", "* Multiple inference streams are used. Latencies may not be accurate since inferences may run in "
                 "parallel.")
    times = gm.query_times(profile, engine, kind, run)
    seed = gm.env_float(env, "TRT_EMU_SEED", 0)
    noise = gm.env_float(env, "TRT_EMU_NOISE", 0.01)
    rng = gm.seeded_rng(seed, json.dumps(engine, sort_keys=True), sorted(run.items()), opts.get("--duration"),
                        opts.get("--shapes"), run_count(opts.get("--loadEngine") or opts.get("--saveEngine")))
    pace = gm.noisy(1.0, rng, noise)  # this run's speed (clocks, host): throughput and every time move with it
    qps = times["qps"] * pace
    duration = opts.get("--duration", 3.0)
    queries = max(opts.get("--iterations", 10), int(qps * duration))
    time.sleep((opts.get("--warmUp", 200.0) / 1000 + duration) * gm.env_float(env, "TRT_EMU_TIME_SCALE", 0.01))
    samples = _samples({key: value / pace for key, value in times.items()}, run, rng, noise,
                       min(queries, STATS_LIMIT))
    walltime = max(duration, queries / qps)
    _summary(samples, qps=queries / walltime, walltime=walltime, queries=queries, opts=opts)
    if "--exportTimes" in opts:
        _export_times(opts["--exportTimes"], samples[:TRACE_LIMIT], qps)
    if "--exportOutput" in opts:
        import outputs
        outputs.export(engine, dims, files, opts["--exportOutput"], seed=seed,
                       int8_noise=gm.env_float(env, "TRT_EMU_INT8_NOISE", 0.02))


def run_count(plan_path):
    """How many runs of this plan came before this one, counted in ``<plan>.emulator-runs``: a GPU's repeated runs
    differ by its noise, and the emulator's are reproducible (the same sequence of runs gives the same figures). A
    build that saves no plan runs as a first run."""
    if not plan_path:
        return 0
    try:
        fd = os.open(f"{plan_path}.emulator-runs", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    except OSError:
        return 0
    try:
        os.write(fd, b".")
        return os.fstat(fd).st_size - 1
    finally:
        os.close(fd)


def _samples(times, run, rng, noise, count):
    """Per-query (h2d, compute, d2h, enqueue) in ms: lognormal spread of the model's coefficient of variation and
    a small right tail."""
    cv = gm.compute_variation(times, run, noise)
    sigma = math.sqrt(math.log(1 + cv * cv))
    rows = []
    for _ in range(max(1, count)):
        spread = rng.lognormvariate(-sigma * sigma / 2, sigma) * (1.3 if rng.random() < 0.02 else 1.0)
        rows.append({"h2d": times["h2d"] / 1000 * rng.uniform(0.97, 1.03), "compute": times["compute"] / 1000 * spread,
                     "d2h": times["d2h"] / 1000 * rng.uniform(0.97, 1.03),
                     "enqueue": times["enqueue"] / 1000 * rng.uniform(0.9, 1.1)})
    return rows


def _stats(values, percentiles):
    """``min = ... ms, max = ..., mean, median, percentile(P%) = ...`` as trtexec computes and prints them."""
    ordered = sorted(values)
    n = len(ordered)
    parts = [f"min = {ordered[0]:.6g} ms", f"max = {ordered[-1]:.6g} ms", f"mean = {statistics.fmean(ordered):.6g} ms",
             f"median = {statistics.median(ordered):.6g} ms"]
    for p in percentiles:
        exclude = int((1 - p / 100) * n)
        parts.append(f"percentile({p:g}%) = {ordered[max(n - 1 - exclude, 0)]:.6g} ms")
    return ", ".join(parts)


def _summary(samples, *, qps, walltime, queries, opts):
    percentiles = [float(p) for p in str(opts.get("--percentile", "90,95,99")).split(",") if p]
    column = {key: [s[key] for s in samples] for key in ("h2d", "compute", "d2h", "enqueue")}
    latency = [s["h2d"] + s["compute"] + s["d2h"] for s in samples]
    log("I", "=== Performance summary ===")
    log("I", f"Throughput: {qps:.6g} qps")
    log("I", f"Latency: {_stats(latency, percentiles)}")
    log("I", f"Enqueue Time: {_stats(column['enqueue'], percentiles)}")
    log("I", f"H2D Latency: {_stats(column['h2d'], percentiles)}")
    log("I", f"GPU Compute Time: {_stats(column['compute'], percentiles)}")
    log("I", f"D2H Latency: {_stats(column['d2h'], percentiles)}")
    log("I", f"Total Host Walltime: {walltime:.6g} s")
    log("I", f"Total GPU Compute Time: {statistics.fmean(column['compute']) * queries / 1000:.6g} s")
    compute = statistics.median(column["compute"])
    if statistics.median(column["enqueue"]) > 0.8 * compute:
        log("W", "* Throughput may be bound by Enqueue Time rather than GPU Compute and the GPU may be under-utilized.")
        log("W", "  If not already in use, --useCudaGraph (utilize CUDA graphs where possible) may increase the "
                 "throughput.")
    if statistics.median(column["h2d"]) >= compute:
        log("W", "* Throughput may be bound by host-to-device transfers for the inputs rather than GPU Compute and the "
                 "GPU may be under-utilized.")
    cv = 100 * statistics.pstdev(column["compute"]) / statistics.fmean(column["compute"]) if len(samples) > 1 else 0
    if cv > 2.5:
        log("W", f"* GPU compute time is unstable, with coefficient of variance = {cv:.3g}%.")
        log("W", "  If not already in use, locking GPU clock frequency or adding --useSpinWait may improve the "
                 "stability.")
    log("I", "Explanations of the performance metrics are printed in the verbose logs.")


def _export_times(path, samples, qps):
    """The --exportTimes trace in trtexec's format (one object per query, times in ms)."""
    lines, start = ["["], 0.0
    for i, s in enumerate(samples):
        h2d_end = start + s["h2d"]
        compute_end = h2d_end + s["compute"]
        d2h_end = compute_end + s["d2h"]
        latency = s["h2d"] + s["compute"] + s["d2h"]
        values = [("startEnqMs", start), ("endEnqMs", start + s["enqueue"]), ("startH2dMs", start),
                  ("endH2dMs", h2d_end), ("startComputeMs", h2d_end), ("endComputeMs", compute_end),
                  ("startD2hMs", compute_end), ("endD2hMs", d2h_end), ("h2dMs", s["h2d"]),
                  ("computeMs", s["compute"]), ("d2hMs", s["d2h"]), ("latencyMs", latency), ("endToEndMs", latency)]
        body = ", ".join(f'"{k}" : {v:.6g}' for k, v in values)
        lines.append(f"{'  ' if i == 0 else ', '}{{ {body} }}")
        start += 1000.0 / qps
    lines.append("]")
    with open(path, "w") as handle:
        handle.write("\n".join(lines) + "\n")


def _record(path, argv):
    if path:
        with open(path, "a") as handle:
            handle.write(json.dumps({"argv": argv}) + "\n")
