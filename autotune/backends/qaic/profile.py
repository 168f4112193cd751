"""What an int8 compile on Cloud AI 100 needs besides its flags: the calibration profile (``qaic-exec -dump-profile``
over the calibration set, once per model, set, calibration and schemas, and SDK: an entry of the compile cache of
its own, so that compiles sharing it wait for one profiling run), and the node-precision file that keeps the most
sensitive nodes in fp16 (ranked as on the CPU, ``_int8.ranking``)."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from pathlib import Path
from typing import Any

from autotune.backends import _int8
from autotune.backends.base import Artifact
from autotune.backends.qaic.precision import profile_flags
from autotune.compile_cache import CompileCache, cache_key
from autotune.errors import CompileFailure
from autotune.inputs import ModelInputs
from autotune.models import ModelSpec, model_sha256
from autotune.paths import safe_component
from autotune.qaic_bench import QaicSdk
from autotune.quantize import Recipe, prepare
from autotune.task_accuracy import SampleSet

PROFILE_FILE = "profile.yaml"
INPUT_LIST = "calib.txt"
RECORD_FILE = "int8.json"  # beside a QPC: its profile's dump line and its fp16 nodes, for presets
NODE_KEY = "FP16NodeInstanceNames"  # the node-precision file's key (inferred from public MLPerf files)


def int8_args(sdk: QaicSdk, onnx_path: Path, model: ModelSpec, candidate: Any, *, base: list[str], workdir: Path,
              cache_dir: Path | None) -> tuple[list[str], dict[str, Any]]:
    """``-load-profile=P`` of the candidate's profile (made now, or waited for, or found in the cache) and the
    record a preset keeps of it (the dump line, the fp16 nodes); ``base``: the model's base flags and symbols."""
    calibration = model.calibration
    if calibration is None:
        raise CompileFailure(_int8.NO_SET)
    inputs = model.file_inputs()
    batch = [f"-onnx-define-symbol={inputs.batch_symbol},1"] if inputs.batch_symbol is not None else []
    args = [*base, *batch, *profile_flags(candidate)]
    identity = {"artifact": "qaic-profile", "sdk": sdk.version(), "model_sha256": model_sha256(onnx_path),
                "calibration_sha256": calibration.sha256, "inputs": inputs.identity(samples=False), "flags": args}

    def dump(folder: Path) -> Artifact:
        folder.mkdir(parents=True, exist_ok=True)
        listing = input_list(calibration, inputs, folder / "calib")
        return sdk.dump_profile(onnx_path, args, profile=folder / PROFILE_FILE, input_list=listing, workdir=folder)

    if cache_dir is not None:
        profile, _ = CompileCache(root=cache_dir).get_or_compile(cache_key(identity), identity, dump)
    else:
        folder = workdir / "profiles" / cache_key(identity)[:16]
        done = folder / "done.json"
        if done.is_file():
            profile = Artifact(**json.loads(done.read_text()) | {"path": folder / PROFILE_FILE,
                                                                   "log_path": folder / "qaic-exec.log"})
        else:
            profile = dump(folder)
            _write_whole(done, json.dumps({"command": profile.command, "compile_seconds": profile.compile_seconds,
                                           "batch_size": 1}))
    record = {"profile_command": shlex.join(_relative(profile.command)), "profile_flags": profile_flags(candidate),
              "calibration_set": calibration.name, "calibration_sha256": calibration.sha256}
    return [f"-load-profile={profile.path}"], record


def input_list(samples: SampleSet, inputs: ModelInputs, folder: Path) -> Path:
    """qaic-exec's ``-input-list-file``: each sample's inputs as raw files at batch 1, one line a sample, the inputs
    of a sample comma-separated in the model's order."""
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for index, batch in enumerate(samples.batches(inputs, 1)):
        files = []
        for position, (name, array) in enumerate(batch.feed.items()):
            path = folder / f"{index}-{position}-{safe_component(name)}.raw"
            array.tofile(path)
            files.append(str(path))
        lines.append(",".join(files))
    listing = folder.parent / INPUT_LIST
    listing.write_text("\n".join(lines) + "\n")
    return listing


def node_precision_file(onnx_path: Path, model: ModelSpec, candidate: Any, folder: Path) -> tuple[Path, list[str]]:
    """The node-precision file that runs the candidate's ``fp16_nodes`` most sensitive nodes in fp16 (ranked by
    quantizing each alone on the CPU, per tensor or per channel as the candidate is), and the names it lists: each
    node's first output, as qaic-exec reads them."""
    if model.calibration is None:
        raise CompileFailure(_int8.NO_SET)
    ranked = _int8.ranking(onnx_path, model, Recipe(per_channel=candidate.channelwise), model.calibration)
    names = first_outputs(onnx_path, [name for name, _ in ranked[:candidate.fp16_nodes]])
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"fp16-nodes-{candidate.fp16_nodes}.yaml"
    path.write_text(f"{NODE_KEY}: {json.dumps(names)}\n")
    return path, names


def first_outputs(onnx_path: Path, nodes: list[str]) -> list[str]:
    """The first output of each of ``nodes`` (named as in the pre-processed model the ranking quantized)."""
    import onnx

    with tempfile.TemporaryDirectory(prefix="autotune-qaic-nodes-") as work:
        prepared = onnx.load(str(prepare(onnx_path, Path(work) / "prepared.onnx")), load_external_data=False)
    outputs = {node.name: node.output[0] for node in prepared.graph.node}
    return [outputs[name] for name in nodes if name in outputs]


def _relative(command: list[str]) -> list[str]:
    """The dump line as a user runs it in a folder holding the model's calibration list and profile."""
    names = {"-dump-profile": PROFILE_FILE, "-input-list-file": INPUT_LIST}
    return [f"{arg.partition('=')[0]}={names[arg.partition('=')[0]]}" if arg.partition("=")[0] in names else arg
            for arg in command]


def _write_whole(path: Path, text: str) -> None:
    handle, partial = tempfile.mkstemp(prefix=path.name, dir=path.parent)
    with os.fdopen(handle, "w") as out:
        out.write(text)
    os.replace(partial, path)
