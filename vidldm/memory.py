"""How much memory a generation will need, known before it starts, so an impossible size is one line.

Without it, `--height 100000` or `--frames 100000` start work and fail later: an allocator error with a
traceback, or, for a size that fails only part-way, the kernel's OOM killer (no message, a machine that
swaps first). `check_fits` compares an estimate with the free memory and refuses first. The estimate follows where a sampling call keeps memory (all `(elements x bytes)`):

    parameters                     every weight and buffer of the pipeline's models
    UNet, per denoising step       on the folded batch N = batch x (2 with CFG) x window frames:
                                   skip connections kept for the up path (every down layer's output)
                                   + the widest moment of one layer, a GEGLU feed-forward (value and
                                     gate 8C, its product 4C, inputs): about FF_WIDTH x N x C x h x w
                                   + attention maps, only where the attention kernel materialises them
                                     (see `fused_attention`): spatial (h w)^2, temporal F^2, spatio-temporal
                                     (F h w)^2, each x heads x batch, twice (scores and softmax)
    VAE decode                     one chunk of `decode_chunk` frames at full size, in its last up block
                                   (the upsampled input and the resnet's norm, activation and conv)
    the decoded clip               (B, 3, F, H, W) in fp32, up to three copies (the chunks' concatenation,
                                   the [0, 1] rescale's temporaries)

The phases run one after another, so the live tensors peak at the largest phase. Resident memory is more:
`ALLOCATOR_SLACK` times that, plus `FIXED_BYTES` that a first call adds at any size. The constants
were fitted against peak RSS of fresh processes on the tiny and the shapes model (table in
docs/reliability.md, "Limits checked before work"; `scripts/memory_calibration.py` remakes it): the
estimate is meant to be within 2x, a little high, which is enough to refuse absurd sizes up front.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import torch

from vidldm.errors import VidldmError

FF_WIDTH = 18  # live copies of a feature map at a transformer's feed-forward (x, norm, 8C proj, 4C gelu, 4C product)
RESNET_WIDTH = 6  # at a resnet: input, norm, activation, conv, the up path's concatenated input (2C)
VAE_WIDTH = 4  # at the VAE's last up block, per channel of its input: upsampled input, norm, activation, conv
LATENT_COPIES = 8  # latents, noise, model input, the window blend's sums, the prediction, the scheduler's output
OUTPUT_COPIES = 3  # decoded clip: concatenated chunks, then two temporaries of the [0, 1] rescale
# Measured, not derived: resident memory exceeds the live tensors. The allocator keeps freed blocks for reuse
# (glibc's heap holds blocks under its mmap threshold; CUDA's caching allocator rounds and caches), and a
# first call fills kernel caches (oneDNN) and runs the text encoder. Fitted on the table in docs/reliability.md.
ALLOCATOR_SLACK = 2.25
FIXED_BYTES = 64 * 2**20


@dataclass(frozen=True)
class ModelSizes:
    """What the estimate reads from a pipeline (or from its configs, before loading any weights)."""

    param_bytes: int  # every weight and buffer, as stored
    dtype_bytes: int  # bytes per activation element (the UNet's and VAE's dtype)
    channels: tuple[int, ...]  # UNet channels per level
    layers_per_block: int
    spatial_heads: tuple[int, ...]  # per level; 0 where the level has no spatial attention
    vae_scale: int
    vae_channels: tuple[int, ...]
    latent_channels: int
    temporal_heads: int  # 0 without a motion adapter
    spatiotemporal_levels: tuple[int, ...]
    frames_trained: int  # the motion adapter's length: the default context window

    @classmethod
    def from_configs(cls, unet: dict, vae: dict, motion_adapter: dict | None = None, *,
                     param_bytes: int = 0, dtype_bytes: int = 4) -> ModelSizes:
        """From `config` dicts (diffusers' `UNet2DConditionModel`, `AutoencoderKL`, vidldm's `MotionAdapter`)."""
        channels = tuple(unet["block_out_channels"])
        heads = unet.get("num_attention_heads") or unet.get("attention_head_dim") or 8  # diffusers' legacy name
        heads = tuple(heads) if isinstance(heads, (list, tuple)) else (heads,) * len(channels)
        attends = [("CrossAttn" in kind) for kind in unet["down_block_types"]]
        attends[-1] = attends[-1] or "CrossAttn" in (unet.get("mid_block_type") or "")
        adapter = motion_adapter or {}
        return cls(
            param_bytes=param_bytes, dtype_bytes=dtype_bytes, channels=channels,
            layers_per_block=_first(unet.get("layers_per_block", 2)),
            spatial_heads=tuple(h if a else 0 for h, a in zip(heads, attends)),
            vae_scale=2 ** (len(vae["block_out_channels"]) - 1), vae_channels=tuple(vae["block_out_channels"]),
            latent_channels=vae.get("latent_channels", 4),
            temporal_heads=adapter.get("num_attention_heads", 8) if motion_adapter else 0,
            spatiotemporal_levels=tuple(adapter.get("spatiotemporal_levels") or ()),
            frames_trained=adapter.get("max_seq_length", 16) if motion_adapter else 16,
        )

    @classmethod
    def from_pipeline(cls, pipe) -> ModelSizes:
        modules = [getattr(pipe, n, None) for n in ("vae", "text_encoder", "unet", "motion_adapter", "temporal_decoder",
                                                "controlnet")]  # ControlNets' weights sit beside the UNet's
        tensors = [t for m in modules if m is not None for t in (*m.parameters(), *m.buffers())]
        adapter = getattr(pipe, "motion_adapter", None)
        return cls.from_configs(dict(pipe.unet.config), dict(pipe.vae.config), dict(adapter.config) if adapter else None,
                                param_bytes=sum(t.numel() * t.element_size() for t in tensors),
                                dtype_bytes=pipe.unet.dtype.itemsize)


def _first(value):
    return value[0] if isinstance(value, (list, tuple)) else value


def sizes_of(pipe_or_configs) -> ModelSizes:
    """A `ModelSizes` as is, one read off a pipeline, or one from `{"unet": ..., "vae": ..., "motion_adapter": ...}`."""
    if isinstance(pipe_or_configs, ModelSizes):
        return pipe_or_configs
    if isinstance(pipe_or_configs, dict):
        return ModelSizes.from_configs(**pipe_or_configs)
    return ModelSizes.from_pipeline(pipe_or_configs)


def fused_attention(device: str | torch.device | None = None) -> bool:
    """Whether attention runs in a fused kernel that never holds a (tokens x tokens) map.

    PyTorch's `scaled_dot_product_attention`, which diffusers' attention processors and vidldm's
    temporal layers call, has such kernels on CPU (flash, blocked) and CUDA (flash, memory-efficient,
    also for fp32); other devices (e.g. MPS) may fall back to the math path, which materialises the maps."""
    kind = torch.device(device).type if device is not None else "cpu"
    return kind in ("cpu", "cuda") and hasattr(torch.nn.functional, "scaled_dot_product_attention")


def unet_bytes(s: ModelSizes, frames: int, h: int, w: int, batch: int, fused: bool) -> int:
    """Peak working bytes of one UNet call on `batch` clips of `frames` frames at latent size `h x w`."""
    n = batch * frames
    levels = [(c, math.ceil(h / 2**i), math.ceil(w / 2**i)) for i, c in enumerate(s.channels)]
    skips = n * s.channels[0] * h * w  # conv_in's output
    for i, (c, hi, wi) in enumerate(levels):
        skips += s.layers_per_block * n * c * hi * wi
        if i + 1 < len(levels):  # the downsampler's output, at the next level's size
            skips += n * c * levels[i + 1][1] * levels[i + 1][2]
    widest, maps = 0, 0
    for i, (c, hi, wi) in enumerate(levels):
        has_transformer = s.temporal_heads or s.spatial_heads[i] or i in s.spatiotemporal_levels
        # The up path's first level takes the next level's channels too (its concatenated input).
        c_in = c + (s.channels[i + 1] if i + 1 < len(levels) else 0)
        widest = max(widest, (FF_WIDTH * c if has_transformer else RESNET_WIDTH * c_in) * n * hi * wi)
        if not fused:
            tokens = hi * wi
            maps = max(maps, 2 * n * s.spatial_heads[i] * tokens**2, 2 * batch * tokens * s.temporal_heads * frames**2)
            if i in s.spatiotemporal_levels:
                maps = max(maps, 2 * batch * s.temporal_heads * (frames * tokens) ** 2)
    return (skips + widest + maps) * s.dtype_bytes


def decode_bytes(s: ModelSizes, frames: int, height: int, width: int, batch: int, decode_chunk: int | None,
                 fused: bool) -> int:
    """Peak bytes of decoding: one chunk in the VAE, beside the clip decoded so far, or the clip's copies after."""
    chunk = batch * min(decode_chunk or frames, frames)
    c_last, c_in = s.vae_channels[0], s.vae_channels[min(1, len(s.vae_channels) - 1)]
    working = chunk * height * width * (VAE_WIDTH * c_in + 2 * c_last) * s.dtype_bytes
    if not fused:  # the VAE's mid-block attention, one head over the latent pixels
        working += 2 * chunk * (math.ceil(height / s.vae_scale) * math.ceil(width / s.vae_scale)) ** 2 * s.dtype_bytes
    clip = batch * 3 * frames * height * width * 4
    return max(clip + working, OUTPUT_COPIES * clip)


