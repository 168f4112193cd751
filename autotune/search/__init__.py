"""The write side: an Optuna study per model and scenario, its trials driven through compile and measure stages.

``tuner`` composes the stages: ``study`` opens the study, ``proposer`` asks for candidates, ``evaluate`` compiles,
measures and judges them (``measure`` searches a trial's runtime knobs with it), ``recorder`` writes the outcome,
``validate`` re-measures the best at the end, and ``pipeline`` runs compiles ahead of the devices.
"""
