"""The read side: what a study's storage says, as reports, comparisons, presets and overviews.

Nothing here imports the tuner or a backend; everything is read from what a study stored (``attrs`` names it).
"""
