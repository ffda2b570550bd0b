"""The training stages and the settings of one training run (torch-free).

The paper trains the UNet in three stages (PAPER.md, "Training"); this project adds a first
stage for its own mask-aware VAE, because the embedded preset trains everything from scratch:

    vae              RGBA in / RGBA out autoencoder: reconstruction (+ object pixels) + mask BCE + KL
    vae-decoder      the VAE's decoder alone, encoder frozen: the latents every UNet stage
                     learned stay exactly the same, so a trained UNet keeps working with it
    unet-eps-single  epsilon-prediction, one condition view
    unet-v-single    v-prediction, one condition view       (--init-from the previous stage)
    unet-v-mixed     v-prediction, 50% one view / 50% 2-10 views (--init-from the previous stage)

The paper gives no learning rates; the ones here are the usual AdamW choices for diffusion
models trained from scratch (1e-4), halved for the fine-tuning stages.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import BAD_INPUT, MVDPPError


@dataclass(frozen=True)
class Stage:
    name: str
    #: which model the stage trains: "vae" or "unet" (the UNet stages also train a trainable
    #: image encoder; the VAE is frozen there and latents are computed on the fly)
    trains: str
    #: the scheduler's prediction_type for UNet stages ("epsilon" | "v_prediction")
    prediction_type: str | None
    #: MultiViewStream's condition-count mode: "single" | "sparse" | "mixed"
    condition_mode: str
    learning_rate: float
    description: str
    #: VAE stages: train the decoder only, the encoder (and so every latent) stays as it is
    decoder_only: bool = False


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("vae", "vae", None, "single", 1e-4, "mask-aware VAE: RGBA reconstruction with extra weight on the object, mask BCE, KL"),
        Stage("vae-decoder", "vae", None, "single", 1e-4,
              "VAE decoder only (encoder frozen, latents unchanged): RGBA reconstruction with extra weight on the object, mask BCE",
              decoder_only=True),
        Stage("unet-eps-single", "unet", "epsilon", "single", 1e-4, "UNet, epsilon-prediction, one condition view"),
        Stage("unet-v-single", "unet", "v_prediction", "single", 5e-5, "UNet, v-prediction, one condition view"),
        Stage("unet-v-mixed", "unet", "v_prediction", "mixed", 5e-5, "UNet, v-prediction, 50% one view / 50% 2-10 views"),
    )
}

#: Objects per optimizer step (summed over all processes) when --batch-size is not given.
#: tiny is for tests on the CPU; the others are sized for one H100 (the embedded recipe's batch
#: is the one `mvdpp bench train` measures).
DEFAULT_GLOBAL_BATCH = {"tiny": 2, "small": 16, "embedded": 32, "paper": 8}


def get_stage(name: str) -> Stage:
    try:
        return STAGES[name]
    except KeyError:
        raise MVDPPError(BAD_INPUT, f"Unknown training stage {name!r}.", f"Choose one of: {', '.join(STAGES)}.") from None


@dataclass
class TrainSettings:
    """Everything that defines a training run. Saved as ``settings.json`` in the run folder."""

    stage: str
    output: str
    preset: str = "embedded"
    #: objects per optimizer step over all processes (None = DEFAULT_GLOBAL_BATCH[preset])
    batch_size: int | None = None
    learning_rate: float | None = None  # None = the stage's
    warmup_steps: int = 500
    #: after the warm-up: "constant", or "cosine" (down to zero over lr_decay_steps optimizer
    #: steps, then zero). Counted from this run's start, or from the checkpoint it resumes.
    lr_schedule: str = "constant"
    lr_decay_steps: int = 1000
    weight_decay: float = 0.01
    adam_betas: tuple = (0.9, 0.999)
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    #: probability that an object's condition is replaced by the model's unconditional input
    #: (classifier-free guidance)
    condition_dropout: float = 0.1
    max_steps: int = 100_000
    #: stop cleanly (and save) once this much wall time has passed; None = no limit
    max_minutes: float | None = None
    seed: int = 0
    device: str = "auto"  # auto | cpu | cuda
    mixed_precision: str = "auto"  # auto (bf16 on CUDA, no on CPU) | no | bf16 | fp16
    gradient_checkpointing: bool = False
    compile: bool = False
    #: torch.compile mode: "default", "reduce-overhead" (CUDA graphs), "max-autotune", ...
    compile_mode: str = "default"
    channels_last: bool = False
    log_every: int = 50
    sample_every: int = 1000
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    #: a diffusers pipeline folder or a previous run folder whose (EMA) weights start this run
    init_from: str | None = None
    #: UNet stages started from a model with the paper's 1x1 input conv: fold it into the body's
    #: first conv (mvdpp.models.multiview_unet.fold_input_reduce), as the small presets now build
    fold_input_conv: bool = False
    #: UNet stages: the resolution levels whose self-attention spans all views (None = keep the
    #: model's); the attention weights are the same at every setting, so a run can change it
    global_attention_levels: list | None = None
    #: v-prediction stages: switch the checkpoint's noise schedule to zero terminal SNR (its last
    #: timestep pure noise, as sampling starts; docs/training.md, session 8). Stays in the export.
    zero_terminal_snr: bool = False
    #: training data: "procedural" (rendered on the fly, batch by batch), "cache" (objects rendered
    #: into device memory once per epoch, batches drawn there), "cache-latents" (UNet stages: the
    #: same, kept as VAE latents) or "synthetic" (benchmarks only)
    data: str = "procedural"
    #: objects per process in the device cache, and steps before it is re-rendered with new objects
    cache_objects: int = 1024
    cache_refresh_steps: int = 500
    #: render the next epoch's objects in the background (worker processes) while training
    cache_prefetch: bool = True
    #: cache-latents with prefetch: encode the next epoch in the background too (a second set of
    #: latents on the device) instead of at the epoch switch
    cache_background_encode: bool = True
    #: with worker processes: "per-worker" GL contexts, or "one" render process fed meshes by them
    cache_render_contexts: str = "per-worker"
    num_workers: int = 0
    #: a folder of meshes (OBJ/GLB/GLTF/PLY) to train on instead of procedural objects
    assets: str | None = None
    export: str | None = None
    #: each process appends the object seeds of its batches to objects-rank<r>.jsonl (to check
    #: that processes see different objects)
    log_objects: bool = False
    extra: dict = field(default_factory=dict)

    def resolved_stage(self) -> Stage:
        return get_stage(self.stage)

    def global_batch(self) -> int:
        return int(self.batch_size or DEFAULT_GLOBAL_BATCH.get(self.preset, 8))

    def lr(self) -> float:
        return float(self.learning_rate if self.learning_rate is not None else self.resolved_stage().learning_rate)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "TrainSettings":
        data = json.loads(text)
        known = {f.name for f in dataclasses.fields(cls)}
        data = {k: v for k, v in data.items() if k in known}
        if "adam_betas" in data:
            data["adam_betas"] = tuple(data["adam_betas"])
        return cls(**data)

    def validate(self) -> None:
        from ..presets import get_preset

        stage = self.resolved_stage()
        get_preset(self.preset)
        if self.global_batch() < 1:
            raise MVDPPError(BAD_INPUT, f"--batch-size must be at least 1 (got {self.batch_size}).", "Pass a positive number of objects per step.")
        if not 0.0 <= self.condition_dropout < 1.0:
            raise MVDPPError(BAD_INPUT, f"--condition-dropout must be in [0, 1) (got {self.condition_dropout}).", "0.1 is the usual value.")
        if not 0.0 <= self.ema_decay < 1.0:
            raise MVDPPError(BAD_INPUT, f"--ema-decay must be in [0, 1) (got {self.ema_decay}).", "0.999 is the usual value.")
        if self.data == "cache-latents" and stage.trains != "unet":
            raise MVDPPError(BAD_INPUT, "--data cache-latents needs a frozen VAE: it serves the UNet stages only.",
                             "Use --data cache for the vae stage.")
        if self.compile and stage.trains == "unet" and stage.condition_mode != "single":
            # Measured: PyTorch's dynamic-shape compile of this UNet fails inside inductor, and
            # static shapes would recompile for each of the 10 condition counts.
            raise MVDPPError(BAD_INPUT, f"--compile does not work with stage {stage.name}: it draws 1-10 condition views per "
                             "batch, and the compiled UNet needs one fixed count.",
                             "Train this stage without --compile; the single-view stages compile (1.3-1.7x faster steps).")
        if self.zero_terminal_snr and stage.prediction_type != "v_prediction":
            # At zero SNR the last timestep's input is pure noise: the noise itself is no target.
            raise MVDPPError(BAD_INPUT, f"--zero-terminal-snr needs a v-prediction stage; {stage.name} predicts "
                             f"{stage.prediction_type or 'no noise'}.",
                             "Use it with unet-v-single or unet-v-mixed (the paper's stages 2 and 3).")
        if self.max_minutes is not None and self.max_minutes <= 0:
            raise MVDPPError(BAD_INPUT, f"--max-minutes must be positive (got {self.max_minutes}).", "Leave it out for no time limit.")
        if self.mixed_precision not in ("auto", "no", "bf16", "fp16"):
            raise MVDPPError(BAD_INPUT, f"Unknown --mixed-precision {self.mixed_precision!r}.", "Use auto, no, bf16 or fp16.")
        if self.device not in ("auto", "cpu", "cuda"):
            raise MVDPPError(BAD_INPUT, f"Unknown --device {self.device!r}.", "Use auto, cpu or cuda.")
        if self.init_from is not None and not Path(self.init_from).exists():
            raise MVDPPError(BAD_INPUT, f"--init-from folder {self.init_from} does not exist.", "Give a pipeline folder (--export output) or a run folder.")
        if self.export:
            from .run_folder import check_export_target

            check_export_target(self.export)
        for name in ("log_every", "sample_every", "checkpoint_every", "keep_checkpoints", "max_steps"):
            if getattr(self, name) < 0:
                raise MVDPPError(BAD_INPUT, f"--{name.replace('_', '-')} must not be negative.", "")
