"""Where each sequence's keys/values live, so that a decode step binds only the active rows.

The engine backends' KV cache is position-major (:mod:`.kv_layout`): a step's ``past_*`` input is
a layer's prefix ``cache[l, :P]`` = [P, W, Hkv, hd], contiguous only when W is the cache's whole
slot axis. To run a step at the number of sequences it names (or the smallest width of
``widths`` that holds them), the cache is laid out with W = that width, and the sequences are
kept in rows 0..n−1:

- a runtime slot (what :class:`.Backend` calls take) maps to a row of the current layout;
- a slot is in flight from its prefill until a step that does not name it (the frame loop names
  every sequence that goes on); then its row is free, and the sequence in the highest row moves
  into it (its filled positions, one copy per layer) so that the rows in use stay 0..n−1;
- when n needs another width, the filled positions of rows 0..n−1 are re-laid out from the old
  width to the new one, one layer at a time through a scratch buffer of one layer (the two
  layouts overlap in the same memory); a join or leave costs a few copies of the live keys and
  values, a step nothing.

Pure arithmetic, as :mod:`.kv_layout`: :class:`SlotPlacement` says which copies to make
(:class:`Move`), each backend executes them on its own buffers.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Sequence

from ...errors import VoxtralError
from .buckets import bucket_for
from .kv_layout import Copy2D, KVLayout

#: where a copy reads and writes: within the cache, cache → scratch, scratch → cache
CACHE, TO_SCRATCH, FROM_SCRATCH = "cache", "to_scratch", "from_scratch"


@dataclass(frozen=True)
class Move:
    """A copy to execute on both caches (keys and values), in order."""

    copy: Copy2D
    kind: str  # CACHE, TO_SCRATCH or FROM_SCRATCH


class RowPlacement:
    """Runtime slots → rows 0..n−1 of a batch ``width`` wide, ``width`` the smallest of ``widths``
    (ascending) holding the n sequences in flight. :meth:`admit` and :meth:`arrange` return the
    moves to make first: here (source row, destination row, filled positions) for each sequence
    that changes row; :class:`SlotPlacement` turns them into copies of a position-major cache."""

    def __init__(self, widths: Sequence[int]):
        self.widths = sorted(int(w) for w in widths)
        if not self.widths or self.widths[0] < 1:
            raise VoxtralError(f"row widths must be positive, got {self.widths}")
        self.width = self.widths[0]
        self.rows: dict[int, int] = {}  # slot → row, rows 0..n−1
        self.lengths: dict[int, int] = {}  # slot → filled positions

    def row(self, slot: int) -> int:
        return self.rows[int(slot)]

    def admit(self, slots: Sequence[int], lengths: Sequence[int]) -> list:
        """Before prefilling ``slots`` (their prompts ``lengths`` positions, prefix included): each
        new slot takes the next row (a slot already in flight keeps its row, its sequence replaced),
        the batch widened if needed."""
        moves = []
        new = [int(s) for s in slots if int(s) not in self.rows]
        if new:
            moves = self._resize(bucket_for(len(self.rows) + len(new), self.widths))
            for slot in new:
                self.rows[slot] = len(self.rows)
        for slot, length in zip(slots, lengths):
            self.lengths[int(slot)] = int(length)
        return moves

    def arrange(self, slots: Sequence[int], positions: Sequence[int]) -> list:
        """Before a step of ``slots`` at ``positions``: slots not named leave (their rows filled by
        the highest rows in use), the batch narrowed or widened to the smallest width holding the
        named ones; afterwards each has filled ``position + 1`` positions."""
        named = [int(s) for s in slots]
        for slot, position in zip(named, positions):
            if slot in self.rows:
                self.lengths[slot] = int(position)
        keep = set(named)
        for slot in [s for s in self.rows if s not in keep]:
            del self.rows[slot]
            self.lengths.pop(slot, None)
        # the sequences in rows ≥ n move down into the rows < n that were left
        n, moves = len(self.rows), []
        holes = sorted(set(range(n)) - set(self.rows.values()))
        for slot in sorted((s for s, r in self.rows.items() if r >= n), key=self.rows.get):
            hole = holes.pop(0)
            moves += self._move(self.rows[slot], hole, self.lengths[slot])
            self.rows[slot] = hole
        moves += self._resize(bucket_for(len(keep), self.widths))
        for slot in named:  # stepped without a prefill: its row holds whatever was there
            if slot not in self.rows:
                self.rows[slot] = len(self.rows)
        for slot, position in zip(named, positions):
            self.lengths[slot] = int(position) + 1
        return moves

    def _move(self, src: int, dst: int, length: int) -> list:
        return [(src, dst, length)] if length > 0 else []

    def _resize(self, width: int) -> list:
        self.width = width
        return []


class SlotPlacement(RowPlacement):
    """:class:`RowPlacement` over a position-major cache (:class:`.kv_layout.KVLayout`) laid out
    ``width`` slots wide: its moves are :class:`Move` copies (a re-layout when the width changes),
    :attr:`layout` the current layout; the largest width is the slots the cache was allocated for."""

    def __init__(self, layout: KVLayout, widths: Sequence[int]):
        super().__init__(widths)
        if self.widths[-1] != layout.slots:
            raise VoxtralError(f"layout widths {self.widths} must end at the cache's {layout.slots} slots")
        self.full = layout
        self.layout = replace(layout, slots=self.width)

    @property
    def scratch_shape(self) -> tuple[int, int, int, int]:
        """One layer of the full cache: what a re-layout stages at a time."""
        return (self.full.capacity, self.full.slots, *self.full.row_shape)

    def _move(self, src: int, dst: int, length: int) -> list[Move]:
        """A sequence's first ``length`` positions from row ``src`` to row ``dst`` (one copy per layer)."""
        if length < 1:
            return []
        layout = self.layout
        return [Move(Copy2D(layout.offset(layer, 0, dst), layout.position_stride, layout.offset(layer, 0, src),
                            layout.position_stride, layout.row_bytes, length), CACHE)
                for layer in range(layout.n_layers)]

    def _resize(self, width: int) -> list[Move]:
        """Rows 0..n−1 from the current width to ``width``: per layer, its filled positions to the
        scratch and back at the new pitch; layers in the order that never overwrites a layer not yet
        read (ascending when narrowing, descending when widening)."""
        old, new = self.layout, replace(self.layout, slots=width)
        self.layout, self.width = new, width
        n, filled = len(self.rows), max(self.lengths.get(s, 0) for s in self.rows) if self.rows else 0
        if width == old.slots or n == 0 or filled == 0:
            return []
        span = n * old.row_bytes
        layers = range(old.n_layers) if width < old.slots else reversed(range(old.n_layers))
        moves = []
        for layer in layers:
            moves.append(Move(Copy2D(0, span, old.offset(layer), old.position_stride, span, filled), TO_SCRATCH))
            moves.append(Move(Copy2D(new.offset(layer), new.position_stride, 0, span, span, filled), FROM_SCRATCH))
        return moves
