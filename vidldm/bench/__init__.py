"""Benchmarks: vidldm against diffusers' AnimateDiff on the same weights, long clips, training steps.

    components.py  SD-1.5-shaped or tiny random components, loaded into both pipelines
    timing.py      synchronised timers, peak memory, FLOP counts, cosine similarity
    run.py         the settings (sd15, tiny-cpu, long, train) and what each reports
    isolated.py    one case in its own process, for honest CPU peak memory
    report.py      the plain-text table

`scripts/benchmark.py` is the command line; `run(["tiny-cpu"], steps=2)` the Python entry.
"""

from vidldm.bench.report import format_table
from vidldm.bench.run import SETTINGS, Options, defaults, run

__all__ = ["SETTINGS", "Options", "defaults", "format_table", "run"]