def working_bytes(pipe_or_configs, num_frames: int, height: int, width: int, batch: int = 1,
                  guidance: bool | float = True, context_frames: int | None = None, decode_chunk: int | None = 8,
                  device: str | torch.device | None = None) -> int:
    """The memory a sampling call adds to the loaded model at its peak (`estimate_peak_bytes` less the parameters)."""
    s = sizes_of(pipe_or_configs)
    cfg = guidance > 1 if not isinstance(guidance, bool) else guidance  # a scale: CFG runs above 1, as in the pipeline
    window = min(num_frames, context_frames or s.frames_trained)
    h, w = math.ceil(height / s.vae_scale), math.ceil(width / s.vae_scale)
    fused = fused_attention(device)
    latents = LATENT_COPIES * batch * s.latent_channels * num_frames * h * w * 4
    unet = unet_bytes(s, window, h, w, batch * (2 if cfg else 1), fused)
    live = latents + max(unet, decode_bytes(s, num_frames, height, width, batch, decode_chunk, fused))
    return FIXED_BYTES + int(ALLOCATOR_SLACK * live)


def estimate_peak_bytes(pipe_or_configs, num_frames: int, height: int, width: int, batch: int = 1,
                        guidance: bool | float = True, context_frames: int | None = None, decode_chunk: int | None = 8,
                        device: str | torch.device | None = None) -> int:
    """Peak bytes of a pipeline call making `batch` clips of `num_frames` x `height` x `width`: the models'
    parameters plus the largest of the UNet step, the VAE decode and the decoded clip (see the module docstring).
    `guidance`: CFG on/off, or the guidance scale; `context_frames`: the UNet's window (default: the adapter's
    length). Not counted: the Python runtime and libraries (about 0.5 GB for torch + diffusers)."""
    s = sizes_of(pipe_or_configs)
    return s.param_bytes + working_bytes(s, num_frames, height, width, batch, guidance, context_frames, decode_chunk, device)


