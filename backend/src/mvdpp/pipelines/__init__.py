"""The MVDiffusion++ pipeline and the input preparation shared with training (imports torch)."""

from .inputs import (
    ConditionEncoding,
    UNetInputs,
    build_unet_inputs,
    check_view_counts,
    encode_condition,
    null_condition_latent,
    split_views,
    view_slot_ids,
)
from .pipeline_mvdpp import MVDiffusionPPPipeline, MVDiffusionPPPipelineOutput
from .schedulers import SCHEDULERS, make_scheduler, scheduler_name

__all__ = [
    "SCHEDULERS", "ConditionEncoding", "MVDiffusionPPPipeline", "MVDiffusionPPPipelineOutput", "UNetInputs",
    "build_unet_inputs", "check_view_counts", "encode_condition", "make_scheduler", "null_condition_latent",
    "scheduler_name", "split_views", "view_slot_ids",
]
