"""Shared test helpers: run the CLI in-process and check its one-line errors; a model spec of a file."""

from __future__ import annotations

from pathlib import Path

from autotune.cli import main
from autotune.models import MODELS, ModelSpec, with_inputs

EMULATOR = Path(__file__).resolve().parent / "qaic_emulator"  # the emulated Cloud AI 100 SDK root
TRTEXEC = Path(__file__).resolve().parent / "trtexec_emulator" / "bin" / "trtexec"  # the emulated TensorRT trtexec


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
