"""Faults from outside: `kill -9` at random moments of a training run, two writers of one output, Ctrl-C.

The processes are real (their own pids, signals delivered by the kernel), forked from a zygote that has
imported torch and vidldm once (tests/zygote.py): each runs `vidldm.cli.main(argv)`, the code path of
`python -m vidldm`, without paying 10-30 s of imports per start on two busy cores.
"""

import json
import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from tests.test_train import recipe, video_folder  # noqa: F401 (video_folder is a fixture)
from tests.zygote import Zygote
from vidldm.io import read_video

ENV = {**os.environ, "PYTHONHASHSEED": "0", "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
MAX_STEPS, EVERY = 16, 2
KILLS_IN_TRAINING = 5  # they always land; plus one while starting and one after the last step, which may not
ADAPTER = Path("motion_adapter") / "diffusion_pytorch_model.safetensors"


@pytest.fixture(scope="module")
def zygote():
    z = Zygote(ENV)
    yield z
    z.close()


def last_step(log: Path) -> int:
    """The last step in a run's log.jsonl (a line cut by a kill is skipped, as the trainer does)."""
    step = 0
    try:
        lines = log.read_text().splitlines()
    except FileNotFoundError:
        return 0
    for line in lines:
        try:
            step = json.loads(line)["step"]
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
    return step


def tree(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def log_tail(path: Path) -> str:
    return path.read_text(errors="replace")[-3000:] if path.exists() else "(no log)"


def train_argv(path: Path, out: Path) -> list[str]:
    resume = any(out.glob("checkpoints/step-*/state.json"))  # else start from scratch, as a user would
    return ["train", path, *(["--resume", "latest"] if resume else [])]


def until_step(zygote, pid: int, log: Path, step: int, timeout: float = 300) -> float:
    """Wait until the run's log shows `step` (or the process ends); return the time it was seen."""
    deadline = time.monotonic() + timeout
    while last_step(log) < step:
        assert zygote.wait(pid, timeout=0.02) is None, f"the run ended before step {step}"
        assert time.monotonic() < deadline, f"step {step} not reached in {timeout} s"
    return time.monotonic()


def reference_run(zygote, path: Path, out: Path, logs: Path) -> tuple[float, float]:
    """An uninterrupted run; returns (seconds per step, seconds from the last step's log line to the exit)."""
    pid = zygote.start(train_argv(path, out), logs / "reference.log")
    first = until_step(zygote, pid, out / "log.jsonl", 1)
    last = until_step(zygote, pid, out / "log.jsonl", MAX_STEPS)
    assert zygote.wait(pid, timeout=300) == 0, log_tail(logs / "reference.log")
    return (last - first) / (MAX_STEPS - 1), time.monotonic() - last


def kill_plan(rng: random.Random, step_s: float, final_s: float) -> list[tuple[int, float]]:
    """`(wait for this step, then this many seconds)` per kill: one while starting (step 0), some at random
    steps, up to 1.5 steps late (so some land while a checkpoint is written), one after the last step.
    The steps stop two short of the end, so those kills come before the run can finish."""
    steps = sorted(rng.sample(range(1, MAX_STEPS - 1), KILLS_IN_TRAINING))
    return ([(0, rng.uniform(0.0, 1.0))] + [(s, rng.uniform(0.0, 1.5 * step_s)) for s in steps]
            + [(MAX_STEPS, rng.uniform(0.0, final_s))])


def test_kill_9_at_random_moments_then_resume_gives_the_uninterrupted_weights(tmp_path, zygote, video_folder):  # noqa: F811
    logs = tmp_path / "logs"
    logs.mkdir()
    common = dict(train={"max_steps": MAX_STEPS, "ema_decay": 0.9}, checkpoint={"every": EVERY, "keep": 2})
    (tmp_path / "ref").mkdir()
    (tmp_path / "killed").mkdir()
    ref_path, path = recipe(tmp_path / "ref", video_folder, **common), recipe(tmp_path / "killed", video_folder, **common)
    ref, out = tmp_path / "ref" / "run", tmp_path / "killed" / "run"
    step_s, final_s = reference_run(zygote, ref_path, ref, logs)

    landed, seen = 0, 0
    for i, (step, delay) in enumerate(kill_plan(random.Random(30), step_s, final_s)):
        pid = zygote.start(train_argv(path, out), logs / f"attempt-{i}.log")
        until_step(zygote, pid, out / "log.jsonl", min(max(step, seen + 1), MAX_STEPS) if step else 0)
        time.sleep(delay)
        zygote.kill(pid)
        code = zygote.wait(pid, timeout=300)
        assert code in (-signal.SIGKILL, 0), log_tail(logs / f"attempt-{i}.log")
        landed += code == -signal.SIGKILL
        seen = last_step(out / "log.jsonl")
        hidden = sorted(str(p.relative_to(out)) for p in out.rglob(".*"))  # what the kill left for the next run
        print(f"kill {i + 1}: {delay:.2f} s after step {step}: {'landed' if code else 'the run had finished'}, "
              f"log at step {seen}, checkpoints {sorted(p.name for p in (out / 'checkpoints').glob('*'))}, left {hidden}")
    pid = zygote.start(train_argv(path, out), logs / "last.log")
    assert zygote.wait(pid, timeout=300) == 0, log_tail(logs / "last.log")
    print(f"{landed} of {KILLS_IN_TRAINING + 2} kills landed (the process was killed before it finished)")
    assert landed >= 5

    resumed, straight = load_file(str(out / ADAPTER)), load_file(str(ref / ADAPTER))
    assert resumed.keys() == straight.keys()
    assert all(torch.equal(resumed[k], straight[k]) for k in resumed)
    assert (out / ADAPTER).read_bytes() == (ref / ADAPTER).read_bytes()
    # the same files as a run never stopped: no hidden temporaries, staging folders or extra checkpoints
    assert tree(out) == tree(ref)
    assert not [p for p in out.rglob(".*")]
    losses = [(r["step"], r["loss"]) for r in map(json.loads, (out / "log.jsonl").read_text().splitlines())]
    assert losses == [(r["step"], r["loss"]) for r in map(json.loads, (ref / "log.jsonl").read_text().splitlines())]


FAST = ["--model", "tiny", "--height", "16", "--width", "16", "--frames", "4", "--steps", "2", "-q"]


def test_two_generate_processes_writing_one_output_leave_one_valid_clip_and_sidecar(tmp_path, zygote):
    out = tmp_path / "clips" / "clip.mp4"
    out.parent.mkdir()
    pids = [zygote.start(["generate", "a red circle", *FAST, "--seed", seed, "-o", out], tmp_path / f"{seed}.log")
            for seed in (1, 2)]
    for pid, seed in zip(pids, (1, 2)):
        assert zygote.wait(pid, timeout=300) == 0, log_tail(tmp_path / f"{seed}.log")
    assert sorted(p.name for p in out.parent.iterdir()) == ["clip.json", "clip.mp4"]
    frames, _ = read_video(out)
    assert frames.shape == (4, 16, 16, 3)
    sidecar = json.loads(out.with_suffix(".json").read_text())
    assert sidecar["seed"] in (1, 2) and sidecar["output"] == str(out)


def test_ctrl_c_while_sampling_a_real_process_exits_130_with_one_line_and_no_files(tmp_path, zygote):
    out = tmp_path / "clips" / "clip.mp4"
    out.parent.mkdir()
    log = tmp_path / "generate.log"
    argv = ["generate", "a red circle", "--model", "tiny", "--height", "32", "--width", "32", "--frames", "16",
            "--steps", "1000", "--seed", "0", "-o", out]  # no -q: the progress bar says sampling has begun
    pid = zygote.start(argv, log)
    deadline = time.monotonic() + 300
    while "/1000 [" not in (log.read_text() if log.exists() else ""):
        assert zygote.wait(pid, timeout=0.05) is None, log_tail(log)
        assert time.monotonic() < deadline, "sampling did not start"
    assert zygote.kill(pid, signal.SIGINT)
    assert zygote.wait(pid, timeout=120) == 130, log_tail(log)
    lines = [line for line in log.read_text().replace("\r", "\n").splitlines() if line.strip() and "/1000 [" not in line]
    assert lines == ["vidldm: interrupted (Ctrl-C); nothing half-written was left"]
    assert list(out.parent.iterdir()) == []


def test_the_zygotes_children_are_the_cli(tmp_path, zygote):
    """What the fault tests run is `vidldm`: a bad flag is its one line and exit 2."""
    pid = zygote.start(["generate", "x", *FAST, "--steps", "0", "-o", tmp_path / "c.mp4"], tmp_path / "bad.log")
    assert zygote.wait(pid, timeout=120) == 2
    assert (tmp_path / "bad.log").read_text().strip() == "vidldm: error: --steps must be at least 1, got 0"
    assert [p.name for p in tmp_path.iterdir()] == ["bad.log"]


# ----------------------------------------------------------------------------- a kill at each point of publish

class Killed(BaseException):
    """What kill -9 does to the Python code running: it stops there, and no cleanup runs after."""


CHECKPOINT_FILES = ("ema.safetensors", "optimizer.pt", "rng-0.safetensors", "scheduler.pt", "state.json", "weights.safetensors")


def fake_checkpoint(folder: Path, step: int) -> Path:
    folder.mkdir(parents=True)
    for name in CHECKPOINT_FILES:
        (folder / name).write_text(json.dumps({"step": step}) if name == "state.json" else f"step {step}")
    return folder


def complete(folder: Path) -> bool:
    return sorted(p.name for p in folder.iterdir()) == list(CHECKPOINT_FILES)


class KillAfter:
    """Let `budget` file-system changes (a file deleted, a folder renamed) happen, then raise `Killed`."""

    def __init__(self, budget: int):
        self.budget = budget

    def spend(self) -> None:
        if self.budget == 0:
            raise Killed
        self.budget -= 1

    def rmtree(self, path, ignore_errors=False):
        for p in sorted(Path(path).rglob("*"), key=lambda p: (-len(p.parts), p.name)):  # files first, in name order
            self.spend()
            p.rmdir() if p.is_dir() else p.unlink()
        self.spend()
        Path(path).rmdir()

    def rename(self, real):
        def rename(path, target):
            self.spend()
            return real(path, target)
        return rename


@pytest.mark.parametrize("budget", range(0, 18))  # publish makes 17 changes here: the last budget completes
def test_a_kill_at_any_point_of_publish_leaves_latest_complete_and_the_next_publish_tidies(tmp_path, monkeypatch, budget):
    """Publish step 6 over an existing step-000006 (a run resumed from an older checkpoint) while step 2 and 4
    are kept: a kill after `budget` file-system changes must leave --resume latest a whole checkpoint."""
    from vidldm.train import state

    out = tmp_path / "run"
    for step in (2, 4, 6):
        fake_checkpoint(state.checkpoint_dir(out, step), step)
    fake_checkpoint(state.staging_dir(out, 6), 6)
    kill = KillAfter(budget)
    with monkeypatch.context() as m:
        m.setattr(state.shutil, "rmtree", kill.rmtree)
        m.setattr(Path, "rename", kill.rename(Path.rename))
        try:
            state.publish(out, 6, keep=2)
            assert budget == 17, "publish made fewer changes than counted"
        except Killed:
            assert budget < 17
    latest = state.find_checkpoint(out, "latest")
    assert complete(latest), (latest.name, sorted(p.name for p in latest.iterdir()))
    # the run resumes from `latest` and publishes its next checkpoint: exactly the newest two remain, nothing else
    fake_checkpoint(state.staging_dir(out, 8), 8)
    state.publish(out, 8, keep=2)
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == [latest.name, "step-000008"]
    assert all(complete(p) for p in (out / "checkpoints").iterdir())
