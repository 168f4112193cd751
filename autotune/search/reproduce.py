"""Re-measuring exported presets: ``autotune verify`` (does the preset still give its figure here?) and ``autotune
revalidate`` (does it on a new toolchain?). Each entry is compiled from its stored candidate through the evaluator
(the compile cache: anew on a toolchain it has not seen), which gives the preset's own command lines (checked
against the ones the preset holds, the programs' paths aside), and measured in a few rounds of the length its
validation used; its median is compared with the preset's value within the noise the study measured. A preset
judged by its task accuracy is calibrated and judged again on the same samples (``search.accuracy``): beyond the
drop its study allowed, it failed.
"""

from __future__ import annotations

import math
import shlex
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import yaml

from autotune.backends.base import Backend, Candidate, Target
from autotune.errors import AutotuneError, TrialFailure
from autotune.models import ModelSpec, get_model, model_sha256, with_calibration, with_inputs
from autotune.objective import log_spread
from autotune.paths import safe_component
from autotune.scenarios import Scenario, get_scenario
from autotune.search.accuracy import AccuracySettings, stored_settings
from autotune.search.disturbance import DEFAULT_BUSY_CPU_PCT, DEFAULT_QUIET_WAIT_S
from autotune.search.evaluate import Evaluator
from autotune.search.records import Compiled

DEFAULT_NOISE = 0.03  # a preset that recorded no noise (not validated) is compared within 3% per measurement
MIN_MARGIN = 0.01
SIGMAS = 3.0


@dataclass(frozen=True, kw_only=True)
class Check:
    """One preset measured again: its verdict (reproduced, slower, faster, failed) and the line that says it."""

    key: str
    verdict: str
    line: str
    value: float | None = None
    change_pct: float | None = None

    @property
    def regressed(self) -> bool:
        return self.verdict in ("slower", "failed")


def read_presets(path: Path) -> list[dict[str, Any]]:
    """The entries of an autotune presets file (YAML or JSON); one-line errors for anything else."""
    try:
        doc = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise AutotuneError(f"no presets file at {path}: give the file autotune export --out wrote") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise AutotuneError(f"{path} is not an autotune presets file: {str(exc).strip().splitlines()[0]}") from None
    entries = doc.get("presets") if isinstance(doc, dict) else None
    if not isinstance(entries, list) or not all(isinstance(e, dict) and "candidate" in e and "backend" in e
                                                for e in entries):
        raise AutotuneError(f"{path} is not an autotune presets file (no top-level 'presets' list of exported "
                            f"entries): give a file written by autotune export --format yaml or json")
    if not entries:
        raise AutotuneError(f"{path} holds no presets: export one into it with autotune export STUDY --out {path}")
    return entries


def entry_key(preset: dict[str, Any]) -> str:
    """How ``--entry`` names a preset: the study it was exported from."""
    return str(preset.get("study") or f"{preset.get('model')}-{preset.get('scenario')}-{preset.get('backend')}")


def select(entries: list[dict[str, Any]], key: str | None, path: Path) -> list[dict[str, Any]]:
    """Every entry, or the one ``key`` names."""
    if key is None:
        return entries
    chosen = [e for e in entries if entry_key(e) == key]
    if not chosen:
        raise AutotuneError(f"no entry {key!r} in {path}; its entries: {', '.join(entry_key(e) for e in entries)}")
    return chosen


@dataclass(frozen=True, kw_only=True)
class Setting:
    """What measuring a preset needs: the model as the study fed and calibrated it, its scenario and bound, the
    target, and how its study judged the task's accuracy (None: it did not)."""

    model: ModelSpec
    onnx: Path
    scenario: Scenario
    bound_ms: float | None
    target: Target
    candidate: Candidate
    accuracy: AccuracySettings | None = None


def setting_for(preset: dict[str, Any], backend: Backend, **sets: str | None) -> Setting:
    """The model, scenario, target and candidate of ``preset`` on ``backend``, its accuracy settings built again
    (``sets``: the accuracy and calibration sets' paths where they moved); AutotuneError when the model file is gone
    or changed, a set's samples differ, or the device differs from the preset's."""
    spec = preset.get("reproduce") or {}
    onnx = Path(spec.get("onnx") or "")
    if not spec.get("onnx") or not onnx.is_file():
        raise AutotuneError(f"the model file of {entry_key(preset)} is not at {onnx or '(not recorded)'}: keep it "
                            f"where the study read it")
    if spec.get("onnx_sha256") and model_sha256(onnx) != spec["onnx_sha256"]:
        raise AutotuneError(f"{onnx} changed since {entry_key(preset)} was tuned (its SHA-256 differs)")
    model = with_inputs(get_model(str(preset["model"]), onnx_given=True), onnx, batch_dim=spec.get("batch_dim"),
                        input_shapes=spec.get("input_shapes") or {},
                        samples=Path(spec["inputs"]) if spec.get("inputs") else None)
    record = (preset.get("accuracy") or {}).get("reference")
    accuracy = stored_settings(record, onnx, model.file_inputs(), **sets) if record else None
    model = with_calibration(model, accuracy.calibration if accuracy else None)
    scenario = get_scenario(str(preset["scenario"]))
    target = backend.target(model=model, scenario=scenario, devices=None)
    size_key = preset.get("size_key")
    if size_key and preset.get(size_key) not in (None, target.size):
        raise AutotuneError(f"{entry_key(preset)} was tuned for {preset[size_key]} {preset.get('size_unit')}, this "
                            f"host offers {target.size}")
    return Setting(model=model, onnx=onnx, scenario=scenario, bound_ms=spec.get("latency_bound_ms"), target=target,
                   candidate=target.space.from_dict(preset["candidate"]), accuracy=accuracy)


