"""Evaluation metrics used by every evaluation in the project.

Images: PSNR, SSIM (Gaussian window 11 / sigma 1.5, Wang et al. 2004), LPIPS when the ``lpips``
package and its pretrained weights are available locally (else ``None``; see ``lpips_note``).
Meshes (objects normalised to the unit cube, as the rig's world frame is): Chamfer distance =
the mean of the two directed mean nearest-neighbour L2 distances between ``samples`` points
drawn on each surface; F-score at a distance threshold; volume IoU of the two solids on a
voxel grid. "Surface" and "solid" mean those of the union of the mesh's closed parts: faces
buried inside another part (procedural objects are concatenated, overlapping primitives) are
no surface of the object and are not sampled. numpy + scipy only (torch only for LPIPS, imported on use).
"""

from __future__ import annotations

import numpy as np

DEFAULT_SURFACE_SAMPLES = 100_000
DEFAULT_FSCORE_THRESHOLD = 0.01
DEFAULT_IOU_RESOLUTION = 128
#: The box volume IoU is measured in: the unit cube with a margin.
IOU_BOX_HALF = 0.55


# ---------------------------------------------------------------------------------- images
def _as_float_rgb(image) -> np.ndarray:
    array = np.asarray(image)
    if array.dtype == np.uint8:
        array = array.astype(np.float64) / 255.0
    else:
        array = array.astype(np.float64)
    if array.ndim == 3 and array.shape[-1] == 4:
        array = array[..., :3]
    return array


def psnr(image_a, image_b, max_value: float = 1.0) -> float:
    """PSNR in dB of two images (uint8 or float in [0, 1]; RGBA -> RGB). Identical -> inf."""
    a, b = _as_float_rgb(image_a), _as_float_rgb(image_b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    mse = float(np.mean((a - b) ** 2))
    return float("inf") if mse == 0 else 10.0 * np.log10(max_value**2 / mse)


def ssim(image_a, image_b) -> float:
    """Mean SSIM over pixels and channels (Gaussian window 11, sigma 1.5, data range 1)."""
    from scipy.ndimage import gaussian_filter

    a, b = _as_float_rgb(image_a), _as_float_rgb(image_b)
    if a.shape != b.shape:
        raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
    if a.ndim == 2:
        a, b = a[..., None], b[..., None]
    c1, c2 = 0.01**2, 0.03**2
    blur = lambda x: gaussian_filter(x, sigma=(1.5, 1.5, 0), truncate=3.5)  # noqa: E731 - 11-tap window
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a**2
    var_b = blur(b * b) - mu_b**2
    cov = blur(a * b) - mu_a * mu_b
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (var_a + var_b + c2))
    return float(s.mean())


_LPIPS_MODEL = None
lpips_note = ""


def lpips(image_a, image_b) -> float | None:
    """LPIPS (AlexNet) distance, or None when the ``lpips`` package or its weights are missing
    (``lpips_note`` then says why). Never downloads anything."""
    global _LPIPS_MODEL, lpips_note
    if _LPIPS_MODEL is None:
        try:
            import lpips as lpips_package  # the reference implementation; ships its linear-layer weights
            import torch  # noqa: F401

            _LPIPS_MODEL = lpips_package.LPIPS(net="alex", pretrained=True, verbose=False).eval()
        except Exception as exc:  # noqa: BLE001 - missing package or missing backbone weights offline
            lpips_note = f"LPIPS skipped: {type(exc).__name__}: {exc}".splitlines()[0]
            return None
    import torch

    def to_tensor(image):
        return torch.from_numpy(_as_float_rgb(image)).permute(2, 0, 1)[None].float() * 2.0 - 1.0

    with torch.no_grad():
        return float(_LPIPS_MODEL(to_tensor(image_a), to_tensor(image_b)).item())


# ---------------------------------------------------------------------------------- meshes
def sample_surface(mesh, count: int = DEFAULT_SURFACE_SAMPLES, seed: int = 0) -> np.ndarray:
    """``count`` points drawn uniformly (by area) on the mesh's surface, reproducibly."""
    return _sample_with_faces(mesh, count, seed)[0]


