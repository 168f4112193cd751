"""The hand-tuned MLPerf setups for Cloud AI 100 (package data ``baselines.yaml``): each known model's base flags, the
presets that are the baselines to beat, and the CM variation env a winner is exported as."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, replace
from functools import cache
from importlib import resources
from typing import Any

import yaml

from autotune.backends.qaic.space import DeviceLimits, QaicCandidate, max_activations
from autotune.errors import AutotuneError

SUT_FLAGS = ("-aic-num-cores", "-mos", "-ols")  # CM puts these in CM_QAIC_MODEL_COMPILER_ARGS_SUT
BASELINES_FILE = "baselines.yaml"


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

    def candidate(self, device: DeviceLimits) -> QaicCandidate:
        """The preset as a candidate on ``device`` (activations default to floor(NSPs/cores))."""
        candidate = QaicCandidate.from_flags(self.flags, batch_size=self.batch_size)
        activations = self.activations or max_activations(candidate.cores, device)
        return candidate.with_runtime(activations=activations, set_size=candidate.set_size)


@cache
def _document() -> dict[str, Any]:
    try:
        text = resources.files(__package__).joinpath(BASELINES_FILE).read_text()
        document = yaml.safe_load(text)
        if not isinstance(document, dict):
            raise TypeError("not a mapping")
        return document
    except (OSError, yaml.YAMLError, TypeError) as exc:
        raise AutotuneError(f"cannot read the package's baseline presets ({BASELINES_FILE}): {exc}; reinstall "
                            f"autotune") from None


def load_baselines() -> list[Baseline]:
    """Every baseline preset the package ships."""
    try:
        entries = _document()["baselines"]
        return [Baseline(model=e["model"], scenario=e["scenario"], nsp=e.get("nsp"), flags=e["flags"],
                         batch_size=int(e.get("batch_size", 1)), activations=e.get("activations")) for e in entries]
    except (KeyError, TypeError) as exc:
        raise AutotuneError(f"malformed baseline presets ({BASELINES_FILE}): {exc}") from None


def model_base_flags(model: str) -> tuple[str, ...]:
    """The base qaic-exec flags of a known model (none for a user's model)."""
    return tuple(shlex.split(_document().get("base_flags", {}).get(model, "")))


def find_baseline(model: str, scenario: str, nsp: int) -> Baseline | None:
    """The baseline for this model, scenario and NSP count: an exact NSP match first, else one for any NSPs, else
    the preset of the nearest other NSP count, adapted (``adapted_from`` says which; activations re-sized)."""
    matches = [b for b in load_baselines() if b.model == model and b.scenario == scenario]
    exact = [b for b in matches if b.nsp == nsp] or [b for b in matches if b.nsp is None]
    if exact:
        return exact[0]
    if not matches:
        return None
    nearest = min(matches, key=lambda b: abs((b.nsp or nsp) - nsp))
    return replace(nearest, nsp=nsp, activations=None, adapted_from=nearest.nsp)


def cm_env(candidate: QaicCandidate) -> dict[str, str]:
    """The candidate as the env of a CM ``_model,scenario,nsp.N`` variation (CM's own split of the flags)."""
    tuned = candidate.tuned_flags()
    return {"CM_QAIC_MODEL_COMPILER_ARGS": " ".join(f for f in tuned if not f.startswith(SUT_FLAGS)),
            "CM_QAIC_MODEL_COMPILER_ARGS_SUT": " ".join(f for f in tuned if f.startswith(SUT_FLAGS)),
            "CM_QAIC_MODEL_BATCH_SIZE": str(candidate.batch_size)}
