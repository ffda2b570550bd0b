"""Operators: the reference-image list, Generate/Cancel, importing a result, managing the backend."""

from __future__ import annotations

import os
from pathlib import Path

import bpy
from bpy.props import CollectionProperty, EnumProperty, StringProperty
from bpy.types import Operator, OperatorFileListElement

from . import backend_manager, generation
from .blender import importer
from .preferences import get_preferences

IMAGE_EXTENSIONS = {".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp", ".exr", ".tga"}


def _images_list(context):
    return context.scene.mvdpp.images


def _add_images(context, images) -> int:
    props = context.scene.mvdpp
    present = {item.image for item in props.images}
    added = 0
    for image in images:
        if image is None or image in present:
            continue
        props.images.add().image = image
        present.add(image)
        added += 1
    if added:
        props.active_image_index = len(props.images) - 1
    return added


class MVDPP_OT_add_image_files(Operator):
    """Add reference images from files"""

    bl_idname = "mvdpp.add_image_files"
    bl_label = "Add Images from Files"
    bl_options = {"REGISTER", "UNDO"}

    files: CollectionProperty(type=OperatorFileListElement, options={"HIDDEN", "SKIP_SAVE"})
    directory: StringProperty(subtype="DIR_PATH", options={"HIDDEN", "SKIP_SAVE"})
    filter_image: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})
    filter_folder: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        images, failed = [], []
        for entry in self.files:
            path = Path(self.directory) / entry.name
            if path.suffix.lower() not in IMAGE_EXTENSIONS or not path.is_file():
                failed.append(entry.name)
                continue
            try:
                images.append(bpy.data.images.load(str(path), check_existing=True))
            except RuntimeError:
                failed.append(entry.name)
        added = _add_images(context, images)
        if failed:
            self.report({"WARNING"}, f"Not images Blender can read: {', '.join(failed)}")
        if not added and not failed:
            self.report({"INFO"}, "No new images (already in the list)")
        return {"FINISHED"} if added else {"CANCELLED"}


def _blend_image_items(self, context):
    items = []
    for i, image in enumerate(bpy.data.images):
        if image.type in {"IMAGE"} and image.source in {"FILE", "GENERATED"}:
            items.append((image.name, image.name, "", i))
    return items or [("", "No images in this file", "")]


