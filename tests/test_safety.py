"""Untrusted files run no code; interrupted and concurrent writes leave nothing behind; resume is exact or refused."""

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.test_train import ENV, recipe, video_folder  # noqa: F401 (video_folder is a fixture)
from vidldm import atomic
from vidldm.cli import main as cli_main
from vidldm.errors import CheckpointError, VidldmError
from vidldm.io import read_image, read_video, write_video
from vidldm.train import state as ckpt
from vidldm.train.config import load_config
from vidldm.train.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--model", "tiny", "--height", "16", "--width", "16", "--steps", "2", "--seed", "0", "-q"]


def cli(*args):
    return cli_main([str(a) for a in args])


class RunsCode:
    """Unpickling this runs `touch MARKER`: what an attacker's checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def hidden_temps(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.rglob(".*tmp*"))


# ----------------------------------------------------------------------------- no code from checkpoints

def test_no_unsafe_unpickling_anywhere_in_the_source():
    """`weights_only=False` (or a bare `torch.load` without `weights_only=True`) must not come back."""
    offenders = []
    for path in [*(ROOT / "vidldm").rglob("*.py"), *(ROOT / "scripts").rglob("*.py")]:
        text = path.read_text()
        if re.search(r"weights_only\s*=\s*False", text) or re.search(r"pickle\.loads?\(", text):
            offenders.append(str(path.relative_to(ROOT)))
        for call in re.finditer(r"torch\.load\(([^\n]*)", text):  # the call on one line
            if "weights_only=True" not in call.group(1):
                offenders.append(f"{path.relative_to(ROOT)}: {call.group(0)}")
    assert offenders == []


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, video_folder):  # noqa: F811
    """A tiny temporal run stopped after 2 steps with an EMA: one checkpoint to tamper with."""
    tmp = tmp_path_factory.mktemp("stopped")
    path = recipe(tmp, video_folder, train={"max_steps": 4, "ema_decay": 0.9}, checkpoint={"every": 2})
    Trainer(load_config(path), stop_after=2).train()
    return path, tmp / "run" / "checkpoints" / "step-000002"


def _copy_checkpoint(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("name", ["optimizer.pt", "scheduler.pt", "rng-0.pt"])
def test_resume_refuses_a_checkpoint_that_would_run_code(tmp_path, stopped_run, capsys, name):
    path, checkpoint = stopped_run
    tampered = _copy_checkpoint(checkpoint, tmp_path / "step-000002")
    if name == "rng-0.pt":  # the layout of checkpoints written before RNG states moved to safetensors
        (tampered / "rng-0.safetensors").unlink()
    marker = tmp_path / "code-ran"
    torch.save({"state": RunsCode(marker)}, tampered / name)
    assert cli("train", path, "--resume", tampered) == 2
    err = capsys.readouterr().err.strip()
    assert not marker.exists()
    assert len(err.splitlines()) == 1 and name in err and "could run code" in err, err


def test_old_pickled_rng_states_still_resume_exactly(tmp_path, stopped_run):
    """rng-N.pt of older checkpoints (numpy's state inside) loads through the allow-list, equal to the new file."""
    _, checkpoint = stopped_run
    new = ckpt._rng_from_safetensors(checkpoint / "rng-0.safetensors")
    torch.save(new, tmp_path / "rng-0.pt")  # what the old write_process_state wrote
    old = ckpt._load_legacy_rng(tmp_path / "rng-0.pt")
    g = torch.Generator()
    draws = []
    for state in (new, old):
        ckpt.set_rng_state(state, g)
        draws.append((__import__("random").random(), np.random.rand(), torch.rand(2).tolist(), torch.rand(2, generator=g).tolist()))
    assert draws[0] == draws[1]


def test_damaged_checkpoint_files_are_one_line(tmp_path, stopped_run, capsys):
    path, checkpoint = stopped_run
    for name, damage in (("optimizer.pt", b"not a torch file"), ("weights.safetensors", b"\x00" * 10),
                         ("rng-0.safetensors", os.urandom(64)), ("state.json", b"{nope")):
        tampered = _copy_checkpoint(checkpoint, tmp_path / name / "step-000002")
        (tampered / name).write_bytes(damage)
        assert cli("train", path, "--resume", tampered) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and name in err, err


def test_missing_rng_file_says_what_is_true(tmp_path, stopped_run):
    _, checkpoint = stopped_run
    tampered = _copy_checkpoint(checkpoint, tmp_path / "step-000002")
    (tampered / "rng-0.safetensors").unlink()
    with pytest.raises(CheckpointError, match="incomplete: 'rng-0.safetensors' is missing"):
        ckpt.read_checkpoint(tampered, 0)
    with pytest.raises(VidldmError, match="written by 1 process"):
        ckpt.read_checkpoint(checkpoint, 1)  # a second process of a bigger run


def test_resume_without_ema_is_refused_not_silently_restarted(tmp_path, stopped_run, capsys):
    path, checkpoint = stopped_run
    tampered = _copy_checkpoint(checkpoint, tmp_path / "step-000002")
    (tampered / "ema.safetensors").unlink()
    assert cli("train", path, "--resume", tampered) == 2
    err = capsys.readouterr().err
    assert "no ema.safetensors" in err and "train.ema_decay=0" in err


def test_resume_drops_log_lines_past_the_checkpoint_and_saves_atomically(tmp_path, video_folder):  # noqa: F811
    path = recipe(tmp_path, video_folder, train={"max_steps": 4}, checkpoint={"every": 2})
    Trainer(load_config(path), stop_after=2).train()
    run = tmp_path / "run"
    with (run / "log.jsonl").open("a") as log:  # a run killed after logging step 3, before its checkpoint at 4
        log.write(json.dumps({"step": 3, "loss": 1.0}) + '\n{"step": 4, "lo')
    (run / "motion_adapter").mkdir()
    (run / "motion_adapter" / "half-written").write_text("from a killed final save")
    Trainer(load_config(path), resume="latest").train()
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    assert sorted(p.name for p in (run / "motion_adapter").iterdir()) == ["config.json", "diffusion_pytorch_model.safetensors"]
    assert hidden_temps(run) == []


# ----------------------------------------------------------------------------- wrong results with exit 0

@pytest.fixture
def clip_of(tmp_path):
    def make(n):
        path = tmp_path / f"in{n}.gif"
        write_video(np.random.default_rng(n).integers(0, 256, (n, 16, 16, 3), dtype=np.uint8), path, fps=8)
        return path
    return make


@pytest.mark.parametrize("n_in, extra, expected", [
    (1, [], 1 + 16 - 1),  # default known frames (4) from a 1-frame clip: the one frame is known
    (4, ["--known-frames", "8"], 4 + 16 - 4),
    (6, ["--known-frames", "2"], 6 + 16 - 2),
])
def test_extend_keeps_every_made_frame(tmp_path, clip_of, n_in, extra, expected):
    out = tmp_path / "e.gif"
    assert cli("extend", clip_of(n_in), "more", *FAST, "--frames", 16, *extra, "-o", out) == 0
    assert read_video(out)[0].shape[0] == expected


def test_extend_returns_the_same_clip_from_python_and_the_cli(tmp_path, clip_of, pipe):
    src = clip_of(3)
    out = tmp_path / "e.gif"
    assert cli("extend", src, "more", *FAST, "--frames", 4, "--known-frames", 2, "-o", out) == 0
    frames = pipe("more", video=read_video(src)[0], extend=True, num_frames=4, num_known_frames=2, height=16, width=16,
                  num_inference_steps=2, generator=torch.Generator().manual_seed(0), output_type="np").frames[0]
    assert frames.shape[0] == 3 + 4 - 2
    np.testing.assert_allclose(frames[:3], read_video(src)[0] / 255, atol=1e-6)


@pytest.mark.parametrize("value", ["inf", "nan", "-inf"])
def test_non_finite_numbers_are_refused_before_anything_is_written(tmp_path, capsys, value):
    for flag in ("--guidance", "--fps", "--temporal-end"):
        out = tmp_path / "g.gif"
        assert cli("generate", "a red circle", *FAST, f"{flag}={value}", "-o", out) == 2
        err = capsys.readouterr().err.strip()
        assert err == f"vidldm: error: {flag} must be a finite number, got {float(value)}"
        assert list(tmp_path.iterdir()) == []


def test_python_api_refuses_non_finite_guidance(pipe):
    for value in (float("inf"), float("nan")):
        with pytest.raises(VidldmError, match="finite"):
            pipe("x", num_frames=2, height=16, width=16, num_inference_steps=1, guidance_scale=value)


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    ramp = np.linspace(0, 65535, 32 * 32).reshape(32, 32).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "deep.png")
    assert Image.open(tmp_path / "deep.png").mode == "I;16"
    rgb = read_image(tmp_path / "deep.png")
    assert rgb.dtype == np.uint8 and rgb.shape == (32, 32, 3)
    np.testing.assert_array_equal(rgb[..., 0], np.rint(ramp / 257).astype(np.uint8))
    assert (rgb == 255).mean() < 0.01  # clipping made 99.6% of them white


