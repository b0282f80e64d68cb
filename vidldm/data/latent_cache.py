"""A latent cache: clips encoded once by the VAE and text encoder, so training skips both.

Layout of a cache folder::

    out_dir/
      index.json                  what is inside (see below)
      shard_00000.safetensors     latents (N, C, F, h, w), prompt_embeds (N, L, D)
      shard_00001.safetensors     ...

`index.json` holds `format` ("vidldm-latent-cache") and `version`, `num_items`, `shards`
(`[{"file", "size"}]` in order), `captions` and `paths` (one per item, in order), the clip
size `num_frames`/`height`/`width`, `latent_shape` `[C, F, h, w]`, `prompt_embeds_shape`
`[L, D]`, the stored `dtype`, and `skipped` (videos the dataset replaced by a neighbour).

Latents are the VAE's scaled latents (what the UNet trains on). They are stored as float16
by default, which halves the size and is well within the noise the diffusion loss adds;
`LatentCacheDataset` hands them back as float32.
"""

from __future__ import annotations

import bisect
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import Dataset

from vidldm import atomic
from vidldm.errors import VidldmError
from vidldm.models.video_vae import VideoVAE

__all__ = ["CACHE_FORMAT", "LatentCacheDataset", "build_latent_cache"]

CACHE_FORMAT = "vidldm-latent-cache"
CACHE_VERSION = 1
_INDEX = "index.json"
_SHARD_NAME = "shard_{:05d}.safetensors"


@torch.no_grad()
def build_latent_cache(
    dataset: Dataset,
    vae,
    encode_text: Callable[[list[str]], torch.Tensor],
    out_dir: str | os.PathLike[str],
    *,
    batch_size: int = 4,
    shard_size: int = 64,
    device: str | torch.device = "cpu",
    generator_seed: int = 0,
    sample: bool = False,
    dtype: torch.dtype = torch.float16,
    overwrite: bool = False,
) -> Path:
    """Encode every item of `dataset` once, in order, into a cache folder; returns `out_dir`.

    `dataset` yields dicts with `pixel_values (3, F, H, W)` in [-1, 1] and `caption` (e.g. a
    `VideoClipDataset`, read at epoch 0). `vae` is an `AutoencoderKL` or a `VideoVAE`; it is
    moved to `device`. `encode_text(list[str]) -> (N, L, D)` embeds captions. Latents are the
    posterior mean, or with `sample=True` one draw seeded by `generator_seed`. Tensors are
    stored as `dtype` (float16 by default, see the module docstring).

    The cache is built in a temporary folder next to `out_dir` and renamed into place at the
    end, so an interrupted run leaves no half-made cache behind.

    Raises:
        VidldmError: `out_dir` exists and is not empty (pass `--overwrite` / `overwrite=True`), or the dataset
            is empty.
    """
    if batch_size < 1 or shard_size < 1:
        raise VidldmError(f"batch_size and shard_size must be >= 1, got {batch_size} and {shard_size}")
    out_dir = Path(out_dir).expanduser()
    _check_target(out_dir, overwrite)
    if len(dataset) == 0:
        raise VidldmError("cannot build a latent cache from an empty dataset")
    if hasattr(dataset, "set_epoch"):
        dataset.set_epoch(0)  # the cache is one fixed pass: the same windows every time it is built

    video_vae = vae if isinstance(vae, VideoVAE) else VideoVAE(vae)
    video_vae.vae.to(device)
    generator = torch.Generator(device=device).manual_seed(generator_seed)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    with atomic.replace_folder(out_dir) as tmp:  # the old cache stays whole until the new one is
        index = _encode_into(tmp, dataset, video_vae, encode_text, batch_size, shard_size, device, generator,
                             sample, dtype)
        (tmp / _INDEX).write_text(json.dumps(index, indent=1))
    return out_dir


