"""MVD++ Image to 3D: a Blender extension that turns reference images into 32 views and a mesh.

The model runs in a separate backend process (the ``mvdpp`` package, started as a subprocess and
spoken to in JSON lines); this package only uses bpy, the standard library and the backend's
torch-free modules. All bpy work happens on Blender's main thread. Scripting: see ``api``.
"""

from . import backend_manager, generation, operators, panel, preferences, properties

# registration order: preferences and properties before the operators and panels that use them
_modules = (preferences, properties, operators, panel, generation, backend_manager)


def register():
    for module in _modules:
        if hasattr(module, "register"):
            module.register()


def unregister():
    for module in reversed(_modules):
        if hasattr(module, "unregister"):
            module.unregister()