# ----------------------------------------------------------------------------- files left behind

def test_temporary_names_are_unique_per_writer_and_bounded(tmp_path):
    long = tmp_path / ("x" * 245 + ".mp4")
    names = {atomic.temp_path(long, ".mp4").name for _ in range(100)}
    assert len(names) == 100 and all(len(n.encode()) <= 255 for n in names)
    atomic.write_text(long.with_suffix(".json"), "{}")  # the 250-byte name itself is legal
    assert long.with_suffix(".json").read_text() == "{}"


def test_concurrent_sidecar_writers_never_fail(tmp_path):
    from vidldm.cli import write_sidecar

    errors = []

    def writer(i):
        try:
            for j in range(100):
                write_sidecar(tmp_path / "clip.mp4", {"writer": i, "n": j})
        except Exception as err:  # noqa: BLE001 (the test reports any failure)
            errors.append(err)

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert json.loads((tmp_path / "clip.json").read_text())["n"] == 99
    assert hidden_temps(tmp_path) == []


def test_a_killed_writers_temporary_is_removed_by_the_next_write(tmp_path):
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    pid = int(dead.stdout)
    left = tmp_path / f".clip.mp4.tmp-{pid}-0123abcd.mp4"
    left.write_bytes(b"")
    alive = tmp_path / f".clip.mp4.tmp-{os.getppid()}-0123abcd.mp4"  # a live writer's: kept
    alive.write_bytes(b"")
    write_video(np.zeros((2, 16, 16, 3), np.uint8), tmp_path / "clip.mp4")
    assert not left.exists() and alive.exists()


