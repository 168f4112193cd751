"""Shared test helpers: run the CLI in-process and check its one-line errors."""

from __future__ import annotations

from pathlib import Path

from autotune.cli import main

EMULATOR = Path(__file__).resolve().parent / "qaic_emulator"  # the emulated Cloud AI 100 SDK root


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
