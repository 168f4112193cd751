"""A study's winner as a preset: flags, figures, its task accuracy and the reference it was judged against,
provenance and the command lines that reproduce it, written as a presets file (YAML or JSON), a CM variation env, or
shell lines. Reads the storage only.

What is the backend's own (its runtime knobs, its command lines, its CM env) was stored on the trial by the backend
when it was measured, under ``preset_fields``; the formats a study offers are stored on the study.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import optuna
import yaml

from autotune.errors import AutotuneError
from autotune.results import attrs
from autotune.results.attrs import best_feasible, maximizing, size_of, upgraded, validation_of

EXPORT_FORMATS = ("yaml", "json", "cm", "cmdline")
COMMAND_SUFFIX = "_command"  # preset fields that are command lines, reproduced in order by --format cmdline


def winner_preset(study: optuna.Study) -> dict[str, Any]:
    """The study's winner as a preset: flags, figures, provenance and the command lines that reproduce it.

    The winner is the validated one when the study was validated, else the best feasible trial.
    """
    study = upgraded(study)
    stored = study.user_attrs
    validation = validation_of(study)
    trials = study.get_trials(deepcopy=False)
    number = validation.get(attrs.WINNER_TRIAL)
    validated = next((r for r in validation.get(attrs.VALIDATED, []) if r[attrs.TRIAL] == number), None)
    if number is None and validation.get(attrs.VALIDATED):
        raise AutotuneError(f"the last validation of study {study.study_name!r} found no candidate valid in the "
                            f"longer run ({validation.get(attrs.VALIDATED_AT)}): nothing to export; run more trials")
    if number is None:
        best = best_feasible([t for t in trials if attrs.CANDIDATE in t.user_attrs], maximize=maximizing(study))
        if best is None:
            raise AutotuneError(f"study {study.study_name!r} has no feasible trial: nothing to export")
        number = best.number
    trial = trials[number]
    source = validated or trial.user_attrs
    candidate = trial.user_attrs[attrs.CANDIDATE]
    size_key, size, size_unit = size_of(stored)
    preset: dict[str, Any] = {
        "model": stored.get(attrs.MODEL), "scenario": stored.get(attrs.SCENARIO), "backend": stored.get(attrs.BACKEND),
        "sku": stored.get(attrs.SKU), "size_key": size_key, "size_unit": size_unit,
        **({size_key: size} if size_key else {}),
        "sdk_version": stored.get(attrs.SDK_VERSION), "synthetic_model": bool(stored.get(attrs.SYNTHETIC, False)),
        "flags": trial.user_attrs.get(attrs.FLAGS), "candidate": candidate, "batch_size": candidate.get("batch_size"),
        "metric": stored.get(attrs.METRIC), "unit": stored.get(attrs.UNIT),
        "value": validated[attrs.VALUE] if validated else trial.value,
        "validated": validated is not None,
        "estimated": bool(source.get(attrs.ESTIMATED, False)),
        "figures": {k: v for k, v in (source.get(attrs.FIGURES, {}) | source.get(attrs.SCENARIO_FIGURES, {})).items()
                    if k != attrs.ESTIMATED},
        "accuracy": _accuracy(trial.user_attrs.get(attrs.ACCURACY), stored.get(attrs.ACCURACY_REFERENCE)),
        "baseline_value": validation.get(attrs.BASELINE_VALUE), **_significance(validation, validated),
        "study": study.study_name, "trial": number,
        "date": validation.get(attrs.VALIDATED_AT) or str(trial.datetime_complete or ""),
        "formats": list(stored.get(attrs.EXPORT_FORMATS) or ()),
        "reproduce": {"onnx": stored.get(attrs.ONNX), "onnx_sha256": stored.get(attrs.ONNX_SHA256),
                      "latency_bound_ms": stored.get(attrs.LATENCY_BOUND_MS),
                      "measure_seconds": validation.get(attrs.VALIDATE_SECONDS),
                      **(stored.get(attrs.MODEL_OPTIONS) or {})},
    }
    preset |= source.get(attrs.PRESET_FIELDS) or trial.user_attrs.get(attrs.PRESET_FIELDS) or {}
    return _plain(preset)


def _accuracy(judged: dict[str, Any] | None, reference: dict[str, Any] | None) -> dict[str, Any] | None:
    """The winner's task accuracy with the reference it was judged against (the sets, the allowed drop, the options
    ``verify`` judges it again with); None where its study judged none."""
    if not reference:
        return None
    return {**(judged or {}), **({"note": reference["note"]} if reference.get("note") else {}),
            "reference": reference}


def _significance(validation: dict[str, Any], validated: dict[str, Any] | None) -> dict[str, Any]:
    """What the validation says of the gain: the claimed gain and its interval, whether it is significant, the
    value's interval and the noise; a baseline kept for want of a significant gain says so in ``note``."""
    if not validation.get(attrs.VALIDATED):
        return {"gain_pct": None, "significant": None}
    fields = {"gain_pct": _round(validation.get(attrs.GAIN_PCT)), "significant": validation.get(attrs.SIGNIFICANT),
              "gain_ci_pct": _round(validation.get(attrs.GAIN_CI_PCT)), "rounds": validation.get(attrs.ROUNDS),
              "noise_pct": _round(validation.get(attrs.NOISE_PCT)), "value_ci": _round((validated or {}).get(attrs.CI))}
    if validation.get(attrs.NOTE):
        fields["note"] = validation[attrs.NOTE]
    elif validation.get(attrs.SIGNIFICANT) is False and validation.get(attrs.CLAIMED_TRIAL) is not None:
        fields["note"] = (f"no significant gain: the best candidate, trial #{validation[attrs.CLAIMED_TRIAL]}, "
                          f"measured {validation[attrs.GAIN_PCT]:+.1f}% against the baseline, within noise; this "
                          f"preset is the baseline")
    return fields


