"""Benchmarks: vidldm against diffusers' AnimateDiff on the same weights, long clips, training steps.

    options.py     the settings' names and defaults (`Options`, `defaults`, `DTYPES`, `SETTINGS`)
    components.py  SD-1.5-shaped or tiny random components, loaded into both pipelines
    timing.py      synchronised timers, peak memory, freeing memory, FLOP counts, cosine similarity
    cases.py       what one process measures: a long clip; a step of vidldm's own `TemporalStage`
    isolated.py    one case in its own process, for honest CPU peak memory
    run.py         the settings' runners (sd15, tiny-cpu, long, train) and what each reports
    report.py      the plain-text table

Imports run one way: `run` imports `cases` and `isolated`; `isolated` only `options` and `cases`;
`cases` only `options`, `components`, `timing` and `vidldm.train` (a sibling layer, which never
imports `vidldm.bench`).
`scripts/benchmark.py` is the command line; `run(["tiny-cpu"], steps=2)` the Python entry.
"""

from vidldm.bench.options import DTYPES, SETTINGS, Options, defaults
from vidldm.bench.report import format_table
from vidldm.bench.run import run

__all__ = ["DTYPES", "SETTINGS", "Options", "defaults", "format_table", "run"]
