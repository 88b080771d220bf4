"""How numbers reach a person: counts and sizes in a unit read at a glance, and progress bars that
claim only what is known.

- :func:`count_text` / :func:`bytes_text`: "2.2 M", "4.0 B"; "36.0 KB", "1.0 GB" — never
  "0.00 B parameters" for a small model nor "0.0 MB" for a small cache entry.
- :func:`steps`: a bar over steps of unequal, unknown length — tensors of very different sizes,
  graphs, the parts of a text. It shows steps done of steps to do and the time so far; a rate or
  a remaining time extrapolated from such steps is untrue (one slow first step — a tensor that
  waits for a trace — makes tqdm's default promise minutes for a seconds-long export), so
  :data:`STEPS_FORMAT` has neither.
"""

from __future__ import annotations

from collections.abc import Iterable

from tqdm.auto import tqdm

#: counts and elapsed time, never an estimate: "loading weights:  40%|████   | 62/155 tensor [00:02]"
STEPS_FORMAT = "{l_bar}{bar}| {n_fmt}/{total_fmt} {unit} [{elapsed}{postfix}]"


def _scaled(n: float, base: float, units: tuple[str, ...]) -> tuple[float, str] | None:
    """(n in the largest unit it reaches, that unit), or None below the first."""
    for power in range(len(units), 0, -1):
        scale = base**power
        if n >= scale * 0.99995:  # what would round to 1000.0 of a unit is 1.0 of the next
            return n / scale, units[power - 1]
    return None


def count_text(n: int) -> str:
    """A count in thousands (k), millions (M) or billions (B): 950, 12.3 k, 2.2 M, 4.0 B."""
    scaled = _scaled(n, 1000, ("k", "M", "B"))
    return str(n) if scaled is None else f"{scaled[0]:.1f} {scaled[1]}"


def bytes_text(n: int) -> str:
    """A size in binary kilo-, mega- or gigabytes (as ``--prefix-cache-mb`` counts): 512 bytes,
    36.0 KB, 1.0 GB."""
    scaled = _scaled(n, 1024, ("KB", "MB", "GB", "TB"))
    return f"{n} bytes" if scaled is None else f"{scaled[0]:.1f} {scaled[1]}"


def steps(iterable: Iterable | None = None, *, desc: str, unit: str, total: int | None = None,
          disable: bool = False) -> tqdm:
    """A bar over steps of unequal, unknown length (tqdm's arguments otherwise), in :data:`STEPS_FORMAT`."""
    return tqdm(iterable, desc=desc, unit=unit, total=total, disable=disable, bar_format=STEPS_FORMAT)
