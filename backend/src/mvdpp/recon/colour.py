"""Vertex colours from the views in which each vertex is visible.

Visibility is a depth test per view against a z-buffer made by splatting the mesh's own
vertices (marching-cubes vertices are about one pixel apart at the rig's scale, so a small
splat closes the buffer without a rasteriser). Each visible view contributes its pixel colour,
weighted by how squarely it sees the surface: grazing views smear colours across edges.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from .views import ViewSet


def _zbuffer(pixels: torch.Tensor, depth: torch.Tensor, valid: torch.Tensor, size: int, radius: int) -> torch.Tensor:
    zbuf = torch.full((size * size,), float("inf"), device=pixels.device)
    base = pixels[valid].floor().long()
    d = depth[valid]
    for dy in range(-radius, radius + 1):
        for dx in range(-radius, radius + 1):
            x = (base[:, 0] + dx).clamp(0, size - 1)
            y = (base[:, 1] + dy).clamp(0, size - 1)
            zbuf.scatter_reduce_(0, y * size + x, d, reduce="amin")
    return zbuf.view(size, size)


def visibility(points: torch.Tensor, normals: torch.Tensor, views: ViewSet, v: int, spacing: float):
    """Where view ``v`` sees ``points``: (pixels (N, 2), visible (N,) bool by a depth test against
    a z-buffer splatted from the points themselves, cosine (N,) between normal and view ray)."""
    pixels, depth = views.project(points, v)
    valid = views.inside_image(pixels, depth)
    # Splat radius in pixels: about half the vertex spacing as seen from this camera.
    footprint = float(views.focal[v]) * spacing / float(depth[valid].min()) if bool(valid.any()) else 1.0
    radius = int(np.clip(np.ceil(footprint * 0.75), 1, 4))
    zbuf = _zbuffer(pixels, depth, valid, views.size, radius)
    px = pixels.floor().long().clamp(0, views.size - 1)
    visible = valid & (depth <= zbuf[px[:, 1], px[:, 0]] + 1.5 * spacing)
    to_camera = views.c2w[v, :3, 3] - points
    cosine = (normals * to_camera).sum(-1) / to_camera.norm(dim=-1)
    return pixels, visible, cosine


def vertex_colours(mesh: trimesh.Trimesh, views: ViewSet, spacing: float, fallback=None, check_cancel=None) -> np.ndarray:
    """(N, 4) uint8 RGBA colours for ``mesh``'s vertices.

    ``spacing`` is the grid's node spacing (sets the splat size and the depth tolerance);
    ``fallback(points) -> (N, 3) float`` colours vertices no view sees (e.g. the refined colour
    grid); without it they take the colour of the nearest coloured vertex.
    """
    device = views.device
    points = torch.tensor(mesh.vertices, dtype=torch.float32, device=device)
    normals = torch.tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32, device=device)
    total = torch.zeros(points.shape[0], 3, device=device)
    weight = torch.zeros(points.shape[0], device=device)
    for v in range(views.count):
        if check_cancel is not None:
            check_cancel()
        pixels, visible, cosine = visibility(points, normals, views, v, spacing)
        w = torch.where(visible, cosine.clamp_min(0.0) ** 2, torch.zeros_like(cosine))
        rgba = views.sample(torch.cat([views.rgb[v], views.alpha[v]]), pixels)
        # Pixels at the mask's edge mix in the white background: trust them less.
        w = w * rgba[:, 3].clamp(0, 1) ** 2
        total += w[:, None] * rgba[:, :3]
        weight += w
    seen = weight > 1e-4
    colours = total / weight.clamp_min(1e-8)[:, None]
    if not bool(seen.all()):
        unseen = ~seen
        if fallback is not None:
            colours[unseen] = fallback(points[unseen]).to(colours.dtype)
        elif bool(seen.any()):
            from scipy.spatial import cKDTree

            seen_np = seen.cpu().numpy()
            tree = cKDTree(mesh.vertices[seen_np])
            _, nearest = tree.query(mesh.vertices[~seen_np])
            colours[unseen] = colours[seen][torch.as_tensor(nearest, device=device)]
        else:
            colours[:] = 0.5
    rgb = (colours.clamp(0, 1) * 255.0 + 0.5).to(torch.uint8).cpu().numpy()
    return np.concatenate([rgb, np.full((rgb.shape[0], 1), 255, np.uint8)], axis=1)
