"""Fixed shapes a variable size is rounded up to (CUDA graphs and TensorRT profiles replay fixed shapes)."""

from __future__ import annotations

from ...errors import CapacityError


def power_buckets(limit: int, first: int = 1) -> list[int]:
    """Powers of two from ``first`` below ``limit``, then ``limit`` itself (at most twice the work,
    a handful of shapes)."""
    out, size = [], first
    while size < limit:
        out.append(size)
        size *= 2
    return out + [limit]


def bucket_for(n: int, sizes: list[int]) -> int:
    """The smallest size ≥ ``n``; beyond the largest, the KV cache (or batch) cannot hold it."""
    for size in sizes:
        if size >= n:
            return size
    raise CapacityError(f"{n} positions exceed the KV cache ({sizes[-1]} positions)")
