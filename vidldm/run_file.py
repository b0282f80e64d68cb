"""Run files: many clips from one YAML or JSON file (`vidldm run FILE.yaml`), as every AnimateDiff CLI has.

A run file is a mapping. Its keys are defaults for every entry; `entries:` (a list of mappings) holds the
clips, each overriding the defaults. Without `entries:` the file is one entry. Keys:

- `mode`: generate (default), animate (with `image:`), restyle or extend (with `video:`);
- `prompt`: a string or a list (one clip per prompt); `prompt_map: {frame: prompt}` for prompt travel
  (animatediff-cli-prompt-travel's form); `head_prompt` / `tail_prompt` are put before / after every
  prompt, joined with ", ";
- `negative_prompt` (`n_prompt`): a string, or a list with one per prompt (AnimateDiff's configs);
- `seed`: an int or a list; -1 is random. With several prompts, a list pairs seed i with prompt i
  (AnimateDiff's meaning); with one prompt, each seed makes a clip. `repeats: N` makes N clips of each,
  with seeds seed, seed + 1, ... (A1111's batch count);
- `lora_map` / `motion_lora_map` `{path: weight}`, or `lora` / `motion_lora` lists of `PATH[:WEIGHT]`;
- `name`: the clip's file name stem; `format`: mp4 (default), gif, webp, png;
- any setting of the mode's command by its flag's name (`steps`, `guidance`, `frames`, `context_overlap`)
  or its Python name (`num_inference_steps`, `guidance_scale`), and AnimateDiff's `path` /
  `dreambooth_path` (the model) and `motion_module` (the adapter).

Relative paths are read from the run file's folder first, then from the working folder. Every entry is
checked before the first clip is made: an unknown key, a wrong type or a missing file is one line naming
the file, the entry and the key, and nothing is made. Each planned clip is a `Job`: the `vidldm` argv of
one mode command, which the CLI runs with its own checks and writes with its own sidecar.
"""

from __future__ import annotations

import difflib
import json
import random
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vidldm import sampling_settings as settings
from vidldm import yaml_numbers
from vidldm.errors import VidldmError
from vidldm.io.media import one_line
from vidldm.prompt_travel import parse_prompt
from vidldm.seeds import normalize_seed

FORMATS = ("mp4", "gif", "webp", "png")
# Keys that are the run file's own (not settings), and the other tools' names for settings.
OWN_KEYS = ("mode", "prompt", "prompt_map", "head_prompt", "tail_prompt", "seed", "repeats", "name", "format",
            "image", "video", "lora_map", "motion_lora_map", "entries")
ALIASES = {"n_prompt": "negative_prompt", "path": "model", "dreambooth_path": "model", "motion_module": "motion_adapter",
           "seeds": "seed"}
# Run-file keys that name local files (a missing one is refused before any clip is made).
MEDIA_KEYS = ("image", "video")
# Settings never taken from a run file: the CLI's own output switches.
NOT_IN_RUN_FILES = ("overwrite",)


@dataclass
class Job:
    """One clip: `argv` of a mode command (no `-o`), `stem` of its file name, `where` for messages."""

    argv: list[str]
    stem: str
    suffix: str
    where: str


def load_run_file(path: str | Path) -> list[Job]:
    """Every clip the run file at `path` asks for, checked; a `VidldmError` naming file, entry and key if not."""
    path = Path(path)
    raw = _read(path)
    entries = raw.pop("entries", None)
    if entries is None:
        entries = [{}]
    elif not isinstance(entries, list) or not entries or not all(isinstance(e, dict) for e in entries):
        raise VidldmError(f"{path}: 'entries' must be a non-empty list of mappings (one per clip)")
    jobs: list[Job] = []
    for i, entry in enumerate(entries, 1):
        where = f"{path}: entry {i}" + (f" ({entry['name']})" if isinstance(entry.get("name"), str) else "")
        if "entries" in entry:
            raise VidldmError(f"{where}: 'entries' cannot be nested; list every clip at the top level")
        jobs += _entry_jobs({**raw, **entry}, where, path.parent, len(jobs))
    return jobs


