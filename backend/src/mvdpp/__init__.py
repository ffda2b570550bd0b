"""MVD++ for Blender backend (MVDiffusion++: pose-free multi-view diffusion + reconstruction).

Importing ``mvdpp`` is cheap and never imports torch: the Blender extension uses the torch-free
modules ``mvdpp.rig``, ``mvdpp.result``, ``mvdpp.protocol`` and ``mvdpp.errors``. The model code
lives in ``mvdpp.models`` / ``mvdpp.pipelines`` and is imported only where it is used.
"""

__version__ = "0.1.0"
