"""The emulated compiler's precision flags (stdlib only): the int8 recipe a command line asks for, profiles dumped
over a calibration input list (``-dump-profile``) and loaded (``-load-profile``), and node-precision files.

A profile is a JSON document (valid YAML) naming the model (path and SHA-256) and the calibration samples (count and
SHA-256 of their files) it came from and the calibration and schema flags it was dumped with: the emulator's own
format; a real profile holds the tensors' ranges. Each function returns an error text where qaic-exec fails."""

import hashlib
import json
import os

import onnx_graph

SCHEMAS = ("symmetric", "asymmetric", "symmetric_with_uint8", "symmetric_with_power2_scale")
PROFILE_FORMAT = "qaic-emulator-profile"
NODE_KEY = "FP16NodeInstanceNames"


def recipe(opts):
    """The int8 recipe of a command line's flags (``opts`` by flag name; switches in ``opts["flags"]``)."""
    both = opts.get("-quantization-schema")
    return {"calibration": opts.get("-quantization-calibration", "None"),
            "percentile": opts.get("-percentile-calibration-value"),
            "schema_activations": opts.get("-quantization-schema-activations", both),
            "schema_constants": opts.get("-quantization-schema-constants", both),
            "channelwise": "-enable-channelwise" in opts["flags"]}


def file_sha256(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def dump_profile(path, *, model, graph, list_file, symbols, calibration):
    """Write the profile of ``model`` over the samples ``list_file`` lists (one line a sample, its inputs' raw files
    comma-separated, each the input's size at the defined symbols); the error text, or None."""
    try:
        with open(list_file) as handle:
            lines = [line.strip() for line in handle if line.strip()]
    except OSError as exc:
        return f"Unable to open input list file {list_file}: {exc.strerror or exc}"
    if not lines:
        return f"Input list file {list_file} lists no inputs"
    inputs = onnx_graph.resolved_inputs(graph, symbols) if graph is not None else None
    digest = hashlib.sha256()
    for number, line in enumerate(lines, 1):
        files = line.split(",")
        if inputs is not None and len(files) != len(inputs):
            return (f"Input list file {list_file} line {number}: {len(files)} files for the model's {len(inputs)} "
                    f"inputs ({', '.join(i['name'] for i in inputs)})")
        for position, name in enumerate(files):
            if not os.path.isfile(name):
                return f"Unable to open input file {name} (input list file {list_file} line {number})"
            need = onnx_graph.byte_size(inputs[position]) if inputs is not None else None
            if need is not None and os.path.getsize(name) != need:
                return (f"Input file {name} has {os.path.getsize(name)} bytes; input {inputs[position]['name']} "
                        f"{inputs[position]['dims']} takes {need}")
            digest.update(file_sha256(name).encode())
    document = {"format": PROFILE_FORMAT, "model": os.path.abspath(model), "model_sha256": file_sha256(model),
                "calibration_samples": len(lines), "calibration_sha256": digest.hexdigest(),
                "calibration": calibration}
    with open(path, "w") as handle:
        json.dump(document, handle, indent=1, sort_keys=True)
    return None


def load_profile(path, model):
    """The profile at ``path`` for ``model``: (document, None), or (None, the error) when it is missing, not a
    profile, or dumped from another model."""
    try:
        with open(path) as handle:
            document = json.load(handle)
    except FileNotFoundError:
        return None, f"Unable to open profile file {path}: No such file or directory"
    except (OSError, ValueError):
        return None, f"Unable to parse profile file {path}: not a quantization profile"
    if not isinstance(document, dict) or document.get("format") != PROFILE_FORMAT:
        return None, f"Unable to parse profile file {path}: not a quantization profile"
    if document.get("model_sha256") != file_sha256(model):
        return None, (f"Profile {path} does not match the model: it was dumped from {document.get('model')}, not "
                      f"{os.path.abspath(model)}")
    return document, None


def node_precision(path, graph):
    """The node names a node-precision file keeps in fp16 (``FP16NodeInstanceNames: [...]``) that name a node's
    first output, and those that name none: (matched, unknown, None), or (None, None, the error)."""
    try:
        with open(path) as handle:
            text = handle.read()
    except OSError as exc:
        return None, None, f"Unable to open node precision file {path}: {exc.strerror or exc}"
    key, _, value = text.strip().partition(":")
    try:
        names = json.loads(value) if key.strip() == NODE_KEY else None
    except ValueError:
        names = None
    if not isinstance(names, list) or not all(isinstance(name, str) for name in names):
        return None, None, f"Unable to parse node precision file {path}: expected {NODE_KEY}: [names]"
    known = set(graph["node_outputs"]) if graph is not None else set(names)
    return [n for n in names if n in known], [n for n in names if n not in known], None
