"""The extension installed from its zip imports a result folder the way the issue asks:
32 cameras at the rig poses, 32 planes that exactly fill their cameras' frames, the coloured mesh,
a render through camera 0 that reproduces view_00.png, and a .blend that reopens intact."""

from __future__ import annotations

import json
import textwrap

import numpy as np
import pytest
from PIL import Image

from synthetic import write_result

pytestmark = pytest.mark.blender

INSTALL = textwrap.dedent(
    """
    import time; T0 = time.monotonic()
    import bpy, json, sys
    result = bpy.ops.extensions.package_install_files(filepath={zip!r}, repo="user_default", enable_on_install=True)
    assert result == {{"FINISHED"}}, result
    import importlib
    api = importlib.import_module("bl_ext.user_default.mvdpp_blender.api")
    importer = importlib.import_module("bl_ext.user_default.mvdpp_blender.blender.importer")
    def report(**values):
        print("REPORT " + json.dumps(values), flush=True)
    """
)


def reports(proc) -> dict:
    out = {}
    for line in proc.stdout.splitlines():
        if line.startswith("REPORT "):
            out.update(json.loads(line[len("REPORT "):]))
    return out


def psnr_over_white(a: np.ndarray, b: np.ndarray) -> float:
    def over_white(x):
        alpha = x[..., 3:4] / 255.0
        return x[..., :3] * alpha + 255.0 * (1.0 - alpha)

    mse = float(((over_white(a.astype(np.float64)) - over_white(b.astype(np.float64))) ** 2).mean())
    return 10.0 * np.log10(255.0**2 / max(mse, 1e-12))