def _round(value: Any) -> Any:
    """Figures to two decimals: a preset is read by people."""
    if isinstance(value, list):
        return [_round(v) for v in value]
    return round(value, 2) if isinstance(value, float) else value


def write_preset(preset: dict[str, Any], *, fmt: str, out: Path | None) -> str:
    """Write ``preset`` in ``fmt``; into an existing file it replaces the same entry and keeps the others.

    Returns the text written (printed instead when ``out`` is None).
    """
    if fmt not in EXPORT_FORMATS:
        raise AutotuneError(f"unknown export format {fmt!r}: choose one of {', '.join(EXPORT_FORMATS)}")
    offered = preset.get("formats") or ()
    if fmt not in offered:
        raise AutotuneError(f"--format {fmt} is not offered for {preset.get('backend')} studies: use "
                            f"{' or '.join(offered)}")
    if fmt == "cmdline":
        text = _command_lines(preset)
    elif fmt == "cm":
        text = _cm_document(preset, out)
    else:
        doc = _load_existing(out, "presets", list)
        doc["presets"] = [p for p in doc["presets"] if not _same_entry(p, preset)]
        doc["presets"].append({k: v for k, v in preset.items() if k != "formats"})
        text = json.dumps(doc, indent=2) + "\n" if fmt == "json" else yaml.safe_dump(doc, sort_keys=False)
    if out is not None:
        _atomic_write(out, text)
    return text


def _command_lines(preset: dict[str, Any]) -> str:
    commands = [v for k, v in preset.items() if k.endswith(COMMAND_SUFFIX)]
    if not commands:
        raise AutotuneError(f"study {preset['study']!r} stored no command lines for its winner (written by an older "
                            f"autotune): use --format yaml")
    size = preset.get(preset.get("size_key") or "")
    return (f"# {preset['model']} {preset['scenario']} on {size} {preset.get('size_unit')}: {preset['value']:.2f} "
            f"{preset['unit']} (study {preset['study']}, trial {preset['trial']})\n" + "\n".join(commands) + "\n")


def _cm_document(preset: dict[str, Any], out: Path | None) -> str:
    if "cm_env" not in preset:
        raise AutotuneError(f"study {preset['study']!r} stored no CM env for its winner (written by an older "
                            f"autotune): use --format yaml")
    doc = _load_existing(out, "variations", dict)
    name = f"_{preset['model']},{preset['scenario']},{preset['size_key']}.{preset[preset['size_key']]}"
    doc["variations"][name] = {"env": preset["cm_env"]}
    return yaml.safe_dump(doc, sort_keys=False)


def _same_entry(entry: dict[str, Any], preset: dict[str, Any]) -> bool:
    """The entry of the same model, scenario, backend and size, which an export replaces."""
    key = preset.get("size_key")
    return all(entry.get(k) == preset.get(k) for k in ("model", "scenario", "backend")) and \
        (key is None or entry.get(key) == preset.get(key))


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


def _plain(value: Any) -> Any:
    """YAML-safe copy: tuples to lists, paths to strings."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value
