"""scripts/train_shapes.sh's control flow, with stand-ins for `vidldm` and `python` on PATH.

The stand-ins log each command and make the folders the real ones would (in the recipe's output_dir, or
the one `--set output_dir=` gives); `vidldm train` fails part-way for the stage named in STOP_AT, leaving a
checkpoint as a stopped run does, or none for the stage named in STOP_BARE (stopped before its first)."""

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "train_shapes.sh"
pytestmark = pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")

VIDLDM = """#!/usr/bin/env bash
echo "vidldm $*" >>"$LOG"
case "$1" in
  make-shapes) mkdir -p "$2" ;;
  cache) mkdir -p "$3" ;;
  train)
    name=$(basename "$2" .yaml); out=runs/shapes/$name; prev=
    for arg in "$@"; do
      if [ "$prev" = --set ]; then case "$arg" in output_dir=*) out=${arg#output_dir=} ;; esac; fi
      prev=$arg
    done
    if [ "${STOP_AT:-}" = "$name" ]; then
      mkdir -p "$out/checkpoints/step-000100" && echo {} >"$out/checkpoints/step-000100/state.json"; exit 3
    fi
    [ "${STOP_BARE:-}" = "$name" ] && exit 3
    mkdir -p "$out/pipeline" ;;
esac
"""
PYTHON = '#!/usr/bin/env bash\necho "python $*" >>"$LOG"\n'


def run(tmp: Path, **env) -> tuple[int, list[str], str]:
    bin_dir = tmp / "bin"
    bin_dir.mkdir(exist_ok=True)
    for name, text in {"vidldm": VIDLDM, "python": PYTHON}.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(stat.S_IRWXU)
    log = tmp / "log"
    log.unlink(missing_ok=True)
    full_env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "LOG": str(log), **env}
    done = subprocess.run(["bash", str(SCRIPT)], cwd=tmp, env=full_env, capture_output=True, text=True)
    lines = log.read_text().splitlines() if log.exists() else []
    return done.returncode, lines, done.stderr


def trained(lines: list[str]) -> list[str]:
    return [Path(line.split()[2]).stem for line in lines if line.startswith("vidldm train")]


STAGES = ["vae", "image", "image_refine", "temporal", "temporal_motion", "temporal_refine", "temporal_more",
          "temporal_polish", "temporal_polish2", "temporal_polish3", "temporal_object", "temporal_object2",
          "temporal_smooth", "decoder_temporal", "keyframe", "keyframe_ends"]


def test_full_run_trains_every_stage_in_order_then_exports(tmp_path):
    rc, lines, _ = run(tmp_path)
    assert rc == 0
    assert lines[0].startswith("vidldm make-shapes data/shapes --n 3000")
    assert trained(lines) == STAGES
    assert lines[-1] == "python scripts/export_shapes.py runs/shapes/keyframe_ends/pipeline vidldm/weights/shapes"


def test_quick_run_caps_steps_stops_after_3c_and_does_not_export(tmp_path):
    rc, lines, _ = run(tmp_path, QUICK="1")
    assert rc == 0
    assert trained(lines) == STAGES[:6]
    assert "vidldm train configs/shapes/temporal.yaml --set train.max_steps=800" in lines
    assert not any(line.startswith("python") for line in lines)


def test_resume_keeps_finished_stages_and_continues_the_stopped_one(tmp_path):
    rc, lines, _ = run(tmp_path, STOP_AT="temporal")
    assert rc != 0 and trained(lines) == STAGES[:4]
    # Without RESUME a rerun starts over (from the existing data); with it, only what is left runs.
    rc, lines, _ = run(tmp_path, RESUME="1")
    assert rc == 0
    assert trained(lines) == STAGES[3:]
    assert not any(line.startswith(("vidldm make-shapes", "vidldm cache")) for line in lines)
    assert "vidldm train configs/shapes/temporal.yaml --resume latest" in lines
    assert "vidldm train configs/shapes/temporal_motion.yaml" in lines  # a new stage starts fresh
    rc, lines, _ = run(tmp_path, RESUME="1")  # all finished: nothing to train, the export again
    assert rc == 0 and trained(lines) == [] and lines[-1].startswith("python scripts/export_shapes.py")


def test_resume_refuses_stages_made_in_another_mode(tmp_path):
    assert run(tmp_path, QUICK="1")[0] == 0
    rc, lines, err = run(tmp_path, RESUME="1")
    assert rc != 0 and trained(lines) == []
    assert "runs/shapes/vae was made by another run" in err
    rc, lines, _ = run(tmp_path)  # without RESUME a full run simply trains every stage again
    assert rc == 0 and trained(lines) == STAGES


