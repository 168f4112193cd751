"""Search strategies: a sampler for Optuna's proposals and a policy for what is enqueued beside them.

  two-phase  the baseline and the toolchain's rules of thumb first (one that fails to compile once more at its
             lightest), then greedy climbs by one-knob steps from the best of them in turn, each trying first the
             step that improved it and the steps its space ranks first (on Cloud AI 100 the SDP split, then a
             larger batch); TPE once every climb is at a local optimum
  tpe        Optuna's TPE (multivariate, constant liar for trials in flight), one-knob polish steps from the best
  local      multi-start local search from the baseline and the rules of thumb in a fixed order, then from random
             points (the procedure of Qualcomm's model configurator)
  random     random search
The default was chosen on the tuning surfaces of bench/search_efficiency.py and run on eight held-out sets of 10 (the
third, fifth and seventh decided to keep a change), then read once on a ninth of 100: a median of 17 compiles to 97%
of the optimum against 23 for ``local`` (1.35x, 90% interval 1.17-1.74), and fewer studies below 0.93
(bench/RESULTS.md).
"""

from __future__ import annotations

import warnings

import optuna

from autotune.errors import AutotuneError
from autotune.search.policies import LocalSearch, Polish, Policy, StartsThenClimb
from autotune.search.records import SearchPolicy, StudyIdentity

STRATEGIES = ("two-phase", "tpe", "local", "random")
DEFAULT_STRATEGY = "two-phase"


def sampler_for(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    """The Optuna sampler behind a strategy (local search proposes through its policy; random fills its gaps)."""
    if name not in STRATEGIES:
        raise AutotuneError(f"unknown search strategy {name!r}: choose one of {', '.join(STRATEGIES)}")
    if name in ("random", "local"):
        return optuna.samplers.RandomSampler(seed=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, n_startup_trials=8,
                                          constant_liar=True)


def policy_for(identity: StudyIdentity, search: SearchPolicy) -> Policy | None:
    """What a strategy enqueues beside its sampler's proposals."""
    space, maximize = identity.space, identity.maximize
    if search.sampler in ("two-phase", "local"):
        starts = ([identity.baseline] if identity.baseline is not None else []) + space.starts()
        return StartsThenClimb(space=space, maximize=maximize, starts=starts) if search.sampler == "two-phase" \
            else LocalSearch(space=space, maximize=maximize, starts=starts, seed=search.seed or 0)
    if search.sampler == "tpe" and search.polish_every > 0:
        return Polish(space=space, maximize=maximize, every=search.polish_every, after=search.polish_after)
    return None
