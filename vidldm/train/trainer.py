"""`vidldm train CONFIG.yaml`: the one training loop, on accelerate (one process or DDP).

    config -> checks (no model yet) -> pipeline -> stage module (what trains, what the loss is)
           -> AdamW + warmup/cosine -> [micro-batches -> loss -> backward -> clip -> step -> EMA]
           -> checkpoints / validation clips / logs -> final adapter + pipeline folder

Resuming restores weights, optimizer, LR schedule, EMA, every process's RNG states and the
position in the data, so a stopped and resumed run ends with the same weights as one that
never stopped (bitwise on CPU).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import torch

from vidldm import atomic
from vidldm.data.batches import collate
from vidldm.errors import VidldmError
from vidldm.train import state as ckpt
from vidldm.train.config import Config
from vidldm.train.stages import STAGE_CLASSES

log = logging.getLogger("vidldm.train")


class DataStream:
    """Endless, resumable batches: epoch `e` visits `randperm(n)` seeded by (seed, e), each process
    takes its share, and the position is (epoch, batch) so a resumed run reads the same batches."""

    def __init__(self, dataset, batch_size: int, seed: int, rank: int, world: int, num_workers: int = 0):
        self.dataset, self.batch_size, self.seed = dataset, batch_size, seed
        self.rank, self.world, self.num_workers = rank, world, num_workers
        self.batches_per_epoch = len(dataset) // (batch_size * world)
        if self.batches_per_epoch == 0:
            raise VidldmError(
                f"{len(dataset)} clips are fewer than one batch ({batch_size} x {world} processes); add clips or lower batch_size"
            )
        self.epoch, self.batch = 0, 0
        self._iter = None

    def state(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state(self, state: dict[str, int]) -> None:
        self.epoch, self.batch, self._iter = state["epoch"], state["batch"], None

    def _epoch_iter(self):
        if hasattr(self.dataset, "set_epoch"):
            self.dataset.set_epoch(self.epoch)
        g = torch.Generator().manual_seed(self.seed * 100003 + self.epoch)
        order = torch.randperm(len(self.dataset), generator=g).tolist()
        per_step = self.batch_size * self.world
        mine = [order[b * per_step + self.rank * self.batch_size: b * per_step + (self.rank + 1) * self.batch_size]
                for b in range(self.batch, self.batches_per_epoch)]
        if self.num_workers > 0:
            loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=mine, num_workers=self.num_workers, collate_fn=collate)
            yield from loader
        else:
            for indices in mine:
                yield collate([self.dataset[i] for i in indices])

    def next(self) -> dict[str, Any]:
        while True:
            if self._iter is None:
                self._iter = self._epoch_iter()
            try:
                batch = next(self._iter)
                self.batch += 1
                return batch
            except StopIteration:
                self.epoch, self.batch, self._iter = self.epoch + 1, 0, None


def build_dataset(config: Config):
    d = config.data
    if d.latent_cache:
        from vidldm.data import LatentCacheDataset

        return LatentCacheDataset(d.latent_cache, reference=d.reference_cache)
    from vidldm.data import VideoClipDataset

    return VideoClipDataset(d.root, num_frames=d.num_frames, height=d.height, width=d.width, stride=d.stride,
                            fps=d.fps, flip=d.flip, captions=d.captions, seed=config.train.seed)


def load_base(config: Config, device):
    """The pipeline to train from; a Stable Diffusion base without an adapter gets a fresh one."""
    from vidldm.loading import load_pipeline
    from vidldm.train.config import adapter_max_seq_length

    m = config.model
    pipe = load_pipeline(m.pretrained, m.motion_adapter, device=device, fresh_max_seq_length=adapter_max_seq_length(m))
    if m.noise_schedule:  # e.g. v-prediction on a zero-terminal-SNR schedule; saved with the trained model
        pipe.scheduler = type(pipe.scheduler).from_config(pipe.scheduler.config, **m.noise_schedule)
    if m.spatiotemporal_levels and pipe.motion_adapter is not None:
        try:
            pipe.motion_adapter = pipe.motion_adapter.with_spatiotemporal(m.spatiotemporal_levels)
        except ValueError as err:  # levels beyond this UNet's depth: known only once the model is loaded
            raise VidldmError(f"model.{err}") from err
    pipe.set_generation_defaults(**config.sampling)  # saved with the trained model; unset keys keep the base's
    return pipe


def _trackers(config: Config) -> list[str] | None:
    """accelerate's TensorBoard tracker when the recipe asks for it and tensorboard is installed (log.jsonl is
    written either way)."""
    if not config.log.tensorboard:
        return None
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        log.warning("TensorBoard logs off: pip install tensorboard (log.jsonl is written anyway)")
        return None
    return ["tensorboard"]


def flush_denormals() -> None:
    """Treat subnormal floats as zero on the CPU.

    They run ~100x slower on x86, and attention makes them: once trained, sharp attention leaves softmax
    tails below 1e-38 (measured: the spatio-temporal stage went from 0.9 s to 2.1 s a step, nearly all of
    it in the attention backward). No result a diffusion model gives can tell. The mode is per thread and
    new threads inherit it, so it must be set before PyTorch starts its worker threads: the CLI does it
    first thing."""
    torch.set_flush_denormal(True)


def make_optimizer(params, t) -> torch.optim.Optimizer:
    if t.use_8bit_adam:
        try:
            import bitsandbytes as bnb
        except ImportError as err:
            raise VidldmError("train.use_8bit_adam needs bitsandbytes: pip install bitsandbytes") from err
        cls = bnb.optim.AdamW8bit
    else:
        cls = torch.optim.AdamW
    return cls(params, lr=t.learning_rate, betas=(t.adam_beta1, t.adam_beta2), weight_decay=t.weight_decay)


class Trainer:
    def __init__(self, config: Config, *, resume: str | None = None, stop_after: int | None = None):
        from accelerate import Accelerator

        self.config = config
        t = config.train
        flush_denormals()  # before any model runs, so the CPU worker threads inherit it
        self.out = Path(config.output_dir)
        self.accelerator = Accelerator(mixed_precision=t.mixed_precision, gradient_accumulation_steps=t.gradient_accumulation_steps,
                                       log_with=_trackers(config), project_dir=str(self.out))
        acc = self.accelerator
        self.main = acc.is_main_process
        self.stop_after = stop_after
        self.resume_from = ckpt.find_checkpoint(self.out, resume) if resume else None

        torch.manual_seed(t.seed)  # model init (fresh adapters) identical on every process
        self.generator = torch.Generator().manual_seed(t.seed * 1000 + acc.process_index)
        self.dataset = build_dataset(config)
        self.data = DataStream(self.dataset, t.batch_size, t.seed, acc.process_index, acc.num_processes, config.data.num_workers)

        self.pipe = load_base(config, acc.device)
        self._cast_frozen()
        self.stage = STAGE_CLASSES[config.stage](self.pipe, config)
        self.peft_model = self.stage.use_lora(t.lora_rank) if t.lora_rank else None
        self.stage.freeze_all_but_trainable()
        if self.peft_model is not None:  # only the LoRA matrices train (peft put them into the adapter itself)
            self._train_only(["lora_"])
        if t.trainable_modules:
            self._train_only(t.trainable_modules)
        self.params = [p for p in self.stage.parameters() if p.requires_grad]
        if not self.params:
            raise VidldmError(f"stage '{config.stage}' has nothing to train")
        self.ema = ckpt.EMA(self.params, t.ema_decay) if t.ema_decay else None

        from diffusers.optimization import get_scheduler

        self.optimizer = make_optimizer(self.params, t)
        self.lr_scheduler = get_scheduler(t.lr_schedule, self.optimizer, num_warmup_steps=t.warmup_steps,
                                          num_training_steps=t.max_steps)
        self.model, self.optimizer = acc.prepare(self.stage, self.optimizer)
        self.step = 0
        if self.resume_from is not None:
            self._restore(self.resume_from)

    # ------------------------------------------------------------------ set-up helpers
    def _train_only(self, parts: list[str]) -> None:
        """Freeze every parameter of the stage's part whose name contains none of `parts` (AnimateDiff's
        `trainable_modules`); a part that names nothing is a typo, refused with an example name."""
        module = self.stage.trainable()
        named = list(module.named_parameters())
        unmatched = [part for part in parts if not any(part in name for name, _ in named)]
        if unmatched:
            raise VidldmError(f"train.trainable_modules: {unmatched[0]!r} is in no parameter name of the "
                              f"{self.stage.part} (they look like {named[0][0]!r})")
        for name, p in named:
            p.requires_grad_(any(part in name for part in parts))

    def _cast_frozen(self) -> None:
        """Frozen parts in the mixed-precision dtype (half the memory); trained parts stay fp32."""
        dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(self.config.train.mixed_precision)
        if dtype is None:
            return
        keep = {STAGE_CLASSES[self.config.stage].part, *STAGE_CLASSES[self.config.stage].full_precision}
        for name in ("vae", "text_encoder", "unet", "motion_adapter"):
            if name not in keep:
                getattr(self.pipe, name).to(dtype)

    def trainable_state(self) -> dict[str, torch.Tensor]:
        return {n: p for n, p in self.stage.named_parameters() if p.requires_grad}

    def _restore(self, folder: Path) -> None:
        saved = ckpt.read_checkpoint(folder, self.accelerator.process_index)
        own = self.trainable_state()
        if set(saved["weights"]) != set(own):
            raise VidldmError(f"checkpoint '{folder}' holds other weights than this run trains; same config and stage?")
        with torch.no_grad():
            for name, p in own.items():
                p.copy_(saved["weights"][name])
        self.optimizer.load_state_dict(saved["optimizer"])
        self.lr_scheduler.load_state_dict(saved["scheduler"])
        if self.ema is not None:
            if saved["ema"] is None:  # a fresh average would make the resumed run differ from one that never stopped
                raise VidldmError(
                    f"checkpoint '{folder}' has no ema.safetensors but this run keeps an EMA (train.ema_decay="
                    f"{self.config.train.ema_decay}); resume with the recipe that wrote it, or start the average "
                    "anew on purpose with --set train.ema_decay=0")
            self.ema.load_state_dict(saved["ema"])
        ckpt.set_rng_state(saved["rng"], self.generator)
        self.data.load_state(saved["meta"]["data"])
        self.step = saved["meta"]["step"]
        if self.main:
            print(f"resumed from {folder} at step {self.step}")

    # ------------------------------------------------------------------ the loop
    def train(self) -> dict[str, Any]:
        cfg, acc = self.config, self.accelerator
        t = cfg.train
        self.out.mkdir(parents=True, exist_ok=True)
        if acc.log_with:  # TensorBoard (or any accelerate tracker) under output_dir/logs
            acc.init_trackers("logs", config={"stage": cfg.stage, "max_steps": t.max_steps, "learning_rate": t.learning_rate})
        if self.main:
            self._truncate_log()
        log_file = (self.out / "log.jsonl").open("a") if self.main else None
        from tqdm.auto import tqdm

        bar = tqdm(total=t.max_steps, initial=self.step, disable=not self.main, desc=f"train {cfg.stage}", unit="step")
        last = self.step + self.stop_after if self.stop_after else t.max_steps
        start, start_step, clips = time.perf_counter(), self.step, 0
        while self.step < min(last, t.max_steps):
            losses = []
            for _ in range(t.gradient_accumulation_steps):
                batch = self.data.next()
                with acc.accumulate(self.model):
                    loss = self.model(batch, self.generator)
                    acc.backward(loss)
                    if acc.sync_gradients and t.max_grad_norm:
                        acc.clip_grad_norm_(self.params, t.max_grad_norm)
                    self.optimizer.step()
                    self.optimizer.zero_grad(set_to_none=True)
                losses.append(loss.detach().float())
                clips += len(next(iter(v for v in batch.values() if isinstance(v, torch.Tensor))))
            if not torch.isfinite(torch.stack(losses)).all():
                raise VidldmError(f"loss became {losses[-1].item()} at step {self.step + 1}; lower train.learning_rate or use bf16/fp32")
            self.lr_scheduler.step()
            if self.ema is not None:
                self.ema.update()
            self.step += 1
            loss_value = acc.reduce(torch.stack(losses).mean(), reduction="mean").item()
            elapsed = time.perf_counter() - start
            rate = clips * acc.num_processes / max(elapsed, 1e-9)
            bar.update(1)
            bar.set_postfix(loss=f"{loss_value:.4f}", clips_s=f"{rate:.2f}", lr=f"{self.lr_scheduler.get_last_lr()[0]:.2e}")
            if self.main and (self.step % cfg.log.every == 0 or self.step == t.max_steps):
                record = {"step": self.step, "loss": loss_value, "lr": self.lr_scheduler.get_last_lr()[0], "clips_per_s": rate}
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
                acc.log({f"train/{k}": v for k, v in record.items() if k != "step"}, step=self.step)
            if self.step % cfg.checkpoint.every == 0 or self.step == last:
                self.save_checkpoint()
            if cfg.validation.every and self.step % cfg.validation.every == 0:
                self.validate()
        bar.close()
        elapsed = time.perf_counter() - start
        summary = {"steps": self.step - start_step, "seconds": elapsed,
                   "clips_per_s": clips * acc.num_processes / max(elapsed, 1e-9), "step": self.step}
        if self.step >= t.max_steps:
            self.finish()
        if log_file is not None:
            log_file.close()
        acc.end_training()
        return summary

    def _truncate_log(self) -> None:
        """Keep log.jsonl's records up to the step this run starts from: after a resume, the steps a stopped
        run logged past its last checkpoint are trained again and would otherwise appear twice."""
        path = self.out / "log.jsonl"
        if not path.exists():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                if json.loads(line)["step"] <= self.step:
                    kept.append(line)
            except (json.JSONDecodeError, KeyError, TypeError):  # a line cut by a kill mid-write
                continue
        atomic.write_text(path, "".join(f"{line}\n" for line in kept))

    # ------------------------------------------------------------------ saving
    def save_checkpoint(self) -> None:
        acc = self.accelerator
        staging = ckpt.staging_dir(self.out, self.step)
        if self.main:
            ckpt.write_main_state(staging, weights=self.trainable_state(), optimizer=self.optimizer,
                                  lr_scheduler=self.lr_scheduler, ema=self.ema,
                                  meta={"step": self.step, "data": self.data.state(), "stage": self.config.stage,
                                        "processes": acc.num_processes})
        acc.wait_for_everyone()
        ckpt.write_process_state(staging, acc.process_index, self.generator)
        acc.wait_for_everyone()
        if self.main:
            ckpt.publish(self.out, self.step, self.config.checkpoint.keep)
        acc.wait_for_everyone()

    def _final_weights(self):
        """Swap EMA weights in (the final model is the average); a LoRA is saved on its own, then merged into the adapter."""
        if self.ema is not None:
            self.ema.copy_to()
        if self.peft_model is not None:
            from peft import get_peft_model_state_dict

            from vidldm.lora import save_motion_lora

            if self.main:  # diffusers' layout and AnimateDiff's, which other tools load (and vidldm too)
                save_motion_lora(get_peft_model_state_dict(self.peft_model), self.out)
            self.pipe.motion_adapter = self.peft_model.merge_and_unload()

    def finish(self) -> None:
        acc = self.accelerator
        self._final_weights()
        message = self.stage.on_finish(self.pipe, lambda n: [self.data.next() for _ in range(n)])
        if self.main:
            if message:
                print(message)
            pipe, part, trained = self.pipe, self.stage.part, self.stage.trainable()
            self.out.mkdir(parents=True, exist_ok=True)  # --export may name a new output_dir
            # Staged and renamed like checkpoints: a kill mid-save leaves the previous folders or none, never half
            with atomic.replace_folder(self.out / part) as tmp:
                trained.save_pretrained(tmp)
            full = pipe.with_parts().to(torch.float32)
            with atomic.replace_folder(self.out / "pipeline") as tmp:
                full.save_pretrained(tmp)
                if part not in full.components:  # a keyframe encoder: beside the parts, loaded when asked for
                    trained.to(torch.float32).save_pretrained(Path(tmp) / part)
            atomic.write_text(self.out / "config.yaml", _yaml(self.config.to_dict()))
            print(f"saved {self.out / part} and the full pipeline {self.out / 'pipeline'}")
            self.validate(final=True)
        acc.wait_for_everyone()

    @torch.no_grad()
    def validate(self, final: bool = False) -> None:
        v = self.config.validation
        if not (self.main and v.prompts):
            return
        from vidldm.io import write_video

        pipe = self.pipe.with_parts()  # a fresh progress-bar config, same modules and sampling defaults
        pipe.set_progress_bar_config(disable=True)
        folder = self.out / "validation"
        folder.mkdir(exist_ok=True)
        was_training = self.stage.training
        self.stage.eval()
        for i, prompt in enumerate(v.prompts):
            frames = pipe(prompt, num_frames=v.num_frames or self.config.data.num_frames, height=self.config.data.height,
                          width=self.config.data.width, num_inference_steps=v.num_inference_steps,
                          guidance_scale=v.guidance_scale, generator=torch.Generator().manual_seed(i), output_type="np").frames[0]
            write_video(frames, folder / f"{'final' if final else f'step-{self.step:06d}'}-{i}.gif", fps=8)
        self.stage.train(was_training)


def _yaml(data: dict) -> str:
    import yaml

    return yaml.safe_dump(data, sort_keys=False)


def run_training(config_path: str, *, resume: str | None = None, stop_after: int | None = None,
                 overrides: list[str] | None = None, export: bool = False) -> dict[str, Any]:
    """Entry point of `vidldm train`: every check on the config runs before a model is loaded.

    `export=True` saves the model of the checkpoint `resume` as a finished run would (EMA weights,
    `output_dir/pipeline`) without training: an earlier step of a run can be kept or shipped."""
    from vidldm.train.config import load_config

    config = load_config(config_path, overrides)
    trainer = Trainer(config, resume=resume, stop_after=stop_after)
    if export:
        trainer.finish()
        return {"steps": 0, "seconds": 0.0, "clips_per_s": 0.0, "step": trainer.step}
    summary = trainer.train()
    if trainer.main:
        print(f"trained {summary['steps']} steps in {summary['seconds']:.1f}s: {summary['clips_per_s']:.2f} clips/s")
    return summary