class MVDPP_OT_add_blend_image(Operator):
    """Add an image that is already in this .blend file"""

    bl_idname = "mvdpp.add_blend_image"
    bl_label = "Add Image from Blend File"
    bl_options = {"REGISTER", "UNDO"}
    bl_property = "image"

    image: EnumProperty(name="Image", items=_blend_image_items)

    def invoke(self, context, event):
        context.window_manager.invoke_search_popup(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        image = bpy.data.images.get(self.image)
        if image is None:
            self.report({"WARNING"}, "Choose an image")
            return {"CANCELLED"}
        if not _add_images(context, [image]):
            self.report({"INFO"}, f"'{image.name}' is already in the list")
            return {"CANCELLED"}
        return {"FINISHED"}


def images_of_object(obj) -> list:
    """The images an object shows: an image empty's image, or an image plane's texture(s)."""
    if obj.type == "EMPTY" and obj.empty_display_type == "IMAGE" and obj.data is not None:
        return [obj.data]
    found = []
    if obj.type == "MESH":
        for slot in obj.material_slots:
            material = slot.material
            if material is None or material.node_tree is None:
                continue
            for node in material.node_tree.nodes:
                if node.type == "TEX_IMAGE" and node.image is not None and node.image not in found:
                    found.append(node.image)
    return found


class MVDPP_OT_add_selected_images(Operator):
    """Add the images shown by the selected image empties and image planes"""

    bl_idname = "mvdpp.add_selected_images"
    bl_label = "Add Images from Selected Objects"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return bool(context.selected_objects)

    def execute(self, context):
        # the active object first: it is the natural "front" view to pick
        objects = sorted(context.selected_objects, key=lambda o: (o != context.active_object, o.name))
        images = [image for obj in objects for image in images_of_object(obj)]
        if not images:
            self.report({"WARNING"}, "The selection has no image empties or image planes")
            return {"CANCELLED"}
        added = _add_images(context, images)
        self.report({"INFO"}, f"Added {added} image(s)")
        return {"FINISHED"} if added else {"CANCELLED"}


class MVDPP_OT_remove_image(Operator):
    """Remove the active reference image from the list (the image stays in the file)"""

    bl_idname = "mvdpp.remove_image"
    bl_label = "Remove Reference Image"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return len(_images_list(context)) > 0

    def execute(self, context):
        props = context.scene.mvdpp
        index = props.active_image_index
        if not 0 <= index < len(props.images):
            return {"CANCELLED"}
        props.images.remove(index)
        props.active_image_index = min(index, len(props.images) - 1)
        return {"FINISHED"}


class MVDPP_OT_move_image(Operator):
    """Move the active reference image up or down (the first one defines azimuth 0)"""

    bl_idname = "mvdpp.move_image"
    bl_label = "Move Reference Image"
    bl_options = {"REGISTER", "UNDO"}

    direction: EnumProperty(items=[("UP", "Up", ""), ("DOWN", "Down", "")])

    @classmethod
    def poll(cls, context):
        return len(_images_list(context)) > 1

    def execute(self, context):
        props = context.scene.mvdpp
        index = props.active_image_index
        target = index - 1 if self.direction == "UP" else index + 1
        if not (0 <= index < len(props.images) and 0 <= target < len(props.images)):
            return {"CANCELLED"}
        props.images.move(index, target)
        props.active_image_index = target
        return {"FINISHED"}


class MVDPP_OT_generate(Operator):
    """Generate 32 views and a mesh from the reference images or the prompt (runs in the background; Esc cancels)"""

    bl_idname = "mvdpp.generate"
    bl_label = "Generate"
    bl_options = {"REGISTER", "UNDO"}  # Ctrl+Z removes an imported result in one step

    _timer = None
    _job = None

    @classmethod
    def poll(cls, context):
        job = backend_manager.session.job
        if job is not None and not job.finished:
            cls.poll_message_set("A generation is already running")
            return False
        return True

    def _submit(self, context):
        try:
            props = context.scene.mvdpp
            if props.source == "PROMPT":
                context.window_manager.mvdpp_status.condition_image = ""
                return generation.start([], generation.scene_settings(context.scene), prompt=props.prompt)
            paths = generation.reference_paths([item.image for item in props.images])
            return generation.start(paths, generation.scene_settings(context.scene))
        except generation.GenerationError as exc:
            generation.report_error(context.window_manager, exc.message, exc.hint)
            self.report({"ERROR"}, str(exc))
            return None

    def invoke(self, context, event):
        status = context.window_manager.mvdpp_status
        status.last_error = status.last_hint = ""
        job = self._submit(context)
        if job is None:
            return {"CANCELLED"}
        self._job = job
        generation.sync_status(context.window_manager)
        self._timer = context.window_manager.event_timer_add(0.1, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        # Called from scripts (bpy.ops.mvdpp.generate()): run to completion, like api.generate
        job = self._submit(context)
        if job is None:
            return {"CANCELLED"}
        from . import api

        api.wait(job)
        return self._finish(context, job)

    def modal(self, context, event):
        job = self._job
        if event.type == "ESC" and event.value == "PRESS":
            backend_manager.session.cancel()
            self.report({"INFO"}, "Cancelling...")
        elif event.type == "TIMER":
            backend_manager.session.poll()
            generation.sync_status(context.window_manager)
            if context.area is not None:
                context.area.tag_redraw()
        if job.finished:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None
            return self._finish(context, job)
        return {"PASS_THROUGH"}

    def cancel(self, context):
        # Blender ends modal operators itself, e.g. when another file is opened: stop the job too
        backend_manager.session.cancel()
        if self._timer is not None:
            context.window_manager.event_timer_remove(self._timer)
            self._timer = None

    def _finish(self, context, job):
        status = context.window_manager.mvdpp_status
        status.running = False
        status.progress = 0.0
        generation.sync_status(context.window_manager)
        if job.outcome == "result":
            try:
                collection = generation.import_job_result(context, job)
            except generation.GenerationError as exc:
                generation.report_error(context.window_manager, exc.message, exc.hint)
                self.report({"ERROR"}, str(exc))
                return {"CANCELLED"}
            status.last_result = job.folder or ""
            status.status_text = f"Imported {collection.name}"
            if job.warning:  # e.g. the views were kept but no mesh could be made from them
                generation.report_error(context.window_manager, job.warning, "")
                self.report({"WARNING"}, f"MVD++: imported {collection.name}. {job.warning}")
            else:
                self.report({"INFO"}, f"MVD++: imported {collection.name}")
            return {"FINISHED"}
        if job.outcome == "cancelled":
            status.status_text = "Cancelled"
            self.report({"INFO"}, "MVD++: generation cancelled")
            return {"CANCELLED"}
        generation.report_error(context.window_manager, job.error_message, job.error_hint)
        status.status_text = "Failed"
        self.report({"ERROR"}, f"{job.error_message} ({job.error_hint})" if job.error_hint else job.error_message)
        return {"CANCELLED"}


class MVDPP_OT_cancel(Operator):
    """Cancel the running generation"""

    bl_idname = "mvdpp.cancel"
    bl_label = "Cancel"

    @classmethod
    def poll(cls, context):
        job = backend_manager.session.job
        return job is not None and not job.finished

    def execute(self, context):
        backend_manager.session.cancel()
        return {"FINISHED"}


class MVDPP_OT_import_result(Operator):
    """Import an MVD++ result folder (cameras, views and mesh) at the 3D cursor"""

    bl_idname = "mvdpp.import_result"
    bl_label = "Import MVD++ Result"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(subtype="DIR_PATH")
    import_views: bpy.props.BoolProperty(name="Import Views", default=True)
    import_mesh: bpy.props.BoolProperty(name="Import Mesh", default=True)
    filter_folder: bpy.props.BoolProperty(default=True, options={"HIDDEN", "SKIP_SAVE"})

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            collection = importer.import_result(context, bpy.path.abspath(self.directory),
                                                import_views=self.import_views, import_mesh=self.import_mesh)
        except importer.ImportFailed as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"Imported {collection.name}")
        return {"FINISHED"}


def _result_collection(obj):
    """The collection of the imported result an object belongs to (the one holding its root empty)."""
    root = obj
    while root.parent is not None:
        root = root.parent
    return next((c for c in root.users_collection if importer.PROPERTY_PREFIX + "folder" in c), None)


class MVDPP_OT_view_result_camera(Operator):
    """Look through the active result camera (or view plane): it becomes the scene camera and the
    other views' planes are hidden, so the viewport and renders show exactly this view"""

    bl_idname = "mvdpp.view_result_camera"
    bl_label = "Look Through View"
    bl_options = {"REGISTER", "UNDO"}

    isolate: bpy.props.BoolProperty(name="Hide Other Views", default=True)

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and importer.PROPERTY_PREFIX + "view_index" in obj

    def execute(self, context):
        obj = context.active_object
        camera = obj if obj.type == "CAMERA" else obj.parent
        context.scene.camera = camera
        collection = _result_collection(camera)
        if collection is not None:
            _, planes = importer.view_objects(collection)
            for plane in planes:
                hidden = self.isolate and plane.parent != camera
                plane.hide_render = hidden
                if plane.name in context.view_layer.objects:
                    plane.hide_set(hidden)
        for area in context.screen.areas if context.screen else []:
            if area.type == "VIEW_3D":
                area.spaces.active.region_3d.view_perspective = "CAMERA"
        return {"FINISHED"}


class MVDPP_OT_show_all_views(Operator):
    """Show the image planes of all 32 views of the active result again"""

    bl_idname = "mvdpp.show_all_views"
    bl_label = "Show All Views"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return context.active_object is not None and _result_collection(context.active_object) is not None

    def execute(self, context):
        _, planes = importer.view_objects(_result_collection(context.active_object))
        for plane in planes:
            plane.hide_render = False
            if plane.name in context.view_layer.objects:
                plane.hide_set(False)
        return {"FINISHED"}


class MVDPP_OT_install_backend(Operator):
    """Create the backend's Python environment and install PyTorch, diffusers and the MVD++ backend"""

    bl_idname = "mvdpp.install_backend"
    bl_label = "Install Backend"

    def execute(self, context):
        prefs = get_preferences(context)
        try:
            backend_manager.installer.start(prefs.pip_arguments if prefs else "")
        except backend_manager.BackendUnavailable as exc:
            backend_manager.installer.error, backend_manager.installer.hint = exc.message, exc.hint
            self.report({"ERROR"}, f"{exc.message} ({exc.hint})")
            return {"CANCELLED"}
        backend_manager.session.stop()  # a running backend would use the environment being replaced
        bpy.app.timers.register(_redraw_preferences_while_installing, first_interval=0.5)
        self.report({"INFO"}, "Installing the backend (see Preferences > Add-ons > MVD++)")
        return {"FINISHED"}


def _redraw_preferences_while_installing():
    for window in bpy.context.window_manager.windows:
        for area in window.screen.areas:
            if area.type == "PREFERENCES":
                area.tag_redraw()
    return 0.5 if backend_manager.installer.running else None


class MVDPP_OT_remove_backend(Operator):
    """Delete the managed backend environment (frees its disk space)"""

    bl_idname = "mvdpp.remove_backend"
    bl_label = "Remove Backend Environment"

    def invoke(self, context, event):
        return context.window_manager.invoke_confirm(self, event)

    def execute(self, context):
        import shutil

        backend_manager.session.stop()
        shutil.rmtree(backend_manager.managed_venv_dir(), ignore_errors=True)
        return {"FINISHED"}


class MVDPP_OT_open_install_log(Operator):
    """Open the backend install log in the system's text viewer"""

    bl_idname = "mvdpp.open_install_log"
    bl_label = "Open Install Log"

    def execute(self, context):
        path = backend_manager.installer.log_path
        if not path.is_file():
            self.report({"WARNING"}, "There is no install log yet")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=str(path))
        return {"FINISHED"}


