"""Prompt travel: one grammar; every bad travel text is one line quoting the part at fault; plain prompts stay plain."""

import pytest

from vidldm.cli import main as cli_main
from vidldm.cli import parse_prompt as cli_parse_prompt
from vidldm.errors import VidldmError
from vidldm.prompt_travel import parse_prompt, travel_text


@pytest.mark.parametrize("text", [
    "a red circle moving right",
    "ratio 16:9 | wide",          # ':' and '|' later in the text: plain
    "a clock showing 12:30",
    "shot A: a red circle | shot B: a blue square",
    "x:b | 0:a",                  # does not start with FRAME:
    "{a|b} dynamic-prompt syntax",
])
def test_plain_prompts_stay_plain(text):
    assert parse_prompt(text) == text
    assert parse_prompt(text, num_frames=16) == text


@pytest.mark.parametrize("text, expected", [
    ("0:a | 12:b", {0: "a", 12: "b"}),
    ("  0 : a red circle |12:  a blue circle  ", {0: "a red circle", 12: "a blue circle"}),
    ("4:a", {4: "a"}),                                     # one key: held over the whole clip
    ("0:ratio 16:9 | 8:a clock at 12:30", {0: "ratio 16:9", 8: "a clock at 12:30"}),  # ':' inside a prompt
    ("0:a | 15:b", {0: "a", 15: "b"}),                     # the last frame of 16
    ('{"0": "a red circle", "12": "a blue circle"}', {0: "a red circle", 12: "a blue circle"}),  # animatediff-cli
    ('"0": "a", "8": "b",', {0: "a", 8: "b"}),             # ComfyUI batch schedule: no braces, trailing comma
])
def test_travel(text, expected):
    assert parse_prompt(text, num_frames=16) == expected
    assert list(parse_prompt(text)) == sorted(expected)


@pytest.mark.parametrize("text, num_frames, message", [
    ("0:a | x:b", None, "prompt travel part 2 'x:b' does not start with a frame number; write every part as FRAME:PROMPT"),
    ("12:a | 3:b", None, "prompt travel part 2 '3:b': frame 3 comes after frame 12; list the frames in increasing order"),
    ("0:a | 0:b", None, "prompt travel part 2 '0:b': frame 0 is given twice (parts 1 and 2); give each frame once"),
    ("99:a", 16, "prompt travel part 1 '99:a': frame 99 is past the clip's last frame, 15 (frames count from 0; the clip has 16); "
                 "a plain prompt must not start with 'NUMBER:', so put a word first"),
    ("0:a | 16:b", 16, "prompt travel part 2 '16:b': frame 16 is past the clip's last frame, 15"),
    ("0:a | 12:", None, "prompt travel part 2 '12:' has no prompt after the ':'"),
    ("0:a | 12:   ", None, "prompt travel part 2 '12:' has no prompt after the ':'"),
    ("0:a | 12:b |", None, "prompt travel part 3 is empty (a '|' with nothing after it, or '||')"),
    ("0:a || 12:b", None, "prompt travel part 2 is empty"),
    ("-1:a | 4:b", None, "prompt travel part 1 '-1:a': a frame is a whole number from 0 up, without a sign"),
    ('{"0": "a", "0": "b"}', None, "prompt travel part 2 '\"0\": \"b\"': frame 0 is given twice"),
    ('{"0": "a", "x": "b"}', None, "prompt travel part 2 '\"x\": \"b\"' does not start with a frame number"),
    ('{"0": "a", "4": 7}', None, "the prompt must be text in quotes"),
    ('{"0": "a", "4": ""}', None, "has no prompt after the ':'"),
    ('{"0": "a" "4": "b"}', None, "prompt travel as JSON is not valid JSON (Expecting ',' delimiter"),
    ("   ", None, "the prompt is empty; describe the clip you want"),
    ("", 16, "the prompt is empty"),
])
def test_bad_travel_is_one_line_quoting_the_part(text, num_frames, message):
    with pytest.raises(VidldmError) as err:
        parse_prompt(text, num_frames)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_the_hint_for_plain_text_comes_only_when_one_part_could_be_plain():
    with pytest.raises(VidldmError, match="put a word first"):
        parse_prompt("16:9 widescreen, a red circle", num_frames=16)
    with pytest.raises(VidldmError) as err:
        parse_prompt("0:a | 20:b", num_frames=16)
    assert "put a word first" not in str(err.value)


def test_travel_text_round_trips():
    travel = parse_prompt("0:a red circle | 8:ratio 16:9 | 15:a blue square", num_frames=16)
    assert parse_prompt(travel_text(travel), num_frames=16) == travel
    assert travel_text({"12": "b", "0": "a"}) == "0:a | 12:b"  # a sidecar's JSON keys are strings
    assert travel_text("plain") == "plain"


def test_the_cli_delegates_and_checks_against_frames(tmp_path, capsys):
    assert cli_parse_prompt("0:a | 12:b") == {0: "a", 12: "b"}
    assert cli_parse_prompt("ratio 16:9 | wide") == "ratio 16:9 | wide"
    out = tmp_path / "clip.gif"
    code = cli_main(["generate", "0:a | 12:b", "--model", "tiny", "--frames", "8", "--steps", "1", "-q", "-o", str(out)])
    assert code == 2
    err = capsys.readouterr().err.strip()
    assert err == ("vidldm: error: prompt travel part 2 '12:b': frame 12 is past the clip's last frame, 7 "
                   "(frames count from 0; the clip has 8)")
    assert list(tmp_path.iterdir()) == []
    assert cli_main(["generate", "0:a", "--model", "tiny", "--frames", "0", "-q", "-o", str(out)]) == 2
    assert capsys.readouterr().err.strip() == "vidldm: error: --frames must be at least 1, got 0"
