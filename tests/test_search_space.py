"""What a space derives from its knob table: domains, Optuna suggestions and their inverse, one-knob, jump and coupled
neighbours, stored dicts, and whether (and how) runtime knobs are searched on a compiled artifact."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace
from typing import Any

import optuna
from optuna.distributions import CategoricalDistribution, IntDistribution

from autotune.search_space import Candidate, Knob, Move, Once, SearchSpace, StepSearch

THREADS = Knob(name="threads", values=(1, 2, 3, 4), compiled=False)


@dataclass(frozen=True, kw_only=True)
class ToyCandidate(Candidate):
    size: int = 1
    mode: str = "plain"
    tile: int = 1
    batch_size: int = 1
    scale: int = 1
    flags: tuple[str, ...] = ()
    threads: int = 1


@dataclass(frozen=True, kw_only=True)
class ToySpace(SearchSpace[ToyCandidate]):
    """``size`` also jumps to its double; ``tile`` is drawn for the tiled mode only; a batch step scales ``scale``."""

    candidate_type = ToyCandidate

    def knobs(self) -> list[Knob]:
        return [Knob(name="size", values=tuple(range(1, 9)), draw="int", jumps=lambda p: {p["size"] * 2}),
                Knob(name="mode", values=("plain", "tiled")),
                Knob(name="tile", values=(1, 2, 4, 8), draw="log", when=lambda v: v["mode"] == "tiled"),
                Knob(name="batch_size", values=(1, 2, 4), coupled={"scale": 2.0}),
                Knob(name="scale", values=tuple(range(1, 5)), draw="int"), THREADS]

    def runtime_moves(self) -> list[Move[ToyCandidate]]:
        return [Move("threads+", THREADS.step(1), repeat=True)]

    def fallback_move(self) -> Move[ToyCandidate]:
        return Move("threads-", THREADS.step(-1))

    def violations(self, candidate: ToyCandidate) -> list[str]:
        return []

    def starts(self) -> list[ToyCandidate]:
        return []

    def parse(self, text: str, *, options: Any = None) -> ToyCandidate:
        return ToyCandidate()


def test_runtime_knobs_are_searched_on_the_artifact_or_drawn_by_the_sampler():
    searched, drawn = ToySpace(), ToySpace(search_runtime=False)
    assert list(searched.domains()) == ["size", "mode", "tile", "batch_size", "scale"]
    assert list(drawn.domains()) == ["size", "mode", "tile", "batch_size", "scale", "threads"]
    assert searched.domains()["tile"] == [1, 2, 4, 8]
    assert searched.searches_runtime(ToyCandidate()) and not drawn.searches_runtime(ToyCandidate())
    assert isinstance(searched.runtime_search(ToyCandidate()), StepSearch)
    assert isinstance(drawn.runtime_search(ToyCandidate()), Once)


def test_suggest_draws_each_knob_by_its_distribution_in_declared_order():
    space = ToySpace()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trials = [study.ask() for _ in range(30)]
    candidates = [space.suggest(trial) for trial in trials]
    tiled = next(t for t, c in zip(trials, candidates) if c.mode == "tiled")
    assert list(tiled.distributions) == ["size", "mode", "tile", "batch_size", "scale"]
    assert tiled.distributions["size"] == IntDistribution(1, 8)
    assert tiled.distributions["tile"] == IntDistribution(1, 8, log=True)
    assert tiled.distributions["batch_size"] == CategoricalDistribution((1, 2, 4))
    plain = next(t for t, c in zip(trials, candidates) if c.mode == "plain")
    assert "tile" not in plain.distributions  # drawn only when its condition holds
    for candidate in candidates:
        assert space.from_params(space.params_for(candidate)) == candidate


def test_neighbours_are_one_knob_steps_then_jumps_then_coupled_steps():
    space = ToySpace()
    steps = space.neighbours(ToyCandidate(size=3, mode="plain", tile=1, batch_size=2, scale=2))
    origin = {"size": 3, "mode": "plain", "tile": 1, "batch_size": 2, "scale": 2}
    assert steps == [origin | {"size": 2}, origin | {"size": 4}, origin | {"mode": "tiled"}, origin | {"tile": 2},
                     origin | {"batch_size": 1}, origin | {"batch_size": 4}, origin | {"scale": 1},
                     origin | {"scale": 3}, origin | {"size": 6},  # the jump to the double
                     origin | {"batch_size": 4, "scale": 4}, origin | {"batch_size": 1, "scale": 1}]
    top = origin | {"size": 8, "scale": 4}
    steps = space.neighbours(ToyCandidate(size=8, batch_size=2, scale=4))
    assert 16 not in {s["size"] for s in steps}  # a jump off the domain is left out
    assert [s for s in steps if s["batch_size"] == 4] == [top | {"batch_size": 4}]  # scale at its top: no coupling
    assert steps[-1] == top | {"batch_size": 1, "scale": 2}


def test_candidates_round_trip_through_stored_dicts():
    candidate = ToyCandidate(size=5, mode="tiled", tile=4, flags=("-x", "-y"), threads=3)
    stored = json.loads(json.dumps(candidate.to_dict()))
    assert candidate.to_dict()["flags"] == ["-x", "-y"] and list(stored) == list(candidate.to_dict())
    assert ToySpace().from_dict(stored) == candidate
    assert ToySpace().from_dict({"size": 2, "unknown": 1}) == ToyCandidate(size=2)  # older and newer keys


def test_knob_steps_and_the_step_search_over_them():
    up, down = THREADS.step(1), THREADS.step(-1)
    assert up(ToyCandidate(threads=2)) == ToyCandidate(threads=3) and up(ToyCandidate(threads=4)) is None
    assert down(ToyCandidate(threads=1)) is None and up(ToyCandidate(threads=7)) is None
    search = ToySpace().runtime_search(ToyCandidate(threads=3))
    start = search.ask()
    search.tell(start, None)  # nothing ran: the fallback steps down
    fewer = search.ask()
    assert fewer == replace(start, threads=2)
    search.tell(fewer, 1.0)
    assert search.ask() is None  # threads 3 was tried already
