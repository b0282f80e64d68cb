"""Run files (`vidldm run FILE`): many clips from one file, checked whole before the first clip."""

import json

import numpy as np
import pytest
import yaml
from PIL import Image

from vidldm.cli import main
from vidldm.errors import VidldmError
from vidldm.io import read_video
from vidldm.run_file import load_run_file

TINY = {"model": "tiny", "steps": 2, "frames": 4, "height": 16, "width": 16}


def cli(*argv):
    return main([*map(str, argv)])


def run_file(tmp_path, data, name="run.yaml"):
    path = tmp_path / name
    path.write_text(json.dumps(data) if name.endswith(".json") else yaml.safe_dump(data, sort_keys=False))
    return path


def flags(job):
    return dict(a.split("=", 1) for a in job.argv if a.startswith("--"))


# ----------------------------------------------------------------------------- planning (no model)

def test_entries_override_the_shared_keys_and_every_setting_becomes_its_flag(tmp_path):
    jobs = load_run_file(run_file(tmp_path, {**TINY, "guidance_scale": 5, "entries": [
        {"prompt": "a red circle", "seed": 3}, {"prompt": "a blue square", "seed": 4, "steps": 3, "fps": 12}]}))
    assert [j.argv[:2] for j in jobs] == [["generate", "a red circle"], ["generate", "a blue square"]]
    first, second = flags(jobs[0]), flags(jobs[1])
    assert first["--steps"] == "2" and second["--steps"] == "3"  # the entry wins
    assert first["--guidance"] == second["--guidance"] == "5.0"  # Python names read too
    assert second["--fps"] == "12.0" and first["--seed"] == "3" and second["--seed"] == "4"
    assert [j.stem for j in jobs] == ["001-a-red-circle-3", "002-a-blue-square-4"]


def test_prompts_pair_with_seeds_one_prompt_takes_every_seed_and_repeats_count_up(tmp_path):
    paired = load_run_file(run_file(tmp_path, {**TINY, "prompt": ["a", "b"], "seed": [7, 9],
                                               "n_prompt": ["no a", "no b"]}))
    assert [(j.argv[1], flags(j)["--seed"], flags(j)["--negative-prompt"]) for j in paired] == [
        ("a", "7", "no a"), ("b", "9", "no b")]
    each = load_run_file(run_file(tmp_path, {**TINY, "prompt": "a", "seed": [1, 2, 3], "repeats": 2}))
    assert [flags(j)["--seed"] for j in each] == ["1", "2", "2", "3", "3", "4"]
    random_seeds = load_run_file(run_file(tmp_path, {**TINY, "prompt": "a", "repeats": 3}))
    assert len({flags(j)["--seed"] for j in random_seeds}) == 3  # seed -1 (the default): drawn per clip


def test_control_windows_take_one_value_or_one_per_net(tmp_path):
    """diffusers' names with a list (one per net, as AnimateDiff-cli configs give them) or a single value."""
    jobs = load_run_file(run_file(tmp_path, {**TINY, "prompt": "a", "control_guidance_start": 0.1,
                                             "control_guidance_end": [0.5, 1.0]}))
    argv = [a for a in jobs[0].argv if a.startswith("--control-")]
    assert argv == ["--control-start=0.1", "--control-end=0.5", "--control-end=1.0"]
    with pytest.raises(VidldmError, match="control_guidance_end must be between 0 and 1"):
        load_run_file(run_file(tmp_path, {**TINY, "prompt": "a", "control_guidance_end": [0.5, 2]}))


def test_head_tail_and_prompt_map_make_prompt_travel(tmp_path):
    jobs = load_run_file(run_file(tmp_path, {**TINY, "head_prompt": "best quality,", "tail_prompt": "on black",
                                             "prompt_map": {"0": "a red circle", 3: "a blue | square"}}))
    travel = json.loads(jobs[0].argv[1])
    assert travel == {"0": "best quality, a red circle, on black", "3": "best quality, a blue | square, on black"}


