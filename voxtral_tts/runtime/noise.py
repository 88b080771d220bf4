"""The randomness of generation: each frame's flow-matching start x0 and, when sampling, the
semantic code's Gumbel noise (:class:`NoiseSource`), and the temperature's one check."""

from __future__ import annotations

import hashlib

import numpy as np

from ..errors import OptionError, VoxtralError
from .constants import MAX_TEMPERATURE


class NoiseSource:
    """The randomness of each frame: x0 (rows of an explicit array, or draws from a seeded
    generator) and, at a temperature above 0, the semantic code's sampling noise.

    With a seed, x0 of frame n equals ``default_rng(seed).standard_normal((M, 36))[n]`` for any
    M ≥ n+1, the fixture's contract, so explicit noise and a seed are interchangeable. Sampling
    adds ``temperature × Gumbel(0, 1)`` to the masked semantic logits before the argmax (the
    Gumbel-max trick: a draw from softmax(logits / temperature)); the Gumbel draws come from a
    stream of their own (``SeedSequence(seed, spawn_key=(1,))``), so the x0 rows are the seed's
    at every temperature. With explicit noise, that stream's seed is derived from the array's
    bytes: the same array gives the same samples.

    The parts of a long text each draw from their own source (:meth:`for_part`), so that a part's
    noise does not depend on when the scheduler runs it: part 0 takes the streams above, part k ≥ 1
    those of ``SeedSequence(seed, spawn_key=(2, k))`` (x0) and ``SeedSequence(seed, spawn_key=(3, k))``
    (sampling). An explicit array is one source the parts share in order (:attr:`explicit`): each
    part takes the rows after those of the part before it.

    ``seed`` and ``temperature`` arrive checked (:class:`.options.SpeechOptions`); the noise
    array's width is checked here, where the model's width is known.
    """

    def __init__(self, width: int, seed: int | None = None, noise: np.ndarray | None = None,
                 temperature: float = 0.0, logits: int = 0, part: int = 0):
        self.width = width
        self.seed: int | None = None
        self.temperature = float(temperature)
        if noise is not None:
            noise = np.asarray(noise, dtype=np.float32)
            if noise.ndim != 2 or noise.shape[1] != width:
                raise OptionError("noise", f"must be float32 [frames, {width}], got shape {list(noise.shape)}")
            self._rows, self._rng = noise, None
        else:
            self.seed = int(np.random.SeedSequence().entropy % (2**63)) if seed is None else int(seed)
            x0 = self.seed if part == 0 else np.random.SeedSequence(self.seed, spawn_key=(2, part))
            self._rows, self._rng = None, np.random.default_rng(x0)
        self._logits = logits
        self._sampler = None
        if self.temperature > 0:
            if logits < 1:
                raise VoxtralError("sampling needs the width of the semantic logits")
            sampling_seed = self.seed if noise is None else int.from_bytes(
                hashlib.blake2b(noise.tobytes(), digest_size=8).digest(), "little")
            key = (1,) if part == 0 or noise is not None else (3, part)
            self._sampler = np.random.default_rng(np.random.SeedSequence(sampling_seed, spawn_key=key))
        self._next = 0

    @property
    def explicit(self) -> bool:
        """Rows of an explicit array: the parts of a request share this source, one after another."""
        return self._rows is not None

    def for_part(self, part: int) -> "NoiseSource":
        """The source of a request's part ``part``: this one for explicit rows (shared, in order),
        else a fresh source on the part's own streams (see the class docstring)."""
        if self.explicit:
            return self
        return NoiseSource(self.width, self.seed, temperature=self.temperature, logits=self._logits, part=part)

    @property
    def rows_left(self) -> int | None:
        """Frames this source can still supply (None: unlimited)."""
        return None if self._rows is None else self._rows.shape[0] - self._next

    def take(self) -> tuple[np.ndarray, np.ndarray | None]:
        """The next frame's x0 [36] and semantic sampling noise [logits] (None: greedy)."""
        if self._rows is not None:
            if self._next >= self._rows.shape[0]:
                raise VoxtralError(f"noise has {self._rows.shape[0]} rows; more frames were needed")
            row = self._rows[self._next]
        else:
            row = self._rng.standard_normal(self.width).astype(np.float32)
        self._next += 1
        if self._sampler is None:
            return row, None
        return row, (self.temperature * self._sampler.gumbel(size=self._logits)).astype(np.float32)


def check_temperature(temperature) -> float:
    """The temperature as a float in [0, MAX_TEMPERATURE], or a one-line error naming it."""
    number = isinstance(temperature, (int, float, np.integer, np.floating)) and not isinstance(temperature, bool)
    value = float(temperature) if number else float("nan")
    if not 0.0 <= value <= MAX_TEMPERATURE:  # NaN fails too
        raise OptionError("temperature", f"must be a number from 0 (greedy) to {MAX_TEMPERATURE:g}, "
                                         f"got {temperature!r}")
    return value
