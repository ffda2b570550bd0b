"""Training and evaluation data: procedural objects, real assets, an OpenGL renderer, the
training stream and fixed evaluation sets (docs/data.md).

Submodules import their heavy dependencies (moderngl, trimesh, torch) themselves; importing
this package imports none of them.
"""
