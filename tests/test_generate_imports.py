"""`vidldm generate` imports only what making a clip needs (issue 25: start-up and imports are half of its time).

A behaviour test, not a timing one: a new process runs the generate command on the tiny model and reports
which modules it imported. Most of the import time is torch, diffusers, transformers and what they import
themselves (torch._dynamo, peft, scipy: see docs/shapes-model.md), which vidldm cannot leave out; this
guards what vidldm itself decides: other commands, optional packages and opt-in paths stay unimported.
"""

import json
import os
import subprocess
import sys

# Each with the reason generate has no use for it.
NOT_FOR_GENERATE = {
    "gradio": "the web studio (vidldm serve)",
    "vidldm.web": "the web studio",
    "vidldm.train": "vidldm train",
    "vidldm.eval": "vidldm eval",
    "vidldm.bench": "benchmarks",
    "vidldm.data": "datasets and latent caches",
    "vidldm.run_file": "vidldm run",
    "vidldm.walk": "vidldm walk",
    "decord": "reading videos (generate reads none)",
    "diffusers.pipelines.animatediff": "the diffusers backend for parity checks",
    "diffusers.pipelines.stable_diffusion": "loading diffusers folders and single files",
    "diffusers.loaders.single_file": "single-file checkpoints",
    "torch._inductor.compile_fx": "torch.compile, an opt-in fast path",
    "tensorboard": "training logs",
}

CODE = """
import json, sys
from vidldm.cli import main
status = main(["generate", "a red circle moving right", "--model", "tiny", "--steps", "1", "--frames", "4",
               "--seed", "0", "-q", "-o", sys.argv[1]])
print(json.dumps({"status": status, "modules": sorted(sys.modules)}))
"""


def test_generate_imports_nothing_it_does_not_use(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, "-c", CODE, str(tmp_path / "clip.gif")], capture_output=True, text=True,
                          env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["status"] == 0 and (tmp_path / "clip.gif").exists()
    imported = set(report["modules"])
    assert "vidldm.loading" in imported and "torch" in imported  # it did load a model
    unneeded = {name: why for name, why in NOT_FOR_GENERATE.items() if name in imported}
    assert not unneeded, f"generate imported modules it does not use: {unneeded}"