def _encode_into(tmp: Path, dataset, video_vae: VideoVAE, encode_text, batch_size: int, shard_size: int,
                 device, generator, sample: bool, dtype: torch.dtype) -> dict:
    """Encode all items into shards under `tmp`; returns the index (without writing it)."""
    latents, embeds = [], []  # per-item tensors waiting for the current shard
    captions, paths, shards = [], [], []
    clip_shape = None

    def flush() -> None:
        name = _SHARD_NAME.format(len(shards))
        save_file({"latents": torch.stack(latents).contiguous(), "prompt_embeds": torch.stack(embeds).contiguous()},
                  str(tmp / name))
        shards.append({"file": name, "size": len(latents)})
        latents.clear()
        embeds.clear()

    for start in range(0, len(dataset), batch_size):
        items = [dataset[i] for i in range(start, min(start + batch_size, len(dataset)))]
        video = torch.stack([item["pixel_values"] for item in items]).to(device)  # (B, 3, F, H, W)
        batch_captions = [item["caption"] for item in items]
        z = video_vae.encode(video, generator=generator, sample=sample)  # (B, C, F, h, w)
        e = _check_embeds(encode_text(batch_captions), len(items))  # (B, L, D)
        clip_shape = clip_shape or list(video.shape[2:])
        for j, item in enumerate(items):
            latents.append(z[j].detach().to("cpu", dtype))
            embeds.append(e[j].detach().to("cpu", dtype))
            captions.append(item["caption"])
            paths.append(str(item.get("path", "")))
            if len(latents) == shard_size:
                flush()
    if latents:
        flush()

    return {
        "format": CACHE_FORMAT,
        "version": CACHE_VERSION,
        "num_items": len(captions),
        "shards": shards,
        "captions": captions,
        "paths": paths,
        "num_frames": clip_shape[0],
        "height": clip_shape[1],
        "width": clip_shape[2],
        "latent_shape": list(z.shape[1:]),
        "prompt_embeds_shape": list(e.shape[1:]),
        "dtype": str(dtype).removeprefix("torch."),
        "skipped": dict(getattr(dataset, "skipped", {})),
    }


def _check_embeds(embeds, n: int) -> torch.Tensor:
    if not isinstance(embeds, torch.Tensor) or embeds.ndim != 3 or embeds.shape[0] != n:
        shape = tuple(embeds.shape) if isinstance(embeds, torch.Tensor) else type(embeds).__name__
        raise VidldmError(f"encode_text must return a tensor (N, L, D) with N={n} for {n} captions, got {shape}")
    return embeds


def _check_target(out_dir: Path, overwrite: bool) -> None:
    if out_dir.exists() and not out_dir.is_dir():
        raise VidldmError(f"cannot build a latent cache at '{out_dir}': it is a file; choose a folder path")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not overwrite:
        raise VidldmError(
            f"latent cache folder '{out_dir}' already exists and is not empty; "
            "choose another folder, or replace it: vidldm cache --overwrite (overwrite=True in Python)"
        )


