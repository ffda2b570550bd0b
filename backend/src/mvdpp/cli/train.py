"""`mvdpp train`: train one stage of the model (docs/training.md is the runbook).

Examples:
    mvdpp train --stage vae --preset embedded --output runs/vae --max-minutes 8 --export runs/vae-export
    mvdpp train --stage unet-eps-single --init-from runs/vae-export --output runs/eps --resume
    accelerate launch --num_processes 2 -m mvdpp train --stage unet-v-mixed ...   (several GPUs)
"""

from __future__ import annotations

HELP = "train a stage of the model (VAE, then the three UNet stages) with accelerate"


def add_arguments(parser) -> None:
    from ..training.stages import STAGES, TrainSettings

    d = TrainSettings(stage="", output="")
    parser.add_argument("--stage", required=True, choices=list(STAGES), help="which stage to train (see docs/training.md)")
    parser.add_argument("--output", required=True, help="run folder: checkpoints, log.jsonl, sample sheets")
    parser.add_argument("--preset", default=d.preset, help="model preset for a run that starts from scratch (default: %(default)s)")
    parser.add_argument("--init-from", help="start from this pipeline folder (--export output) or run folder's latest checkpoint")
    parser.add_argument("--fold-input-conv", action="store_true",
                        help="UNet stages: fold an older checkpoint's 1x1 input conv into the body's first conv, so the "
                             "body reads all 9 input channels (what the small presets build; see docs/model.md)")
    parser.add_argument("--global-attention-levels", type=int, nargs="+", metavar="LEVEL",
                        help="UNet stages: levels (0 = full latent resolution) whose self-attention spans all views; "
                             "default: the model's own setting")
    parser.add_argument("--zero-terminal-snr", action="store_true",
                        help="v-prediction stages: rescale the noise schedule so its last timestep is pure noise, as "
                             "sampling starts (kept in the checkpoint; docs/training.md)")
    parser.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in --output (if any)")
    parser.add_argument("--max-steps", type=int, default=d.max_steps, help="stop at this global step (default: %(default)s)")
    parser.add_argument("--max-minutes", type=float, help="stop cleanly (and save) after this many minutes of training")
    parser.add_argument("--batch-size", type=int, help="objects per step over all processes (default: by preset)")
    parser.add_argument("--lr", type=float, dest="learning_rate", help="learning rate (default: the stage's)")
    parser.add_argument("--warmup-steps", type=int, default=d.warmup_steps)
    parser.add_argument("--lr-schedule", default=d.lr_schedule, choices=["constant", "cosine"],
                        help="after the warm-up: constant, or cosine down to zero over --lr-decay-steps (default: %(default)s)")
    parser.add_argument("--lr-decay-steps", type=int, default=d.lr_decay_steps,
                        help="--lr-schedule cosine: optimizer steps from the end of the warm-up to a rate of zero (default: %(default)s)")
    parser.add_argument("--weight-decay", type=float, default=d.weight_decay)
    parser.add_argument("--grad-clip", type=float, default=d.grad_clip, help="max gradient norm, 0 = off")
    parser.add_argument("--ema-decay", type=float, default=d.ema_decay)
    parser.add_argument("--condition-dropout", type=float, default=d.condition_dropout,
                        help="probability of training an object unconditionally (classifier-free guidance)")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--device", default=d.device, choices=["auto", "cpu", "cuda"])
    parser.add_argument("--mixed-precision", default=d.mixed_precision, choices=["auto", "no", "bf16", "fp16"],
                        help="autocast precision (auto: bf16 on CUDA, none on the CPU)")
    parser.add_argument("--gradient-checkpointing", action="store_true", help="trade compute for activation memory")
    parser.add_argument("--compile", action="store_true", help="torch.compile the trained models")
    parser.add_argument("--compile-mode", default=d.compile_mode,
                        choices=["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"],
                        help="torch.compile mode with --compile (reduce-overhead = CUDA graphs)")
    parser.add_argument("--channels-last", action="store_true", help="channels_last memory format for the convolutions")
    parser.add_argument("--data", default=d.data, choices=["procedural", "cache", "cache-latents", "synthetic"],
                        help="procedural: objects rendered on the fly per batch; cache: objects rendered into device memory "
                             "once per epoch, batches drawn there; cache-latents (UNet stages): the same with the rig views "
                             "kept as VAE latents, no VAE in the step; synthetic: random tensors (throughput tests only)")
    parser.add_argument("--cache-objects", type=int, default=d.cache_objects, help="--data cache: objects per process (default: %(default)s)")
    parser.add_argument("--cache-refresh-steps", type=int, default=d.cache_refresh_steps,
                        help="--data cache: steps per epoch, after which new objects are rendered (default: %(default)s)")
    parser.add_argument("--no-cache-prefetch", dest="cache_prefetch", action="store_false",
                        help="--data cache*: render each epoch's objects only when it starts (default: in the background "
                             "during the previous epoch, with --num-workers > 0)")
    parser.add_argument("--no-cache-background-encode", dest="cache_background_encode", action="store_false",
                        help="--data cache-latents: encode each prefetched epoch when it starts, which pauses training "
                             "(default: in the background, into a second set of latents on the device)")
    parser.add_argument("--cache-render-contexts", default=d.cache_render_contexts, choices=["per-worker", "one"],
                        help="--data cache* with --num-workers: per-worker = each worker renders in its own GL context; "
                             "one = the workers make the meshes and one process renders them (default: %(default)s)")
    parser.add_argument("--assets", help="train on the meshes of this folder (OBJ/GLB/GLTF/PLY) instead of procedural objects")
    parser.add_argument("--num-workers", type=int, default=d.num_workers, help="data-loader worker processes per training process")
    parser.add_argument("--log-every", type=int, default=d.log_every, help="steps between loss logs (the only host syncs)")
    parser.add_argument("--sample-every", type=int, default=d.sample_every, help="steps between sample sheets, 0 = never")
    parser.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every, help="steps between checkpoints (one is always written at the end)")
    parser.add_argument("--keep-checkpoints", type=int, default=d.keep_checkpoints, help="newest checkpoints kept, 0 = all")
    parser.add_argument("--export", help="write the final EMA pipeline here (diffusers folder, safetensors, fp16)")
    parser.add_argument("--log-objects", action="store_true", help="each process logs its object seeds to objects-rank<r>.jsonl")
    parser.add_argument("--export-only", action="store_true", help="do not train: export the latest checkpoint of --output to --export")