def test_replace_folder_is_all_or_nothing(tmp_path):
    target = tmp_path / "pipeline"
    target.mkdir()
    (target / "old").write_text("old")
    with pytest.raises(RuntimeError), atomic.replace_folder(target) as tmp:
        (tmp / "new").write_text("half")
        raise RuntimeError("killed mid-save")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline"] and (target / "old").exists()
    with atomic.replace_folder(target) as tmp:
        (tmp / "new").write_text("whole")
    assert [p.name for p in target.iterdir()] == ["new"] and hidden_temps(tmp_path) == []


@pytest.mark.parametrize("where", ["sampling", "writing"])
@pytest.mark.parametrize("signum, code, line", [
    (signal.SIGTERM, 143, "vidldm: stopped by SIGTERM; nothing half-written was left"),
    (signal.SIGINT, 130, "vidldm: interrupted (Ctrl-C); nothing half-written was left"),
])
def test_signals_end_with_one_line_and_no_files(tmp_path, capsys, monkeypatch, where, signum, code, line):
    import vidldm.sampling

    def terminate(*args, **kwargs):
        os.kill(os.getpid(), signum)
        time.sleep(5)  # the handler raises before this returns
        raise AssertionError(f"signal {signum} was not handled")

    before = signal.getsignal(signal.SIGTERM)
    if where == "sampling":
        monkeypatch.setattr(vidldm.sampling, "denoise", terminate)
        monkeypatch.setattr("vidldm.pipeline.denoise", terminate)
    else:
        monkeypatch.setattr("vidldm.io.write._write_gif", terminate)
    assert cli("generate", "a red circle", *FAST, "--frames", 4, "-o", tmp_path / "clip.gif") == code
    assert capsys.readouterr().err.strip() == line
    assert list(tmp_path.iterdir()) == []
    assert signal.getsignal(signal.SIGTERM) is before  # restored for the rest of the process


def test_ctrl_c_is_one_line_whatever_handler_the_caller_had(tmp_path, capsys, monkeypatch):
    """A process that calls main() with SIGINT ignored or handled elsewhere (an embedding program, a library it
    loaded; in the full test run, one of the tests before this file) still gets the CLI's Ctrl-C: one line, exit 130,
    nothing written; its own handler is back afterwards."""
    import vidldm.sampling

    def interrupt(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGINT)
        time.sleep(5)
        raise AssertionError("SIGINT was not handled")

    monkeypatch.setattr(vidldm.sampling, "denoise", interrupt)
    monkeypatch.setattr("vidldm.pipeline.denoise", interrupt)
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        assert cli("generate", "a red circle", *FAST, "--frames", 4, "-o", tmp_path / "clip.gif") == 130
        assert signal.getsignal(signal.SIGINT) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGINT, previous)
    assert capsys.readouterr().err.strip() == "vidldm: interrupted (Ctrl-C); nothing half-written was left"
    assert list(tmp_path.iterdir()) == []


def test_sigterm_to_a_real_process(tmp_path):
    out = tmp_path / "clip.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "vidldm", "generate", "a red circle", *FAST[:-3], "--steps", "1000",
                             "--frames", "16", "--height", "32", "--width", "32", "-o", str(out)], stderr=subprocess.PIPE, text=True, env=ENV)
    time.sleep(8)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err[-2000:]
    assert err.strip().splitlines()[-1] == "vidldm: stopped by SIGTERM; nothing half-written was left"
    assert list(tmp_path.iterdir()) == []


# ----------------------------------------------------------------------------- messages say what is true

def test_output_under_a_file_is_named_before_any_work(tmp_path, capsys):
    (tmp_path / "afile").write_text("")
    assert cli("generate", "a red circle", *FAST, "-o", tmp_path / "afile" / "x.mp4") == 2
    err = capsys.readouterr().err
    assert f"'{tmp_path / 'afile'}' is a file, not a folder" in err


def test_cache_names_the_real_flag(tmp_path, video_folder, capsys):  # noqa: F811
    path = recipe(tmp_path, video_folder)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "something").write_text("")
    assert cli("cache", path, tmp_path / "cache") == 2
    assert "vidldm cache --overwrite" in capsys.readouterr().err