def test_animatediff_config_names_are_read(tmp_path):
    adapter = tmp_path / "mm.safetensors"
    adapter.write_bytes(b"x")
    jobs = load_run_file(run_file(tmp_path, {"path": "tiny", "motion_module": "mm.safetensors", "prompt": "a",
                                             "steps": 2, "guidance_scale": 7.5, "seed": [10788741199826055526]}))
    f = flags(jobs[0])
    assert f["--model"] == "tiny" and f["--motion-adapter"] == str(adapter)  # read beside the run file
    assert f["--seed"] == "10788741199826055526"  # AnimateDiff's configs hold 64-bit seeds
    wraps = load_run_file(run_file(tmp_path, {"prompt": "a", "seed": 2**64 - 1, "repeats": 2}))
    assert [flags(j)["--seed"] for j in wraps] == [str(2**64 - 1), "0"]  # torch's seeds are modulo 2**64


def test_the_shipped_example_plans_its_clips():
    from pathlib import Path

    jobs = load_run_file(Path(__file__).parents[1] / "configs" / "runs" / "shapes-demo.yaml")
    starts = ["001-a-red-circle-moving-right-on", "002-a-blue-square-moving-up-on", "003-travel-3",
              "004-a-white-circle-moving-down-on", "005-a-white-circle-moving-down-on"]
    assert all(j.stem.startswith(s) for j, s in zip(jobs, starts, strict=True))
    assert json.loads(jobs[2].argv[1])["12"] == "a yellow triangle moving left, on a black background"
    assert [flags(j)["--seed"] for j in jobs] == ["1", "2", "3", "4", "5"] and jobs[2].suffix == ".gif"


@pytest.mark.parametrize("data, message", [
    ({**TINY, "prompt": "a", "stepz": 3}, "entry 1: unknown key 'stepz'; did you mean 'steps'?"),
    ({**TINY, "entries": [{"prompt": "a"}, {"name": "x", "prompt": "b", "steps": "many"}]},
     "entry 2 (x): 'steps' must be a number, got \"many\""),
    ({**TINY, "prompt": "a", "guidance": -1}, "entry 1: guidance must be at least 0"),
    ({**TINY, "prompt": ["a", "b"], "seed": [1, 2, 3]}, "3 seeds for 2 prompts"),
    ({**TINY, "prompt": "a", "seed": "x"}, "'seed' must be a whole number"),
    ({**TINY, "prompt": "a", "seed": 2**64}, "seed"),
    ({**TINY, "prompt": "a", "repeats": 0}, "'repeats' must be a whole number of at least 1"),
    ({**TINY, "mode": "animate", "prompt": "a"}, "mode animate needs 'image:'"),
    ({**TINY, "mode": "animate", "prompt": "a", "image": "nope.png"}, "image 'nope.png' does not exist"),
    ({**TINY, "prompt": "a", "image": "x.png"}, "'image:' is not used by mode generate; use mode animate"),
    ({**TINY, "mode": "fly", "prompt": "a"}, "'mode' must be one of generate, animate, restyle, extend"),
    ({**TINY}, "give 'prompt' (text or a list) or 'prompt_map'"),
    ({**TINY, "prompt_map": {"3": "a", "1": "b"}}, "frame 1 comes after frame 3"),
    ({**TINY, "prompt": "a", "format": "avi"}, "'format' must be one of mp4, gif, webp, png"),
    ({**TINY, "prompt": "a", "scheduler": "nope"}, "unknown scheduler 'nope'"),
    ({**TINY, "prompt": "a", "overwrite": True}, "unknown key 'overwrite'"),
    ({**TINY, "entries": {"prompt": "a"}}, "'entries' must be a non-empty list of mappings"),
    ({**TINY, "entries": [{"prompt": "a", "entries": []}]}, "'entries' cannot be nested"),
    ({**TINY, "prompt": "a", "lora_map": ["x"]}, "'lora_map' must be a mapping of file -> weight"),
])
def test_a_bad_run_file_is_one_line_naming_file_entry_and_key_and_makes_nothing(tmp_path, capsys, data, message):
    path = run_file(tmp_path, data)
    with pytest.raises(VidldmError, match=None) as err:
        load_run_file(path)
    assert message in str(err.value) and str(path) in str(err.value) and "\n" not in str(err.value)
    assert cli("run", path, "-o", tmp_path / "out") == 2
    assert capsys.readouterr().err.count("\n") == 1
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("text, name, message", [
    ("prompt: [a, b", "run.yaml", "not valid YAML"), ('{"prompt": "a",}', "run.json", "not valid JSON"),
    ("- a\n- b\n", "run.yaml", "a run file is a mapping"), ("", "run.yaml", "a run file is a mapping"),
])
def test_unreadable_run_files(tmp_path, text, name, message):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(VidldmError, match=message):
        load_run_file(path)
    with pytest.raises(VidldmError, match="does not exist"):
        load_run_file(tmp_path / "missing.yaml")


