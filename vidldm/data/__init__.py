"""Training data: folders of captioned videos, and latent caches made from them.

    find_clips(root)        -> [ClipInfo(path, caption)]    captions.csv/.jsonl, WebVid CSV or .txt sidecars
    VideoClipDataset(root)  -> {"pixel_values": (3, F, H, W) in [-1, 1], "caption", "path"}
    collate(samples)        -> tensors stacked ({"pixel_values": (B, 3, F, H, W), ...}), the rest as lists
    build_latent_cache(...) -> folder of safetensors shards: latents (N, C, F, h, w), prompt_embeds (N, L, D)
    LatentCacheDataset(dir) -> {"latents": (C, F, h, w), "prompt_embeds": (L, D), "caption"}

See `video_folder` and `latent_cache` for the folder layouts.
"""

from vidldm.data.batches import collate
from vidldm.data.latent_cache import LatentCacheDataset, build_latent_cache
from vidldm.data.video_folder import ClipInfo, VideoClipDataset, find_clips

__all__ = ["ClipInfo", "LatentCacheDataset", "VideoClipDataset", "build_latent_cache", "collate", "find_clips"]