def test_import_render_save_and_reload(tmp_path, extension_zip, run_blender):
    size = 64
    folder = write_result(tmp_path / "result", size=size)
    view_00 = np.asarray(Image.open(folder / "views" / "view_00.png"))  # the script deletes the folder
    render0 = tmp_path / "camera0.png"
    overview = tmp_path / "overview.png"
    blend = tmp_path / "elsewhere" / "scene.blend"
    blend.parent.mkdir()
    script = INSTALL.format(zip=str(extension_zip)) + textwrap.dedent(
        f"""
        from bpy_extras.object_utils import world_to_camera_view
        from mathutils import Vector
        scene = bpy.context.scene
        for obj in list(scene.objects):
            bpy.data.objects.remove(obj)
        scene.cursor.location = (2.0, -1.0, 0.5)
        collection = api.import_result({str(folder)!r})
        bpy.context.view_layer.update()
        cameras, planes = importer.view_objects(collection)
        meshes = [o for o in collection.all_objects if o.type == "MESH" and "mvdpp_view_index" not in o]
        roots = [o for o in collection.objects if o.type == "EMPTY"]
        root = roots[0]

        # every plane corner projects onto a corner of its own camera's frame
        worst = 0.0
        frame_corners = [(0, 0), (1, 0), (1, 1), (0, 1)]
        for camera, plane in zip(cameras, planes):
            assert plane.parent == camera
            for vertex in plane.data.vertices:
                p = world_to_camera_view(scene, camera, plane.matrix_world @ vertex.co)
                worst = max(worst, min(max(abs(p.x - cx), abs(p.y - cy)) for cx, cy in frame_corners))
        # the cameras are the rig's, relative to the parent empty at the cursor
        doc = json.load(open({str(folder / "cameras.json")!r}))
        pose_error = max(
            max(abs(a - b) for row_a, row_b in zip(root.matrix_world.inverted() @ cam.matrix_world, view["c2w"]) for a, b in zip(row_a, row_b))
            for cam, view in zip(cameras, doc["views"]))
        mesh_colour_attr = meshes[0].data.color_attributes.active_color.name if meshes and meshes[0].data.color_attributes else ""
        mesh_material_uses_colours = any(n.type == "VERTEX_COLOR" for n in meshes[0].active_material.node_tree.nodes) if meshes else False
        report(cameras=len(cameras), planes=len(planes), meshes=len(meshes), worst_corner=worst, pose_error=pose_error,
               root_location=list(root.location), parents_ok=all(c.parent == root for c in cameras) and all(m.parent == root for m in meshes),
               mesh_centre=list(sum((meshes[0].matrix_world @ Vector(b) for b in meshes[0].bound_box), Vector()) / 8) if meshes else None,
               colour_attr=mesh_colour_attr, mesh_material_uses_colours=mesh_material_uses_colours,
               seed=root.get("mvdpp_seed"), steps=root.get("mvdpp_steps"), folder_prop=root.get("mvdpp_folder"),
               sources=list(root.get("mvdpp_source_images", [])),
               angle_x=[c.data.angle_x for c in cameras[:1]], sensor_fit=cameras[0].data.sensor_fit,
               resolution=[scene.render.resolution_x, scene.render.resolution_y],
               heavy_modules=[m for m in ("torch", "diffusers", "transformers") if m in sys.modules])

        # Cycles through camera 0, only its plane visible: colour-exact settings
        scene.camera = cameras[0]
        scene.render.engine = "CYCLES"
        scene.cycles.device = "CPU"
        scene.cycles.samples = 4
        scene.cycles.use_denoising = False
        scene.cycles.filter_width = 0.01  # no pixel filter blur: the plane's texels land on the pixels
        scene.render.film_transparent = True
        scene.render.dither_intensity = 0.0
        scene.view_settings.view_transform = "Standard"
        scene.view_settings.look = "None"
        scene.view_settings.exposure = 0.0
        scene.view_settings.gamma = 1.0
        scene.render.image_settings.file_format = "PNG"
        scene.render.image_settings.color_mode = "RGBA"
        # as a user would: select the view's plane, Look Through View (hides the other planes);
        # the mesh stays visible behind the plane
        bpy.context.view_layer.objects.active = planes[0]
        looked = bpy.ops.mvdpp.view_result_camera()
        report(looked=sorted(looked), scene_camera_is_0=scene.camera == cameras[0],
               visible_planes=[p.name for p in planes if not p.hide_render and not p.hide_get()])
        scene.render.filepath = {str(render0)!r}
        bpy.ops.render.render(write_still=True)

        # an overview of the whole imported result, from a camera outside the rig, to look at
        bpy.ops.mvdpp.show_all_views()
        report(visible_after_show_all=sum(1 for p in planes if not p.hide_render and not p.hide_get()))
        overview_data = bpy.data.cameras.new("overview")
        overview_cam = bpy.data.objects.new("overview", overview_data)
        scene.collection.objects.link(overview_cam)
        overview_cam.location = root.location + Vector((3.2, -3.2, 2.4))
        overview_cam.rotation_euler = (root.location - overview_cam.location).to_track_quat("-Z", "Y").to_euler()
        scene.camera = overview_cam
        scene.render.resolution_x = scene.render.resolution_y = 256
        scene.render.film_transparent = False
        world = bpy.data.worlds.new("grey"); world.color = (0.05, 0.05, 0.05); scene.world = world
        scene.render.filepath = {str(overview)!r}
        bpy.ops.render.render(write_still=True)
        bpy.data.objects.remove(overview_cam)

        # save, remove the result folder, reopen: every view image must still have its pixels
        bpy.ops.wm.save_as_mainfile(filepath={str(blend)!r})
        import shutil; shutil.rmtree({str(folder)!r})
        bpy.ops.wm.open_mainfile(filepath={str(blend)!r})
        views = [im for im in bpy.data.images if im.name.startswith("MVD++ view")]
        loaded = sum(1 for im in views if im.packed_file is not None and im.size[0] == {size} and len(im.pixels) == {size} * {size} * 4)
        planes_after = [o for o in bpy.data.objects if o.type == "MESH" and "mvdpp_view_index" in o]
        report(images_after_reload=len(views), images_with_pixels=loaded, planes_after_reload=len(planes_after))
        """
    )
    proc = run_blender(script, backend_on_path=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = reports(proc)
    assert (r["cameras"], r["planes"], r["meshes"]) == (32, 32, 1)
    assert r["heavy_modules"] == [], "the extension imported the model's libraries"
    assert r["worst_corner"] < 1e-4, "a plane does not exactly fill its camera's frame"
    assert r["pose_error"] < 1e-5, "camera poses differ from cameras.json"
    assert r["root_location"] == pytest.approx([2.0, -1.0, 0.5])
    assert r["parents_ok"]
    # the mesh (a sphere at the rig's origin) follows the parent empty at the cursor
    assert r["mesh_centre"] == pytest.approx([2.0, -1.0, 0.5], abs=0.02)
    assert r["colour_attr"] and r["mesh_material_uses_colours"]
    assert r["angle_x"][0] == pytest.approx(np.radians(60.0), abs=1e-6) and r["sensor_fit"] == "HORIZONTAL"
    assert r["resolution"] == [size, size]
    assert (r["seed"], r["steps"]) == (7, 12)
    assert r["folder_prop"].endswith("result") and r["sources"] == ["/somewhere/reference.png"]

    assert r["looked"] == ["FINISHED"] and r["scene_camera_is_0"]
    assert r["visible_planes"] == ["MVD++ view 00"] and r["visible_after_show_all"] == 32
    rendered = np.asarray(Image.open(render0))
    assert rendered.shape == (size, size, 4)
    psnr = psnr_over_white(rendered, view_00)
    assert psnr >= 30.0, f"the render through camera 0 differs from view_00.png ({psnr:.1f} dB)"
    assert overview.is_file()
    assert (r["images_after_reload"], r["images_with_pixels"], r["planes_after_reload"]) == (32, 32, 32)


def test_backend_written_mesh_keeps_its_orientation(tmp_path, extension_zip, run_blender):
    """A mesh written by the backend's own writer lands where the views show it (Z up)."""
    import trimesh

    from mvdpp.recon.export import save_mesh

    folder = write_result(tmp_path / "result", size=16, mesh=False)
    # an off-centre box: its centre is above the origin (+Z) and to the right (+X)
    box = trimesh.creation.box(extents=(0.1, 0.1, 0.1))
    box.apply_translation((0.2, 0.0, 0.3))
    box.visual.vertex_colors = np.tile(np.array([200, 100, 50, 255], np.uint8), (len(box.vertices), 1))
    save_mesh(box, folder / "mesh.glb")
    script = INSTALL.format(zip=str(extension_zip)) + textwrap.dedent(
        f"""
        from mathutils import Vector
        scene = bpy.context.scene
        scene.cursor.location = (0, 0, 0)
        collection = api.import_result({str(folder)!r}, import_views=False)
        bpy.context.view_layer.update()
        mesh = next(o for o in collection.all_objects if o.type == "MESH")
        centre = sum((mesh.matrix_world @ Vector(c) for c in mesh.bound_box), Vector()) / 8
        report(centre=list(centre))
        """
    )
    proc = run_blender(script, backend_on_path=False)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert reports(proc)["centre"] == pytest.approx([0.2, 0.0, 0.3], abs=1e-4)
