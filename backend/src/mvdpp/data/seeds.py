"""Object seed ranges: evaluation and training objects never coincide.

* Evaluation sets (``mvdpp make-evalset``) use seeds in [0, 2**31).
* Training streams use seeds in [2**31, 2**32): object ``k`` of a stream with seed ``s`` is
  ``2**31 + ((k * A + s * B) mod 2**31)`` with odd A, which is one-to-one in ``k``: a stream
  never repeats an object within 2**31 objects, and different stream seeds visit the objects in
  different orders.
Torch-free.
"""

from __future__ import annotations

EVAL_SEED_END = 2**31
TRAIN_SEED_START = 2**31
TRAIN_SEED_END = 2**32
_SPAN = 2**31
_MULTIPLIER = 0x2545F491  # odd: k -> k * A mod 2**31 is a bijection
_STREAM_OFFSET = 0x9E3779B1


def training_object_seed(stream_seed: int, object_index: int) -> int:
    """The procedural seed of the ``object_index``-th object of a training stream."""
    return TRAIN_SEED_START + (object_index * _MULTIPLIER + stream_seed * _STREAM_OFFSET) % _SPAN


def is_evaluation_seed(seed: int) -> bool:
    return 0 <= seed < EVAL_SEED_END
