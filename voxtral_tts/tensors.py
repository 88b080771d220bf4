"""Tensor files of the release, read and written without torch.

- safetensors: the header (names, dtypes, shapes, offsets) is parsed here so that a checkpoint can be
  validated — missing, extra, mis-shaped tensors, a truncated file — before any weight is read, and
  so that BF16 arrays can be read with numpy alone (the ``safetensors`` package has no numpy BF16).
- PyTorch ``.pt`` archives holding one tensor (the voice embeddings): a zip with a pickle that
  describes the tensor and raw little-endian storage; the pickle is read with an unpickler that
  only accepts the few names a saved tensor uses, never arbitrary classes.
- A streaming safetensors writer (tensor by tensor, little memory) for generated checkpoints.

BF16 is handled as raw uint16: widening to float32 is exact (shift into the high half).
"""

from __future__ import annotations

import io
import json
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping

import numpy as np

from .errors import VoxtralError

_NUMPY_DTYPES = {
    "F64": np.float64,
    "F32": np.float32,
    "F16": np.float16,
    "BF16": np.uint16,  # raw bits; see bf16_to_float32
    "I64": np.int64,
    "I32": np.int32,
    "I16": np.int16,
    "I8": np.int8,
    "U8": np.uint8,
    "BOOL": np.bool_,
}
_ITEMSIZE = {k: np.dtype(v).itemsize for k, v in _NUMPY_DTYPES.items()}
_MAX_HEADER = 100 * 1024 * 1024


class TensorFileError(VoxtralError):
    """A tensor file is unreadable, truncated or not in the expected format."""


