"""vidldm: video latent diffusion on top of diffusers image models.

Clips are encoded frame by frame into latents, denoised jointly across time by an image UNet
plus temporal layers (a `MotionAdapter`), and decoded back into video files.
"""

__version__ = "0.1.0"

from vidldm.errors import CheckpointError, ShapeError, VidldmError  # noqa: E402

__all__ = ["CheckpointError", "ShapeError", "VidldmError", "__version__"]