def _part_labels(mesh) -> np.ndarray:
    """Connected-component label of every face (the closed parts a mesh is concatenated from)."""
    import trimesh

    return trimesh.graph.connected_component_labels(mesh.face_adjacency, node_count=len(mesh.faces))


def _enclosing_parts(labels: np.ndarray):
    """(label, face indices) of the parts that can enclose a volume (4 faces or more)."""
    order = np.argsort(labels, kind="stable")
    bounds = np.flatnonzero(np.diff(labels[order])) + 1
    for faces in np.split(order, bounds):
        if len(faces) >= 4:
            yield int(labels[faces[0]]), faces


def solid_surface_samples(mesh, count: int = DEFAULT_SURFACE_SAMPLES, seed: int = 0,
                          resolution: int = 192) -> np.ndarray:
    """``count`` points on the boundary of the solid a mesh encloses.

    Objects concatenated from overlapping closed parts (the procedural objects) have faces
    inside other parts; those are no surface of the object and no reconstruction can see them.
    Points more than one voxel (1.1 / ``resolution``) deep inside another part are dropped.
    A mesh of one part (or disjoint parts) is sampled as it is.
    """
    labels = _part_labels(mesh)
    if labels.max(initial=0) == 0:
        return sample_surface(mesh, count, seed)
    from scipy.ndimage import binary_erosion

    rng_seed = seed
    kept: list[np.ndarray] = []
    have = 0
    interiors = {}
    for label, faces in _enclosing_parts(labels):
        part = mesh.submesh([faces], append=True)
        interiors[label] = binary_erosion(voxelize(part, resolution), iterations=1)
    face_part = labels
    while have < count:
        points, faces = _sample_with_faces(mesh, 2 * count, rng_seed)
        rng_seed += 1000
        pitch = 2.0 * IOU_BOX_HALF / resolution
        idx = np.clip(np.floor((points + IOU_BOX_HALF) / pitch).astype(int), 0, resolution - 1)
        buried = np.zeros(len(points), dtype=bool)
        for label, interior in interiors.items():
            other = face_part[faces] != label
            buried |= other & interior[idx[:, 0], idx[:, 1], idx[:, 2]]
        kept.append(points[~buried])
        have += int((~buried).sum())
        if rng_seed > seed + 10_000:  # a degenerate mesh that is all interior: give up cleanly
            break
    points = np.concatenate(kept)
    if len(points) == 0:
        raise ValueError("the mesh has no outer surface to sample")
    return points[:count]


