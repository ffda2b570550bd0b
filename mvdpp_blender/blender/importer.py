"""Turn an MVD++ result folder into Blender objects.

One collection per result, holding a parent empty at the 3D cursor (move it and the whole result
follows), 32 cameras at the rig poses stored in ``cameras.json``, an image plane per camera that
exactly fills that camera's frame, and the reconstructed mesh. Must run on Blender's main thread.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import bpy
from mathutils import Matrix

from mvdpp import result as result_format

#: Distance of each view's image plane in front of its camera. The rig's cameras sit 1.5 from the
#: origin and the object stays within 0.87 of it, so at 0.25 a plane never cuts into the mesh.
PLANE_DISTANCE = 0.25
PROPERTY_PREFIX = "mvdpp_"


class ImportFailed(Exception):
    """The folder could not be imported; the message says why (shown to the user as is)."""


def import_result(
    context,
    folder,
    *,
    import_views: bool = True,
    import_mesh: bool = True,
    pack_images: bool = True,
    set_render_resolution: bool = True,
    name: str | None = None,
    extra_properties: dict | None = None,
) -> bpy.types.Collection:
    """Import the result in ``folder`` into ``context.scene``; returns the new collection.

    Nothing is left behind when reading the folder fails (ImportFailed is raised before any
    datablock is created).
    """
    try:
        result = result_format.read_result(folder)
    except result_format.ResultFormatError as exc:
        raise ImportFailed(str(exc)) from exc
    except (OSError, ValueError, KeyError) as exc:
        raise ImportFailed(f"{folder} cannot be read as an MVD++ result: {exc}") from exc

    scene = context.scene
    width, height = (int(v) for v in result.image_size)
    label = name or f"MVD++ {Path(result.folder).name}"

    collection = bpy.data.collections.new(label)
    scene.collection.children.link(collection)

    root = bpy.data.objects.new(label, None)
    root.empty_display_type = "PLAIN_AXES"
    root.empty_display_size = 0.6
    root.location = scene.cursor.location.copy()
    collection.objects.link(root)
    _store_properties(root, result, extra_properties)
    _store_properties(collection, result, extra_properties)

    if import_views:
        views_collection = bpy.data.collections.new(f"{label} views")
        collection.children.link(views_collection)
        for view in result.views:
            _add_view(views_collection, root, view, width, height, pack_images)
        if set_render_resolution:
            # The planes fill the frame only at the views' aspect ratio (square), so the scene
            # renders exactly what each view shows.
            scene.render.resolution_x, scene.render.resolution_y = width, height
            scene.render.pixel_aspect_x = scene.render.pixel_aspect_y = 1.0
            scene.render.resolution_percentage = 100

    if import_mesh and result.mesh_path is not None:
        _add_mesh(context, collection, root, result.mesh_path, label)

    return collection


def _store_properties(owner, result, extra: dict | None) -> None:
    """Settings, seed and source paths as custom properties (visible in the Object properties)."""
    meta = dict(result.meta or {})
    owner[PROPERTY_PREFIX + "folder"] = str(Path(result.folder).absolute())
    settings = meta.get("settings") if isinstance(meta.get("settings"), dict) else {}
    for key, value in settings.items():
        _set_simple(owner, key, value)
    if "seed" in meta:
        _set_simple(owner, "seed", meta["seed"])
    # meta.json's inputs: [{"source": path, "file": "inputs/input_00.png", ...}, ...]
    sources = [entry.get("source", "") if isinstance(entry, dict) else str(entry) for entry in meta.get("inputs") or []]
    if sources:
        owner[PROPERTY_PREFIX + "source_images"] = sources
    if meta:
        # the whole record stays available verbatim, whatever keys the backend adds later
        owner[PROPERTY_PREFIX + "meta"] = json.dumps(meta, sort_keys=True)
    for key, value in (extra or {}).items():
        _set_simple(owner, key, value)


def _set_simple(owner, key: str, value) -> None:
    if isinstance(value, (bool, int, float, str)):
        owner[PROPERTY_PREFIX + key] = value
    elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
        owner[PROPERTY_PREFIX + key] = [str(v) for v in value]
    elif value is not None:
        owner[PROPERTY_PREFIX + key] = json.dumps(value)


def _add_view(collection, root, view, width: int, height: int, pack_images: bool) -> None:
    index = view.camera.index if view.camera.index is not None else 0
    fov = math.radians(view.camera.fov_deg)

    camera_data = bpy.data.cameras.new(f"MVD++ view {index:02d}")
    camera_data.type = "PERSP"
    camera_data.sensor_fit = "HORIZONTAL"
    camera_data.angle_x = fov
    camera_data.shift_x = camera_data.shift_y = 0.0
    camera_data.clip_start = 0.01
    camera_data.clip_end = 100.0
    plane_width = 2.0 * PLANE_DISTANCE * math.tan(fov / 2.0)
    plane_height = plane_width * height / width
    # Blender draws the camera's frame display_size wide at the plane's depth: the gizmo outlines it
    camera_data.display_size = plane_width
    camera = bpy.data.objects.new(f"MVD++ camera {index:02d}", camera_data)
    camera.parent = root
    # c2w as stored (Blender's camera convention), relative to the parent empty
    camera.matrix_parent_inverse = Matrix.Identity(4)
    camera.matrix_basis = Matrix(view.c2w)
    camera[PROPERTY_PREFIX + "view_index"] = index
    camera[PROPERTY_PREFIX + "azimuth_deg"] = float(view.camera.azimuth_deg)
    camera[PROPERTY_PREFIX + "elevation_deg"] = float(view.camera.elevation_deg)
    collection.objects.link(camera)

    image = bpy.data.images.load(str(view.image_path), check_existing=False)
    image.name = f"MVD++ view {index:02d}"
    image.alpha_mode = "STRAIGHT"
    if pack_images:
        image.pack()

    mesh = bpy.data.meshes.new(f"MVD++ view plane {index:02d}")
    hw, hh = plane_width / 2.0, plane_height / 2.0
    mesh.from_pydata([(-hw, -hh, 0.0), (hw, -hh, 0.0), (hw, hh, 0.0), (-hw, hh, 0.0)], [], [(0, 1, 2, 3)])
    uv = mesh.uv_layers.new(name="UVMap")
    for loop, coord in zip(mesh.loops, ((0, 0), (1, 0), (1, 1), (0, 1))):
        uv.data[loop.index].uv = coord
    mesh.materials.append(_view_material(image, index))
    mesh.update()
    plane = bpy.data.objects.new(f"MVD++ view {index:02d}", mesh)
    plane.parent = camera
    plane.matrix_parent_inverse = Matrix.Identity(4)
    plane.location = (0.0, 0.0, -PLANE_DISTANCE)  # camera looks along its local -Z
    plane[PROPERTY_PREFIX + "view_index"] = index
    plane.visible_shadow = False
    collection.objects.link(plane)


def _view_material(image, index: int) -> bpy.types.Material:
    """Shadeless image with alpha: emission (strength 1) mixed with transparency by the image's alpha."""
    material = bpy.data.materials.new(f"MVD++ view {index:02d}")
    material.surface_render_method = "BLENDED"
    material.use_backface_culling = False
    tree = material.node_tree
    tree.nodes.clear()
    texture = tree.nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.interpolation = "Linear"
    texture.extension = "EXTEND"  # no wrapped-around pixels at the frame's border
    texture.location = (-600, 0)
    emission = tree.nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    emission.location = (-300, -100)
    transparent = tree.nodes.new("ShaderNodeBsdfTransparent")
    transparent.location = (-300, 100)
    mix = tree.nodes.new("ShaderNodeMixShader")
    mix.location = (-80, 0)
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    output.location = (150, 0)
    tree.links.new(texture.outputs["Color"], emission.inputs["Color"])
    tree.links.new(texture.outputs["Alpha"], mix.inputs["Fac"])
    tree.links.new(transparent.outputs["BSDF"], mix.inputs[1])
    tree.links.new(emission.outputs["Emission"], mix.inputs[2])
    tree.links.new(mix.outputs["Shader"], output.inputs["Surface"])
    return material


