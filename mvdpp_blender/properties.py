"""Per-scene settings and reference images (saved in the .blend) and the live job status (not saved)."""

from __future__ import annotations

import bpy
from bpy.props import (
    BoolProperty,
    CollectionProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    PointerProperty,
    StringProperty,
)

from .generation import DEFAULT_SETTINGS

SCHEDULERS = [
    ("auto", "Checkpoint Default", "The sampler the checkpoint was trained and tuned with"),
    ("dpm++", "DPM++", "DPM-Solver++ multistep: good views in few steps"),
    ("ddim", "DDIM", "Deterministic DDIM sampling"),
    ("euler", "Euler", "Euler discrete sampling"),
    ("ddpm", "DDPM", "Ancestral DDPM sampling, as in the paper: adds fresh noise at each step (the embedded model's default)"),
]
MESH_DETAILS = [
    ("auto", "Automatic", "Draft: generated views are too soft for a finer grid to add detail"),
    ("draft", "Draft", "Fast, coarse mesh"),
    ("standard", "Standard", "Balanced"),
    ("high", "High", "Finest mesh, slowest"),
]


class MVDPP_ReferenceImage(bpy.types.PropertyGroup):
    image: PointerProperty(type=bpy.types.Image, name="Image")


class MVDPP_SceneSettings(bpy.types.PropertyGroup):
    source: EnumProperty(
        name="Source",
        description="What the views are generated from",
        items=[("IMAGES", "Images", "Reference images of the object"),
               ("PROMPT", "Text", "A text prompt: a text-to-image model (Preferences) makes the reference image first")],
        default="IMAGES",
    )
    prompt: StringProperty(name="Prompt", description="Describe one object, e.g. 'a red ceramic teapot'", default="")
    images: CollectionProperty(type=MVDPP_ReferenceImage)
    active_image_index: IntProperty(name="Active Reference Image", default=0)

    steps: IntProperty(name="Steps", description="Denoising steps: more is slower and finer", default=DEFAULT_SETTINGS["steps"], min=1, max=200)
    guidance: FloatProperty(name="Guidance", description="How closely the views follow the reference images",
                            default=DEFAULT_SETTINGS["guidance"], min=1.0, max=20.0, step=10, precision=1)
    guidance_rescale: FloatProperty(name="Guidance Rescale",
                                    description="Keeps strong guidance from over-exposing the views (0 = off)",
                                    default=DEFAULT_SETTINGS["guidance_rescale"], min=0.0, max=1.0, step=10, precision=2)
    seed: IntProperty(name="Seed", description="Same seed and settings give the same result", default=0, min=0)
    random_seed: BoolProperty(name="Random Seed", description="Pick a new seed for every generation", default=False)
    scheduler: EnumProperty(name="Scheduler", items=SCHEDULERS, default="auto")
    mesh_detail: EnumProperty(name="Mesh Detail", items=MESH_DETAILS, default="auto")
    import_views: BoolProperty(name="Import Views", description="Add the 32 cameras with their generated views", default=True)
    import_mesh: BoolProperty(name="Import Mesh", description="Reconstruct and add the coloured mesh", default=True)


class MVDPP_Status(bpy.types.PropertyGroup):
    """What the panel shows about the backend and the running job (lives on the window manager)."""

    running: BoolProperty(default=False)
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    status_text: StringProperty(default="")
    backend_state: StringProperty(default="")
    last_error: StringProperty(default="")
    last_hint: StringProperty(default="")
    last_result: StringProperty(default="", subtype="DIR_PATH")
    #: the image the text-to-image model made for the running (or last) prompt job (a bpy.data.images name)
    condition_image: StringProperty(default="")


classes = (MVDPP_ReferenceImage, MVDPP_SceneSettings, MVDPP_Status)


register_classes, unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    register_classes()
    bpy.types.Scene.mvdpp = PointerProperty(type=MVDPP_SceneSettings)
    bpy.types.WindowManager.mvdpp_status = PointerProperty(type=MVDPP_Status)


def unregister():
    del bpy.types.WindowManager.mvdpp_status
    del bpy.types.Scene.mvdpp
    unregister_classes()