class LatentCacheDataset(Dataset):
    """Items of a cache made by `build_latent_cache`.

    `dataset[i]` -> `latents (C, F, h, w)` float32, `prompt_embeds (L, D)` float32, `caption` str.
    Shards are loaded on first use and the last one is kept, so reading in order (or with a
    sampler that stays within a shard) loads each shard once.

    `reference`: a second cache of the same clips, in the same order, whose captions say them
    another way (e.g. `vidldm make-shapes` with the same seed and `--wordings fixed`); each item then
    also holds its `reference_embeds (L, D)` and `reference_caption`, which `train.reference_mix`
    has the model as it started read, as the teacher of the captions here.
    """

    def __init__(self, root: str | os.PathLike[str], reference: str | os.PathLike[str] | None = None):
        self.root = Path(root).expanduser()
        self.index = _read_index(self.root)
        self.captions: list[str] = self.index["captions"]
        sizes = [int(s["size"]) for s in self.index["shards"]]
        # _ends[k] = number of items in shards 0..k, for a bisect from item to shard.
        self._ends = [sum(sizes[: k + 1]) for k in range(len(sizes))]
        self._shard_id: int | None = None
        self._shard: dict[str, torch.Tensor] | None = None
        self.reference = None if reference is None else LatentCacheDataset(reference)
        if self.reference is not None:
            _check_same_clips(self, self.reference)

    def __len__(self) -> int:
        return self.index["num_items"]

    def __getitem__(self, index: int) -> dict:
        n = len(self)
        if not -n <= index < n:
            raise IndexError(f"index {index} out of range for a cache of {n} items")
        index %= n
        k = bisect.bisect_right(self._ends, index)
        shard = self._load_shard(k)
        j = index - (self._ends[k - 1] if k else 0)
        item = {
            "latents": shard["latents"][j].to(torch.float32, copy=True),
            "prompt_embeds": shard["prompt_embeds"][j].to(torch.float32, copy=True),
            "caption": self.captions[index],
        }
        if self.reference is not None:
            ref = self.reference[index]
            item["reference_embeds"], item["reference_caption"] = ref["prompt_embeds"], ref["caption"]
        return item

    def _load_shard(self, k: int) -> dict[str, torch.Tensor]:
        if self._shard_id != k:
            path = self.root / self.index["shards"][k]["file"]
            if not path.is_file():
                raise VidldmError(f"latent cache '{self.root}' is incomplete: '{path.name}' is missing; rebuild it")
            try:
                self._shard = load_file(str(path))
            except Exception as exc:  # safetensors raises its own error types for damaged files
                raise VidldmError(f"latent cache shard '{path}' is damaged ({exc}); rebuild the cache") from exc
            self._shard_id = k
        return self._shard


def _check_same_clips(cache: LatentCacheDataset, reference: LatentCacheDataset) -> None:
    """The reference cache must hold the same clips in the same order (file names; the folders may differ) and
    embeddings of the same shape, or the teacher would read another clip's caption."""
    def names(c: LatentCacheDataset) -> list[str]:
        return [Path(p).name for p in c.index.get("paths") or []]

    if len(cache) != len(reference) or names(cache) != names(reference):
        raise VidldmError(f"reference cache '{reference.root}' holds other clips than '{cache.root}' "
                          f"({len(reference)} against {len(cache)} items, or other file names in another order); "
                          "build both from datasets made with the same seed and clip count")
    if cache.index.get("prompt_embeds_shape") != reference.index.get("prompt_embeds_shape"):
        raise VidldmError(f"reference cache '{reference.root}' has prompt embeddings of shape "
                          f"{reference.index.get('prompt_embeds_shape')}, '{cache.root}' {cache.index.get('prompt_embeds_shape')}; "
                          "build both with the same model's text encoder")


def _read_index(root: Path) -> dict:
    hint = "build one with vidldm.data.build_latent_cache"
    if not root.is_dir():
        raise VidldmError(f"latent cache folder '{root}' does not exist; {hint}")
    path = root / _INDEX
    if not path.is_file():
        raise VidldmError(f"'{root}' is not a latent cache (no {_INDEX}); {hint}")
    try:
        index = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise VidldmError(f"'{path}' is not valid JSON ({exc}); rebuild the latent cache") from exc
    if not isinstance(index, dict) or index.get("format") != CACHE_FORMAT:
        raise VidldmError(f"'{root}' is not a latent cache ({_INDEX} has no format '{CACHE_FORMAT}'); {hint}")
    if index.get("version") != CACHE_VERSION:
        raise VidldmError(
            f"latent cache '{root}' has version {index.get('version')}, this vidldm reads version {CACHE_VERSION}; rebuild it"
        )
    sizes = _shard_sizes(index.get("shards"))
    if sizes is None or sum(sizes) != index.get("num_items") or len(index.get("captions", [])) != sum(sizes):
        raise VidldmError(f"latent cache index '{path}' is inconsistent (shard sizes, items, captions); rebuild it")
    return index


def _shard_sizes(shards: Sequence | None) -> list[int] | None:
    if not isinstance(shards, list):
        return None
    try:
        if not all(isinstance(s["file"], str) for s in shards):
            return None
        return [int(s["size"]) for s in shards]
    except (KeyError, TypeError, ValueError):
        return None
