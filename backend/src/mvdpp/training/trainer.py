"""The training loop, on HuggingFace accelerate: the same code on the CPU, one GPU or N GPUs
(``accelerate launch`` / ``torchrun``).

One step: draw this process's batch, compute the stage's loss under autocast (bf16 on CUDA),
backward, clip, AdamW, LR warm-up, EMA update. No host synchronisation inside a step: losses are
summed on the device and read (and averaged over processes) only every ``log_every`` steps.

Determinism: every random draw of step ``k`` on process ``r`` comes from a generator seeded
with (seed, r, k), the data stream is a function of (seed, r, batch index), and checkpoints hold
weights, optimizer, LR schedule, EMA and every process's RNG state. A resumed run therefore
repeats the uninterrupted one (bit for bit on the CPU).
"""

from __future__ import annotations

import math
import os
import re
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.profiler import record_function

from ..errors import BAD_INPUT, CHECKPOINT, DEVICE, MVDPPError
from .data_source import make_batches
from .ema import EMA
from .objectives import make_objective
from .run_folder import PIPELINE_DIR, STATE_FILE, RunFolder, TrainingState, resolve_pipeline_folder
from .stages import TrainSettings


LR_SCHEDULES = ("constant", "cosine")


def learning_rate_factor(scheduler_step: int, warmup_steps: int, schedule: str = "constant", decay_steps: int = 0) -> float:
    """The multiplier of the base learning rate at a scheduler step: a linear warm-up, then
    constant, or a half cosine down to zero over ``decay_steps`` (annealing the weights at the
    end of a run, when the noise of a constant rate is as large as what more steps gain)."""
    if scheduler_step < warmup_steps:
        return (scheduler_step + 1) / warmup_steps
    if schedule == "constant":
        return 1.0
    if schedule == "cosine":
        done = min(1.0, (scheduler_step - max(warmup_steps, 0)) / max(decay_steps, 1))
        return 0.5 * (1.0 + math.cos(math.pi * done))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}")


@dataclass
class TrainResult:
    steps_done: int  # steps run by this invocation
    state: TrainingState
    stopped_by: str  # "max_steps" | "max_minutes"
    checkpoint: Path | None
    exported: Path | None
    seconds: float


#: Objects rendered to measure the VAE's latent scale when a UNet stage starts (x 9 views).
CALIBRATION_OBJECTS = 2


def step_seed(seed: int, rank: int, step: int) -> int:
    return int(np.random.SeedSequence([seed, rank, step]).generate_state(1)[0])


def load_pipeline(folder: str | Path):
    from ..pipelines import MVDiffusionPPPipeline

    folder = resolve_pipeline_folder(folder)
    try:
        from diffusers.utils import logging as diffusers_logging

        diffusers_logging.disable_progress_bar()
        return MVDiffusionPPPipeline.from_pretrained(folder, dtype=torch.float32), folder
    except Exception as exc:  # noqa: BLE001 - any loading failure is a bad checkpoint for the user
        raise MVDPPError(CHECKPOINT, f"Could not load the pipeline in {folder}: {exc}", "Point at a folder written by `mvdpp train --export` or a run folder.") from exc