def bf16_to_float32(bits: np.ndarray) -> np.ndarray:
    """Exact widening of BF16 (stored as uint16) to float32."""
    return (np.asarray(bits, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def float32_to_bf16(values: np.ndarray) -> np.ndarray:
    """Round-to-nearest-even float32 → BF16 bits (uint16), as torch's ``.to(torch.bfloat16)``."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32)
    rounded = bits + np.uint32(0x7FFF) + ((bits >> 16) & np.uint32(1))
    return (rounded >> 16).astype(np.uint16)


@dataclass(frozen=True)
class TensorInfo:
    dtype: str
    shape: tuple[int, ...]
    start: int  # absolute byte offset in the file
    end: int

    @property
    def nbytes(self) -> int:
        return self.end - self.start


def read_safetensors_header(path: str | Path) -> tuple[dict[str, TensorInfo], dict[str, str]]:
    """Names → :class:`TensorInfo`, and the ``__metadata__`` dict. Checks the file is complete."""
    path = Path(path)
    try:
        size = path.stat().st_size
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise TensorFileError(f"{path}: truncated (no safetensors header)")
            (n,) = struct.unpack("<Q", head)
            if n > min(_MAX_HEADER, size - 8):
                raise TensorFileError(f"{path}: not a safetensors file or truncated (header length {n})")
            raw = f.read(n)
    except FileNotFoundError:
        raise TensorFileError(f"{path}: not found") from None
    except IsADirectoryError:
        raise TensorFileError(f"{path}: is a directory, expected a safetensors file") from None
    try:
        header = json.loads(raw)
        if not isinstance(header, dict):
            raise ValueError("header is not an object")
    except (ValueError, UnicodeDecodeError) as exc:
        raise TensorFileError(f"{path}: corrupt safetensors header ({exc})") from None
    metadata = header.pop("__metadata__", None) or {}
    base = 8 + n
    infos: dict[str, TensorInfo] = {}
    for name, entry in header.items():
        try:
            dtype, shape = entry["dtype"], tuple(int(d) for d in entry["shape"])
            begin, end = (int(x) for x in entry["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise TensorFileError(f"{path}: corrupt header entry for tensor '{name}'") from None
        if dtype not in _ITEMSIZE:
            raise TensorFileError(f"{path}: tensor '{name}' has unsupported dtype {dtype}")
        if end - begin != _ITEMSIZE[dtype] * int(np.prod(shape, dtype=np.int64)):
            raise TensorFileError(f"{path}: tensor '{name}' byte range does not match its shape {shape}")
        if base + end > size:
            raise TensorFileError(
                f"{path}: truncated: tensor '{name}' ends at byte {base + end} but the file has {size} bytes"
            )
        infos[name] = TensorInfo(dtype, shape, base + begin, base + end)
    return infos, metadata


def read_safetensors_array(path: str | Path, info: TensorInfo) -> np.ndarray:
    """One tensor as a read-only numpy memory map (BF16 as raw uint16 bits)."""
    dtype = _NUMPY_DTYPES[info.dtype]
    if int(np.prod(info.shape, dtype=np.int64)) == 0:
        return np.zeros(info.shape, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=info.start, shape=info.shape)


def read_float32(path: str | Path, info: TensorInfo) -> np.ndarray:
    """One tensor widened to float32 (a copy)."""
    return as_float32(read_safetensors_array(path, info), info.dtype)


def write_safetensors(
    path: str | Path,
    specs: Mapping[str, tuple[str, tuple[int, ...]]],
    produce: Callable[[str], np.ndarray],
    metadata: Mapping[str, str] | None = None,
    progress: Callable[[str], None] | None = None,
) -> None:
    """Write a safetensors file tensor by tensor: ``produce(name)`` returns each array when needed.

    ``specs`` maps name → (dtype, shape); for BF16 ``produce`` returns float32 (rounded here) or
    uint16 bits. Only one tensor is in memory at a time.
    """
    header: dict[str, object] = {}
    if metadata:
        header["__metadata__"] = dict(metadata)
    offset = 0
    names = sorted(specs)
    for name in names:
        dtype, shape = specs[name]
        nbytes = _ITEMSIZE[dtype] * int(np.prod(shape, dtype=np.int64))
        header[name] = {"dtype": dtype, "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode()
    raw += b" " * (-len(raw) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name in names:
            dtype, shape = specs[name]
            array = np.asarray(produce(name))
            if dtype == "BF16" and array.dtype != np.uint16:
                array = float32_to_bf16(array)
            elif dtype != "BF16":
                array = array.astype(_NUMPY_DTYPES[dtype], copy=False)
            if tuple(array.shape) != tuple(shape):
                raise ValueError(f"{name}: produced shape {array.shape}, declared {shape}")
            f.write(np.ascontiguousarray(array).tobytes())
            if progress:
                progress(name)


# --- PyTorch .pt archives (one tensor) -------------------------------------------------------------

_TORCH_STORAGE_DTYPES = {
    "BFloat16Storage": ("BF16", np.uint16),
    "FloatStorage": ("F32", np.float32),
    "HalfStorage": ("F16", np.float16),
    "DoubleStorage": ("F64", np.float64),
}


@dataclass(frozen=True)
class _StorageRef:
    kind: str
    key: str


@dataclass(frozen=True)
class _TensorRef:
    storage: _StorageRef
    offset: int
    shape: tuple[int, ...]
    stride: tuple[int, ...]


def _rebuild_tensor_v2(storage, offset, shape, stride, *_unused):
    return _TensorRef(storage, int(offset), tuple(shape), tuple(stride))


class _TensorUnpickler(pickle.Unpickler):
    """Accepts only what ``torch.save(tensor)`` writes; anything else is refused."""

    def find_class(self, module: str, name: str):
        if (module, name) == ("torch._utils", "_rebuild_tensor_v2"):
            return _rebuild_tensor_v2
        if module == "torch" and name in _TORCH_STORAGE_DTYPES:
            return name
        if (module, name) == ("collections", "OrderedDict"):
            return dict
        raise pickle.UnpicklingError(f"unsupported object {module}.{name} in a tensor file")

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 3 and pid[0] == "storage"):
            raise pickle.UnpicklingError(f"unsupported persistent id {pid!r}")
        kind = pid[1] if isinstance(pid[1], str) else getattr(pid[1], "__name__", str(pid[1]))
        return _StorageRef(kind, str(pid[2]))


def read_torch_tensor(path: str | Path) -> tuple[np.ndarray, str]:
    """The single tensor in a ``torch.save`` archive, as numpy (BF16 as uint16 bits), and its dtype tag."""
    path = Path(path)
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
            pkl = [n for n in names if n.endswith("/data.pkl") or n == "data.pkl"]
            if len(pkl) != 1:
                raise TensorFileError(f"{path}: not a PyTorch tensor archive (no data.pkl)")
            prefix = pkl[0][: -len("data.pkl")]
            ref = _TensorUnpickler(io.BytesIO(archive.read(pkl[0]))).load()
            if not isinstance(ref, _TensorRef):
                raise TensorFileError(f"{path}: holds a {type(ref).__name__}, expected a single tensor")
            if ref.storage.kind not in _TORCH_STORAGE_DTYPES:
                raise TensorFileError(f"{path}: unsupported tensor storage {ref.storage.kind}")
            tag, dtype = _TORCH_STORAGE_DTYPES[ref.storage.kind]
            member = f"{prefix}data/{ref.storage.key}"
            if member not in names:
                raise TensorFileError(f"{path}: storage member {member} is missing")
            storage = np.frombuffer(archive.read(member), dtype=np.dtype(dtype).newbyteorder("<"))
    except FileNotFoundError:
        raise TensorFileError(f"{path}: not found") from None
    except (zipfile.BadZipFile, EOFError, pickle.UnpicklingError, ValueError, OSError) as exc:
        raise TensorFileError(f"{path}: corrupt or truncated PyTorch file ({exc})") from None
    count = int(np.prod(ref.shape, dtype=np.int64))
    needed = ref.offset + sum((s - 1) * st for s, st in zip(ref.shape, ref.stride)) + 1 if count else 0
    if needed > storage.size:
        raise TensorFileError(f"{path}: truncated tensor data ({storage.size} values, need {needed})")
    itemsize = storage.itemsize
    array = np.lib.stride_tricks.as_strided(
        storage[ref.offset :], shape=ref.shape, strides=tuple(s * itemsize for s in ref.stride)
    )
    return np.ascontiguousarray(array).astype(dtype, copy=False), tag


def as_float32(array: np.ndarray, dtype: str) -> np.ndarray:
    """An array of the given safetensors dtype tag (BF16 as uint16 bits) as an owned float32 copy."""
    return bf16_to_float32(array) if dtype == "BF16" else np.array(array, dtype=np.float32)
