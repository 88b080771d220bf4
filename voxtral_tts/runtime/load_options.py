"""What loading a model takes, typed and checked once: :class:`TTSOptions` for the :class:`~.tts.TTS`,
:class:`LoadOptions` and one subclass per backend for the backend, and :class:`LoadPlan`, the two
together with the backend's name.

Each option is checked where its dataclass is built (``__post_init__``), before anything loads;
what needs the model (the capacity against its ``max_seq_len``) or the backend's library (a device
name) is checked by the backend. :func:`load_plan` builds a plan from keyword options — those of
``voxtral_tts.load`` and of the command lines — and makes an unknown option or one of another
backend a one-line :class:`VoxtralError`. Torch-free, no engine library.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any, ClassVar

from ..errors import VoxtralError
from .codec import parse_stream_chunks
from .constants import DEFAULT_PREFIX_CACHE_MB, MAX_BATCH, STREAM_CHUNKS

#: compute and storage dtypes of the torch backend, by name
TORCH_DTYPES = ("fp32", "bf16", "fp16")
#: where the onnxruntime backend keeps its KV cache: numpy on the host, or OrtValues on the device
KV_PLACEMENTS = ("host", "device")


def _check_int(name: str, value, lowest: int | None = None, highest: int | None = None, none: bool = True) -> None:
    if value is None and none:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise VoxtralError(f"{name} must be a whole number, got {value!r}")
    if highest is not None and not lowest <= value <= highest:
        raise VoxtralError(f"{name} must be between {lowest} and {highest}, got {value}")
    if lowest is not None and value < lowest:
        raise VoxtralError(f"{name} must be at least {lowest}, got {value}")


def _check_choice(name: str, value, choices, none: bool = True) -> None:
    if not (value is None and none) and value not in choices:
        raise VoxtralError(f"unknown {name} '{value}'; choose one of {', '.join(choices)}")


@dataclass(frozen=True)
class TTSOptions:
    """The :class:`~.tts.TTS`'s own options. ``prefix_cache``: keep each voice's prefix keys/values
    and prefill only the rest of a prompt, within ``prefix_cache_mb`` MiB (False: prefill whole
    prompts). ``stream_chunks``: frames per streamed chunk, the last repeating (a sequence or a
    comma-separated string; stored as a tuple)."""

    prefix_cache: bool = True
    prefix_cache_mb: int = DEFAULT_PREFIX_CACHE_MB
    stream_chunks: tuple[int, ...] = STREAM_CHUNKS

    def __post_init__(self):
        if not isinstance(self.prefix_cache, bool):
            raise VoxtralError(f"prefix_cache must be True or False, got {self.prefix_cache!r}")
        if isinstance(self.prefix_cache_mb, bool) or not isinstance(self.prefix_cache_mb, int) \
                or self.prefix_cache_mb < 0:
            raise VoxtralError(f"the prefix cache's budget must be at least 0 MB, got {self.prefix_cache_mb}")
        object.__setattr__(self, "stream_chunks", parse_stream_chunks(self.stream_chunks))


@dataclass(frozen=True)
class LoadOptions:
    """What every backend takes. ``capacity``: KV positions per sequence (None: the backend's
    default, an engine's own); ``max_batch``: sequences decoded together; ``device``: the
    backend's (None: its default); ``progress``: progress bars while loading."""

    #: the registry name of the backend these options are for (each subclass sets it)
    backend: ClassVar[str] = ""

    capacity: int | None = None
    max_batch: int = 1
    device: str | None = None
    progress: bool = True

    def __post_init__(self):
        _check_int("capacity", self.capacity)
        _check_int("max_batch", self.max_batch, 1, MAX_BATCH, none=False)
        if self.device is not None and not isinstance(self.device, str):
            raise VoxtralError(f"device must be a name such as cpu or cuda, got {self.device!r}")


@dataclass(frozen=True)
class TorchOptions(LoadOptions):
    """The torch backend's: ``dtype`` the compute dtype (None: bf16 on CUDA and on a CPU with
    native bf16, else fp32), ``weight_dtype`` the storage dtype (None: bf16 when computing in a
    16-bit dtype, else the checkpoint's), ``compile`` torch.compile inside the CUDA graphs,
    ``cuda_graphs`` (None: on CUDA)."""

    backend: ClassVar[str] = "torch"

    dtype: str | None = None
    compile: bool = False
    cuda_graphs: bool | None = None
    weight_dtype: str | None = None

    def __post_init__(self):
        super().__post_init__()
        _check_choice("dtype", self.dtype, TORCH_DTYPES)
        _check_choice("weight_dtype", self.weight_dtype, TORCH_DTYPES)


@dataclass(frozen=True)
class OnnxOptions(LoadOptions):
    """The onnxruntime backend's: ``threads`` intra-op threads (None: the physical cores);
    ``kv_placement`` host or device (None: host on the CPU, device on CUDA / TensorRT)."""

    backend: ClassVar[str] = "onnxruntime"

    threads: int | None = None
    kv_placement: str | None = None

    def __post_init__(self):
        super().__post_init__()
        _check_int("threads", self.threads, 1)
        _check_choice("kv_placement", self.kv_placement, KV_PLACEMENTS)


@dataclass(frozen=True)
class TensorRTOptions(LoadOptions):
    """The tensorrt backend's: the common options (``device``: cuda or cuda:N)."""

    backend: ClassVar[str] = "tensorrt"


@dataclass(frozen=True)
class CoreMLOptions(LoadOptions):
    """The coreml backend's: the common options (``device``: all, cpu, gpu or ane)."""

    backend: ClassVar[str] = "coreml"


#: backend name → its options type (the registry's classes name the same type: ``Backend.options_type``)
OPTIONS: dict[str, type[LoadOptions]] = {cls.backend: cls for cls in (TorchOptions, OnnxOptions, TensorRTOptions,
                                                                      CoreMLOptions)}


@dataclass(frozen=True)
class LoadPlan:
    """What to open: the backend (named by its options' type) and the TTS's options."""

    options: LoadOptions
    tts: TTSOptions = field(default_factory=TTSOptions)

    @property
    def backend(self) -> str:
        return self.options.backend


def _names(cls) -> set[str]:
    return {f.name for f in fields(cls)}


def option_names() -> set[str]:
    """Every keyword option :func:`load_plan` knows, for any backend."""
    return _names(TTSOptions).union(*(_names(cls) for cls in OPTIONS.values()))


def check_option_names(options: dict[str, Any]) -> None:
    """An option no backend has is one line (before anything is downloaded or loaded)."""
    unknown = sorted(set(options) - option_names())
    if unknown:
        raise VoxtralError(f"unknown option '{unknown[0]}'; options: {', '.join(sorted(option_names()))}")


def load_plan(backend: str, **options) -> LoadPlan:
    """The typed, checked options of ``backend`` from keyword options. None (and a flag's False)
    means not given; an option of another backend that is given is one line naming its backend."""
    if backend not in OPTIONS:
        raise VoxtralError(f"unknown backend '{backend}'; available: {', '.join(OPTIONS)}")
    check_option_names(options)
    kind, tts = OPTIONS[backend], _names(TTSOptions)
    mine = _names(kind)
    for name, value in options.items():
        if name in mine or name in tts:
            continue
        owner = next(cls for cls in OPTIONS.values() if name in _names(cls))
        if value != next(f.default for f in fields(owner) if f.name == name):
            why = " (an engine's precision is chosen at export)" if owner is TorchOptions else ""
            raise VoxtralError(f"--{name.replace('_', '-')} applies to the {owner.backend} backend{why}")
    given = {name: value for name, value in options.items() if value is not None}
    return LoadPlan(kind(**{k: v for k, v in given.items() if k in mine}),
                    TTSOptions(**{k: v for k, v in given.items() if k in tts}))
