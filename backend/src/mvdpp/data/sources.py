"""Where objects come from: procedural seeds or a folder of real assets.

A source maps an object index (the k-th object a stream or evaluation set asks for) to a
normalised mesh and an integer id (``object_seed`` in batches): the procedural seed, or the
asset's position in the folder's sorted file list.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import numpy as np

from .procedural import DEFAULT_DETAIL, make_object
from .seeds import training_object_seed


class ProceduralSource:
    """Procedural objects; ``training=True`` draws training seeds (mvdpp.data.seeds)."""

    def __init__(self, stream_seed: int = 0, detail: float = DEFAULT_DETAIL, training: bool = True):
        self.stream_seed = int(stream_seed)
        self.detail = detail
        self.training = training

    def object_seed(self, index: int) -> int:
        return training_object_seed(self.stream_seed, index) if self.training else int(index)

    def get(self, index: int):
        seed = self.object_seed(index)
        return make_object(seed, detail=self.detail), seed

    def describe(self) -> str:
        return "procedural"


class AssetSource:
    """Real assets from a folder. Every pass over the folder (an epoch) visits each file once,
    in an order shuffled per epoch from ``stream_seed``; indices split between workers and ranks
    therefore never repeat a file within an epoch."""

    def __init__(self, folder: str | os.PathLike, stream_seed: int = 0, shuffle: bool = True):
        from .assets import find_assets

        self.folder = Path(folder)
        self.files = find_assets(self.folder)
        self.stream_seed = int(stream_seed)
        self.shuffle = shuffle
        self._order_epoch, self._order = None, None

    def file_index(self, index: int) -> int:
        epoch, position = divmod(index, len(self.files))
        if not self.shuffle:
            return position
        if self._order_epoch != epoch:
            self._order = np.random.default_rng([self.stream_seed, epoch, 0x617373]).permutation(len(self.files))
            self._order_epoch = epoch
        return int(self._order[position])

    def get(self, index: int):
        from ..errors import MVDPPError
        from .assets import load_asset

        # a broken file in a big library should not stop training: skip it (deterministically)
        for attempt in range(len(self.files)):
            file_index = self.file_index(index + attempt)
            try:
                return load_asset(self.files[file_index]), file_index
            except MVDPPError as exc:
                warnings.warn(f"skipping asset {self.files[file_index]}: {exc.message}", RuntimeWarning, stacklevel=2)
        raise MVDPPError("bad_input", f"no asset in {self.folder} could be loaded", "check the files in the asset folder")

    def describe(self) -> str:
        return f"assets:{self.folder}"
