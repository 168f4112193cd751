"""What every target's search space is made of: knobs declared as data, the candidate they form, and what the search
derives from the declaration.

A target's space declares its knobs (``SearchSpace.knobs``): each one's name (its Optuna parameter), its ordered
values, whether a change needs a new compile or is a runtime setting of the compiled artifact, how Optuna draws it,
and the steps it takes beyond its neighbouring values. From that table the space derives the Optuna suggestions and
their inverse, the one-knob domains, the neighbours a local search climbs through, and whether runtime knobs are
searched on a compiled artifact. The target adds its rules: what the device and scenario forbid (``violations``),
where a local search starts (``starts``), its lightest setting, the order of its climbs' steps and its flag strings.

One trial is one compile: ``suggest`` draws the compile knobs, and ``runtime_search`` then tries runtime settings on
the compiled artifact: ask for a setting, measure it, tell its score (higher is better; None: it could not run); the
trial's value is the best of them. A space whose ``search_runtime`` is off lets the sampler draw the runtime knobs as
well, and measures each trial once.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from functools import cached_property
from typing import Any, ClassVar, Generic, Literal, Protocol, Self, TypeVar

import optuna


class Candidate(Protocol):
    """One point of a target's space: a frozen keyword-only dataclass of its knobs (and unsearched settings)."""

    batch_size: int

    @property
    def concurrency(self) -> int:
        """How many batches run at once (activations, sessions, streams)."""
        ...

    def compile_key(self) -> tuple[Any, ...]:
        """Identity of the compiled artifact: equal keys share one artifact whatever the runtime knobs."""
        ...

    def flag_string(self) -> str:
        """The settings as one line, in the form the space's ``parse`` reads back."""
        ...

    def describe(self) -> str:
        """A short one-line view for progress output."""
        ...

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form, by field (lists for tuples); ``from_dict`` reads it back."""
        return {name: list(value) if isinstance(value, tuple) else value for name, value in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Self:
        """Inverse of ``to_dict``: fields left out keep their defaults, keys that name no field are ignored."""
        names = {f.name for f in fields(cls)}  # type: ignore[arg-type]
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names})


C = TypeVar("C", bound=Candidate)


@dataclass(frozen=True, kw_only=True)
class Knob:
    """One knob of a space: ``name`` (the candidate's field and the Optuna parameter), its ordered ``values``;
    ``compiled``: a change needs a new compile (False: a runtime knob, set on the compiled artifact); ``draw``: how
    Optuna draws it (``int`` and ``log``: ``suggest_int`` over the values' range); ``when``: it is drawn only when
    this holds of the values drawn before it; ``jumps``: the values a neighbour may also take, given the step's
    origin; ``coupled``: knobs a step of this one scales with it (by the factor going up, by its inverse going
    down; the step is kept when one of them moved); ``remedy``: a fallback for compiles the accuracy guard rejects
    (keeping layers in float), its values past the first searched only once the study has such a compile
    (``objective.remedies_offered``)."""

    name: str
    values: tuple[Any, ...]
    compiled: bool = True
    draw: Literal["categorical", "int", "log"] = "categorical"
    when: Callable[[dict[str, Any]], bool] | None = None
    jumps: Callable[[dict[str, Any]], set[Any]] | None = None
    coupled: Mapping[str, float] = field(default_factory=dict)
    remedy: bool = False

    def suggest(self, trial: Any) -> Any:
        """This knob's value from an Optuna trial."""
        if self.draw == "categorical":
            return trial.suggest_categorical(self.name, list(self.values))
        return trial.suggest_int(self.name, self.values[0], self.values[-1], log=self.draw == "log")

    def step(self, offset: int) -> Callable[[C], C | None]:
        """A runtime move: the next (``offset`` 1) or previous (-1) value of this knob; None past either end."""
        def step(candidate: C) -> C | None:
            value = getattr(candidate, self.name)
            i = self.values.index(value) + offset if value in self.values else -1
            return replace(candidate, **{self.name: self.values[i]}) if 0 <= i < len(self.values) else None
        return step


class RuntimeSearch(Protocol[C]):
    """Ask/tell over the runtime knobs of one compiled candidate."""

    def ask(self) -> C | None:
        """The next setting to measure on the compiled artifact, or None when the search is done."""
        ...

    def tell(self, candidate: C, score: float | None) -> None:
        """The measured score of ``candidate`` (higher is better), or None when it could not run."""
        ...


class Once(Generic[C]):
    """One setting, measured once: a candidate whose knobs are all compiled in, or one measured as given."""

    def __init__(self, candidate: C) -> None:
        self._pending: C | None = candidate

    def ask(self) -> C | None:
        pending, self._pending = self._pending, None
        return pending

    def tell(self, candidate: C, score: float | None) -> None:
        pass


@dataclass(frozen=True)
class Move(Generic[C]):
    """One way to change the runtime knobs: ``step`` gives the next setting from the best so far (None: no step);
    ``repeat`` keeps stepping while each step improves."""

    name: str
    step: Callable[[C], C | None]
    repeat: bool = False


class StepSearch(Generic[C]):
    """Measure ``start``; while nothing could run, step by ``fallback`` (fewer activations need less memory); then
    try each move in turn from the best so far, a move marked ``repeat`` again while it improves."""

    def __init__(self, start: C, moves: list[Move[C]], *, fallback: Move[C] | None = None) -> None:
        self._moves = moves
        self._fallback = fallback
        self._tried: set[C] = set()
        self._next: C | None = start
        self._made_by: int | None = None  # the move that made the setting being measured (None: start, fallback)
        self.best: C | None = None
        self.best_score: float | None = None

    def ask(self) -> C | None:
        candidate, self._next = self._next, None
        if candidate is not None:
            self._tried.add(candidate)
        return candidate

    def tell(self, candidate: C, score: float | None) -> None:
        improved = score is not None and (self.best_score is None or score > self.best_score)
        if improved:
            self.best, self.best_score = candidate, score
        made_by, self._made_by = self._made_by, None
        if self.best is None:
            self._next = self._fresh(self._fallback.step(candidate)) if self._fallback else None
            return
        if made_by is None:
            first = 0
        elif improved and self._moves[made_by].repeat:
            first = made_by
        else:
            first = made_by + 1
        for i in range(first, len(self._moves)):
            step = self._fresh(self._moves[i].step(self.best))
            if step is not None:
                self._next, self._made_by = step, i
                return

    def _fresh(self, candidate: C | None) -> C | None:
        return candidate if candidate is not None and candidate not in self._tried else None


def scenario_batches(sizes: Iterable[int], scenario: str, *, dynamic_batch: bool) -> tuple[int, ...]:
    """The batch sizes a study searches: ``sizes`` in order, up to 8 in multistream; batch 1 alone in singlestream
    and for a model without a batch symbol."""
    if scenario == "singlestream" or not dynamic_batch:
        return (1,)
    return tuple(b for b in sorted(sizes) if scenario != "multistream" or b <= 8)


def one_knob_steps(params: dict[str, Any], domains: dict[str, list[Any]]) -> list[dict[str, Any]]:
    """Every parameter set one step away from ``params`` in one parameter's ordered domain."""
    steps = []
    for name, domain in domains.items():
        if params.get(name) not in domain:
            continue
        i = domain.index(params[name])
        steps += [params | {name: domain[j]} for j in (i - 1, i + 1) if 0 <= j < len(domain)]
    return steps


@dataclass(frozen=True, kw_only=True)
class SearchSpace(ABC, Generic[C]):
    """A target's knobs for one study, declared by ``knobs``, and its rules; a target's space is a frozen keyword-only
    dataclass of what the study fixes (device, scenario, model) deriving from this one."""

    candidate_type: ClassVar[type[Any]]  # the target's candidate class: ``from_dict`` reads its stored form
    search_runtime: bool = True  # False: the sampler draws the runtime knobs too (one measurement a trial)

    @abstractmethod
    def knobs(self) -> list[Knob]:
        """Every knob of this study, compile and runtime knobs, in the order ``suggest`` draws them."""

    @abstractmethod
    def violations(self, candidate: C) -> list[str]:
        """Every rule of the device and scenario the candidate breaks, readable; empty when it is valid."""

    @abstractmethod
    def starts(self) -> list[C]:
        """Start points of a local search besides the baseline: the toolchain's own rules of thumb."""

    @abstractmethod
    def parse(self, text: str, *, options: Mapping[str, Any] | None = None) -> C:
        """A candidate from its flag string (a preset's, or one typed by hand); ``options`` are command-line values
        the backend's options added (``autotune bench``). Raises AutotuneError naming what it cannot read."""

    def candidate(self, values: dict[str, Any]) -> C:
        """The candidate the drawn ``values`` make (what was not drawn at the candidate's defaults)."""
        return self.candidate_type(**values)

    def runtime_moves(self) -> list[Move[C]]:
        """How a trial steps the runtime knobs from the best setting so far, in order."""
        return []

    def fallback_move(self) -> Move[C] | None:
        """The step taken while no setting could run (None: the trial stops there)."""
        return None

    @cached_property
    def knob_table(self) -> dict[str, Knob]:
        """``knobs()`` by name, in order, declared once (a space is frozen)."""
        return {knob.name: knob for knob in self.knobs()}

    def drawn(self) -> list[Knob]:
        """The knobs the sampler draws: the compile knobs, and the runtime knobs where the space does not search
        them on the compiled artifact."""
        return [knob for knob in self.knob_table.values() if knob.compiled or not self.search_runtime]

    def searches_runtime(self, candidate: C) -> bool:
        """Whether a trial of ``candidate`` searches runtime knobs on its compiled artifact, so that trials of the
        same compile flags share one artifact; False where every knob is compiled in or the sampler draws them."""
        return self.search_runtime and any(not knob.compiled for knob in self.knob_table.values())

    def domains(self) -> dict[str, list[Any]]:
        """The ordered domain of every ``suggest`` parameter."""
        return {knob.name: list(knob.values) for knob in self.drawn()}

    def suggest(self, trial: Any) -> C:
        """Draw a candidate from an Optuna trial (or a FixedTrial of ``params_for``), each knob by its declaration."""
        values: dict[str, Any] = {}
        for knob in self.drawn():
            if knob.when is None or knob.when(values):
                values[knob.name] = knob.suggest(trial)
        return self.candidate(values)

    def from_params(self, params: dict[str, Any]) -> C:
        """The candidate the ``suggest`` parameters ``params`` give."""
        return self.suggest(optuna.trial.FixedTrial(params))

    def params_for(self, candidate: C) -> dict[str, Any]:
        """The ``suggest`` parameters that give ``candidate`` (for enqueued trials and one-knob steps)."""
        return {knob.name: getattr(candidate, knob.name) for knob in self.drawn()}

    def neighbours(self, candidate: C) -> list[dict[str, Any]]:
        """Every ``suggest`` parameter set one knob step away from ``candidate``, then its knobs' jumps and coupled
        steps."""
        return self.steps_from(self.params_for(candidate))

    def steps_from(self, params: dict[str, Any]) -> list[dict[str, Any]]:
        """The one-knob steps from ``params`` in every domain, then each knob's jumps, then its coupled steps."""
        domains = self.domains()
        steps = one_knob_steps(params, domains)
        knobs = self.drawn()
        for knob in knobs:
            if knob.jumps is not None:
                steps += [params | {knob.name: v} for v in sorted(knob.jumps(params)) if v in domains[knob.name]]
        for knob in knobs:
            if knob.coupled and params.get(knob.name) in knob.values:
                i = knob.values.index(params[knob.name])
                for j, power in ((i + 1, 1), (i - 1, -1)):
                    if not 0 <= j < len(knob.values):
                        continue
                    moved = {name: min(max(domains[name][0], round(params[name] * scale ** power)), domains[name][-1])
                             for name, scale in knob.coupled.items() if name in params}
                    if moved != {name: params[name] for name in moved}:
                        steps.append(params | moved | {knob.name: knob.values[j]})
        return steps

    def step_rank(self, params: dict[str, Any], step: dict[str, Any]) -> int:
        """How early a climb at ``params`` tries the one-knob ``step``: lower ranks first, drawn order within a rank
        (the moves the toolchain's own presets make); 0 for every step where the space knows no such moves."""
        return 0

    def without_remedies(self, candidate: C) -> C:
        """``candidate`` with its remedy knobs at their first values: what it is while the study offers none."""
        first = {knob.name: knob.values[0] for knob in self.knob_table.values() if knob.remedy}
        return replace(candidate, **first) if first else candidate

    def remedied(self, candidate: C) -> C | None:
        """``candidate`` one step into its remedies (each remedy knob at its next value), tried once it failed the
        accuracy guard; None where the space has none or they are at their last values."""
        steps = {knob.name: knob.values[knob.values.index(value) + 1] for knob in self.knob_table.values()
                 if knob.remedy and (value := getattr(candidate, knob.name)) in knob.values[:-1]}
        return replace(candidate, **steps) if steps else None

    def lightest(self, candidate: C) -> C | None:
        """``candidate`` with the least device memory the space allows (the smallest batch, and where the space has
        them the knobs that save on-chip memory), tried when a start fails to compile; None where the space has no
        such knobs or ``candidate`` is already so."""
        return None

    def runtime_search(self, candidate: C) -> RuntimeSearch[C]:
        """The runtime settings to measure on ``candidate``'s artifact, starting with ``candidate`` itself."""
        if not self.searches_runtime(candidate):
            return Once(candidate)
        return StepSearch(candidate, self.runtime_moves(), fallback=self.fallback_move())

    def from_dict(self, data: Mapping[str, Any]) -> C:
        """Inverse of ``Candidate.to_dict``."""
        return self.candidate_type.from_dict(data)