def _read(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise VidldmError(f"run file '{path}' does not exist; check the path")
    text = path.read_text(encoding="utf-8", errors="replace")
    kind = "JSON" if path.suffix.lower() == ".json" else "YAML"
    try:
        data = json.loads(text) if kind == "JSON" else yaml_numbers.load(text)
    except (json.JSONDecodeError, yaml_numbers.YAMLError) as err:
        raise VidldmError(f"{path}: not valid {kind}: {one_line(err)[:200]}") from err
    if not isinstance(data, dict) or not data:
        raise VidldmError(f"{path}: a run file is a mapping of settings, with 'entries:' for several clips")
    return {ALIASES.get(str(k), str(k)): v for k, v in data.items()}


# ----------------------------------------------------------------------------- one entry

def _entry_jobs(entry: dict[str, Any], where: str, base: Path, done: int) -> list[Job]:
    """The clips of one entry (its prompts x seeds x repeats), as argv of its mode command."""
    entry = {ALIASES.get(k, k): v for k, v in entry.items()}
    mode = _mode(entry, where)
    flags = _setting_flags(entry, mode, where, base)
    prompts = _prompts(entry, where)
    negatives = _per_prompt(entry.get("negative_prompt"), len(prompts), "negative_prompt", where)
    seeds = _seeds(entry, len(prompts), where)
    repeats = _whole(entry.get("repeats", 1), "repeats", where, low=1)
    inputs = [_local_file(entry[k], k, where, base) for k in MEDIA_KEYS if k in entry]
    suffix = "." + _choice(entry.get("format", "mp4"), FORMATS, "format", where)
    if len(prompts) == 1 and len(seeds) > 1:  # one prompt made with every seed
        prompts, negatives = prompts * len(seeds), negatives * len(seeds)
    jobs = []
    for prompt, negative, seed in zip(prompts, negatives, seeds):
        for r in range(repeats):
            argv = [mode, *inputs, prompt, *flags]
            argv += [f"--negative-prompt={negative}"] if negative is not None else []
            clip_seed = random.randrange(2**31) if seed is None else (seed + r) % 2**64
            argv.append(f"--seed={clip_seed}")
            stem = _stem(entry.get("name"), prompt, done + len(jobs) + 1)
            jobs.append(Job(argv, f"{stem}-{clip_seed}", suffix, where))
    return jobs


def _mode(entry: dict[str, Any], where: str) -> str:
    mode = _choice(entry.get("mode", "generate"), settings.MODES, "mode", where)
    needs = {"animate": "image", "restyle": "video", "extend": "video"}.get(mode)
    for key in MEDIA_KEYS:
        if key == needs and key not in entry:
            raise VidldmError(f"{where}: mode {mode} needs '{key}:' (the file to {mode})")
        if key != needs and key in entry:
            raise VidldmError(f"{where}: '{key}:' is not used by mode {mode}; "
                              f"{'remove it' if needs else 'use mode animate' if key == 'image' else 'use mode restyle or extend'}")
    return mode


def _setting_flags(entry: dict[str, Any], mode: str, where: str, base: Path) -> list[str]:
    """The entry's settings as `--flag=value`, each checked (known to `mode`, its type and range)."""
    by_key = {s.key: s for s in settings.SETTINGS if mode in s.commands and s.key not in NOT_IN_RUN_FILES}
    by_key.update({s.name: s for s in by_key.values()})
    entry = _lora_maps(entry, where)
    flags = []
    for key, value in entry.items():
        if key in OWN_KEYS or key == "negative_prompt":
            continue
        setting = by_key.get(key)
        if setting is None:
            raise VidldmError(f"{where}: unknown key '{key}'{_did_you_mean(key, [*by_key, *OWN_KEYS])}")
        values = value if getattr(setting, "repeatable", False) and isinstance(value, list) else [value]
        for v in values:
            if (setting.is_path or setting.record is not None) and isinstance(v, str):  # files: model, adapter, LoRAs
                v = _maybe_local(v, base)  # first, so the setting's own check looks for the file where it is
            v = _typed(setting, v, key, where)
            if v is not None:
                flags.append(f"{setting.flag}={v}")
    return flags


def _lora_maps(entry: dict[str, Any], where: str) -> dict[str, Any]:
    """`lora_map: {path: weight}` (animatediff-cli-prompt-travel) as the repeatable `lora: [path:weight]`."""
    entry = dict(entry)
    for map_key, key in (("lora_map", "lora"), ("motion_lora_map", "motion_lora")):
        if map_key not in entry:
            continue
        given = entry.pop(map_key)
        if not isinstance(given, dict):
            raise VidldmError(f"{where}: '{map_key}' must be a mapping of file -> weight, got {_shown(given)}")
        listed = entry.get(key) or []
        listed = listed if isinstance(listed, list) else [listed]
        entry[key] = listed + [f"{p}:{_number(w, f'{map_key} weight of {p}', where)}" for p, w in given.items()]
    return entry


def _typed(setting: settings.Setting, value: Any, key: str, where: str) -> Any:
    """`value` as the setting's type and in its range, or a `VidldmError` naming the entry and the key."""
    if value is None:
        return None
    if setting.flag_only:
        if not isinstance(value, bool):
            raise VidldmError(f"{where}: '{key}' is a switch: true or false, got {_shown(value)}")
        return None if not value else ""
    if setting.type in (int, float):
        value = _number(value, key, where)
    elif setting.type is str:
        if not isinstance(value, (str, int, float)) or isinstance(value, bool):
            raise VidldmError(f"{where}: '{key}' must be text, got {_shown(value)}")
        value = str(value)
    try:
        typed = setting.type(value)
        setting.check([typed] if setting.repeatable else typed, key)  # a repeatable setting checks a list
    except VidldmError as err:
        raise VidldmError(f"{where}: {err}") from None
    return setting.type(value)


def _number(value: Any, key: str, where: str) -> float | int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise VidldmError(f"{where}: '{key}' must be a number, got {_shown(value)}")
    return value


def _whole(value: Any, key: str, where: str, low: int) -> int:
    value = yaml_numbers.as_count(value)  # `repeats: 2e0` is the count 2
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise VidldmError(f"{where}: '{key}' must be a whole number of at least {low}, got {_shown(value)}")
    return value


def _choice(value: Any, choices: tuple[str, ...], key: str, where: str) -> str:
    if value not in choices:
        raise VidldmError(f"{where}: '{key}' must be one of {', '.join(choices)}, got {_shown(value)}")
    return value


def _prompts(entry: dict[str, Any], where: str) -> list[str]:
    """The entry's prompt texts, with head and tail; a prompt map becomes prompt-travel JSON text."""
    head, tail = (_text(entry.get(k), k, where) for k in ("head_prompt", "tail_prompt"))
    if ("prompt" in entry) == ("prompt_map" in entry):
        raise VidldmError(f"{where}: give 'prompt' (text or a list) or 'prompt_map' ({{frame: prompt}}), one of them")
    if "prompt_map" in entry:
        given = entry["prompt_map"]
        if not isinstance(given, dict) or not given:
            raise VidldmError(f"{where}: 'prompt_map' must be a mapping of frame -> prompt, got {_shown(given)}")
        joined = {str(k): _join(head, _text(v, f"prompt_map {k}", where), tail) for k, v in given.items()}
        text = json.dumps(joined)
        _check_prompt(text, where)
        return [text]
    given = entry["prompt"]
    texts = given if isinstance(given, list) else [given]
    if not texts:
        raise VidldmError(f"{where}: 'prompt' is an empty list; give at least one prompt")
    out = [_join(head, _text(t, "prompt", where), tail) for t in texts]
    for text in out:
        _check_prompt(text, where)
    return out


def _check_prompt(text: str, where: str) -> None:
    try:
        parse_prompt(text)
    except VidldmError as err:
        raise VidldmError(f"{where}: {err}") from None


def _text(value: Any, key: str, where: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise VidldmError(f"{where}: '{key}' must be text, got {_shown(value)}")
    return value


def _join(head: str | None, prompt: str | None, tail: str | None) -> str:
    return ", ".join(p.strip().strip(",").strip() for p in (head, prompt, tail) if p and p.strip())


def _per_prompt(value: Any, n: int, key: str, where: str) -> list[str | None]:
    """One value for every prompt, or a list with one per prompt."""
    if isinstance(value, list):
        if len(value) == 1:
            value = value[0]
        elif len(value) != n:
            raise VidldmError(f"{where}: {len(value)} values of '{key}' for {n} prompts; give one, or one per prompt")
        else:
            return [_text(v, key, where) for v in value]
    return [_text(value, key, where)] * n


def _seeds(entry: dict[str, Any], n_prompts: int, where: str) -> list[int | None]:
    """A seed per clip before repeats (None: random): one per prompt, or one prompt made with every seed."""
    given = entry.get("seed", -1)
    seeds = given if isinstance(given, list) else [given]
    if not seeds:
        raise VidldmError(f"{where}: 'seed' is an empty list; give a seed, a list of seeds or -1 for random")
    out = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int):
            raise VidldmError(f"{where}: 'seed' must be a whole number (-1: random) or a list of them, got {_shown(s)}")
        try:
            out.append(None if s == -1 else normalize_seed(s))
        except VidldmError as err:
            raise VidldmError(f"{where}: {err}") from None
    if len(out) == n_prompts:
        return out  # paired with the prompts
    if n_prompts == 1:
        return out  # one prompt, a clip per seed
    if len(out) == 1:
        return out * n_prompts
    raise VidldmError(f"{where}: {len(out)} seeds for {n_prompts} prompts; give one seed, or one per prompt")


def _local_file(value: Any, key: str, where: str, base: Path) -> str:
    if not isinstance(value, str) or not value:
        raise VidldmError(f"{where}: '{key}' must be a file path, got {_shown(value)}")
    for candidate in (base / value, Path(value)):
        if candidate.exists():
            return str(candidate)
    raise VidldmError(f"{where}: {key} '{value}' does not exist (looked beside the run file and in the working folder)")


def _maybe_local(value: str, base: Path) -> str:
    """A path setting (model, adapter, LoRA) read beside the run file when it is there; else as given
    (a built-in name, a hub id or a path the command itself will check)."""
    path, sep, weight = value.rpartition(":") if re.search(r":[-+0-9.eE]+$", value) else (value, "", "")
    if not Path(path).is_absolute() and (base / path).exists():
        path = str(base / path)
    return f"{path}{sep}{weight}"


def _stem(name: Any, prompt: str, number: int) -> str:
    """`NNN-<name or prompt words>`, numbered in run order so a folder listing follows the file."""
    slug = re.sub(r"[^a-z0-9]+", "-", str(name or prompt).lower()).strip("-")[:40] or "clip"
    return f"{number:03d}-{slug}"


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 60 else text[:57] + "..."


def _did_you_mean(key: str, known: list[str]) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    return f"; did you mean '{close[0]}'?" if close else f"; known keys: {', '.join(sorted(set(known)))}"
