"""`build_app(pipe)`: the studio page (gradio Blocks) over a loaded `VideoPipeline`.

    tabs generate | animate | restyle | extend | in-between | interpolate frames | gallery
    each mode: prompt (+ upload; generate: keyframes where the model has a keyframe encoder) and the mode's
               settings from the table -> one job on the queue ->
               the clip as a video, downloads (mp4, gif, sidecar), the seed used and "reuse seed"
    gallery:   this server's clips with their settings; "replay" makes one again from its sidecar

Every job runs on one queue with one slot (`concurrency_id="model"`), so the model makes one clip at a
time and the others see their place in the queue. A mistake is one line in the page (`gr.Error`).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import gradio as gr

from vidldm.errors import VidldmError
from vidldm.web.form import component, form_settings, model_defaults
from vidldm.web.studio import Clip, Studio, media_kinds
from vidldm.web.uploads import IMAGE_TYPES, VIDEO_TYPES

log = logging.getLogger("vidldm.web")
TITLES = {"generate": "Generate", "animate": "Animate a still", "restyle": "Restyle", "extend": "Extend",
          "inbetween": "In-between", "interpolate-frames": "Interpolate frames"}
PLACEHOLDERS = {
    "generate": "a red circle moving right on a black background   (prompt travel: 0:a red circle | 12:a blue circle)",
    "animate": "what happens next, e.g. the circle moves up",
    "restyle": "what the clip should look like",
    "extend": "what happens next",
    "inbetween": "what happens between the two keyframes",
    "interpolate-frames": "what the clip shows (optional)",
}
UPLOAD_LABELS = {"image": "still image (becomes frame 0)", "start": "first frame", "end": "last frame (same size)",
                 "video": "clip"}
DEFAULT_OUTPUT_DIR = "vidldm-studio"


def build_app(pipe, output_dir: str | Path = DEFAULT_OUTPUT_DIR, *, model: str | None = None,
              motion_adapter: str | None = None, loras: list[str] | None = None,
              motion_loras: list[str] | None = None, sparsectrl: str | None = None) -> gr.Blocks:
    """The studio as gradio Blocks over `pipe`; clips and sidecars go to `output_dir`. `model` and
    `motion_adapter` (what `pipe` was loaded from) and the `loras` / `motion_loras` (`PATH[:WEIGHT]`) loaded into it
    are recorded in sidecars, so `vidldm replay` remakes them. Keyframes go through `sparsectrl` (`PATH[:SCALE]`),
    else the model's own keyframe encoder where it has one.
    Launch it with `.queue().launch(allowed_paths=[output_dir])`, or mount it in a FastAPI app."""
    server = {"model": model, "motion_adapter": motion_adapter, "lora": loras, "motion_lora": motion_loras,
              "sparsectrl": sparsectrl}
    studio = Studio(pipe, output_dir, server)
    defaults = model_defaults(pipe)
    with gr.Blocks(title="vidldm studio") as app:
        gr.Markdown(f"## vidldm studio\nModel **{model or type(pipe).__name__}**. Clips and their sidecars are "
                    f"written to `{studio.output_dir}`. One clip is made at a time; queued jobs show their place.")
        # a callable value: each page load lists the clips made so far, not those of start-up
        gallery = gr.Gallery(value=lambda: _gallery_items(studio), label="this server's clips", columns=6, height=300,
                             allow_preview=False, elem_id="gallery", render=False)
        with gr.Tabs():
            for mode in TITLES:  # every mode of the CLI (a walk makes many clips: the CLI's `vidldm walk`)
                with gr.Tab(TITLES[mode], id=mode):
                    _mode_tab(studio, mode, defaults, gallery)
            with gr.Tab("Gallery", id="gallery"):
                _gallery_tab(studio, gallery)
    app.studio = studio  # for callers (and tests) that want the output folder or the clips made
    return app


def _mode_tab(studio: Studio, mode: str, defaults: dict[str, Any], gallery: gr.Gallery) -> None:
    with gr.Row():
        with gr.Column(scale=1):
            prompt = gr.Textbox(label="prompt", placeholder=PLACEHOLDERS[mode], lines=2, elem_id=f"{mode}-prompt")
            media = [_upload(mode, key, kind) for key, kind in media_kinds(mode)]
            keys = _keyframe_fields(mode) if mode == "generate" and studio.keyframe_encoder is not None else []
            run = gr.Button(TITLES[mode].split()[0], variant="primary", elem_id=f"{mode}-run")
            with gr.Accordion("settings (the model's defaults; blank means default)", open=mode == "generate"):
                with gr.Row():  # fields wrap two or three to a line
                    inputs = [component(s, defaults[s.name], mode) for s in form_settings(mode)]
        with gr.Column(scale=1):
            outputs = _result_panel(mode)
    seed_in = inputs[[s.name for s in form_settings(mode)].index("seed")]
    outputs["reuse"].click(lambda seed: "" if seed is None else str(int(seed)), outputs["seed"], seed_in, queue=False)

    def job(prompt_text, *values, progress=gr.Progress()):  # noqa: B008 (gradio fills it in)
        paths, values = list(values[: len(media)]), values[len(media):]
        # the keyframe slots come last, so a client of /generate written for a server without them works unchanged
        values, slots = values[: len(values) - len(keys)], values[len(values) - len(keys):]
        keyframes = [(slots[i + 1], slots[i]) for i in range(0, len(slots), 2)]  # (frame, image) from (image, frame)
        clip = _run(lambda on_step: studio.make(mode, prompt_text, paths, list(values), on_step, keyframes), progress)
        return (*_shown(clip), _gallery_items(studio))

    run.click(job, [prompt, *media, *inputs, *keys], [*outputs["shown"], gallery], concurrency_limit=1,
              concurrency_id="model", api_name=mode)


def _keyframe_fields(mode: str) -> list[gr.components.Component]:
    """Two optional keyframes for the model's keyframe encoder (SparseCtrl, `--keyframe FRAME:IMAGE` in the CLI): an
    image and its frame each (element ids `<mode>-keyframe-1`, `<mode>-keyframe-1-frame`, ...), as
    [image, frame, image, frame]."""
    fields = []
    with gr.Accordion("keyframes (optional): where the clip starts and ends", open=False):
        for n, frame in ((1, "0"), (2, "")):
            with gr.Row():
                fields.append(gr.File(label=f"keyframe {n}: {' '.join(IMAGE_TYPES)}", file_types=list(IMAGE_TYPES),
                                      type="filepath", elem_id=f"{mode}-keyframe-{n}"))
                fields.append(gr.Textbox(value=frame, label="at frame", placeholder="blank: the last frame",
                                         elem_id=f"{mode}-keyframe-{n}-frame", min_width=120, scale=0))
    return fields


def _upload(mode: str, key: str, kind: str) -> gr.File:
    """An upload field (element id `<mode>-input`, or `<mode>-<key>` for inbetween's start and end)."""
    types = IMAGE_TYPES if kind == "image" else VIDEO_TYPES
    label = {"restyle": "clip to repaint", "extend": "clip to continue", "interpolate-frames": "clip to make smoother"}.get(
        mode, UPLOAD_LABELS[key])
    elem = f"{mode}-input" if key in ("image", "video") else f"{mode}-{key}"
    return gr.File(label=f"{label}: {' '.join(types)}", file_types=list(types), type="filepath", elem_id=elem)


def _result_panel(name: str) -> dict[str, Any]:
    video = gr.Video(label="clip", height=360, autoplay=True, loop=True, interactive=False, elem_id=f"{name}-video")
    with gr.Row():
        mp4 = gr.DownloadButton("mp4", elem_id=f"{name}-mp4")
        gif = gr.DownloadButton("gif", elem_id=f"{name}-gif")
        sidecar = gr.DownloadButton("settings (JSON sidecar)", elem_id=f"{name}-json")
    with gr.Row():
        seed = gr.Number(label="seed used", interactive=False, precision=0, elem_id=f"{name}-seed-used")
        reuse = gr.Button("reuse seed", elem_id=f"{name}-reuse", scale=0)
    return {"shown": [video, mp4, gif, sidecar, seed], "seed": seed, "reuse": reuse}


def _shown(clip: Clip) -> tuple:
    s = clip.settings()
    return str(clip.mp4), str(clip.mp4), str(clip.gif), str(clip.sidecar), s["seed"]


def _run(make, progress: gr.Progress) -> Clip:
    """Run a job with the page's progress bar fed from the sampling loop; mistakes become one line in the page."""
    progress(0, desc="starting")

    def on_step(done: int, total: int | None) -> None:
        progress(done / total if total else None, desc=f"denoising: step {done} of {total}")

    try:
        return make(on_step)
    except VidldmError as err:
        raise gr.Error(str(err), duration=None, print_exception=False) from None
    except Exception as err:  # a bug, not the visitor's mistake: the log gets the traceback, the page one line
        log.exception("job failed")
        raise gr.Error(f"the job failed ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''}); "
                       "see the server log", duration=None, print_exception=False) from None


def _gallery_items(studio: Studio) -> list[tuple[str, str]]:
    return [(str(c.gif), c.mp4.name) for c in reversed(studio.clips)]


def _gallery_tab(studio: Studio, gallery: gr.Gallery) -> None:
    gallery.render()
    chosen = gr.State(None)
    with gr.Row():
        with gr.Column(scale=1):
            info = gr.JSON(label="settings of the chosen clip (its sidecar)")
            replay = gr.Button("replay: make it again from its sidecar", variant="primary", elem_id="gallery-run")
        with gr.Column(scale=1):
            outputs = _result_panel("gallery")

    def choose(evt: gr.SelectData):
        clip = list(reversed(studio.clips))[evt.index]
        return clip.mp4.name, clip.settings()

    def again(name, progress=gr.Progress()):  # noqa: B008 (gradio fills it in)
        clips = [c for c in studio.clips if c.mp4.name == name]
        if not clips:
            raise gr.Error("choose a clip in the gallery first", duration=None, print_exception=False)
        clip = _run(lambda on_step: studio.replay(clips[0], on_step), progress)
        return (*_shown(clip), _gallery_items(studio))

    gallery.select(choose, None, [chosen, info], queue=False)
    replay.click(again, chosen, [*outputs["shown"], gallery], concurrency_limit=1, concurrency_id="model",
                 api_name="replay")
