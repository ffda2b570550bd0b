"""Per-vertex refinement of the mesh along its normals toward the photo-consistent surface.

The visual hull bulges past flat faces under perspective and the stereo sweep keeps the hull's
surface wherever a deeper depth is not clearly better (stereo.py), so the mesh sits a node or
two outside many textured faces. Each vertex tries a few positions along its normal, mostly
inward; at each, the colours that the views seeing the vertex (its own z-buffer test, as
colour.py) show there should agree, since the renders are Lambertian with world-fixed lights.
The position with the least colour variance, averaged over the vertex's neighbours (a window
on the surface), wins; where fewer than two views see the vertex, or the best position is at
either end of the search (not located), the vertex stays. The displacements are smoothed over
the mesh's edges before the vertices move.
"""

from __future__ import annotations

import numpy as np
import torch
import trimesh

from .colour import visibility
from .views import ViewSet

#: A view takes part only where it sees the surface at least this squarely (cosine).
MIN_COSINE = 0.3
#: Background behind a candidate position reads as this colour: far from any object colour.
BACKGROUND_COLOUR = 3.0


def _neighbour_mean(mesh: trimesh.Trimesh):
    """Sparse (N, N) operator: the mean over each vertex and its edge neighbours."""
    import scipy.sparse as sp

    n = len(mesh.vertices)
    edges = mesh.edges_unique
    rows = np.concatenate([edges[:, 0], edges[:, 1], np.arange(n)])
    cols = np.concatenate([edges[:, 1], edges[:, 0], np.arange(n)])
    adjacency = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(n, n))
    return sp.diags(1.0 / np.asarray(adjacency.sum(1)).ravel()) @ adjacency


