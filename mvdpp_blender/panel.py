"""The sidebar panel: 3D Viewport > Sidebar (N) > MVD++."""

from __future__ import annotations

import bpy

from . import backend_manager

STATE_ICONS = {"NOT_INSTALLED": "ERROR", "STOPPED": "RADIOBUT_OFF", "STARTING": "SORTTIME", "READY": "CHECKMARK",
               "BUSY": "SORTTIME"}


class MVDPP_UL_reference_images(bpy.types.UIList):
    def draw_item(self, context, layout, data, item, icon, active_data, active_propname, index):
        image = item.image
        if image is None:
            layout.label(text="(missing image)", icon="ERROR")
            return
        row = layout.row(align=True)
        row.label(text=image.name, icon_value=layout.icon(image))
        if index == 0:
            row.label(text="front", icon="ORIENTATION_VIEW")


class MVDPP_PT_main(bpy.types.Panel):
    bl_idname = "MVDPP_PT_main"
    bl_label = "MVD++ Image/Text to 3D"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "MVD++"

    def draw(self, context):
        layout = self.layout
        props = context.scene.mvdpp
        status = context.window_manager.mvdpp_status
        session = backend_manager.session

        layout.row().prop(props, "source", expand=True)
        if props.source == "PROMPT":
            _draw_prompt(context, layout, props)
        else:
            _draw_images(layout, props)

        running = session.job is not None and not session.job.finished
        row = layout.row(align=True)
        row.scale_y = 1.5
        if running:
            row.operator("mvdpp.cancel", icon="CANCEL")
        else:
            row.enabled = bool(props.prompt.strip()) if props.source == "PROMPT" else len(props.images) > 0
            row.operator("mvdpp.generate", icon="PLAY")
        if running:
            layout.progress(factor=session.job.fraction, type="BAR", text=session.job.status_text())
        elif status.status_text:
            layout.label(text=status.status_text)

        state = session.state()
        row = layout.row()
        row.label(text=f"Backend: {session.state_label()}", icon=STATE_ICONS.get(state, "NONE"))
        if state == "NOT_INSTALLED":
            op = row.operator("preferences.addon_show", text="", icon="PREFERENCES")
            op.module = __package__

        if status.last_error:
            box = layout.box()
            col = box.column(align=True)
            col.alert = True
            col.label(text=status.last_error, icon="ERROR")
            if status.last_hint:
                for line in _wrap(status.last_hint, 48):
                    col.label(text=line)


class _MVDPPSubPanel:
    """Where the collapsible sections of the MVD++ tab live (under the main panel)."""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = "MVD++"
    bl_parent_id = "MVDPP_PT_main"
    bl_options = {"DEFAULT_CLOSED"}


class MVDPP_PT_settings(_MVDPPSubPanel, bpy.types.Panel):
    bl_label = "Settings"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = context.scene.mvdpp
        col = layout.column()
        col.prop(props, "steps")
        col.prop(props, "guidance")
        col.prop(props, "guidance_rescale")
        row = col.row(align=True)
        sub = row.row(align=True)
        sub.enabled = not props.random_seed
        sub.prop(props, "seed")
        row.prop(props, "random_seed", text="", icon="FILE_REFRESH")
        col.prop(props, "scheduler")
        col.prop(props, "mesh_detail")
        col = layout.column(heading="Import")
        col.prop(props, "import_views", text="Views and Cameras")
        col.prop(props, "import_mesh", text="Mesh")


class MVDPP_PT_result(_MVDPPSubPanel, bpy.types.Panel):
    bl_label = "Result"

    def draw(self, context):
        layout = self.layout
        layout.operator("mvdpp.import_result", icon="IMPORT")
        row = layout.row(align=True)
        row.operator("mvdpp.view_result_camera", icon="VIEW_CAMERA")
        row.operator("mvdpp.show_all_views", text="", icon="HIDE_OFF")
        layout.operator("mvdpp.open_results_folder", icon="FILE_FOLDER")


def _draw_prompt(context, layout, props):
    from . import generation
    from .preferences import get_preferences

    layout.prop(props, "prompt", text="", icon="TEXT")
    prefs = get_preferences(context)
    model = prefs.t2i_model if prefs is not None else ""
    row = layout.row()
    row.label(text=f"Model: {model or '(not set)'}", icon="IMAGE_DATA")
    op = row.operator("preferences.addon_show", text="", icon="PREFERENCES")
    op.module = __package__
    if model and generation.is_hub_id(model) and not bpy.app.online_access:
        layout.label(text="Downloading it needs online access", icon="ERROR")
    # the generated reference image, shown as soon as the backend made it (before the views)
    image = bpy.data.images.get(context.window_manager.mvdpp_status.condition_image)
    if image is not None:
        preview = image.preview_ensure() if hasattr(image, "preview_ensure") else image.preview
        if preview is not None:
            layout.template_icon(icon_value=preview.icon_id, scale=6.0)

def _draw_images(layout, props):
    layout.label(text="Reference Images (first = front)")
    row = layout.row()
    row.template_list("MVDPP_UL_reference_images", "", props, "images", props, "active_image_index", rows=3)
    buttons = row.column(align=True)
    buttons.operator("mvdpp.add_image_files", icon="FILEBROWSER", text="")
    buttons.operator("mvdpp.add_blend_image", icon="IMAGE_DATA", text="")
    buttons.operator("mvdpp.add_selected_images", icon="RESTRICT_SELECT_OFF", text="")
    buttons.separator()
    buttons.operator("mvdpp.remove_image", icon="REMOVE", text="")
    buttons.separator()
    buttons.operator("mvdpp.move_image", icon="TRIA_UP", text="").direction = "UP"
    buttons.operator("mvdpp.move_image", icon="TRIA_DOWN", text="").direction = "DOWN"
    if 0 <= props.active_image_index < len(props.images):
        image = props.images[props.active_image_index].image
        if image is not None:
            preview = image.preview_ensure() if hasattr(image, "preview_ensure") else image.preview
            if preview is not None:
                layout.template_icon(icon_value=preview.icon_id, scale=6.0)
    if len(props.images) > 10:
        layout.label(text="At most 10 reference images are used", icon="ERROR")


def _wrap(text: str, width: int) -> list[str]:
    lines, line = [], ""
    for word in text.split():
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = f"{line} {word}".strip()
    return lines + ([line] if line else [])


classes = (MVDPP_UL_reference_images, MVDPP_PT_main, MVDPP_PT_settings, MVDPP_PT_result)


register, unregister = bpy.utils.register_classes_factory(classes)
