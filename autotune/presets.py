"""Preset files: the committed hand-tuned baselines, and the winners autotune exports."""

from __future__ import annotations

import json
import os
import shlex
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import optuna
import yaml

from autotune.backend import AutotuneError
from autotune.search_space import Candidate, DeviceLimits, max_activations
from autotune.tuner import is_feasible

EXPORT_FORMATS = ("yaml", "json", "cm", "cmdline")
SUT_FLAGS = ("-aic-num-cores", "-mos", "-ols")

PRESETS_DIR = Path(__file__).resolve().parent.parent / "presets"
BASELINES_FILE = PRESETS_DIR / "baselines.yaml"


@dataclass(frozen=True, kw_only=True)
class Baseline:
    """A hand-tuned preset: the flags MLPerf submitters use for one model, scenario and NSP count."""

    model: str
    scenario: str
    nsp: int | None
    flags: str
    batch_size: int
    activations: int | None
    adapted_from: int | None = None

    def label(self) -> str:
        """How reports name this baseline."""
        adapted = f" (the {self.adapted_from}-NSP preset, adapted)" if self.adapted_from else ""
        return f"hand-tuned preset {self.flags}{adapted}"

    def candidate(self, device: DeviceLimits) -> Candidate:
        """The preset as a Candidate on ``device`` (activations default to floor(NSPs/cores))."""
        candidate = Candidate.from_flags(self.flags, batch_size=self.batch_size)
        activations = self.activations or max_activations(candidate.cores, device)
        return candidate.with_runtime(activations=activations, set_size=candidate.set_size)


def load_baselines(path: Path = BASELINES_FILE) -> list[Baseline]:
    """Every baseline in a baselines YAML file."""
    try:
        entries = yaml.safe_load(path.read_text())["baselines"]
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise AutotuneError(f"cannot read baseline presets {path}: {exc}") from None
    return [Baseline(model=e["model"], scenario=e["scenario"], nsp=e.get("nsp"), flags=e["flags"],
                     batch_size=int(e.get("batch_size", 1)), activations=e.get("activations")) for e in entries]


def find_baseline(model: str, scenario: str, nsp: int, *, path: Path = BASELINES_FILE) -> Baseline | None:
    """The baseline for this model, scenario and NSP count: an exact NSP match first, else one for any NSPs, else
    the preset of the nearest other NSP count, adapted (``adapted_from`` says which; activations re-sized)."""
    matches = [b for b in load_baselines(path) if b.model == model and b.scenario == scenario]
    exact = [b for b in matches if b.nsp == nsp] or [b for b in matches if b.nsp is None]
    if exact:
        return exact[0]
    if not matches:
        return None
    nearest = min(matches, key=lambda b: abs((b.nsp or nsp) - nsp))
    return replace(nearest, nsp=nsp, activations=None, adapted_from=nearest.nsp)


def winner_preset(study: optuna.Study) -> dict[str, Any]:
    """The study's winner as a preset: flags, figures, provenance and the command lines that reproduce it.

    The winner is the validated one when the study was validated, else the best feasible trial.
    """
    attrs = study.user_attrs
    validation = attrs.get("validation") or {}
    trials = study.get_trials(deepcopy=False)
    number = validation.get("winner_trial")
    validated = next((r for r in validation.get("validated", []) if r["trial"] == number), None)
    if number is None and validation.get("validated"):
        raise AutotuneError(f"the last validation of study {study.study_name!r} found no candidate valid in the "
                            f"longer run ({validation.get('validated_at')}): nothing to export; run more trials")
    if number is None:
        feasible = [t for t in trials if is_feasible(t) and "candidate" in t.user_attrs]
        if not feasible:
            raise AutotuneError(f"study {study.study_name!r} has no feasible trial: nothing to export")
        pick = max if study.direction == optuna.study.StudyDirection.MAXIMIZE else min
        number = pick(feasible, key=lambda t: t.value).number
    trial = trials[number]
    source = validated or trial.user_attrs
    data = trial.user_attrs["candidate"]
    preset: dict[str, Any] = {
        "model": attrs.get("model"), "scenario": attrs.get("scenario"), "backend": attrs.get("backend"),
        "sku": attrs.get("sku"), "nsp": attrs.get("nsp"), "cores": attrs.get("cores"),
        "sdk_version": attrs.get("sdk_version"), "synthetic_model": bool(attrs.get("synthetic", False)),
        "flags": trial.user_attrs.get("flags"), "candidate": data, "batch_size": data.get("batch_size"),
        "activations": data.get("activations"), "set_size": data.get("set_size"),
        "metric": attrs.get("metric"), "unit": attrs.get("unit"),
        "value": validated["value"] if validated else trial.value,
        "validated": validated is not None,
        "estimated": bool(source.get("estimated", False)),
        "figures": {k: v for k, v in (source.get("figures", {}) | source.get("scenario_figures", {})).items()
                    if k != "estimated"},
        "baseline_value": validation.get("baseline_value"), "gain_pct": validation.get("gain_pct"),
        "study": study.study_name, "trial": number,
        "date": validation.get("validated_at") or str(trial.datetime_complete or ""),
    }
    if attrs.get("backend") == "qaic":
        candidate = Candidate.from_dict(data)
        tuned = candidate.tuned_flags()
        qpc = f"qpc-{study.study_name}-t{number}"
        preset |= {
            "cm_compiler_args": " ".join(f for f in tuned if not f.startswith(SUT_FLAGS)),
            "cm_compiler_args_sut": " ".join(f for f in tuned if f.startswith(SUT_FLAGS)),
            "qaic_exec_command": shlex.join(_with_binary_dir(
                source.get("compile_argv") or trial.user_attrs["compile_argv"], qpc)),
            "qaic_runner_command": shlex.join(_with_qpc(
                source.get("measure_argv") or trial.user_attrs["measure_argv"], qpc)),
        }
    return _plain(preset)


