"""From run directories to the paper's tables and figures.

`collect` gathers run dirs (or W&B runs) into two frames, `tables` and `figures` turn
them into the paper's tables and plots, `paper` regenerates everything in one command.
`uncertainty` gives every table cell its 95% CI and each row its Δ vs a reference row (from the runs'
per-sample verdicts, read by `samples`); `power` says how many seeds would resolve a gap, and
`calibration` measures the marks' error rates on runs drawn from a known model.
Nothing here imports torch or the trainer: analysis runs anywhere the run files are.
"""
