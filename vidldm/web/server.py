"""`vidldm serve`: load a model once and run the studio on gradio's queue (one clip at a time)."""

from __future__ import annotations

from pathlib import Path

from vidldm.web.app import DEFAULT_OUTPUT_DIR, build_app
from vidldm.web.uploads import MAX_UPLOAD_MB


def serve(model: str, motion_adapter: str | None = None, *, host: str = "127.0.0.1", port: int = 7860,
          output_dir: str | Path = DEFAULT_OUTPUT_DIR, device: str | None = None, dtype: str | None = None,
          config: str | None = None, variant: str | None = None, max_queue: int = 64,
          loras: list[str] | None = None, motion_loras: list[str] | None = None, sparsectrl: str | None = None) -> None:
    """Serve the studio at http://host:port until stopped. `host` is 127.0.0.1 (this machine only) unless you
    choose otherwise: `--host 0.0.0.0` serves your network, with no login, so put it behind a proxy you trust."""
    import torch

    from vidldm.loading import apply_loras, load_pipeline

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    dtype = dtype or ("fp16" if str(device).startswith("cuda") else "fp32")
    pipe = load_pipeline(model, motion_adapter, config=config, device=device, dtype=dtype, variant=variant)
    apply_loras(pipe, loras, motion_loras)  # `PATH[:WEIGHT]`s, for every clip of this server (recorded in sidecars)
    pipe.set_progress_bar_config(disable=True)  # the page shows the progress
    app = build_app(pipe, output_dir, model=model, motion_adapter=motion_adapter, loras=loras, motion_loras=motion_loras,
                    sparsectrl=sparsectrl)  # keyframes: this SparseCtrl, else the model's own encoder if it has one
    # max_size: a full queue refuses new jobs with a message rather than growing without bound
    app.queue(default_concurrency_limit=1, max_size=max_queue)
    app.launch(server_name=host, server_port=port, allowed_paths=[str(app.studio.output_dir)],
               max_file_size=f"{MAX_UPLOAD_MB}mb", show_error=True, footer_links=[])