def _add_mesh(context, collection, root, mesh_path: Path, label: str) -> None:
    """glTF import (it converts glTF's +Y up to Blender's +Z up), moved under our collection."""
    before = set(bpy.data.objects)
    # the importer needs an object-mode context and creates objects in the active collection
    if context.object is not None and context.object.mode != "OBJECT":
        bpy.ops.object.mode_set(mode="OBJECT")
    result = bpy.ops.import_scene.gltf(filepath=str(mesh_path))
    if result != {"FINISHED"}:
        raise ImportFailed(f"Blender's glTF importer could not read {mesh_path}")
    created = [obj for obj in bpy.data.objects if obj not in before]
    for obj in created:
        for owner in list(obj.users_collection):
            owner.objects.unlink(obj)
        collection.objects.link(obj)
        if obj.parent is None:
            obj.parent = root
            obj.matrix_parent_inverse = Matrix.Identity(4)
        if obj.type == "MESH":
            obj.name = f"{label} mesh"
            _apply_vertex_colour_material(obj, label)


def _apply_vertex_colour_material(obj, label: str) -> None:
    """A material that shows the mesh's colours as reconstructed (already lit, so shadeless)."""
    mesh = obj.data
    attribute = mesh.color_attributes.active_color or (mesh.color_attributes[0] if len(mesh.color_attributes) else None)
    if attribute is None:
        return  # a textured mesh keeps the importer's own material
    material = bpy.data.materials.new(f"{label} colours")
    tree = material.node_tree
    tree.nodes.clear()
    colours = tree.nodes.new("ShaderNodeVertexColor")
    colours.layer_name = attribute.name
    colours.location = (-500, 0)
    emission = tree.nodes.new("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    emission.location = (-250, 0)
    output = tree.nodes.new("ShaderNodeOutputMaterial")
    output.location = (0, 0)
    tree.links.new(colours.outputs["Color"], emission.inputs["Color"])
    tree.links.new(emission.outputs["Emission"], output.inputs["Surface"])
    for old in [m for m in mesh.materials if m is not None]:
        if old.users <= 1:
            bpy.data.materials.remove(old)
    mesh.materials.clear()
    mesh.materials.append(material)
    mesh.color_attributes.active_color = attribute
    # the viewport's Solid mode shows the colours too
    for polygon in mesh.polygons:
        polygon.material_index = 0


def result_folder_of(obj_or_collection) -> str | None:
    """The result folder an imported object/collection came from (walks up the parents)."""
    owner = obj_or_collection
    while owner is not None:
        folder = owner.get(PROPERTY_PREFIX + "folder") if hasattr(owner, "get") else None
        if folder:
            return folder
        owner = getattr(owner, "parent", None)
    return None


def view_objects(collection) -> tuple[list, list]:
    """(cameras, planes) of an imported result, each sorted by view index."""
    objects = collection.all_objects

    def index_of(obj):
        return obj.get(PROPERTY_PREFIX + "view_index", -1)

    cameras = sorted((o for o in objects if o.type == "CAMERA" and PROPERTY_PREFIX + "view_index" in o), key=index_of)
    planes = sorted((o for o in objects if o.type == "MESH" and PROPERTY_PREFIX + "view_index" in o), key=index_of)
    return cameras, planes


__all__ = ["import_result", "ImportFailed", "view_objects", "result_folder_of"]
