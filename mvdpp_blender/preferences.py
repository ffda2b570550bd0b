"""Add-on preferences: which Python runs the backend, its checkpoint and device, where results go."""

from __future__ import annotations

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty

ADDON_ID = __package__


def get_preferences(context=None):
    """This extension's preferences, or None when it is imported without being enabled."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


class MVDPP_AddonPreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend_source: EnumProperty(
        name="Backend",
        description="Which Python interpreter runs the model",
        items=[
            ("MANAGED", "Managed environment", "A virtual environment this extension creates and installs (Install Backend)"),
            ("CUSTOM", "Existing interpreter", "A Python interpreter you already have, with the mvdpp package installed"),
        ],
        default="MANAGED",
    )
    custom_python: StringProperty(
        name="Python Interpreter",
        description="Python executable of an environment where `pip install mvdpp-<version>.whl` was run",
        subtype="FILE_PATH",
    )
    pip_arguments: StringProperty(
        name="Extra pip Arguments",
        description=(
            "Added to the install command, e.g. '--index-url https://download.pytorch.org/whl/cu124' for a "
            "specific CUDA build of PyTorch, or '--no-index --find-links /wheels' to install offline"
        ),
    )
    checkpoint: StringProperty(
        name="Checkpoint",
        description="Folder of a trained MVD++ pipeline; empty uses the checkpoint embedded in the backend",
        subtype="DIR_PATH",
    )
    device: EnumProperty(
        name="Device",
        items=[
            ("auto", "Automatic", "The GPU when PyTorch finds one, otherwise the CPU"),
            ("cuda", "CUDA GPU", "An NVIDIA GPU (fails with a hint when none is usable)"),
            ("cpu", "CPU", "Slow but works everywhere"),
        ],
        default="auto",
    )
    low_vram: BoolProperty(
        name="Low VRAM",
        description="Trade speed for memory (offloads model parts, smaller batches): for GPUs with 4-8 GB",
        default=False,
    )
    t2i_model: StringProperty(
        name="Text-to-Image Model",
        description=("For generating from a prompt: a diffusers text-to-image pipeline folder, or a Hugging Face "
                     "hub id such as 'stabilityai/sd-turbo' (downloaded once; needs online access)"),
        default="stabilityai/sd-turbo",
    )
    results_folder: StringProperty(
        name="Results Folder",
        description="Where generated results are written; empty uses this extension's user folder",
        subtype="DIR_PATH",
    )

    def draw(self, context):
        from . import backend_manager

        layout = self.layout
        layout.use_property_split = True
        column = layout.column()
        column.prop(self, "backend_source", expand=True)
        if self.backend_source == "MANAGED":
            box = column.box()
            installer = backend_manager.installer
            venv = backend_manager.managed_venv_dir()
            box.label(text=f"Environment: {venv}", icon="FILE_FOLDER")
            row = box.row(align=True)
            if installer.running:
                row.label(text=installer.status_line, icon="SORTTIME")
            else:
                ready = backend_manager.managed_backend_installed()
                label = "Reinstall Backend" if ready else "Install Backend"
                row.operator("mvdpp.install_backend", text=label, icon="IMPORT")
                if backend_manager.managed_python().is_file():
                    row.operator("mvdpp.remove_backend", text="", icon="TRASH")
            if not bpy.app.online_access:
                box.label(text="Online access is off (Preferences > System > Network)", icon="INFO")
            box.prop(self, "pip_arguments")
            if installer.error:
                col = box.column(align=True)
                col.alert = True
                col.label(text=installer.error, icon="ERROR")
                if installer.hint:
                    col.label(text=installer.hint)
            if installer.log_tail:
                col = box.column(align=True)
                col.scale_y = 0.7
                for line in installer.log_tail[-8:]:
                    col.label(text=line[:160])
                box.operator("mvdpp.open_install_log", icon="TEXT")
        else:
            column.prop(self, "custom_python")
        layout.separator()
        column = layout.column()
        column.prop(self, "checkpoint")
        column.prop(self, "device")
        column.prop(self, "low_vram")
        column.prop(self, "results_folder")
        column.prop(self, "t2i_model")
        from .generation import is_hub_id

        if is_hub_id(self.t2i_model) and not bpy.app.online_access:
            column.label(text="A hub id needs online access (Preferences > System > Network), or use a folder", icon="INFO")
        layout.separator()
        row = layout.row()
        row.label(text=f"Backend: {backend_manager.session.state_label()}")
        row.operator("mvdpp.stop_backend", icon="CANCEL")


classes = (MVDPP_AddonPreferences,)


register, unregister = bpy.utils.register_classes_factory(classes)
