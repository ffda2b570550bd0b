"""The panel's reference-image list: add from files, from the .blend, from selected image
empties/planes; remove; reorder; and packed images reach the backend as files."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest
from PIL import Image

from test_importer import INSTALL, reports

pytestmark = pytest.mark.blender


# Draws the panels and the preferences with a recording layout that checks every property and
# operator they name (background mode has no UI to draw into).
DRAW_CHECK = textwrap.dedent(
    '''
    def check_drawing():
        drawn = {"props": 0, "ops": 0, "errors": []}
        class Layout:
            def __getattr__(self, name):
                def call(*args, **kwargs):
                    if name == "prop":
                        data, prop = args[0], args[1]
                        if prop not in data.bl_rna.properties:
                            drawn["errors"].append(f"no property {prop} on {data}")
                        drawn["props"] += 1
                    elif name == "operator":
                        group, op = args[0].split(".")
                        if op not in dir(getattr(bpy.ops, group)):
                            drawn["errors"].append(f"no operator {args[0]}")
                        drawn["ops"] += 1
                    elif name == "template_list" and not hasattr(bpy.types, args[0]):
                        drawn["errors"].append(f"no list {args[0]}")
                    elif name == "icon":
                        return 0
                    return Layout()
                return call
            def __setattr__(self, name, value):
                pass
        class Holder:
            layout = Layout()
        pkg = "bl_ext.user_default.mvdpp_blender"
        panel = importlib.import_module(pkg + ".panel")
        for source in ("PROMPT", "IMAGES"):  # text to 3D mode and the reference image list
            bpy.context.scene.mvdpp.source = source
            for cls in (panel.MVDPP_PT_main, panel.MVDPP_PT_settings, panel.MVDPP_PT_result):
                cls.draw(Holder(), bpy.context)
        prefs = bpy.context.preferences.addons[pkg].preferences
        for source in ("MANAGED", "CUSTOM"):
            prefs.backend_source = source
            type(prefs).draw(type("P", (), {"layout": Layout(), "bl_rna": prefs.bl_rna, **{k: getattr(prefs, k) for k in prefs.bl_rna.properties.keys() if k != "rna_type"}})(), bpy.context)
        report(drawn=drawn)
    '''
)


def test_reference_image_list_operators(tmp_path, extension_zip, run_blender):
    for name, colour in (("a", (255, 0, 0, 255)), ("b", (0, 255, 0, 255)), ("c", (0, 0, 255, 255)), ("d", (9, 9, 9, 255)), ("e", (99, 9, 9, 255))):
        Image.fromarray(np.full((16, 16, 4), colour, np.uint8), "RGBA").save(tmp_path / f"{name}.png")
    (tmp_path / "notes.txt").write_text("not an image")
    script = INSTALL.format(zip=str(extension_zip)) + DRAW_CHECK + textwrap.dedent(
        f"""
        generation = importlib.import_module("bl_ext.user_default.mvdpp_blender.generation")
        scene = bpy.context.scene
        props = scene.mvdpp
        names = lambda: [item.image.name for item in props.images]

        bpy.ops.mvdpp.add_image_files(directory={str(tmp_path)!r}, files=[{{"name": "a.png"}}, {{"name": "b.png"}}, {{"name": "notes.txt"}}])
        after_files = names()
        bpy.ops.mvdpp.add_image_files(directory={str(tmp_path)!r}, files=[{{"name": "a.png"}}])  # no duplicates
        no_duplicates = names()

        # an image already in the .blend (packed: it has no file the backend could read)
        packed = bpy.data.images.load({str(tmp_path / "c.png")!r}); packed.pack(); packed.filepath = "//gone/c.png"
        bpy.ops.mvdpp.add_blend_image(image=packed.name)
        after_blend = names()

        # an image empty and an image plane, selected
        for obj in list(scene.objects):
            obj.select_set(False)
        empty = bpy.data.objects.new("ref empty", None)
        empty.empty_display_type = "IMAGE"
        empty.data = bpy.data.images.load({str(tmp_path / "d.png")!r})
        scene.collection.objects.link(empty)
        bpy.ops.image.import_as_mesh_planes(files=[{{"name": "e.png"}}], directory={str(tmp_path)!r})
        plane = bpy.context.active_object
        plane.select_set(True)
        empty.select_set(True)
        bpy.ops.mvdpp.add_selected_images()
        after_selected = names()

        check_drawing()  # with images in the list (previews) and the active one set
        props.active_image_index = 3
        bpy.ops.mvdpp.move_image(direction="UP")
        after_move = names(); active_after_move = props.active_image_index
        props.active_image_index = 0
        bpy.ops.mvdpp.remove_image()
        after_remove = names()


        paths = generation.reference_paths([item.image for item in props.images])
        import os
        from PIL import Image as PILImage
        report(after_files=after_files, no_duplicates=no_duplicates, after_blend=after_blend,
               after_selected=after_selected, after_move=after_move, active_after_move=active_after_move,
               after_remove=after_remove, paths=paths, readable=[os.path.isfile(p) and PILImage.open(p).size == (16, 16) for p in paths])
        """
    )
    proc = run_blender(script, backend_on_path=False)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-4000:]
    r = reports(proc)
    assert r["drawn"]["errors"] == [] and r["drawn"]["props"] > 15 and r["drawn"]["ops"] > 10
    assert r["after_files"] == ["a.png", "b.png"]
    assert r["no_duplicates"] == ["a.png", "b.png"]
    assert r["after_blend"] == ["a.png", "b.png", "c.png"]
    # the active object's image first (the plane's e), then the empty's d
    assert r["after_selected"] == ["a.png", "b.png", "c.png", "e.png", "d.png"]
    assert r["after_move"] == ["a.png", "b.png", "e.png", "c.png", "d.png"] and r["active_after_move"] == 2
    assert r["after_remove"] == ["b.png", "e.png", "c.png", "d.png"]
    # the packed image was written out for the backend; the others are used where they are
    assert r["paths"][:2] == [str(tmp_path / "b.png"), str(tmp_path / "e.png")] and r["paths"][3] == str(tmp_path / "d.png")
    assert r["paths"][2] != str(tmp_path / "c.png") and all(r["readable"])