class MVDPP_OT_stop_backend(Operator):
    """Stop the backend process (frees its GPU memory; it starts again on the next Generate)"""

    bl_idname = "mvdpp.stop_backend"
    bl_label = "Stop Backend"

    def execute(self, context):
        backend_manager.session.stop()
        generation.sync_status(context.window_manager)
        return {"FINISHED"}


class MVDPP_OT_open_results_folder(Operator):
    """Open the folder of the last result in the file browser"""

    bl_idname = "mvdpp.open_results_folder"
    bl_label = "Open Results Folder"

    def execute(self, context):
        folder = context.window_manager.mvdpp_status.last_result or str(backend_manager.results_dir(get_preferences(context)))
        if not os.path.isdir(folder):
            self.report({"WARNING"}, f"{folder} does not exist")
            return {"CANCELLED"}
        bpy.ops.wm.path_open(filepath=folder)
        return {"FINISHED"}


classes = (
    MVDPP_OT_add_image_files,
    MVDPP_OT_add_blend_image,
    MVDPP_OT_add_selected_images,
    MVDPP_OT_remove_image,
    MVDPP_OT_move_image,
    MVDPP_OT_generate,
    MVDPP_OT_cancel,
    MVDPP_OT_import_result,
    MVDPP_OT_view_result_camera,
    MVDPP_OT_show_all_views,
    MVDPP_OT_install_backend,
    MVDPP_OT_remove_backend,
    MVDPP_OT_open_install_log,
    MVDPP_OT_stop_backend,
    MVDPP_OT_open_results_folder,
)


def menu_import(self, context):
    self.layout.operator(MVDPP_OT_import_result.bl_idname, text="MVD++ Result (folder)")


register_classes, unregister_classes = bpy.utils.register_classes_factory(classes)


def register():
    register_classes()
    bpy.types.TOPBAR_MT_file_import.append(menu_import)


def unregister():
    bpy.types.TOPBAR_MT_file_import.remove(menu_import)
    unregister_classes()
