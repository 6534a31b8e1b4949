"""Batch prediction and export: whole volumes, blockwise, on dask or Slurm.

The same per-block function the viewer uses
(:func:`ilastik_web.classify.blockwise.predict_block`) runs over a block plan; a job
folder holds the frozen classifier, the plan, per-block done markers and logs, so jobs
resume and survive restarts.

Modules: :mod:`hpc.plan` (blocks from a memory budget), :mod:`hpc.job` (job folders and
the store), :mod:`hpc.writers` (output formats), :mod:`hpc.worker` (what workers run),
:mod:`hpc.engines` (dask and Slurm), :mod:`hpc.service` (submit, watch, cancel,
resume), :mod:`hpc.cli` (``predict`` and ``jobs`` subcommands).
"""
