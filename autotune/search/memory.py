"""What one worker knows of its study: the result of every candidate measured, and the artifact (or the compile
failure) and task accuracy of every set of compile flags, this worker's and other workers' alike."""

from __future__ import annotations

import json
from pathlib import Path

from optuna.trial import FrozenTrial, TrialState

from autotune.backends.base import Artifact, Backend, SearchSpace
from autotune.errors import CompileFailure
from autotune.results import attrs
from autotune.results.attrs import is_feasible
from autotune.search.noise import Noise
from autotune.search.records import proposal_key


class Memory:
    """Results by candidate key and artifacts by compile key, learnt from COMPLETE trials as they are seen."""

    def __init__(self, *, space: SearchSpace, backend: Backend, noise: Noise) -> None:
        self.space = space
        self.backend = backend
        self.noise = noise
        self.results: dict[str, FrozenTrial] = {}
        self.artifacts: dict[str, Artifact | CompileFailure] = {}
        self.accuracy: dict[str, float] = {}  # the task metric of each compile judged (once per compile)
        self.baseline: FrozenTrial | None = None  # the feasible baseline trial, once stored
        self._seen: set[int] = set()

    def refresh(self, trials: list[FrozenTrial]) -> None:
        """Learn the COMPLETE trials of ``trials`` not seen yet."""
        for trial in trials:
            if trial.state == TrialState.COMPLETE and trial.number not in self._seen:
                self.remember(trial)

    def remember(self, trial: FrozenTrial) -> None:
        """Learn one finished trial: its result, and its artifact or compile failure."""
        self._seen.add(trial.number)
        stored = trial.user_attrs
        if attrs.CANDIDATE not in stored:
            return
        if stored.get(attrs.BASELINE) and is_feasible(trial) and self.baseline is None:
            self.baseline = trial
        if stored.get(attrs.DUPLICATE_OF) is None:
            self.results.setdefault(self.key_of(stored), trial)
            self._learn_noise(trial)
        key = stored.get(attrs.COMPILE_KEY)
        judged = stored.get(attrs.ACCURACY)
        if key and isinstance(judged, dict) and judged.get("value") is not None:
            self.accuracy.setdefault(key, judged["value"])
        if not key or key in self.artifacts:
            return
        path = stored.get(attrs.ARTIFACT_PATH)
        if stored.get(attrs.FAILURE_STAGE) == "compile":
            self.artifacts[key] = CompileFailure(stored.get(attrs.FAILURE_REASON, "compile failed"))
        elif path and self.backend.artifact_usable(Path(path)):
            self.artifacts[key] = Artifact(path=Path(path), command=stored[attrs.COMPILE_ARGV],
                                           log_path=Path(stored[attrs.COMPILE_LOG]), compile_seconds=0.0,
                                           batch_size=stored[attrs.CANDIDATE]["batch_size"])

    def _learn_noise(self, trial: FrozenTrial) -> None:
        """The trial's value is a candidate for the best; settings it measured more than once tell the noise."""
        if is_feasible(trial):
            self.noise.offer(trial.value)
        by_setting: dict[str, list[float]] = {}
        for m in trial.user_attrs.get(attrs.MEASUREMENTS) or []:
            if m.get("feasible") and m.get("value"):
                by_setting.setdefault(json.dumps(m["candidate"], sort_keys=True), []).append(m["value"])
        for values in by_setting.values():
            self.noise.add(values)
        if len(by_setting) > 1 and is_feasible(trial):
            self.noise.gained(next(iter(by_setting.values()))[0], trial.value)
        self.noise.drifted((trial.user_attrs.get(attrs.BASELINE_CHECK) or {}).get(attrs.DRIFT_PCT))

    def key_of(self, stored: dict) -> str:
        """The proposal key of a stored trial (trials of round 1 stored no proposal: their candidate, as given)."""
        proposal = stored.get(attrs.PROPOSAL) or stored[attrs.CANDIDATE]
        return proposal_key(self.space.from_dict(proposal), searched=bool(stored.get(attrs.RUNTIME_SEARCHED, False)))

    def known_artifact(self, key: str) -> Artifact | None:
        """The artifact of compile key ``key`` when this worker has one still on disk."""
        known = self.artifacts.get(key)
        if isinstance(known, Artifact) and self.backend.artifact_usable(known.path):
            return known
        return None

    def compile_failure(self, key: str) -> CompileFailure | None:
        """The failure of compile key ``key`` when it failed before."""
        known = self.artifacts.get(key)
        return known if isinstance(known, CompileFailure) else None
