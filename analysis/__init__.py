"""From run directories to the paper's tables and figures.

`collect` gathers run dirs (or W&B runs) into two frames, `tables` and `figures` turn
them into the paper's tables and plots, `paper` regenerates everything in one command.
Nothing here imports torch or the trainer: analysis runs anywhere the run files are.
"""
