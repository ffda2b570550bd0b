"""Second half of the demo: install the built extension into Blender (bpy), import a result
folder through it, save the .blend and render a preview PNG of the scene.

    python scripts/demo_blender.py --zip dist/mvdpp_blender-0.1.0.zip --result results/demo \
        --blend results/demo.blend --preview results/demo_preview.png

Blender's user files go to a private folder (results/.blender_user) so nothing touches ~/.config.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import sys
from pathlib import Path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--zip", required=True, type=Path)
    parser.add_argument("--result", required=True, type=Path)
    parser.add_argument("--blend", required=True, type=Path)
    parser.add_argument("--preview", required=True, type=Path)
    parser.add_argument("--size", type=int, default=768)
    args = parser.parse_args()

    os.environ.setdefault("BLENDER_USER_RESOURCES", str(args.blend.parent.absolute() / ".blender_user"))
    import bpy  # after BLENDER_USER_RESOURCES, which Blender reads at import

    bpy.ops.wm.read_factory_settings(use_empty=True)
    if bpy.ops.extensions.package_install_files(filepath=str(args.zip.absolute()), repo="user_default", enable_on_install=True) != {"FINISHED"}:
        print(f"could not install {args.zip} into Blender", file=sys.stderr)
        return 1
    api = importlib.import_module("bl_ext.user_default.mvdpp_blender.api")
    collection = api.import_result(str(args.result.absolute()))
    print(f"imported {len(collection.all_objects)} objects into collection {collection.name!r}")

    scene = bpy.context.scene
    # a preview camera outside the rig of 32 cameras, looking at the object from the front-left
    preview = bpy.data.objects.new("Preview camera", bpy.data.cameras.new("Preview camera"))
    scene.collection.objects.link(preview)
    distance, azimuth, elevation = 4.6, math.radians(-35), math.radians(25)
    preview.location = (distance * math.cos(elevation) * math.sin(azimuth), -distance * math.cos(elevation) * math.cos(azimuth), distance * math.sin(elevation))
    direction = -preview.location.copy()
    preview.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    preview.data.lens = 42
    scene.camera = preview
    world = bpy.data.worlds.new("Preview world")
    if bpy.app.version < (5, 0, 0):  # from 5.0 every world has its node tree (use_nodes is deprecated)
        world.use_nodes = True
    background = world.node_tree.nodes.get("Background")
    if background is not None:  # a light studio backdrop, so the views' white backgrounds read as cards
        background.inputs["Color"].default_value = (0.62, 0.64, 0.68, 1.0)
    world.color = (0.62, 0.64, 0.68)
    scene.world = world
    sun = bpy.data.objects.new("Preview sun", bpy.data.lights.new("Preview sun", "SUN"))
    sun.rotation_euler = (math.radians(40), 0, math.radians(30))
    scene.collection.objects.link(sun)

    scene.render.engine = "BLENDER_EEVEE"
    scene.render.resolution_x = scene.render.resolution_y = args.size
    scene.render.filepath = str(args.preview.absolute())
    scene.view_settings.view_transform = "Standard"
    args.preview.parent.mkdir(parents=True, exist_ok=True)
    bpy.ops.render.render(write_still=True)
    bpy.ops.wm.save_as_mainfile(filepath=str(args.blend.absolute()))
    print(f"saved {args.blend} and {args.preview}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
