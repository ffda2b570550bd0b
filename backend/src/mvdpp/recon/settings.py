"""Quality presets of the reconstruction (torch-free, so the CLI can list them cheaply).

One preset fixes every size that trades time for fidelity. "auto" picks "standard" on a GPU and
"draft" on the CPU, which keeps one 256 px, 32-view object within ~2 minutes on a 2-core CPU and
~30 s on an H100 (figures in BENCHMARKS.md); for generated views it picks "draft" on both (see
AUTO_QUALITY_FOR_GENERATED).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

QUALITIES = ("draft", "standard", "high")

#: Where the views come from. "rendered": exact renders (ground-truth views, benchmarks, tests),
#: whose masks agree to the pixel. "generated": the diffusion model's views, which are blurry
#: and mildly inconsistent with each other (a part a little wider in one view, a little shifted
#: in the next); a strict vote lets every such disagreement carve the object.
VIEW_SOURCES = ("rendered", "generated")

#: Changes to the quality preset for generated views. With a vote tolerance of 1, the embedded
#: model's 32 views carve away most of the object; tolerating 8 background votes (in the hull
#: and in the stereo carving) took 10 tuning objects from IoU 0.209 to 0.447 and Chamfer 0.0653
#: to 0.0537. Rendered views keep 1: on the same objects' true views, 8 gave Chamfer 0.0166 /
#: IoU 0.800 instead of 0.0065 / 0.942 (docs/reconstruction.md, "Generated views").
#: The two clean-ups tuned on true views stay off for generated ones, where they lost on the same
#: 10 tuning objects (session 8): dropping sealed hollows raised Chamfer on 8 of 10, and the lower
#: stereo gain of 0.02 lowered IoU on 8 of 10 (0.451 -> 0.423). Session 15's refinement and
#: stricter depth carving were measured on true views only, so generated views keep the
#: settings they had (no refinement, carving with the hull's tolerance).
GENERATED_VIEW_OVERRIDES = {"hull_tolerated_votes": 8, "drop_hollows": False, "stereo_min_gain": 0.03,
                            "refine_vertices": False, "refine_window_rings": 1, "carve_extra_votes": 0,
                            "refine_anchor_thickness_nodes": 0.0}

#: "auto" for generated views, on every device. The model's views are blurred over several
#: pixels, so the 257^3 grid of "standard" adds faces, not detail: 1.9M faces against 0.6M for
#: the example's views, and a 22-26 s main job on the H100, most of it meshing and colouring
#: (docs/reconstruction.md). The evaluation's generated-view figures are measured at "draft".
AUTO_QUALITY_FOR_GENERATED = "draft"


@dataclass(frozen=True)
class ReconSettings:
    #: Nodes per side of the grid that spans the object box; 16k + 1 lets the hull work as an octree.
    grid_resolution: int
    #: Carve concavities by multi-view stereo inside the hull (False = visual hull only).
    stereo: bool = True
    #: Depth hypotheses per stereo ray, spread from where it enters the hull to where it leaves.
    stereo_hypotheses: int = 96
    #: Stereo hypotheses this many grid nodes behind the hull's entry still count as the hull's
    #: surface: the masks place it more exactly than the sweep could.
    stereo_near_hull_nodes: float = 3.0
    #: Mean colour difference (0-1) by which a deeper surface must beat the hull's to be believed.
    #: 0.02 beat 0.03 / 0.015 / 0.01 on true views (docs/reconstruction.md, session 8).
    stereo_min_gain: float = 0.02
    #: A voxel is carved by the visual hull only when more than this many views see it as
    #: background: one corrupted mask must not punch a hole through the object.
    hull_tolerated_votes: int = 1
    #: Depth carving (stereo) needs this many more agreeing views than the hull: two views'
    #: stereo errors that line up must not crack a solid (session 14, objects 11 and 13).
    carve_extra_votes: int = 1
    #: Remove the walls of hollows sealed inside the solid (bubbles left by carving, which no
    #: view can see into; mesh.drop_floaters): Chamfer lower on 18 of the 20 acceptance objects.
    drop_hollows: bool = True
    #: Move the mesh's vertices along their normals to where the views' colours agree best
    #: (recon.refine): pulls the hull's bulges onto textured faces. With the 2-ring window,
    #: carve_extra_votes=1 and anchoring: 20 objects' Chamfer 0.00638 -> 0.00535, PSNR
    #: 29.98 -> 29.27 dB on the H200 (BENCHMARKS.md, session 15).
    refine_vertices: bool = True
    #: The refinement's search along each normal, in grid nodes: this far inside ...
    refine_inward_nodes: float = 5.0
    #: ... to this far outside, in this many positions.
    refine_outward_nodes: float = 1.0
    refine_steps: int = 13
    #: Neighbour-averaging passes over the displacements before the vertices move.
    refine_smoothing: int = 2
    #: Vertices with less solid than this many grid nodes behind them stay (and hold their
    #: neighbours): thin wires keep their width (without it PSNR 28.22 instead of 28.77 dB, at
    #: 16 smoothing passes). When > 0, every vertex also moves at most half the thickness behind it.
    refine_anchor_thickness_nodes: float = 5.0
    #: Rings of edge neighbours over which a vertex's colour variance is averaged.
    refine_window_rings: int = 2
    #: Taubin smoothing passes on the extracted mesh (removes the voxel staircase).
    smoothing_iterations: int = 8
    #: Half side of the cube the grid spans (objects live in [-0.5, 0.5]^3, see mvdpp.rig).
    box_half_size: float = 0.53

    def with_overrides(self, **overrides) -> "ReconSettings":
        from ..errors import BAD_INPUT, MVDPPError

        unknown = sorted(set(overrides) - set(self.__dataclass_fields__))
        if unknown:
            raise MVDPPError(BAD_INPUT, f"unknown reconstruction setting(s): {', '.join(unknown)}",
                             f"use fields of ReconSettings: {', '.join(self.__dataclass_fields__)}")
        settings = replace(self, **{k: v for k, v in overrides.items() if v is not None})
        if not 16 <= settings.grid_resolution <= 1025:
            raise MVDPPError(BAD_INPUT, f"grid resolution {settings.grid_resolution} is out of range",
                             "use 16 to 1025 nodes per side (e.g. 161 on the CPU, 257 on a GPU)")
        return settings


PRESETS: dict[str, ReconSettings] = {
    "draft": ReconSettings(grid_resolution=161),
    "standard": ReconSettings(grid_resolution=257),
    "high": ReconSettings(grid_resolution=385),
}


def resolve_quality(quality: str, device_type: str, view_source: str = "rendered") -> ReconSettings:
    """Settings for a quality name; "auto" depends on the device type ("cuda" or "cpu") and the
    view source, and view_source="generated" applies GENERATED_VIEW_OVERRIDES to the preset."""
    from ..errors import BAD_INPUT, MVDPPError

    if view_source not in VIEW_SOURCES:
        raise MVDPPError(BAD_INPUT, f"unknown view source {view_source!r}",
                         f"use one of: {', '.join(VIEW_SOURCES)} (generated: views made by the model)")
    if quality == "auto":
        if view_source == "generated":
            quality = AUTO_QUALITY_FOR_GENERATED
        else:
            quality = "standard" if device_type == "cuda" else "draft"
    if quality not in PRESETS:
        raise MVDPPError(BAD_INPUT, f"unknown reconstruction quality {quality!r}",
                         f"use one of: auto, {', '.join(QUALITIES)}")
    if view_source == "generated":
        return replace(PRESETS[quality], **GENERATED_VIEW_OVERRIDES)
    return PRESETS[quality]