class Trainer:
    def __init__(self, settings: TrainSettings, resume: bool = False, data: str | None = None, quiet: bool = False):
        settings.validate()
        self.settings = settings
        self.stage = settings.resolved_stage()
        self.resume = resume
        self.data_kind = data or settings.data
        self.quiet = quiet
        self.run = RunFolder(settings.output)
        self._setup_done = False

    # ------------------------------------------------------------------ setup
    def print(self, *args) -> None:
        if not self.quiet and self.accelerator.is_main_process:
            print(*args, flush=True)

    def _make_accelerator(self):
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        s = self.settings
        want_cpu = s.device == "cpu" or (s.device == "auto" and not torch.cuda.is_available())
        if s.device == "cuda" and not torch.cuda.is_available():
            raise MVDPPError(BAD_INPUT, "--device cuda was asked for but no CUDA GPU is available.", "Use --device auto or cpu.")
        precision = s.mixed_precision
        if precision == "auto":
            precision = "no" if want_cpu else "bf16"
        # Frozen modules are not wrapped, but an image encoder that some batches do not use
        # would hang DDP; every trained module is used every step, so no unused-parameter search.
        ddp = DistributedDataParallelKwargs(find_unused_parameters=False)
        return Accelerator(cpu=want_cpu, mixed_precision=precision, kwargs_handlers=[ddp], step_scheduler_with_optimizer=False)

    def setup(self) -> None:
        s = self.settings
        self.accelerator = acc = self._make_accelerator()
        self.device = acc.device
        resume_dir = None
        if self.resume:
            resume_dir = self.run.latest_checkpoint()
            if resume_dir is None:
                self.print(f"--resume: no checkpoint in {self.run.checkpoints}; starting a new run")
        self.state = TrainingState(stage=self.stage.name)
        if resume_dir is not None:
            self.pipe, _ = load_pipeline(resume_dir / PIPELINE_DIR)
            saved = TrainingState.read(resume_dir / STATE_FILE)
            if saved.stage != self.stage.name:
                raise MVDPPError(BAD_INPUT, f"The run in {self.run.root} trains stage {saved.stage}, not {self.stage.name}.",
                                 "Resume with the same --stage, or start the next stage in a new folder with --init-from.")
        elif s.init_from:
            self.pipe, folder = load_pipeline(s.init_from)
            self._continue_from_export(folder)
        else:
            if self.stage.decoder_only:
                raise MVDPPError(BAD_INPUT, f"{self.stage.name} fine-tunes the decoder of a trained VAE, and this run has none.",
                                 "Start it with --init-from a pipeline folder (an --export or the shipped weights).")
            from ..presets import build_pipeline

            self.pipe = build_pipeline(s.preset, seed=s.seed, prediction_type=self.stage.prediction_type or "epsilon")
            if self.stage.trains == "unet":
                self.print(f"note: {self.stage.name} starts from scratch with a random, frozen VAE; "
                           "real runs start from the VAE stage's export (--init-from)")
        if resume_dir is None and self.stage.trains == "unet":
            self._prepare_unet_stage()
        if self.stage.prediction_type and self.pipe.scheduler.config.get("prediction_type") != self.stage.prediction_type:
            # The sampler saved with the checkpoint must know what the UNet now predicts.
            self.pipe.use_scheduler(self.pipe.scheduler_name or "ddpm", prediction_type=self.stage.prediction_type)
        if s.zero_terminal_snr and not self.pipe.scheduler.config.get("rescale_betas_zero_snr", False):
            # Training noises with the pipeline's schedule and the export keeps it for sampling.
            self.pipe.use_scheduler(self.pipe.scheduler_name or "ddpm", zero_terminal_snr=True)
            self.print("note: noise schedule rescaled to zero terminal SNR (the last timestep is pure noise)")
        self.resolution = self.pipe.resolution

        self.objective = make_objective(self.pipe, self.stage, s.condition_dropout)
        trained = self.objective.trained_modules()
        for module in self.pipe.components.values():
            if isinstance(module, torch.nn.Module):
                module.requires_grad_(False).eval().to(self.device)
        for module in trained.values():
            module.requires_grad_(True).train()
            if s.gradient_checkpointing and getattr(module, "_supports_gradient_checkpointing", False):
                module.enable_gradient_checkpointing()
            if s.channels_last:
                module.to(memory_format=torch.channels_last)
        for parameter in self.objective.frozen_parameters():
            parameter.requires_grad_(False)
        self.trained_names = list(trained)
        self.ema = EMA(trained, decay=s.ema_decay)

        training = self.objective.training_modules()  # same parameters, possibly in a wrapper
        params = [p for m in trained.values() for p in m.parameters() if p.requires_grad]
        fused = self.device.type == "cuda"
        self.optimizer = torch.optim.AdamW(params, lr=s.lr(), betas=tuple(s.adam_betas), weight_decay=s.weight_decay,
                                           fused=fused, foreach=None if fused else True)
        self.lr_scheduler = torch.optim.lr_scheduler.LambdaLR(self.optimizer, self._lr_factor)
        prepared = acc.prepare(*training.values(), self.optimizer, self.lr_scheduler)
        self.models = dict(zip(training, prepared[: len(training)]))
        self.optimizer, self.lr_scheduler = prepared[len(training):]
        acc.register_for_checkpointing(self.ema)
        if resume_dir is not None:
            acc.load_state(str(resume_dir))
            self.state = TrainingState.read(resume_dir / STATE_FILE)
            self.print(f"resumed from {resume_dir} at step {self.state.step}")
            self._apply_requested_lr()
        self.forward_models = dict(self.models)
        if s.compile:
            self.forward_models = {k: torch.compile(m, mode=s.compile_mode) for k, m in self.models.items()}
        self.unwrapped = trained
        self._setup_done = True

    def _prepare_unet_stage(self) -> None:
        """What a UNet stage needs from the model it starts from: a view embedding that can learn
        (older checkpoints have a dead, paper-style zero scale), unit-variance latents (the
        VAE's scaling factor measured on a few rendered objects, mvdpp.models.mask_vae) and, with
        --fold-input-conv, no 4-channel input bottleneck."""
        from ..data.stream import MultiViewStream
        from ..models.mask_vae import calibrate_latent_scale

        unet = self.pipe.unet
        if self.settings.fold_input_conv and unet.config.reduce_input:
            from ..models.multiview_unet import fold_input_reduce

            unet = fold_input_reduce(unet)
            self.pipe.register_modules(unet=unet)
            self.print("note: folded the UNet's 1x1 input conv into its first conv; the body now reads all input channels")
        levels = self.settings.global_attention_levels
        num_levels = len(unet.config.block_out_channels)
        if levels is not None and any(not 0 <= int(v) < num_levels for v in levels):
            raise MVDPPError(BAD_INPUT, f"--global-attention-levels {levels}: this UNet has levels 0-{num_levels - 1}.",
                             "Pick levels in that range (0 = full latent resolution).")
        if levels is not None and list(unet.config.global_attention_levels or []) != sorted(levels):
            unet.register_to_config(global_attention_levels=sorted(int(v) for v in levels))
            unet.set_multiview_attention()
            self.print(f"note: self-attention now spans all views at levels {sorted(levels)}")
        if unet.view_embedding_is_dead:
            dead_scale = float(unet.view_embedding_scale.detach())
            unet.reset_view_embedding()
            self.print(f"note: the view embedding's scale was {dead_scale:.3g}, too small to learn from; "
                       "reset to scale 1 and a fresh N(0, 0.1) table")
        sample = MultiViewStream(batch_size=CALIBRATION_OBJECTS, size=self.pipe.resolution, condition_views="single",
                                 seed=self.settings.seed).make_batch(0)
        images = torch.cat([sample["cond"].flatten(0, 1), sample["gen"].flatten(0, 1)])
        std, old, new = calibrate_latent_scale(self.pipe.vae, images)
        if new != old:
            self.print(f"note: the VAE's latents had std {std:.3f}; scaling factor {old:.4g} -> {new:.4g} for unit variance")

    def _continue_from_export(self, folder: Path) -> None:
        """An export of the same stage continues its step count (fresh optimizer, new warm-up)."""
        saved_path = folder / STATE_FILE
        if not saved_path.is_file() and folder.name == PIPELINE_DIR:
            saved_path = folder.parent / STATE_FILE  # a run's checkpoint folder
        if not saved_path.is_file():
            return
        saved = TrainingState.read(saved_path)
        if saved.stage == self.stage.name:
            self.state = TrainingState(stage=saved.stage, step=saved.step, samples_seen=saved.samples_seen,
                                       warmup_origin=saved.step, data_position=saved.data_position, wall_seconds=saved.wall_seconds)
            if self.data_kind in ("cache", "cache-latents"):
                # The data is a function of the batch index, so skipping to the next cache epoch
                # loses nothing, while a part-used epoch would be rendered in full for a few steps.
                # Only here: a --resume'd run keeps its position and stays bit-exact.
                from .object_cache import next_epoch_start

                start = next_epoch_start(saved.data_position, self.settings.cache_refresh_steps, self.accelerator.num_processes)
                if start != saved.data_position:
                    self.print(f"data: starting at batch {start}, the first of the next object-cache epoch "
                               f"(skipping {start - saved.data_position} batches of a part-used one)")
                    self.state.data_position = start

    def _apply_requested_lr(self) -> None:
        """A resumed checkpoint brings back its own base learning rate; an explicit --lr replaces it
        (lowering the rate for the last steps before an export is a resume), without --lr the
        checkpoint's stays."""
        if self.settings.learning_rate is None:
            return
        schedule = getattr(self.lr_scheduler, "scheduler", self.lr_scheduler)  # accelerate's wrapper
        wanted = float(self.settings.learning_rate)
        old = schedule.base_lrs[0]
        if old == wanted:
            return
        schedule.base_lrs = [wanted for _ in schedule.base_lrs]  # every later scheduler step reads these
        for group in self.optimizer.param_groups:  # and the next optimizer step this
            group["lr"] = wanted * self._lr_factor(schedule.last_epoch)
        self.print(f"note: learning rate {old:.3g} -> {wanted:.3g} (--lr) from this step on")

    def _lr_factor(self, scheduler_step: int) -> float:
        # LambdaLR's count is saved in checkpoints (a resume keeps it) and restarts with a fresh
        # optimizer (a run continued from an export warms up again, as its Adam moments start
        # from zero).
        s = self.settings
        return learning_rate_factor(scheduler_step, s.warmup_steps, s.lr_schedule, s.lr_decay_steps)

    # ------------------------------------------------------------------ one step
    def train_step(self, batch: dict, randomness_of_step: int | None = None) -> tuple[torch.Tensor, dict]:
        """One optimizer step on ``batch``; returns the (device) loss and metrics, no host sync.

        ``randomness_of_step``: draw noise, timesteps and dropout as step N did (default: this
        step); a fixed N with a fixed batch makes a pure overfitting problem (tests).
        """
        acc = self.accelerator
        rank = acc.process_index
        noise_step = self.state.step if randomness_of_step is None else randomness_of_step
        generator = torch.Generator(device=self.device).manual_seed(step_seed(self.settings.seed, rank, noise_step))
        with acc.autocast():
            if self.stage.trains == "vae":
                loss, metrics = self.objective.loss(batch, generator, vae=self.forward_models["vae"])
            else:
                loss, metrics = self.objective.loss(batch, generator, unet=self.forward_models["unet"],
                                                    image_encoder=self.forward_models.get("image_encoder"))
        acc.backward(loss)
        with record_function("optimizer"):
            if self.settings.grad_clip > 0:
                acc.clip_grad_norm_([p for m in self.models.values() for p in m.parameters()], self.settings.grad_clip)
            self.optimizer.step()
            self.lr_scheduler.step()
            self.optimizer.zero_grad(set_to_none=True)
        with record_function("ema"):
            self.ema.update(self.unwrapped)
        self.state.step += 1
        self.state.data_position += acc.num_processes  # global batch index (see data_source)
        self.state.samples_seen += batch["cond"].shape[0] * acc.num_processes
        return loss.detach(), metrics

    def batches(self):
        s = self.settings
        acc = self.accelerator
        per_process = s.global_batch() // acc.num_processes
        if per_process * acc.num_processes != s.global_batch():
            raise MVDPPError(BAD_INPUT, f"--batch-size {s.global_batch()} does not split evenly over {acc.num_processes} processes.",
                             f"Use a multiple of {acc.num_processes}.")
        return make_batches(self.data_kind, batch_size=per_process, resolution=self.resolution, condition_mode=self.stage.condition_mode,
                            seed=s.seed, rank=acc.process_index, world_size=acc.num_processes, start=self.state.data_position,
                            device=self.device, num_workers=s.num_workers, assets=s.assets, cache_objects=s.cache_objects,
                            cache_refresh_steps=s.cache_refresh_steps, log=self.print,
                            vae=self.pipe.vae if self.stage.trains == "unet" else None, cache_prefetch=s.cache_prefetch,
                            cache_background_encode=s.cache_background_encode, cache_render_contexts=s.cache_render_contexts)

    # ------------------------------------------------------------------ the loop
    def train(self) -> TrainResult:
        if not self._setup_done:
            self.setup()
        s, acc = self.settings, self.accelerator
        started = time.monotonic()
        wall_before = self.state.wall_seconds
        if acc.is_main_process:
            self.run.create()
            self.run.settings_path.write_text(s.to_json())
        acc.wait_for_everyone()
        deadline = None if s.max_minutes is None else started + 60.0 * s.max_minutes
        self.print(f"stage {self.stage.name}: {self.stage.description}; {acc.num_processes} process(es) on {self.device}, "
                   f"precision {acc.mixed_precision}, global batch {s.global_batch()}, "
                   f"{sum(p.numel() for m in self.unwrapped.values() for p in m.parameters()) / 1e6:.2f}M trained parameters")
        data = self.batches()
        first_step = self.state.step
        sums: dict[str, torch.Tensor] = {}
        window_steps, window_start = 0, time.monotonic()
        stopped_by = "max_steps"
        preview = None
        while self.state.step < s.max_steps:
            # One process reads its clock every step (free); several agree on the stop step with a
            # collective, so only at log steps, where the loss reduce syncs anyway.
            check = acc.num_processes == 1 or self.state.step % max(1, s.log_every or 1) == 0
            if deadline is not None and check and self._should_stop(time.monotonic() >= deadline):
                stopped_by = "max_minutes"
                break
            with record_function("data"):
                try:
                    batch = next(data)
                except Exception as exc:  # noqa: BLE001 - keep the steps trained, then say what failed
                    failure = self._data_failed(exc, data, first_step, wall_before, started)
                    if failure is None:
                        raise
                    raise failure from exc
            if preview is None:
                preview = {k: v[:1] for k, v in batch.items()}
            if s.log_objects:
                self._log_objects(batch)
            loss, metrics = self.train_step(batch)
            for name, value in {"loss": loss, **metrics}.items():
                sums[name] = sums[name] + value if name in sums else value.clone()
            window_steps += 1
            step = self.state.step
            if s.log_every and (step % s.log_every == 0 or step == s.max_steps):
                self._log_window(sums, window_steps, window_start)
                sums, window_steps, window_start = {}, 0, time.monotonic()
            if s.sample_every and step % s.sample_every == 0 and preview is not None:
                self.write_samples(preview)
            if s.checkpoint_every and step % s.checkpoint_every == 0 and step < s.max_steps:
                self.state.wall_seconds = wall_before + time.monotonic() - started
                self.save_checkpoint()
        if window_steps and s.log_every:
            self._log_window(sums, window_steps, window_start)
        if s.sample_every and preview is not None and self.state.step % s.sample_every:
            self.write_samples(preview)  # the state the run ends in, if not just drawn
        checkpoint, exported = self._save_progress(wall_before + time.monotonic() - started)
        if hasattr(data, "close"):
            data.close()  # stops data-loader workers and a background cache prefetch
        if acc.is_main_process:
            self.run.log(kind="stop", step=self.state.step, stopped_by=stopped_by)
        self.print(f"stopped at step {self.state.step} ({stopped_by}); checkpoint {checkpoint}" + (f"; exported {exported}" if exported else ""))
        return TrainResult(self.state.step - first_step, self.state, stopped_by, checkpoint, exported, time.monotonic() - started)

    def _save_progress(self, wall_seconds: float) -> tuple[Path, Path | None]:
        """Checkpoint the run where it stands, and export it when --export asks: (checkpoint, export)."""
        self.state.wall_seconds = wall_seconds
        checkpoint = self.save_checkpoint()
        return checkpoint, (self.export(self.settings.export) if self.settings.export else None)

    def _data_failed(self, exc: Exception, data, first_step: int, wall_before: float, started: float) -> MVDPPError | None:
        """The data stream died (a render worker, the cache): the weights are those of the last
        finished step, so save them before the error ends the run. One process only: with
        several, the others wait in a collective and cannot join a checkpoint. Returns the error
        to raise instead of ``exc``, or None to re-raise ``exc`` (a bug, not a setting)."""
        from ..data.render import RenderTargetError

        acc = self.accelerator
        reason = _last_line(exc)
        kept = ""
        if hasattr(data, "close"):
            try:
                data.close()
            except Exception:  # noqa: BLE001 - the workers may be gone already
                pass
        if acc.num_processes == 1 and self.state.step > first_step:
            try:
                checkpoint, exported = self._save_progress(wall_before + time.monotonic() - started)
                kept = (f"The {self.state.step - first_step} steps trained are kept in {checkpoint}"
                        + (f" and exported to {exported}" if exported else "") + "; rerun the same command with --resume to continue.")
            except Exception as save_failure:  # noqa: BLE001 - report the first failure, not this one
                kept = f"Saving a checkpoint after it failed too ({_last_line(save_failure)})."
        if acc.is_main_process:
            self.run.log(kind="error", step=self.state.step, error=reason, kept=kept)
        where = f"The training data stream failed after step {self.state.step}: {reason}."
        if isinstance(exc, RenderTargetError):
            return MVDPPError(DEVICE, where, ("The renderer shares the GPU with the training step: free GPU memory with a smaller "
                              "--batch-size, --compile (single-view stages) or --gradient-checkpointing. " + kept).strip())
        self.print(where + (" " + kept if kept else ""))
        return None

    def _log_objects(self, batch: dict) -> None:
        import json

        seeds = [int(v) for v in batch["object_seed"]]
        path = self.run.root / f"objects-rank{self.accelerator.process_index}.jsonl"
        with path.open("a") as f:
            f.write(json.dumps({"step": self.state.step, "object_seed": seeds}) + "\n")

    def _should_stop(self, local: bool) -> bool:
        """Every process must stop at the same step: agree on it (a sync only when distributed)."""
        if self.accelerator.num_processes == 1:
            return local
        flag = torch.tensor([1.0 if local else 0.0], device=self.device)
        return bool(self.accelerator.reduce(flag, reduction="sum").item() > 0)

    def _log_window(self, sums: dict, steps: int, window_start: float) -> None:
        acc = self.accelerator
        names = sorted(sums)
        local = torch.stack([sums[n].float() / steps for n in names])
        averaged = acc.reduce(local, reduction="mean").tolist() if acc.num_processes > 1 else local.tolist()
        seconds = time.monotonic() - window_start
        record = {n: v for n, v in zip(names, averaged)}
        record.update(kind="train", step=self.state.step, lr=self.lr_scheduler.get_last_lr()[0], steps=steps,
                      samples_per_s=steps * self.settings.global_batch() / max(seconds, 1e-9), samples_seen=self.state.samples_seen)
        if acc.is_main_process:
            self.run.log(**record)
            self.print(f"step {self.state.step:>7}  loss {record['loss']:.4f}  lr {record['lr']:.2e}  {record['samples_per_s']:.1f} samples/s")

    # ------------------------------------------------------------------ EMA pipeline, checkpoints, export
    def ema_pipeline(self):
        """A pipeline whose trained components carry the EMA weights (fresh modules, fp32)."""
        from ..pipelines import MVDiffusionPPPipeline

        fresh = {}
        for name, module in self.unwrapped.items():
            copy = type(module).from_config(module.config)
            copy.load_state_dict(module.state_dict())
            fresh[name] = copy.to(self.device).eval()
        self.ema.copy_to(fresh)
        components = {k: v for k, v in self.pipe.components.items()}
        components.update(fresh)
        return MVDiffusionPPPipeline(**components)

    def save_checkpoint(self) -> Path:
        acc = self.accelerator
        final = self.run.checkpoint_dir(self.state.step)
        temporary = final.with_name(final.name + ".partial")
        if acc.is_main_process:
            self.run.create()
            shutil.rmtree(temporary, ignore_errors=True)
        acc.wait_for_everyone()
        acc.save_state(str(temporary))
        if acc.is_main_process:
            self.ema_pipeline().save_pretrained(temporary / PIPELINE_DIR, safe_serialization=True)
            (temporary / STATE_FILE).write_text(self.state.to_json())
            shutil.rmtree(final, ignore_errors=True)
            os.replace(temporary, final)
            self.run.prune(self.settings.keep_checkpoints)
            self.run.log(kind="checkpoint", step=self.state.step, path=str(final))
        acc.wait_for_everyone()
        return final

    def export(self, folder: str | Path) -> Path:
        """The EMA pipeline as a diffusers folder in fp16, plus the training state to continue from."""
        from .export import save_fp16_pipeline

        folder = Path(folder)
        if self.accelerator.is_main_process:
            save_fp16_pipeline(self.ema_pipeline(), folder)
            (folder / STATE_FILE).write_text(self.state.to_json())
        self.accelerator.wait_for_everyone()
        return folder

    # ------------------------------------------------------------------ sample sheets
    @torch.no_grad()
    def write_samples(self, preview: dict) -> Path | None:
        if not self.accelerator.is_main_process:
            return None
        from .sample_sheet import sample_sheet

        path = self.run.samples / f"step-{self.state.step:07d}.png"
        self.run.create()
        sample_sheet(self.ema_pipeline(), self.stage, preview, path, seed=self.settings.seed)
        self.run.log(kind="sample", step=self.state.step, path=str(path))
        return path


def _last_line(exc: BaseException) -> str:
    """The message of ``exc``; for a DataLoader worker's failure (its message is the worker's
    traceback), the traceback's last line, which names the original error."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    line = re.sub(r"^[\w.]+(Error|Exception): ", "", lines[-1]) if lines else type(exc).__name__
    return line.rstrip(".")[:300]