def test_a_fresh_start_clears_old_checkpoints_so_resume_cannot_continue_another_run(tmp_path):
    assert run(tmp_path, STOP_AT="temporal")[0] != 0  # leaves runs/shapes/temporal/checkpoints/step-000100
    rc, lines, _ = run(tmp_path, STOP_BARE="temporal")  # starts over, stopped before its first checkpoint
    assert rc != 0 and not (tmp_path / "runs/shapes/temporal/checkpoints").exists()
    rc, lines, _ = run(tmp_path, RESUME="1")
    assert rc == 0 and "vidldm train configs/shapes/temporal.yaml" in lines  # from the start, not --resume


def test_smoke_run_keeps_to_its_own_folders(tmp_path):
    rc, lines, _ = run(tmp_path, SMOKE="1")
    assert rc == 0 and trained(lines) == STAGES
    assert lines[0].startswith("vidldm make-shapes data/shapes-smoke --n 64")
    assert not (tmp_path / "runs" / "shapes").exists() and not (tmp_path / "data" / "shapes").exists()
    motion = next(line for line in lines if "temporal_motion.yaml" in line)
    assert "--set output_dir=runs/shapes-smoke/temporal_motion" in motion
    assert "--set model.pretrained=runs/shapes-smoke/temporal/pipeline" in motion
    decoder = next(line for line in lines if "decoder_temporal.yaml" in line)  # learns from pixels, not the cache
    assert "--set model.pretrained=runs/shapes-smoke/temporal_smooth/pipeline" in decoder
    assert "--set data.root=data/shapes-smoke" in decoder and "latent_cache" not in decoder
    assert "--set data.latent_cache=runs/shapes-smoke/cache" in motion
    ends = next(line for line in lines if "keyframe_ends.yaml" in line)  # continues the keyframe stage's encoder
    assert "--set model.sparsectrl=runs/shapes-smoke/keyframe/sparsectrl" in ends
    assert lines[-1] == ("python scripts/export_shapes.py runs/shapes-smoke/keyframe_ends/pipeline "
                         "runs/shapes-smoke/export")
    # A long run after it, stopped and resumed, never meets the smoke run's folders.
    assert run(tmp_path, STOP_AT="temporal")[0] != 0
    rc, lines, _ = run(tmp_path, RESUME="1")
    assert rc == 0 and trained(lines) == STAGES[3:]


def test_quick_and_smoke_together_are_refused(tmp_path):
    rc, lines, err = run(tmp_path, QUICK="1", SMOKE="1")
    assert rc != 0 and lines == []
    assert "QUICK=1 and SMOKE=1 are two different runs" in err


def test_smoke_run_trains_the_real_chain_from_nothing_and_exports_a_loadable_model(tmp_path):
    """SMOKE=1 with the real `vidldm`: every recipe loads the stage before it, the cache and the export run,
    and the exported folder loads with the sampling settings of the recipes (2 steps a stage: about 2 min)."""
    repo = SCRIPT.parents[1]
    for part in ("configs", "scripts"):
        shutil.copytree(repo / part, tmp_path / part)
    bin_dir = str(Path(sys.executable).parent)  # this environment's `vidldm` and `python`
    env = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}", "SMOKE": "1", "N": "16"}
    try:
        _check_smoke_run(tmp_path, env)
    finally:  # 12 stages' pipelines and checkpoints: 2.6 GB that pytest would otherwise keep
        shutil.rmtree(tmp_path / "runs", ignore_errors=True)


def _check_smoke_run(tmp_path: Path, env: dict[str, str]) -> None:
    from vidldm.loading import load_pipeline

    done = subprocess.run(["bash", "scripts/train_shapes.sh"], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "smoke run done" in done.stdout
    assert not (tmp_path / "data" / "shapes").exists()  # a long run's folders are left to the long run
    assert not (tmp_path / "runs" / "shapes").exists()
    runs = tmp_path / "runs" / "shapes-smoke"
    for name in STAGES:
        assert (runs / name / "pipeline").is_dir(), name
        assert (runs / name / ".train_shapes").read_text().startswith("finished QUICK=0 SMOKE=1"), name
    pipe = load_pipeline(str(runs / "export"))
    shipped = Path(__file__).parents[1] / "vidldm" / "weights" / "shapes" / "sampling.json"
    assert pipe.generation_defaults == json.loads(shipped.read_text())  # the recipe exports the shipped defaults
    # The temporal stages train only the adapter: the exported UNet is the image stage's, in fp16.
    image = load_pipeline(str(runs / "image_refine" / "pipeline"))
    got, want = pipe.unet.state_dict(), image.unet.state_dict()
    assert got.keys() == want.keys()
    for name in want:
        assert torch.equal(got[name], want[name].half().float()), name
