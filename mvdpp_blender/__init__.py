"""MVD++ Image to 3D: a Blender extension that turns reference images into 32 views and a mesh.

The model runs in a separate backend process (the ``mvdpp`` package, started as a subprocess and
spoken to in JSON lines); this package only uses bpy, the standard library and the backend's
torch-free modules. All bpy work happens on Blender's main thread.
"""

_classes_modules = []


def register():
    for module in _classes_modules:
        module.register()


def unregister():
    for module in reversed(_classes_modules):
        module.unregister()
