"""Prompt travel: one text that names a prompt per keyframe, `"0:a red circle | 12:a blue circle"`.

Grammar (what `parse_prompt` accepts):

    travel := part ( "|" part )*
    part   := FRAME ":" PROMPT          FRAME: decimal digits; PROMPT: any text without "|", not blank

- A text is prompt travel if and only if it *starts* with `FRAME:` (spaces allowed around both).
  Anything else is a plain prompt, whatever `:` or `|` it holds later: `"ratio 16:9 | wide"` is plain.
  So a plain prompt cannot start with `digits:`; the error for such a text says to put a word first.
- Every `|`-separated part must then be `FRAME:PROMPT`; a part that is not (`x:b`), an empty part
  (`"0:a |"`, `"0:a || 8:b"`) or a blank prompt (`"12:"`) is an error. PROMPT may hold `:` (only the
  first colon of a part separates); it cannot hold `|`.
- Frames are strictly increasing, as they are read on a timeline: a frame out of order (`"12:a | 3:b"`)
  or given twice is an error, not silently sorted or overwritten, since either is most likely a typo.
- With `num_frames` known, every frame lies in `[0, num_frames - 1]` (frames count from 0).
- The first frame need not be 0: frames before the first key hold its prompt, frames after the last
  hold the last one, and frames between two keys blend them (see `VideoPipeline.prompt_embeddings`).

animatediff-cli-prompt-travel's `prompt_map` (and ComfyUI's batch prompt schedule) is also read: a JSON
object of frame -> prompt, with or without its braces, `{"0": "a red circle", "12": "a blue circle"}`,
under the same rules.

Every error is a `VidldmError` of one line that quotes the part at fault:
`prompt travel part 2 'x:b' does not start with a frame number; ...`.
"""

from __future__ import annotations

import json
import re

from vidldm.errors import VidldmError

_TRAVEL_START = re.compile(r"^\s*[+-]?\d+\s*:")  # a sign only to refuse it with a clear line
_PART = re.compile(r"^\s*(\d+)\s*:(.*)$", re.DOTALL)
_JSON_START = re.compile(r'^\s*\{?\s*"\s*\d+\s*"\s*:')  # {"0": ...  or  "0": ...
EXAMPLE = "'0:a red circle | 12:a blue circle'"


def parse_prompt(text: str, num_frames: int | None = None) -> str | dict[int, str]:
    """A plain prompt as it is, or prompt travel as `{frame: prompt}` (frames increasing), per the
    module's grammar; `num_frames`, when known, bounds the frames. Bad text raises `VidldmError`."""
    if not isinstance(text, str):
        raise VidldmError(f"the prompt must be text, got {type(text).__name__}")
    if not text.strip():
        raise VidldmError("the prompt is empty; describe the clip you want")
    if _JSON_START.match(text):
        return _checked(_json_parts(text), num_frames)
    if not _TRAVEL_START.match(text):
        return text
    return _checked([_split_part(i, part) for i, part in enumerate(text.split("|"), 1)], num_frames)


def travel_text(prompt: str | dict[int, str]) -> str:
    """The inverse of `parse_prompt` for a travel dict (`{0: "a", 12: "b"}` -> `"0:a | 12:b"`); a str as is."""
    if isinstance(prompt, dict):
        return " | ".join(f"{int(k)}:{v}" for k, v in sorted(prompt.items(), key=lambda kv: int(kv[0])))
    return str(prompt)


def _split_part(index: int, part: str) -> tuple[int, str, str]:
    """`(frame, prompt, the part as typed)` of one `FRAME:PROMPT` part."""
    shown = part.strip()
    if not shown:
        raise VidldmError(f"prompt travel part {index} is empty (a '|' with nothing after it, or '||'); "
                          f"write FRAME:PROMPT between every two '|', e.g. {EXAMPLE}")
    match = _PART.match(part)
    if match is None and re.match(r"^\s*[+-]\d+\s*:", part):
        raise VidldmError(f"prompt travel part {index} '{shown}': a frame is a whole number from 0 up, without a sign")
    if match is None:
        raise VidldmError(f"prompt travel part {index} '{shown}' does not start with a frame number; "
                          f"write every part as FRAME:PROMPT, e.g. {EXAMPLE}")
    return int(match.group(1)), match.group(2).strip(), shown


def _json_parts(text: str) -> list[tuple[int, str, str]]:
    """animatediff-cli-prompt-travel's prompt_map: `{"0": "...", "12": "..."}` (braces optional)."""
    body = text.strip()
    body = body if body.startswith("{") else "{" + body.rstrip(",") + "}"
    try:
        pairs = json.loads(body, object_pairs_hook=list)  # pairs, not a dict: a repeated frame must not vanish
    except json.JSONDecodeError as err:
        raise VidldmError(f"prompt travel as JSON is not valid JSON ({err.msg} at character {err.pos}); "
                          'write it as {"0": "a red circle", "12": "a blue circle"}') from err
    if not isinstance(pairs, list):
        raise VidldmError('prompt travel as JSON must be one object, {"0": "a red circle", "12": "a blue circle"}')
    parts = []
    for i, (key, value) in enumerate(pairs, 1):
        shown = f'"{key}": {json.dumps(value)}'
        if not re.fullmatch(r"\s*\d+\s*", key):
            raise VidldmError(f"prompt travel part {i} '{shown}' does not start with a frame number; "
                              'every key must be a frame, e.g. {"0": "a red circle", "12": "a blue circle"}')
        if not isinstance(value, str):
            raise VidldmError(f"prompt travel part {i} '{shown}': the prompt must be text in quotes")
        parts.append((int(key), value.strip(), shown))
    return parts


def _checked(parts: list[tuple[int, str, str]], num_frames: int | None) -> dict[int, str]:
    """The rules every travel obeys, whichever way it was written; `parts` are `(frame, prompt, as typed)`."""
    # One part alone is likely a plain prompt that happens to start with digits and a colon ("16:9 ...").
    hint = "; a plain prompt must not start with 'NUMBER:', so put a word first" if len(parts) == 1 else ""
    travel: dict[int, str] = {}
    for i, (frame, prompt, shown) in enumerate(parts, 1):
        where = f"prompt travel part {i} '{shown}'"
        if not prompt:
            raise VidldmError(f"{where} has no prompt after the ':'; write FRAME:PROMPT, e.g. {EXAMPLE}")
        if num_frames is not None and frame > num_frames - 1:
            raise VidldmError(f"{where}: frame {frame} is past the clip's last frame, {num_frames - 1} "
                              f"(frames count from 0; the clip has {num_frames}){hint}")
        if frame in travel:
            first = list(travel).index(frame) + 1
            raise VidldmError(f"{where}: frame {frame} is given twice (parts {first} and {i}); give each frame once")
        if travel and frame < max(travel):
            raise VidldmError(f"{where}: frame {frame} comes after frame {max(travel)}; list the frames in increasing order")
        travel[frame] = prompt
    return travel
