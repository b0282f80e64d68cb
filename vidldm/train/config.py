"""Training recipes: a YAML file read into dataclasses and checked before any model is loaded.

    stage: temporal              # temporal | image | vae | decoder | keyframe
    output_dir: runs/my-run
    model: {pretrained: tiny, motion_adapter: null, max_seq_length: 16}
    data: {root: videos/, num_frames: 16, height: 64, width: 64, stride: 1}
    train: {batch_size: 1, max_steps: 1000, learning_rate: 1.0e-4, ...}
    checkpoint: {every: 500, keep: 3}
    validation: {every: 500, prompts: ["a red circle moving right"]}
    sampling: {num_inference_steps: 20, guidance_scale: 6.0, temporal_end: 0.7}

`sampling` sets what the saved pipeline generates with when a call or CLI flag leaves a setting out
(its keys: vidldm.sampling_settings.SAMPLING_DEFAULTS); keys it leaves out keep the base model's.

A recipe may start from another: `base: other.yaml` (a path relative to this file) reads that
recipe first and lays this one's keys over it, mapping by mapping, so a stage that differs from the
last one in its rate and seed says only that. It must name its own `output_dir`: the base's would
resume the base's run. Relative paths resolve beside the recipe being run.

Every key is listed below with its default; an unknown key, a missing folder or a clip longer
than the motion adapter's position encoding fails at start with one line.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidldm import yaml_numbers
from vidldm.builtin_names import BUILTIN as BUILTIN_MODELS  # no torch: recipes are checked before models load
from vidldm.errors import VidldmError
from vidldm.sampling_settings import BY_NAME, check_generation_defaults

STAGES = ("temporal", "image", "vae", "decoder", "keyframe")
RENAMED = {"model.max_frames": "model.max_seq_length"}  # old key -> new key
# What `model.noise_schedule` may change, e.g. zero terminal SNR (Lin et al. 2023):
# {prediction_type: v_prediction, rescale_betas_zero_snr: true, timestep_spacing: trailing}
NOISE_SCHEDULE_KEYS = {
    "prediction_type": ("epsilon", "v_prediction"),
    "rescale_betas_zero_snr": (True, False),
    "timestep_spacing": ("leading", "linspace", "trailing"),
}


@dataclass
class ModelConfig:
    pretrained: str = "tiny"             # anything load_pipeline takes
    motion_adapter: str | None = None    # start from this adapter (AnimateDiff file or folder)
    max_seq_length: int | None = None    # position-encoding length of a fresh adapter (default 32, tiny 16)
    spatiotemporal_levels: list[int] | None = None  # add spatio-temporal attention at these UNet levels (new layers start as identity)
    noise_schedule: dict[str, Any] | None = None  # scheduler overrides for training and the saved model (NOISE_SCHEDULE_KEYS)
    sparsectrl: str | None = None        # keyframe stage: continue training this keyframe encoder (else a new one)


@dataclass
class DataConfig:
    root: str | None = None              # folder of videos (captions.csv/.jsonl, WebVid CSV or .txt sidecars)
    captions: str | None = None          # explicit captions file
    latent_cache: str | None = None      # a folder made by `vidldm cache`; used instead of decoding videos
    reference_cache: str | None = None   # a cache of the same clips with other captions: what the teacher of
                                         # train.reference_mix reads (LatentCacheDataset's `reference`)
    num_frames: int = 16
    height: int = 64
    width: int = 64
    stride: int = 1
    fps: float | None = None
    flip: bool = False
    num_workers: int = 0


@dataclass
class TrainConfig:
    batch_size: int = 1
    max_steps: int = 1000                # optimizer steps
    learning_rate: float = 1e-4
    weight_decay: float = 1e-2
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    warmup_steps: int = 0
    lr_schedule: str = "cosine"          # cosine | constant | linear
    gradient_accumulation_steps: int = 1
    max_grad_norm: float = 1.0
    mixed_precision: str = "no"          # no | fp16 | bf16
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False          # needs bitsandbytes
    ema_decay: float | None = None       # e.g. 0.999; the final weights are the EMA
    caption_dropout: float = 0.1         # empty caption, so classifier-free guidance works
    frame_conditioning: float = 0.5      # temporal stage: probability that the first k frames are given clean
    max_known_frames: int | None = None  # k is drawn from [1, max_known_frames]; default min(4, num_frames - 1)
    known_frames: str = "first"          # first: the first k frames; sparse: also keyframes anywhere (in-betweening,
                                         # frame-rate upsampling; see vidldm.train.stages.known_frame_indices)
    pure_noise_fraction: float = 0.0     # temporal stage: share of samples at the last timestep with no signal left (see TemporalStage)
    flicker_weight: float = 0.0          # temporal stage: extra loss on the frame-to-frame change of the error (TemporalStage.flicker)
    size_weight: float = 0.0             # temporal stage: extra loss on the object's size drifting over the clip (TemporalStage.size_drift)
    reference_mix: float = 0.0           # temporal stage: share of the loss that pulls the prediction toward the starting
                                         # adapter's on the reference captions (TemporalStage.teacher_prediction); 1: that alone
    input_perturbation: float = 0.0      # image/temporal stages: extra noise on the model's input only, not its target (Ning et
                                         # al. 2023, against exposure bias; 0.1 is theirs); Stage.input_noise
    keyframe_weight: float = 1.0         # keyframe stage: loss weight of the frames the encoder is told, against 1 for the others
    noise_prior: str = "independent"     # temporal stage: independent | mixed | progressive (PYoCo, vidldm.noise_prior);
                                         # the saved model samples with it unless `sampling:` says otherwise
    noise_prior_strength: float = 1.0    # the prior's alpha
    lora_rank: int | None = None         # temporal stage: train a motion LoRA instead of full weights
    trainable_modules: list[str] | None = None  # train only the parameters of the stage's part whose names contain one
                                         # of these (AnimateDiff's `trainable_modules`), e.g. [text_attention, text_norm]
    frames_per_clip: int | None = None  # image stage: train on this many random frames of each clip (more captions a step)
    noise_offset: float = 0.0
    snr_gamma: float | None = None       # Min-SNR loss weighting (Hang et al. 2023), e.g. 5.0: converges faster
    snr_floor: float | None = None       # e.g. 1.0: high-noise steps weigh as in a v-prediction loss (Salimans & Ho 2022)
    timestep_bias_strategy: str = "none"  # none | later | earlier: draw the noisier (later) or cleaner timesteps more often
    timestep_bias_multiplier: float = 1.0  # how much more often the biased portion is drawn
    timestep_bias_portion: float = 0.25  # fraction of the timesteps that is biased
    foreground_weight: float = 0.0      # extra loss weight on the object (small objects on plain backgrounds): vae stage on pixels
                                        # unlike the frame's border, image/temporal stages on latent cells unlike the frame's median
    crop_size: int | None = None        # vae stage: train on square crops, most centred on the foreground (faster)
    freeze_encoder: bool = False        # vae stage: train the decoder only; latents (and latent caches) stay valid
    latent_noise: float = 0.0           # decoder stage: add frame-independent noise (std up to this, drawn per clip) to the
                                        # latents, so the temporal layers learn to remove a sampler's frame-to-frame jitter
    latent_warp: float = 0.0            # decoder stage: scale and shift each latent frame on its own (up to this fraction,
                                        # drawn per clip), so the layers learn to undo a sampler's size pulsing and wobble
    seed: int = 0


@dataclass
class CheckpointConfig:
    every: int = 500
    keep: int = 3


@dataclass
class ValidationConfig:
    every: int = 0                       # 0: only at the end
    prompts: list[str] = field(default_factory=list)
    num_inference_steps: int | None = None  # None: the model's sampling defaults (see `sampling`)
    guidance_scale: float | None = None
    num_frames: int | None = None


@dataclass
class LogConfig:
    every: int = 10
    tensorboard: bool = True


@dataclass
class Config:
    stage: str = "temporal"
    output_dir: str = "runs/train"
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    log: LogConfig = field(default_factory=LogConfig)
    sampling: dict[str, Any] = field(default_factory=dict)  # the saved model's own sampling defaults

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _build(cls, values: Any, where: str, source: str):
    """Dataclass `cls` from a mapping; unknown keys are an error naming the key and the file."""
    if values is None:
        return cls()
    if not isinstance(values, dict):
        raise VidldmError(f"{source}: '{where}' must be a mapping of keys, got {type(values).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in values.items():
        name = f"{where}.{key}" if where else key
        key = RENAMED.get(name, name).rpartition(".")[2]  # recipes written before a key was renamed still load
        if key not in fields:
            raise VidldmError(f"{source}: unknown key '{name}'; known keys here: {', '.join(fields)}")
        sub = fields[key].default_factory if fields[key].default_factory is not dataclasses.MISSING else None
        kwargs[key] = _build(sub, value, name, source) if dataclasses.is_dataclass(sub) else _number(fields[key], value, name, source)
    return cls(**kwargs)


def _number(field: dataclasses.Field, value: Any, name: str, source: str) -> Any:
    """A number setting as its number: a quoted one (`"1e-4"`) read, a whole float in a count (`max_steps: 2e3`)
    that count; a word or a switch (`yes`) there is a one-line error naming the key, not a failure deep in training.
    (Unquoted `1e-4` already arrives as a float: `yaml_numbers` reads YAML 1.2 floats.)"""
    kind = str(field.type).split(" | ")[0]
    if kind not in ("int", "float") or value is None:
        return value
    if isinstance(value, bool):
        raise VidldmError(f"{source}: {name} must be a number, got {value!r}")
    if isinstance(value, str) and kind == "float":
        try:
            return float(value)
        except ValueError:
            raise VidldmError(f"{source}: {name} must be a number, got {value!r}") from None
    return yaml_numbers.as_count(value) if kind == "int" else value


def parse_overrides(pairs: list[str]) -> dict[str, Any]:
    """`["train.max_steps=20", "data.root=x"]` -> nested dict (values parsed as YAML scalars)."""
    out: dict[str, Any] = {}
    for pair in pairs:
        if "=" not in pair:
            raise VidldmError(f"--set takes key=value, got '{pair}'")
        key, value = pair.split("=", 1)
        node = out
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = yaml_numbers.load(value)
    return out


def _merge(base: dict, extra: dict) -> dict:
    for k, v in extra.items():
        base[k] = _merge(dict(base.get(k) or {}), v) if isinstance(v, dict) else v
    return base


def load_config(path: str | Path, overrides: list[str] | None = None) -> Config:
    """Read and check a recipe. Relative paths in it are relative to the YAML file's folder."""
    path = Path(path)
    if not path.exists():
        raise VidldmError(f"config '{path}' does not exist")
    raw = _merge(read_recipe(path), parse_overrides(overrides or []))
    config = _build(Config, raw, "", path.name)
    _resolve_paths(config, path.parent)
    check(config, path.name)
    return config


