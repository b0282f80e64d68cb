"""Run one benchmark case in a fresh Python process, so the peak memory it reports is its own.

    python -m vidldm.bench.isolated CASE OPTIONS_JSON ARGS_JSON   -> one JSON line on stdout

Memory freed by an earlier case stays with the process (glibc keeps it for reuse), so measuring a
second case in the same process would hide part of its growth. The child also lowers glibc's
mmap threshold, so large tensors are mapped and unmapped one by one and resident memory follows
the memory actually in use.

It imports only `options` and `cases` (in the child): `run.py` imports this module, not the other way round.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import asdict

CASES = ("long", "train")


def run_isolated(case: str, options, **kwargs) -> dict:
    """Run `case` (`long` or `train`) with `options` (an `options.Options`) and `kwargs` in a child process."""
    if case not in CASES:
        raise ValueError(f"unknown isolated case '{case}'; choose from: {', '.join(CASES)}")
    env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
    proc = subprocess.run(
        [sys.executable, "-m", "vidldm.bench.isolated", case, json.dumps(asdict(options)), json.dumps(kwargs)],
        capture_output=True, text=True, env=env, check=False,
    )
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        tail = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise RuntimeError(f"benchmark case '{case}' failed in its own process: {tail}")
    return json.loads(lines[-1])


def main(argv: list[str]) -> int:
    import torch

    from vidldm.bench.cases import long_case, train_case
    from vidldm.bench.options import Options

    case, options, kwargs = argv[0], json.loads(argv[1]), json.loads(argv[2])
    options["dtypes"] = tuple(options["dtypes"])
    o = Options(**options)
    if o.threads:
        torch.set_num_threads(o.threads)
    result = long_case(o, **kwargs) if case == "long" else train_case(o, **kwargs)
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
