"""The model on one evaluation object: its first N input views -> the 32 rig views."""

from __future__ import annotations

import numpy as np

from ..protocol import DEFAULT_GUIDANCE_RESCALE


def object_seed(base_seed: int, object_id: int, num_inputs: int) -> int:
    """The sampling seed of one (object, number of inputs) run: fixed, and independent of which
    other objects are in the run (so --limit does not change an object's figures)."""
    return int(np.random.SeedSequence([base_seed, object_id, num_inputs]).generate_state(1)[0])


def frame_like_user_inputs(image: np.ndarray, resolution: int):
    """Re-frame an input render the way `mvdpp generate` frames a user's photo
    (mvdpp.service.images.frame_object), to measure that path instead of the raw render."""
    from ..service.images import frame_object

    alpha = image[..., 3].astype(np.float32) / 255.0
    return frame_object("evaluation input", image[..., :3], alpha, resolution)


def generate_views(pipe, inputs: list[np.ndarray], steps: int, guidance: float, seed: int,
                   scheduler: str | None = None, normalise_inputs: bool = False,
                   guidance_rescale: float = DEFAULT_GUIDANCE_RESCALE,
                   guidance_interval: tuple[float, float] = (0.0, 1.0)) -> list[np.ndarray]:
    """32 generated rig views (uint8 RGBA, rig order) from RGBA input views; input 0 is azimuth 0."""
    import torch
    from PIL import Image

    if normalise_inputs:
        images = [frame_like_user_inputs(image, pipe.resolution) for image in inputs]
    else:
        # The evaluation renders already frame the object as the training renders do (same
        # cameras): feed them as they are; the pipeline resizes them to its resolution.
        images = [Image.fromarray(image, "RGBA") for image in inputs]
    with torch.inference_mode():
        output = pipe(images, num_inference_steps=steps, guidance_scale=guidance, guidance_rescale=guidance_rescale,
                      guidance_interval=guidance_interval,
                      generator=torch.Generator().manual_seed(seed),  # CPU noise: same figures on any device
                      output_type="np", scheduler=scheduler)
    views = np.asarray(output.images)
    indices = [camera.index for camera in output.cameras]
    if indices != list(range(32)):
        raise RuntimeError(f"the pipeline returned rig views {indices}, not 0-31 in order")
    return [views[i] for i in range(len(views))]