def settings_from_args(args):
    from ..training.stages import TrainSettings

    return TrainSettings(
        stage=args.stage, output=args.output, preset=args.preset, batch_size=args.batch_size, learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps, lr_schedule=args.lr_schedule, lr_decay_steps=args.lr_decay_steps,
        weight_decay=args.weight_decay, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
        condition_dropout=args.condition_dropout, max_steps=args.max_steps, max_minutes=args.max_minutes, seed=args.seed,
        device=args.device, mixed_precision=args.mixed_precision, gradient_checkpointing=args.gradient_checkpointing,
        compile=args.compile, compile_mode=args.compile_mode, channels_last=args.channels_last, log_every=args.log_every, sample_every=args.sample_every,
        checkpoint_every=args.checkpoint_every, keep_checkpoints=args.keep_checkpoints, init_from=args.init_from,
        fold_input_conv=args.fold_input_conv, global_attention_levels=args.global_attention_levels,
        zero_terminal_snr=args.zero_terminal_snr, data=args.data, num_workers=args.num_workers, assets=args.assets,
        cache_objects=args.cache_objects, cache_refresh_steps=args.cache_refresh_steps, cache_prefetch=args.cache_prefetch,
        cache_background_encode=args.cache_background_encode, cache_render_contexts=args.cache_render_contexts, export=args.export, log_objects=args.log_objects,
    )


def run(args) -> int:
    from ..errors import BAD_INPUT, MVDPPError

    settings = settings_from_args(args)
    if args.export_only:
        if not args.export:
            raise MVDPPError(BAD_INPUT, "--export-only needs --export DIR.", "Say where the pipeline folder should go.")
        from ..training.export import export_run

        folder = export_run(args.output, args.export)
        print(f"exported {folder}")
        return 0
    from ..service.job import translate_out_of_memory
    from ..training.trainer import Trainer

    # A too-large batch is a setting to change, not a bug: say which and what keeps the work.
    with translate_out_of_memory(f"training {settings.stage} at --batch-size {settings.global_batch()}", hint=TRAIN_OOM_HINT):
        Trainer(settings, resume=args.resume).train()
    return 0


TRAIN_OOM_HINT = ("Lower --batch-size (halve it), add --gradient-checkpointing, or lower --cache-objects. "
                  "unet-v-mixed needs about twice the memory of the single-view stages (up to 10 condition "
                  "views per object). Checkpoints already written are kept: rerun with --resume.")