# ----------------------------------------------------------------------------- what the machine has

def available_bytes(device: str | torch.device | None = None) -> int:
    """Memory a new allocation can get without swapping or the OOM killer: on a CUDA device its free
    memory plus what PyTorch's cache holds unused; elsewhere the RAM the kernel calls available
    (`MemAvailable`, which counts reclaimable caches), within this process's cgroup limit if it has one."""
    kind = torch.device(device).type if device is not None else "cpu"
    if kind == "cuda":
        index = torch.device(device).index
        free, _ = torch.cuda.mem_get_info(index)
        return free + torch.cuda.memory_reserved(index) - torch.cuda.memory_allocated(index)
    return min(_ram_available(), _cgroup_room())


def _ram_available() -> int:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024  # the kernel reports kB
    except OSError:
        pass
    try:  # not Linux: psutil when installed, else the physical memory (still refuses absurd sizes)
        import psutil

        return int(psutil.virtual_memory().available)
    except ImportError:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cgroup_room() -> int:
    """A container's memory limit less its usage (cgroup v2); unlimited when there is none."""
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = int(Path("/sys/fs/cgroup/memory.current").read_text())
    except (OSError, ValueError):
        return 2**63
    return 2**63 if limit == "max" else max(int(limit) - used, 0)


def format_bytes(n: int) -> str:
    gib = n / 2**30
    if gib >= 10:
        return f"{gib:,.0f} GiB"
    return f"{gib:.1f} GiB" if gib >= 1 else f"{max(n / 2**20, 0.1):.0f} MiB" if n >= 2**20 else f"{n / 2**10:.0f} KiB"


# ----------------------------------------------------------------------------- the check

def check_fits(pipe_or_configs, num_frames: int, height: int, width: int, batch: int = 1,
               guidance: bool | float = True, context_frames: int | None = None, decode_chunk: int | None = 8,
               device: str | torch.device | None = None, loaded: bool = True) -> int:
    """Refuse, in one `VidldmError` line, a call that would need more memory than `device` has free; else
    return the estimated bytes it adds. Call it after loading the pipeline (`loaded=True`: its parameters are
    already in memory and not counted again) and before sampling. Arithmetic on configs: milliseconds at any size."""
    for name, value in (("num_frames", num_frames), ("height", height), ("width", width), ("batch", batch)):
        if not isinstance(value, int) or value < 1:
            raise VidldmError(f"{name} must be a whole number of at least 1, got {value!r}")
    s = sizes_of(pipe_or_configs)
    args = (num_frames, height, width, batch, guidance, context_frames, decode_chunk, device)
    needed = working_bytes(s, *args) if loaded else estimate_peak_bytes(s, *args)
    free = available_bytes(device)
    if needed <= free:
        return needed
    clips = f"{batch} clips" if batch > 1 else "a clip"
    where = "this GPU has" if torch.device(device or "cpu").type == "cuda" else "this machine has"
    raise VidldmError(f"{clips} of {num_frames} frames at {width}x{height} needs about {format_bytes(needed)}; "
                      f"{where} {format_bytes(free)} free. {_advice(s, *args)}")


def _advice(s: ModelSizes, num_frames, height, width, batch, guidance, context_frames, decode_chunk, device) -> str:
    """What to lower: the decoded clip grows with frames, the UNet's step only with the window and the size."""
    fused = fused_attention(device)
    clip = decode_bytes(s, num_frames, height, width, batch, decode_chunk, fused)
    one_window = decode_bytes(s, min(num_frames, context_frames or s.frames_trained), height, width, batch, decode_chunk, fused)
    if num_frames > s.frames_trained and clip > 2 * one_window:
        return "Lower --frames (or make the clip in parts with vidldm extend), or --height/--width"
    return "Lower --height/--width" + (" or --frames" if num_frames > 1 else "")