# ----------------------------------------------------------------------------- running (tiny model)

def test_a_run_makes_every_clip_with_a_sidecar_and_a_failed_entry_does_not_stop_the_others(tmp_path, capsys):
    Image.fromarray(np.full((16, 16, 3), 200, np.uint8)).save(tmp_path / "still.png")
    path = run_file(tmp_path, {**TINY, "entries": [
        {"prompt": ["a red circle", "a blue square"], "seed": [1, 2]},
        {"name": "broken", "prompt": "a", "model": str(tmp_path / "no-such-model")},
        {"mode": "animate", "image": "still.png", "prompt": "it moves", "seed": 3, "format": "gif"},
    ]})
    out = tmp_path / "clips"
    assert cli("run", path, "-o", out, "-q") == 1  # one entry failed
    made = sorted(p.name for p in out.iterdir())
    assert made == ["001-a-red-circle-1.json", "001-a-red-circle-1.mp4", "002-a-blue-square-2.json",
                    "002-a-blue-square-2.mp4", "004-it-moves-3.gif", "004-it-moves-3.json"]
    captured = capsys.readouterr()
    assert "3 of 4 clips made" in captured.out and "failed: " in captured.out and "entry 2 (broken)" in captured.out
    side = json.loads((out / "004-it-moves-3.json").read_text())
    assert side["command"] == "animate" and side["image"] == str((tmp_path / "still.png").resolve())
    # Each sidecar remakes its clip, and a second run never replaces the first run's clips.
    assert cli("replay", out / "001-a-red-circle-1.json", "-o", tmp_path / "again.mp4", "-q") == 0
    assert np.array_equal(read_video(tmp_path / "again.mp4")[0], read_video(out / "001-a-red-circle-1.mp4")[0])
    assert cli("run", path, "-o", out, "-q") == 1
    assert (out / "001-a-red-circle-1-2.mp4").exists() and (out / "001-a-red-circle-1-2.json").exists()


def test_dry_run_prints_the_commands_and_makes_nothing(tmp_path, capsys):
    path = run_file(tmp_path, {**TINY, "prompt": "a red circle", "seed": [1, 2]})
    assert cli("run", path, "--dry-run", "-o", tmp_path / "out") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[0].startswith("vidldm generate 'a red circle' --model=tiny")
    assert lines[1].endswith(f"-o {tmp_path / 'out' / '002-a-red-circle-2.mp4'}")
    assert not (tmp_path / "out").exists()


def test_the_run_folder_must_be_a_folder(tmp_path):
    path = run_file(tmp_path, {**TINY, "prompt": "a"})
    (tmp_path / "taken").write_text("x")
    assert cli("run", path, "-o", tmp_path / "taken") == 2
    assert cli("run", path, "-o", tmp_path / "missing" / "out") == 2
    assert (tmp_path / "taken").read_text() == "x"


def test_numbers_written_with_an_exponent_are_numbers(tmp_path):
    """PyYAML alone reads `7.5e0`-less forms such as `1e1` as strings (YAML 1.1); a run file reads them as YAML 1.2 does."""
    path = tmp_path / "run.yaml"
    path.write_text("model: tiny\nsteps: 2\nframes: 4\nguidance_scale: 1e1\nnoise_prior_strength: 5e-1\nrepeats: 2e0\n"
                    "prompt: a red circle\n")
    jobs = load_run_file(path)
    got = flags(jobs[0])
    assert got["--guidance"] == "10.0" and float(got["--noise-prior-strength"]) == 0.5 and len(jobs) == 2
