"""Quality presets of the reconstruction (torch-free, so the CLI can list them cheaply).

One preset fixes every size that trades time for fidelity. "auto" picks "standard" on a GPU and
"draft" on the CPU, which keeps one 256 px, 32-view object within ~2 minutes on a 2-core CPU and
~30 s on an H100 (figures in BENCHMARKS.md).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

QUALITIES = ("draft", "standard", "high")


@dataclass(frozen=True)
class ReconSettings:
    #: Nodes per side of the grid that spans the object box; 16k + 1 lets the hull work as an octree.
    grid_resolution: int
    #: Carve concavities by multi-view stereo inside the hull (False = visual hull only).
    stereo: bool = True
    #: A voxel is carved by the visual hull only when more than this many views see it as
    #: background: one corrupted mask must not punch a hole through the object.
    hull_tolerated_votes: int = 1
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


def resolve_quality(quality: str, device_type: str) -> ReconSettings:
    """Settings for a quality name; "auto" depends on the device type ("cuda" or "cpu")."""
    from ..errors import BAD_INPUT, MVDPPError

    if quality == "auto":
        quality = "standard" if device_type == "cuda" else "draft"
    if quality not in PRESETS:
        raise MVDPPError(BAD_INPUT, f"unknown reconstruction quality {quality!r}",
                         f"use one of: auto, {', '.join(QUALITIES)}")
    return PRESETS[quality]
