"""Shared test helpers: run the CLI in-process and check its one-line errors; a model spec of a file; kill a run
mid-compile."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import numpy as np

from autotune.cli import main
from autotune.models import MODELS, ModelSpec, with_inputs
from autotune.task_accuracy import AccuracyJudge, parse_max_drop, parse_metric, random_set

EMULATORS = Path(__file__).resolve().parent.parent / "emulators"  # the emulated toolchains
EMULATOR = EMULATORS / "qaic"  # the emulated Cloud AI 100 SDK root
TRTEXEC = EMULATORS / "trtexec" / "bin" / "trtexec"  # the emulated TensorRT trtexec


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    """``autotune ARGV`` in-process: (exit code, stdout, stderr); argparse usage errors included."""
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def one_line_error(code: int, err: str) -> str:
    """The single error line of a failed command (fails the test if there is more, or a traceback)."""
    assert code != 0
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


def spec_for(path: Path, name: str = "resnet50", **options) -> ModelSpec:
    """The spec of ``name`` (a known model, else a user's) with the inputs of the file at ``path``; ``options`` are
    the model options ``with_inputs`` takes (batch_dim, input_shapes, samples)."""
    return with_inputs(MODELS.get(name) or ModelSpec(name=name), path, **options)


def cosine_judge(onnx_path: Path, model: ModelSpec, samples: int = 4) -> AccuracyJudge:
    """A judge of a backend's outputs: their cosine with ONNX Runtime's fp32 outputs over ``samples`` random
    samples, 1% allowed to drop."""
    inputs = model.file_inputs()
    return AccuracyJudge(onnx_path=onnx_path, inputs=inputs, judged=random_set(inputs, samples),
                         metric=parse_metric("cosine", labels=False), max_drop=parse_max_drop("1%"))


def kill_while_compiling(process: subprocess.Popen[str], log: Path, *, timeout_s: float = 60.0) -> None:
    """SIGKILL ``process`` (an ``autotune run`` on the emulator) once the emulator's compile log ``log`` shows it
    compiling, then the compilers it started: no handler runs, so its trials stay RUNNING."""
    try:
        deadline = time.monotonic() + timeout_s
        while not _compile_log(log) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert _compile_log(log), "the run never started compiling"
        process.kill()
        process.communicate(timeout=30)
    finally:
        for line in _compile_log(log):  # each compile runs in its own process group
            try:
                os.killpg(json.loads(line)["pid"], signal.SIGKILL)
            except ProcessLookupError:
                pass


def _compile_log(log: Path) -> list[str]:
    return log.read_text().splitlines() if log.exists() else []


def outlier_classifier(folder: Path, samples: int = 100) -> tuple[Path, Path]:
    """The classifier int8 breaks (``synthetic.build_outlier_classifier``) and a labelled accuracy set of ``samples``
    beside it (``acc.npz``: ``x`` and ``labels``)."""
    from autotune.synthetic import build_outlier_classifier, outlier_classifier_samples

    x, labels = outlier_classifier_samples(samples)
    np.savez(folder / "acc.npz", x=x, labels=labels)
    return build_outlier_classifier(folder / "classifier.onnx"), folder / "acc.npz"
