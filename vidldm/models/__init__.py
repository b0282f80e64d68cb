"""Models: temporal layers, the motion adapter, and the video UNet / VAE that wrap diffusers' image models."""

from vidldm.models.motion import MotionAdapter
from vidldm.models.motion_formats import from_diffusers, load_motion_adapter, save_animatediff, to_diffusers
from vidldm.models.temporal import TemporalConvBlock, TemporalTransformer, set_attention_backend
from vidldm.models.video_unet import VideoUNet
from vidldm.models.video_vae import TemporalDecoder, VideoVAE

__all__ = [
    "MotionAdapter",
    "TemporalConvBlock",
    "TemporalDecoder",
    "TemporalTransformer",
    "VideoUNet",
    "VideoVAE",
    "from_diffusers",
    "load_motion_adapter",
    "save_animatediff",
    "set_attention_backend",
    "to_diffusers",
]
