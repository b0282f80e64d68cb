"""A setting is one entry of `sampling_settings.SETTINGS`: the CLI, validation, sidecars and replay follow it."""

import json

import pytest

from vidldm import sampling_settings as settings
from vidldm.cli import build_parser, main
from vidldm.errors import VidldmError


@pytest.fixture
def with_new_setting(monkeypatch):
    """A new sampling setting, `--shimmer` (0-2, default none; old sidecars mean 0), added in one place."""
    new = settings.Setting("shimmer", "--shimmer", float, "how much the clip shimmers", low=0.0, high=2.0, legacy=0.0)
    monkeypatch.setattr(settings, "SETTINGS", [*settings.SETTINGS, new])
    monkeypatch.setitem(settings.BY_NAME, "shimmer", new)
    monkeypatch.setitem(settings.BY_KEY, "shimmer", new)
    return new


def test_a_new_setting_reaches_the_cli_validation_sidecar_and_replay(with_new_setting):
    args = build_parser().parse_args(["generate", "a red circle", "--shimmer", "1.5"])
    assert args.shimmer == 1.5
    settings.check_args(args)
    assert settings.recorded(args)["shimmer"] == 1.5
    assert settings.pipeline_kwargs(args)["shimmer"] == 1.5
    assert "--shimmer=1.5" in settings.replay_argv({"shimmer": 1.5}, "generate")
    assert "--shimmer=0.0" in settings.replay_argv({}, "generate")  # a sidecar from before the setting
    with pytest.raises(VidldmError, match="--shimmer must be between 0 and 2, got 3.0"):
        settings.check_args(build_parser().parse_args(["generate", "x", "--shimmer", "3"]))
    with pytest.raises(VidldmError, match="--shimmer must be a finite number, got nan"):
        settings.check_args(build_parser().parse_args(["generate", "x", "--shimmer", "nan"]))
    assert "--shimmer" in build_parser()._subparsers._group_actions[0].choices["animate"].format_help()


def test_a_repeatable_setting_is_a_list_checked_item_by_item_recorded_and_replayed(monkeypatch):
    """`repeatable=True` (as --lora): the flag may be given many times; each value is checked and recorded
    (through `record`), the sidecar holds the list and replay gives the flag once per value."""
    new = settings.Setting("sparkle", "--sparkle", float, "sparkles, repeatable", low=0.0, to_pipeline=False,
                           repeatable=True, record=lambda v: v * 2)
    monkeypatch.setattr(settings, "SETTINGS", [*settings.SETTINGS, new])
    monkeypatch.setitem(settings.BY_NAME, "sparkle", new)
    monkeypatch.setitem(settings.BY_KEY, "sparkle", new)
    args = build_parser().parse_args(["extend", "v.mp4", "x", "--sparkle", "1", "--sparkle", "2.5"])
    assert args.sparkle == [1.0, 2.5]
    settings.check_args(args)
    assert settings.recorded(args)["sparkle"] == [2.0, 5.0]
    argv = settings.replay_argv({"sparkle": [2.0, 5.0]}, "generate")
    assert [a for a in argv if a.startswith("--sparkle")] == ["--sparkle=2.0", "--sparkle=5.0"]
    assert build_parser().parse_args(["generate", "x", *argv]).sparkle == [2.0, 5.0]
    assert "sparkle" not in settings.recorded(build_parser().parse_args(["generate", "x"]))  # left out: nothing recorded
    with pytest.raises(VidldmError, match="--sparkle must be at least 0, got -1.0"):
        settings.check_args(build_parser().parse_args(["generate", "x", "--sparkle", "1", "--sparkle", "-1"]))


def test_every_flag_of_every_mode_is_in_the_table():
    """No mode grows a flag outside the table (only -o, -q and --help are not settings; a yes/no switch has its --no- form)."""
    sub = build_parser()._subparsers._group_actions[0].choices
    for mode in settings.MODES:
        flags = {opt for action in sub[mode]._actions for opt in action.option_strings if opt.startswith("--")}
        negated = {f"--no-{s.flag[2:]}" for s in settings.SETTINGS if s.negatable and mode in s.commands}
        assert flags - {"--help", "--output", "--quiet"} == {s.flag for s in settings.SETTINGS if mode in s.commands} | negated


def test_pipeline_and_cli_share_the_ranges(pipe):
    for name, bad in (("guidance_rescale", 1.5), ("temporal_end", -0.1), ("strength", 2.0), ("guidance_scale", -1.0)):
        with pytest.raises(VidldmError, match=f"^{name} must be"):
            pipe("x", num_frames=2, height=16, width=16, num_inference_steps=1, **{name: bad})
        flag = settings.BY_NAME[name].flag
        with pytest.raises(VidldmError, match=f"^{flag} must be"):
            settings.BY_NAME[name].check(bad, flag)


def test_replay_reads_old_and_new_sidecars(tmp_path, capsys):
    """A sidecar from before guidance_rescale/temporal_end/free_init were recorded replays with the behaviour of its
    time."""
    old = {"vidldm": "0.1.0", "command": "generate", "prompt": "a red circle", "model": "tiny", "frames": 2,
           "height": 16, "width": 16, "steps": 1, "guidance": 3.0, "scheduler": "ddim", "fps": 8.0, "seed": 1,
           "output": str(tmp_path / "old.gif")}
    (tmp_path / "old.json").write_text(json.dumps(old))
    assert main(["replay", str(tmp_path / "old.json"), "-o", str(tmp_path / "again.gif"), "-q"]) == 0
    again = json.loads((tmp_path / "again.json").read_text())
    assert {k: again[k] for k in ("guidance_rescale", "temporal_end", "steps", "guidance", "seed", "free_init")} == {
        "guidance_rescale": 0.0, "temporal_end": 1.0, "steps": 1, "guidance": 3.0, "seed": 1, "free_init": 1}


def test_the_table_names_each_setting_once():
    assert len({s.name for s in settings.SETTINGS}) == len(settings.SETTINGS)
    assert len({s.flag for s in settings.SETTINGS}) == len(settings.SETTINGS)
    assert isinstance(settings.SAMPLING_DEFAULTS, dict) and set(settings.SAMPLING_DEFAULTS) == {
        "num_inference_steps", "guidance_scale", "guidance_rescale", "temporal_end", "temporal_smoothing", "noise_prior", "noise_prior_strength",
        "free_init", "known_pixels"}