def _sample_with_faces(mesh, count: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    triangles = np.asarray(mesh.triangles, dtype=np.float64)
    areas = np.asarray(mesh.area_faces, dtype=np.float64)
    if len(triangles) == 0 or areas.sum() <= 0:
        raise ValueError("cannot sample an empty mesh")
    faces = rng.choice(len(triangles), size=count, p=areas / areas.sum())
    u, v = rng.random(count), rng.random(count)
    flip = u + v > 1.0
    u[flip], v[flip] = 1.0 - u[flip], 1.0 - v[flip]
    tri = triangles[faces]
    return tri[:, 0] + u[:, None] * (tri[:, 1] - tri[:, 0]) + v[:, None] * (tri[:, 2] - tri[:, 0]), faces


def _directed_distances(points_a: np.ndarray, points_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from scipy.spatial import cKDTree

    a_to_b, _ = cKDTree(points_b).query(points_a, workers=-1)
    b_to_a, _ = cKDTree(points_a).query(points_b, workers=-1)
    return a_to_b, b_to_a


def chamfer_distance(mesh_a, mesh_b, samples: int = DEFAULT_SURFACE_SAMPLES, seed: int = 0) -> float:
    """Mean of the two directed mean nearest-neighbour L2 distances (not squared)."""
    a_to_b, b_to_a = _directed_distances(solid_surface_samples(mesh_a, samples, seed),
                                         solid_surface_samples(mesh_b, samples, seed))
    return float(0.5 * (a_to_b.mean() + b_to_a.mean()))


def f_score(mesh_pred, mesh_true, threshold: float = DEFAULT_FSCORE_THRESHOLD, samples: int = DEFAULT_SURFACE_SAMPLES,
            seed: int = 0) -> float:
    """Harmonic mean of precision (predicted points within ``threshold`` of the truth) and recall."""
    pred_to_true, true_to_pred = _directed_distances(solid_surface_samples(mesh_pred, samples, seed),
                                                     solid_surface_samples(mesh_true, samples, seed))
    precision = float((pred_to_true < threshold).mean())
    recall = float((true_to_pred < threshold).mean())
    return 0.0 if precision + recall == 0 else 2.0 * precision * recall / (precision + recall)


def solid_occupancy(mesh, resolution: int = DEFAULT_IOU_RESOLUTION, half_size: float = IOU_BOX_HALF) -> np.ndarray:
    """Occupancy of the solid a mesh encloses: the union of its closed parts, each filled on its
    own (one parity fill of overlapping parts would empty their overlaps)."""
    labels = _part_labels(mesh)
    if labels.max(initial=0) == 0:
        return voxelize(mesh, resolution, half_size)
    occupied = np.zeros((resolution,) * 3, dtype=bool)
    for _, faces in _enclosing_parts(labels):
        occupied |= voxelize(mesh.submesh([faces], append=True), resolution, half_size)
    return occupied


def voxelize(mesh, resolution: int = DEFAULT_IOU_RESOLUTION, half_size: float = IOU_BOX_HALF) -> np.ndarray:
    """Occupancy (R, R, R) bool of voxel centres in [-half, half]^3, indexed [x, y, z], by parity.

    Counts crossings of a +Z ray from each voxel centre column (parity fill): every triangle
    toggles the column from its crossing height upwards. Exact for closed meshes; the columns
    are offset by a tiny irrational amount so no ray passes exactly through an edge.
    """
    pitch = 2.0 * half_size / resolution
    centres = -half_size + (np.arange(resolution) + 0.5) * pitch
    jitter = np.array([1.234567e-6, 2.345671e-6])
    tri = np.asarray(mesh.triangles, dtype=np.float64)
    toggles = np.zeros((resolution, resolution, resolution + 1), dtype=np.int32)
    xy = tri[:, :, :2] - jitter
    lo = np.clip(np.ceil((xy.min(1) + half_size) / pitch - 0.5).astype(int), 0, resolution)
    hi = np.clip(np.floor((xy.max(1) + half_size) / pitch - 0.5).astype(int), -1, resolution - 1)
    nx, ny = hi[:, 0] - lo[:, 0] + 1, hi[:, 1] - lo[:, 1] + 1
    keep = (nx > 0) & (ny > 0)
    tri, xy, lo, nx, ny = tri[keep], xy[keep], lo[keep], nx[keep], ny[keep]
    counts = nx * ny
    owner = np.repeat(np.arange(len(tri)), counts)
    local = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    ix = lo[owner, 0] + local % nx[owner]
    iy = lo[owner, 1] + local // nx[owner]
    px, py = centres[ix], centres[iy]
    a, b, c = xy[owner, 0], xy[owner, 1], xy[owner, 2]
    det = (b[:, 0] - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (b[:, 1] - a[:, 1])
    ok = np.abs(det) > 1e-15
    safe = np.where(ok, det, 1.0)
    w1 = ((px - a[:, 0]) * (c[:, 1] - a[:, 1]) - (c[:, 0] - a[:, 0]) * (py - a[:, 1])) / safe
    w2 = ((b[:, 0] - a[:, 0]) * (py - a[:, 1]) - (px - a[:, 0]) * (b[:, 1] - a[:, 1])) / safe
    w0 = 1.0 - w1 - w2
    inside = ok & (w0 >= 0) & (w1 >= 0) & (w2 >= 0)
    z = w0 * tri[owner, 0, 2] + w1 * tri[owner, 1, 2] + w2 * tri[owner, 2, 2]
    iz = np.clip(np.ceil((z - (-half_size)) / pitch - 0.5).astype(int), 0, resolution)
    np.add.at(toggles, (ix[inside], iy[inside], iz[inside]), 1)
    return (np.cumsum(toggles, axis=2)[:, :, :resolution] % 2).astype(bool)


def volume_iou(mesh_a, mesh_b, resolution: int = DEFAULT_IOU_RESOLUTION) -> float:
    """Intersection over union of the two solids on a ``resolution``^3 grid over the unit cube."""
    a, b = solid_occupancy(mesh_a, resolution), solid_occupancy(mesh_b, resolution)
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)