def read_recipe(path: Path, _chain: tuple[Path, ...] = ()) -> dict[str, Any]:
    """A recipe file as a plain mapping, with its `base:` chain merged in (the base first)."""
    try:
        raw = yaml_numbers.load(path.read_text()) or {}
    except yaml_numbers.YAMLError as err:
        raise VidldmError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(raw, dict):
        raise VidldmError(f"{path}: a recipe must be a mapping of keys, got {type(raw).__name__}")
    base = raw.pop("base", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise VidldmError(f"{path.name}: 'base' must be the path of another recipe, got {base!r}")
    if "output_dir" not in raw:
        raise VidldmError(f"{path.name}: a recipe with 'base' must set its own output_dir (the base's would resume its run)")
    base_path = (path.parent / base).resolve()
    chain = (*_chain, path.resolve())
    if base_path in chain:
        raise VidldmError(f"{path.name}: 'base: {base}' leads back to itself ({' -> '.join(p.name for p in chain)} -> {base_path.name})")
    if not base_path.is_file():
        raise VidldmError(f"{path.name}: base recipe '{base}' does not exist (paths in 'base' are relative to {path.parent})")
    return _merge(read_recipe(base_path, chain), raw)


def _resolve_paths(config: Config, base: Path) -> None:
    def rel(p: str | None) -> str | None:
        if p is None or Path(p).is_absolute() or not (base / p).exists():
            return p
        return str((base / p).resolve())

    config.data.root, config.data.captions = rel(config.data.root), rel(config.data.captions)
    config.data.latent_cache, config.data.reference_cache = rel(config.data.latent_cache), rel(config.data.reference_cache)
    config.model.motion_adapter = rel(config.model.motion_adapter)
    config.model.sparsectrl = rel(config.model.sparsectrl)
    # Built-in model names stay names, even where a folder of that name sits beside the recipe.
    if config.model.pretrained not in BUILTIN_MODELS:
        config.model.pretrained = rel(config.model.pretrained) or config.model.pretrained


def _check_trainable_modules(t: TrainConfig, source: str) -> None:
    """`train.trainable_modules`: a non-empty list of name parts, and not beside a LoRA (both choose what trains)."""
    modules = t.trainable_modules
    if modules is not None and not (isinstance(modules, list) and modules and all(isinstance(m, str) and m for m in modules)):
        raise VidldmError(f"{source}: train.trainable_modules must be a list of parameter-name parts "
                          f"(e.g. [text_attention]) or null, got {modules!r}")
    if modules is not None and t.lora_rank:
        raise VidldmError(f"{source}: train.trainable_modules and train.lora_rank both choose what trains: set one of them")


def _check_latent_corruption(t, stage: str, source: str) -> None:
    """The decoder stage's `latent_noise` and `latent_warp`: in range, and on that stage only."""
    if not isinstance(t.latent_noise, (int, float)) or not 0 <= t.latent_noise <= 1:
        raise VidldmError(f"{source}: train.latent_noise must be a number from 0 to 1 (latents have unit variance), "
                          f"got {t.latent_noise!r}")
    if not isinstance(t.latent_warp, (int, float)) or not 0 <= t.latent_warp <= 0.5:
        raise VidldmError(f"{source}: train.latent_warp must be a number from 0 to 0.5 (a fraction of the frame), "
                          f"got {t.latent_warp!r}")
    for name in ("latent_noise", "latent_warp"):
        if getattr(t, name) and stage != "decoder":
            raise VidldmError(f"{source}: train.{name} is for the decoder stage, not {stage}")


def _check_reference(config: Config, source: str) -> None:
    """`train.reference_mix` in [0, 1] and on the temporal stage; `data.reference_cache` beside a latent cache and a mix."""
    d, t = config.data, config.train
    if not isinstance(t.reference_mix, (int, float)) or not 0 <= t.reference_mix <= 1:
        raise VidldmError(f"{source}: train.reference_mix must be a number from 0 to 1 (the teacher's share of the loss), "
                          f"got {t.reference_mix!r}")
    if t.reference_mix and config.stage != "temporal":
        raise VidldmError(f"{source}: train.reference_mix is for the temporal stage, not {config.stage}")
    if d.reference_cache is None:
        return
    if d.latent_cache is None:
        raise VidldmError(f"{source}: data.reference_cache pairs with data.latent_cache (the same clips, other captions); "
                          "set data.latent_cache too")
    if not t.reference_mix:
        raise VidldmError(f"{source}: data.reference_cache is read only by the teacher of train.reference_mix; "
                          "set train.reference_mix (e.g. 0.5) or drop data.reference_cache")
    if not Path(d.reference_cache, "index.json").exists():
        raise VidldmError(f"{source}: data.reference_cache '{d.reference_cache}' is not a latent cache (no index.json); "
                          "make one with `vidldm cache`")


def check(config: Config, source: str) -> None:
    """Everything that can be checked without loading a model."""
    if config.stage not in STAGES:
        raise VidldmError(f"{source}: unknown stage '{config.stage}'; choose one of {', '.join(STAGES)}")
    d, t = config.data, config.train
    if d.latent_cache is None:
        if d.root is None:
            raise VidldmError(f"{source}: data.root is not set; point it at a folder of videos")
        if not Path(d.root).is_dir():
            raise VidldmError(f"{source}: data folder '{d.root}' does not exist")
    elif not Path(d.latent_cache, "index.json").exists():
        raise VidldmError(f"{source}: '{d.latent_cache}' is not a latent cache (no index.json); make one with `vidldm cache`")
    if d.latent_cache is not None and config.stage in ("vae", "decoder"):  # they learn to reconstruct pixels
        raise VidldmError(f"{source}: the {config.stage} stage learns from the videos' pixels and a latent cache holds "
                          "latents only; drop data.latent_cache and set data.root")
    for name, value in (("data.num_frames", d.num_frames), ("data.height", d.height), ("data.width", d.width),
                        ("data.stride", d.stride), ("train.batch_size", t.batch_size), ("train.max_steps", t.max_steps),
                        ("train.gradient_accumulation_steps", t.gradient_accumulation_steps),
                        ("checkpoint.every", config.checkpoint.every), ("checkpoint.keep", config.checkpoint.keep)):
        if not isinstance(value, int) or value < 1:
            raise VidldmError(f"{source}: {name} must be a positive integer, got {value!r}")
    if t.mixed_precision not in ("no", "fp16", "bf16"):
        raise VidldmError(f"{source}: train.mixed_precision must be no, fp16 or bf16, got {t.mixed_precision!r}")
    if t.lr_schedule not in ("cosine", "constant", "linear"):
        raise VidldmError(f"{source}: train.lr_schedule must be cosine, constant or linear, got {t.lr_schedule!r}")
    for name, value in (("train.caption_dropout", t.caption_dropout), ("train.frame_conditioning", t.frame_conditioning),
                        ("train.pure_noise_fraction", t.pure_noise_fraction)):
        if not 0 <= value <= 1:
            raise VidldmError(f"{source}: {name} must be between 0 and 1, got {value}")
    for name, value in (("train.foreground_weight", t.foreground_weight), ("train.flicker_weight", t.flicker_weight),
                        ("train.size_weight", t.size_weight), ("train.input_perturbation", t.input_perturbation)):
        if not isinstance(value, (int, float)) or value < 0:
            raise VidldmError(f"{source}: {name} must be a number >= 0, got {value!r}")
    _check_latent_corruption(t, config.stage, source)
    _check_reference(config, source)
    _check_trainable_modules(t, source)
    if not isinstance(t.keyframe_weight, (int, float)) or not 0 < t.keyframe_weight < float("inf"):
        raise VidldmError(f"{source}: train.keyframe_weight must be a number > 0, got {t.keyframe_weight!r}")
    if t.crop_size is not None and not (isinstance(t.crop_size, int) and 8 <= t.crop_size <= min(d.height, d.width)):
        raise VidldmError(f"{source}: train.crop_size must be an integer between 8 and the frame size, got {t.crop_size!r}")
    if t.snr_gamma is not None and not (isinstance(t.snr_gamma, (int, float)) and t.snr_gamma > 0):
        raise VidldmError(f"{source}: train.snr_gamma must be a positive number (5.0 is usual) or null, got {t.snr_gamma!r}")
    if t.snr_floor is not None and not (isinstance(t.snr_floor, (int, float)) and 0 < t.snr_floor <= (t.snr_gamma or t.snr_floor)):
        raise VidldmError(f"{source}: train.snr_floor must be a positive number no larger than train.snr_gamma, got {t.snr_floor!r}")
    if t.timestep_bias_strategy not in ("none", "later", "earlier"):
        raise VidldmError(f"{source}: train.timestep_bias_strategy must be none, later or earlier, got {t.timestep_bias_strategy!r}")
    if not t.timestep_bias_multiplier > 0 or not 0 < t.timestep_bias_portion < 1:
        raise VidldmError(f"{source}: train.timestep_bias_multiplier must be > 0 and train.timestep_bias_portion "
                          f"between 0 and 1, got {t.timestep_bias_multiplier} and {t.timestep_bias_portion}")
    levels = config.model.spatiotemporal_levels
    if levels is not None and not (isinstance(levels, list) and all(isinstance(v, int) and v >= 0 for v in levels)):
        raise VidldmError(f"{source}: model.spatiotemporal_levels must be a list of UNet levels (0 = finest), got {levels!r}")
    _check_noise_schedule(config.model.noise_schedule, source)
    _check_noise_prior(config, source)
    _check_keyframe_encoder(config, source)
    try:
        config.sampling = check_generation_defaults(config.sampling or {})
    except VidldmError as err:
        raise VidldmError(f"{source}: sampling: {err}") from None
    if t.ema_decay is not None and not 0 < t.ema_decay < 1:
        raise VidldmError(f"{source}: train.ema_decay must be between 0 and 1, got {t.ema_decay}")
    if t.known_frames not in ("first", "sparse"):
        raise VidldmError(f"{source}: train.known_frames must be first or sparse, got {t.known_frames!r}")
    if config.stage in ("temporal", "keyframe"):
        if t.max_known_frames is None:
            t.max_known_frames = max(1, min(4, d.num_frames - 1))
        if (t.frame_conditioning > 0 or config.stage == "keyframe") and not 1 <= t.max_known_frames < d.num_frames:
            raise VidldmError(
                f"{source}: train.max_known_frames must be between 1 and data.num_frames - 1 "
                "(frame conditioning needs frames left to predict)"
            )
        length = adapter_max_seq_length(config.model)
        if d.num_frames > length:
            raise VidldmError(
                f"{source}: data.num_frames is {d.num_frames} but the motion adapter's position encoding covers "
                f"{length} frames; lower num_frames or set model.max_seq_length for a fresh adapter"
            )


def _check_noise_schedule(schedule, source: str) -> None:
    if schedule is None:
        return
    if not isinstance(schedule, dict):
        raise VidldmError(f"{source}: model.noise_schedule must be a mapping, e.g. {{prediction_type: v_prediction}}")
    for key, value in schedule.items():
        if key not in NOISE_SCHEDULE_KEYS:
            raise VidldmError(f"{source}: unknown key 'model.noise_schedule.{key}'; known keys: {', '.join(NOISE_SCHEDULE_KEYS)}")
        allowed = NOISE_SCHEDULE_KEYS[key]
        if type(value) is not type(allowed[0]) or value not in allowed:  # 1 == True: compare types too
            choices = ", ".join(str(v).lower() for v in allowed)
            raise VidldmError(f"{source}: model.noise_schedule.{key} must be one of {choices}, got {value!r}")
    if schedule.get("rescale_betas_zero_snr") and schedule.get("prediction_type") != "v_prediction":
        raise VidldmError(f"{source}: a zero-terminal-SNR schedule needs model.noise_schedule.prediction_type: "
                          "v_prediction (at SNR 0 the noise is the input, so predicting it says nothing)")


def _check_noise_prior(config: Config, source: str) -> None:
    """`train.noise_prior` and its strength, checked; a model trained on correlated noise is saved to sample from it."""
    t = config.train
    try:  # the sampling settings' own checks (choices, a number >= 0), under the recipe's names
        for name in ("noise_prior", "noise_prior_strength"):
            BY_NAME[name].check(getattr(t, name), f"train.{name}")
    except VidldmError as err:
        raise VidldmError(f"{source}: {err}") from None
    if t.noise_prior != "independent" and config.stage != "temporal":
        raise VidldmError(f"{source}: train.noise_prior is for the temporal stage (frames of other stages are separate samples)")
    if t.noise_prior != "independent":  # a model trained on correlated noise must be sampled from it
        config.sampling = {"noise_prior": t.noise_prior, "noise_prior_strength": t.noise_prior_strength,
                           **(config.sampling or {})}


def _check_keyframe_encoder(config: Config, source: str) -> None:
    if config.train.keyframe_weight != 1 and config.stage != "keyframe":  # no other stage has an encoder to tell
        raise VidldmError(f"{source}: train.keyframe_weight is for the keyframe stage; stage is {config.stage}")
    given = config.model.sparsectrl
    if given is None:
        return
    if config.stage != "keyframe":
        raise VidldmError(f"{source}: model.sparsectrl is the keyframe encoder the keyframe stage continues; stage is {config.stage}")
    if not Path(given).exists():
        raise VidldmError(f"{source}: model.sparsectrl '{given}' does not exist")


def adapter_max_seq_length(model: ModelConfig) -> int:
    """The clip length the motion adapter can take, read from configs/headers, not by building a model."""
    from vidldm.models.motion_formats import read_max_seq_length

    if model.motion_adapter is not None:
        path = Path(model.motion_adapter)
        if not path.exists():
            raise VidldmError(f"motion adapter '{path}' does not exist")
        return read_max_seq_length(path)
    folder = Path(model.pretrained) / "motion_adapter"
    if folder.is_dir():
        return read_max_seq_length(folder)
    if model.max_seq_length is not None:
        return model.max_seq_length
    return 16 if model.pretrained == "tiny" else 32
