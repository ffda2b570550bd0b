"""Blender-side helpers (bpy only, main thread)."""