def write_preset(preset: dict[str, Any], *, fmt: str, out: Path | None) -> str:
    """Write ``preset`` in ``fmt``; into an existing file it replaces the same entry and keeps the others.

    Returns the text written (printed instead when ``out`` is None).
    """
    if fmt not in EXPORT_FORMATS:
        raise AutotuneError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    if fmt in ("cm", "cmdline") and preset.get("backend") != "qaic":
        raise AutotuneError(f"--format {fmt} is for Cloud AI 100 studies; this study's backend is "
                            f"{preset.get('backend')}: use yaml or json")
    if fmt == "cmdline":
        text = (f"# {preset['model']} {preset['scenario']} on {preset['nsp']} NSPs: {preset['value']:.2f} "
                f"{preset['unit']} (study {preset['study']}, trial {preset['trial']})\n"
                f"{preset['qaic_exec_command']}\n{preset['qaic_runner_command']}\n")
    elif fmt == "cm":
        doc = _load_existing(out, "variations", dict)
        name = f"_{preset['model']},{preset['scenario']},nsp.{preset['nsp']}"
        doc["variations"][name] = {"env": {
            "CM_QAIC_MODEL_COMPILER_ARGS": preset["cm_compiler_args"],
            "CM_QAIC_MODEL_COMPILER_ARGS_SUT": preset["cm_compiler_args_sut"],
            "CM_QAIC_MODEL_BATCH_SIZE": str(preset["batch_size"]),
        }}
        text = yaml.safe_dump(doc, sort_keys=False)
    else:
        doc = _load_existing(out, "presets", list)
        key = ("model", "scenario", "backend", "nsp", "cores")
        doc["presets"] = [p for p in doc["presets"] if tuple(p.get(k) for k in key) != tuple(preset[k] for k in key)]
        doc["presets"].append(preset)
        text = json.dumps(doc, indent=2) + "\n" if fmt == "json" else yaml.safe_dump(doc, sort_keys=False)
    if out is not None:
        _atomic_write(out, text)
    return text


def _load_existing(path: Path | None, key: str, kind: type) -> dict[str, Any]:
    if path is None or not path.exists():
        return {key: kind()}
    try:
        doc = yaml.safe_load(path.read_text())  # YAML also reads JSON
    except (OSError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise AutotuneError(f"cannot read {path} to update it: {first}") from None
    if doc is None:
        return {key: kind()}
    if not isinstance(doc, dict) or not isinstance(doc.get(key, kind()), kind) or (doc and key not in doc):
        raise AutotuneError(f"{path} is not an autotune {key} file (no top-level {key!r}); choose another --out")
    doc.setdefault(key, kind())
    return doc


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def _with_binary_dir(argv: list[str], qpc: str) -> list[str]:
    return [f"-aic-binary-dir={qpc}" if a.startswith("-aic-binary-dir=") else a for a in argv]


def _with_qpc(argv: list[str], qpc: str) -> list[str]:
    out: list[str] = []
    for i, arg in enumerate(argv):
        if i and argv[i - 1] in ("-t", "--test-data"):
            out.append(qpc)
        elif i and argv[i - 1] == "--aic-profiling-out-dir":
            out.append(".")
        else:
            out.append(arg)
    return out


def _plain(value: Any) -> Any:
    """YAML-safe copy: tuples to lists, paths to strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