def check(preset: dict[str, Any], backend: Backend, *, rounds: int, seconds: float | None, workdir: Path,
          cache_dir: Path | None, progress: Callable[[str], None], busy_cpu_pct: float = DEFAULT_BUSY_CPU_PCT,
          quiet_wait_s: float = DEFAULT_QUIET_WAIT_S, **sets: str | None) -> Check:
    """Compile ``preset`` on ``backend`` (through the compile cache: anew on a toolchain it has not seen), judge its
    task accuracy where its study did, and measure it ``rounds`` times (a disturbed CPU measurement again, as a
    study's); compare with its recorded figures."""
    key, unit = entry_key(preset), preset.get("unit") or ""
    setting = setting_for(preset, backend, **sets)
    seconds = seconds or (preset.get("reproduce") or {}).get("measure_seconds") or backend.validate_seconds
    evaluator = Evaluator(backend=backend, model=setting.model, onnx_path=setting.onnx, scenario=setting.scenario,
                          bound_ms=setting.bound_ms, sku=setting.target.sku, device_size=setting.target.size,
                          workdir=workdir / key, cache_dir=cache_dir, model_sha256=model_sha256(setting.onnx),
                          progress=progress, busy_cpu_pct=busy_cpu_pct, quiet_wait_s=quiet_wait_s,
                          judge=setting.accuracy.judge if setting.accuracy else None)
    try:
        compiled = evaluator.compiled(setting.candidate)
    except TrialFailure as failure:
        return Check(key=key, verdict="failed", line=f"{key}: does not compile on {backend.version()}: "
                                                     f"{failure.reason}")
    accuracy = _accuracy(evaluator, compiled, setting.target.devices[0].index, key)
    if isinstance(accuracy, Check):
        return accuracy
    samples = []
    for r in range(rounds):
        try:
            measurement, outcome = evaluator.evaluate(compiled, seconds=seconds, label=f"run-{r + 1}",
                                                      device=setting.target.devices[0].index, who=key)
        except TrialFailure as failure:
            return Check(key=key, verdict="failed", line=f"{key}: {failure.stage} failed: {failure.reason}")
        if not outcome.feasible:
            return Check(key=key, verdict="failed", line=f"{key}: no longer valid: {outcome.reason}")
        samples.append(outcome.value)
    result = compare(preset, samples, unit=unit)
    result = Check(key=result.key, verdict=result.verdict, value=result.value, change_pct=result.change_pct,
                   line=result.line + accuracy)
    made = backend.preset_fields(setting.candidate, compiled.artifact, measurement,
                                 name=f"{safe_component(str(preset.get('study')))}-t{preset.get('trial')}")
    differ = command_differences(preset, made)
    if not differ:
        return result
    return Check(key=result.key, verdict=result.verdict, value=result.value, change_pct=result.change_pct,
                 line=f"{result.line}; but not with the preset's own {' and '.join(differ)}: the lines made now "
                      f"differ (flags the original run was given, such as --base-flags, are not recorded)")


def _accuracy(evaluator: Evaluator, compiled: Compiled, device: int, key: str) -> Check | str:
    """``; agreement 0.998 (fp32 reference 1)`` for the check's line (empty where the study judged none), or the
    failed check of a compile beyond its study's allowed drop (or whose metric fails)."""
    judge = evaluator.judge
    if judge is None:
        return ""
    try:
        judgement = evaluator.accuracy(compiled, device=device, who=key)
    except TrialFailure as failure:
        return Check(key=key, verdict="failed", line=f"{key}: {failure.stage} failed: {failure.reason}")
    if judgement.reason is not None:
        return Check(key=key, verdict="failed", line=f"{key}: accuracy failed: {judgement.reason}")
    return f"; {judge.metric.name} {judgement.metric:.4g} (fp32 reference {judgement.reference:.4g})"


def command_differences(preset: dict[str, Any], made: dict[str, Any]) -> list[str]:
    """The preset's command-line fields that the lines made now differ from, the programs' paths aside."""
    return [name for name, stored in preset.items()
            if name.endswith("_command") and isinstance(stored, str) and isinstance(made.get(name), str)
            and shlex.split(stored)[1:] != shlex.split(made[name])[1:]]


def compare(preset: dict[str, Any], samples: list[float], *, unit: str) -> Check:
    """The verdict of ``samples`` against the preset's value: outside ``SIGMAS`` of the noise of both medians."""
    key, old = entry_key(preset), float(preset["value"])
    maximize = get_scenario(str(preset["scenario"])).direction == "maximize"
    new = statistics.median(samples)
    change = math.log(new / old) if maximize else math.log(old / new)
    sigma = (preset.get("noise_pct") or DEFAULT_NOISE * 100) / 100
    spread = log_spread(np.log(samples)) if len(samples) > 1 else sigma
    margin = max(MIN_MARGIN, SIGMAS * math.sqrt(sigma ** 2 / (preset.get("rounds") or 1) + spread ** 2 / len(samples)))
    pct = (math.exp(change) - 1) * 100
    figures = f"{new:,.2f} {unit} against {old:,.2f} in the preset, median of {len(samples)} runs"
    if change < -margin:
        return Check(key=key, verdict="slower", value=new, change_pct=pct,
                     line=f"{key}: slower by {-pct:.1f}% (outside noise, ±{margin * 100:.1f}%): {figures}")
    if change > margin:
        return Check(key=key, verdict="faster", value=new, change_pct=pct,
                     line=f"{key}: faster by {pct:.1f}%: {figures}")
    return Check(key=key, verdict="reproduced", value=new, change_pct=pct,
                 line=f"{key}: reproduced ({pct:+.1f}%, within ±{margin * 100:.1f}%): {figures}")