def photo_consistency_costs(mesh: trimesh.Trimesh, views: ViewSet, spacing: float, offsets: torch.Tensor,
                            view_weights: torch.Tensor | None = None, check_cancel=None) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, K) weighted colour variance across the views at each vertex moved by ``offsets`` (K,)
    along its normal, and (N,) how many views see each vertex squarely enough to vote.
    ``view_weights`` (views.count,): views weighted 0 (corrupted masks) take no part."""
    points = torch.tensor(mesh.vertices, dtype=torch.float32, device=views.device)
    normals = torch.tensor(np.asarray(mesh.vertex_normals), dtype=torch.float32, device=views.device)
    n, k = points.shape[0], offsets.shape[0]
    candidates = points[:, None, :] + offsets[None, :, None] * normals[:, None, :]
    total = torch.zeros(n, k, 3, device=views.device)
    square = torch.zeros(n, k, device=views.device)
    weight = torch.zeros(n, device=views.device)
    voters = torch.zeros(n, device=views.device)
    trusted = [True] * views.count if view_weights is None else (view_weights.cpu() > 0).tolist()  # one host copy
    for v in range(views.count):
        if check_cancel is not None:
            check_cancel()
        if not trusted[v]:
            continue  # its hole would read as background and pull the surface in
        _, visible, cosine = visibility(points, normals, views, v, spacing)
        seen = torch.nonzero(visible & (cosine > MIN_COSINE))[:, 0]
        if seen.numel() == 0:
            continue
        w = cosine[seen] ** 2
        where, _ = views.project(candidates[seen].reshape(-1, 3), v)
        rgba = views.sample(torch.cat([views.rgb[v], views.alpha[v]]), where).view(seen.numel(), k, 4)
        colour = torch.where(rgba[..., 3:] >= 0.5, rgba[..., :3], torch.full_like(rgba[..., :3], BACKGROUND_COLOUR))
        total[seen] += w[:, None, None] * colour
        square[seen] += w[:, None] * (colour ** 2).sum(-1)
        weight[seen] += w
        voters[seen] += 1
    w = weight.clamp_min(1e-8)[:, None]
    return square / w - (total ** 2).sum(-1) / w ** 2, voters


def refine_along_normals(mesh: trimesh.Trimesh, views: ViewSet, spacing: float, *, inward_nodes: float,
                         outward_nodes: float, steps: int, smoothing: int, window_rings: int = 1,
                         solid_at=None, anchor_thickness_nodes: float = 0.0, view_weights=None,
                         check_cancel=None) -> trimesh.Trimesh:
    """Move ``mesh``'s vertices (in place) to their photo-consistent positions along the normals,
    searched in ``steps`` positions from ``inward_nodes`` grid nodes inside to ``outward_nodes``
    outside; ``smoothing`` passes of neighbour averaging blend the displacements.
    ``window_rings``: how many rings of edge neighbours the colour variance is averaged over.
    With ``solid_at`` ((M, 3) world points -> (M,) bool, the solid the mesh was extracted from)
    and ``anchor_thickness_nodes`` > 0, a vertex moves inward at most half the solid's thickness
    behind it, and not at all (it anchors its neighbours' moves) where that is under
    ``anchor_thickness_nodes`` grid nodes: on a wire a pixel or two wide every position inside
    looks alike, and any move thins or breaks it. ``view_weights``: as photo_consistency_costs."""
    offsets = torch.linspace(-inward_nodes, outward_nodes, steps, device=views.device) * spacing
    offsets_host = offsets.cpu().numpy()
    mean = _neighbour_mean(mesh)
    variance, voters = photo_consistency_costs(mesh, views, spacing, offsets, view_weights, check_cancel=check_cancel)
    cost = variance.cpu().numpy()
    for _ in range(window_rings):  # single vertices are too noisy to match
        cost = mean @ cost
    anchored = np.zeros(len(cost), dtype=bool)
    if solid_at is not None and anchor_thickness_nodes > 0:
        depth = _solid_depth(mesh, solid_at, spacing, max(2.0 * inward_nodes, anchor_thickness_nodes))
        too_deep = -offsets_host[None, :] > 0.5 * depth[:, None]
        cost = np.where(too_deep, 1e9, cost)  # colour variances are below ~10
        anchored = depth < anchor_thickness_nodes * spacing
    best = cost.argmin(1)
    located = (voters.cpu().numpy() >= 2) & (best > 0) & (best < steps - 1)
    located &= ~anchored
    shift = np.where(located, offsets_host[best], 0.0)
    # Blend over the edges, weighted by which vertices were located; a vertex among few located
    # ones moves only part of the way.
    moved, trust = shift * located, (located | anchored).astype(np.float64)
    for _ in range(smoothing):
        moved, trust = mean @ moved, mean @ trust
    shift = np.where(trust > 0.2, moved / np.maximum(trust, 1e-8), 0.0) * np.minimum(1.0, trust / 0.5)
    shift[anchored] = 0.0
    mesh.vertices = mesh.vertices + shift[:, None] * np.asarray(mesh.vertex_normals)
    return mesh


def _solid_depth(mesh: trimesh.Trimesh, solid_at, spacing: float, reach_nodes: float) -> np.ndarray:
    """(N,) how far (world units) the solid extends behind each vertex against its normal, probed
    every half node up to ``reach_nodes`` nodes (that far where it does not end sooner)."""
    points = torch.tensor(np.array(mesh.vertices), dtype=torch.float32)
    normals = torch.tensor(np.array(mesh.vertex_normals), dtype=torch.float32)
    # start a node inside: the vertex itself sits on the solid's boundary
    distances = torch.arange(1.0, reach_nodes + 0.5, 0.5) * spacing
    probes = points[:, None, :] - distances[None, :, None] * normals[:, None, :]
    inside = solid_at(probes.reshape(-1, 3)).reshape(probes.shape[:2]).cpu()
    outside = ~inside
    first_out = torch.where(outside.any(1), outside.float().argmax(1), torch.full((len(points),), len(distances)))
    reached = torch.cat([torch.zeros(1), distances])[first_out]  # the last distance still inside
    return reached.numpy().astype(np.float64)
