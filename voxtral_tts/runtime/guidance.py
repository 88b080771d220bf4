"""The flow head's classifier-free guidance scale α (the checkpoint's ``cfg_alpha``, 1.2 for the
release; Mistral's API calls it ``expressiveness``): its one check, and the per-row weights every
backend's flow frame takes.

Each Euler step moves x by ``α·v_cond + (1 − α)·v_uncond`` (spec §6.3.3). The flow graphs take the
two weights of each row, ``guidance`` [B, 2] = (α, 1 − α) in float32, computed here in double and
rounded once: at the default they are the very floats the graphs held as constants before α was an
input (1 − α rounded from double is −0.2 in float32; computed in float32 from α's float32 it would be
−0.20000005), so the default's codes are bit-identical.
"""

from __future__ import annotations

import math

import numpy as np

from ..errors import OptionError

#: The largest scale taken: α·v stays far inside float16's range in the fp16 graphs (Core ML,
#: TensorRT), and the guided velocity far past anything useful.
MAX_EXPRESSIVENESS = 100.0


def check_expressiveness(value) -> float:
    """``value`` as a float from 1.0 (no guidance) to :data:`MAX_EXPRESSIVENESS`, or a one-line
    :class:`~voxtral_tts.errors.OptionError` naming ``expressiveness``."""
    number = isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)
    scale = float(value) if number else math.nan
    if not 1.0 <= scale <= MAX_EXPRESSIVENESS:  # NaN fails too
        raise OptionError("expressiveness", f"must be a number from 1.0 to {MAX_EXPRESSIVENESS:g} (the flow head's "
                                            f"guidance scale), got {value!r}")
    return scale


def guidance_weights(scales) -> np.ndarray:
    """Per-row scales [n] → the flow frame's ``guidance`` input [n, 2] float32: (α, 1 − α), each
    computed in double and rounded once."""
    alpha = np.asarray(scales, dtype=np.float64).reshape(-1)
    return np.stack((alpha, 1.0 - alpha), axis=1).astype(np.float32)
