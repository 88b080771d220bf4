"""Voices from codes and from reference audio (issue #23), without the codec encoder the release lacks.

A voice is, row by row, what the backbone receives for one audio frame: the sum of the 37
codebook embeddings of that frame's codes — the same sum a generated frame is fed back as (spec
§4.2, §6.4). :func:`voice_from_codes` computes it with the runtime's own lookup
(:func:`~voxtral_tts.runtime.backends.host_embeddings.code_embedding`) from the checkpoint's
codebook table, or from an engine's; it needs no torch.

:func:`create_voice` finds the codes of a recording by inverting the released codec decoder
(:mod:`voxtral_tts.model.inversion`, torch) after preparing the audio
(:mod:`voxtral_tts.reference_audio`), and embeds them. :func:`cached_voice` keeps created voices in
the user cache, keyed by the audio's bytes, the model and the settings. :func:`write_voice` writes the
``.safetensors`` voice file (key ``embedding``) that every entry point reads as ``--voice FILE``.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from .checkpoint import CheckpointReader, checkpoint_identity
from .config import N_AUDIO_SPECIAL, ModelConfig
from .engine import cache_root, is_engine_dir, open_engine
from .errors import VoiceError, VoxtralError
from .hub import model_path
from .reference_audio import prepare
from .runtime.backends.host_embeddings import HostEmbeddings, code_embedding
from .tensors import write_safetensors

log = logging.getLogger(__name__)

CODEBOOK_TABLE = "backbone.mm_audio_embeddings.audio_codebook_embeddings.embeddings.weight"
DEFAULT_STEPS = 600
DEFAULT_SEED = 0
TORCH_MISSING = "creating a voice needs PyTorch, to run the codec decoder: pip install 'voxtral-tts[torch]'"


def check_codes(codes, config: ModelConfig) -> np.ndarray:
    """Codes [N, 37] with the +2 offset, each in its codebook's range (semantic 2..8193, acoustic
    2..22 at full size) → int64, or one :class:`VoiceError` line."""
    array = np.asarray(codes)
    a = config.audio
    if array.ndim != 2 or array.shape[1] != a.num_codebooks or array.shape[0] == 0:
        raise VoiceError(f"codes must be [N, {a.num_codebooks}] with N ≥ 1, got shape {list(array.shape)}")
    if not np.issubdtype(array.dtype, np.integer):
        raise VoiceError(f"codes must be integers, got {array.dtype}")
    array = array.astype(np.int64)
    high = np.array([a.semantic_codebook_size] + [a.acoustic_codebook_size] * a.n_acoustic_codebook) + N_AUDIO_SPECIAL
    bad = (array < N_AUDIO_SPECIAL) | (array >= high)
    if bad.any():
        frame, book = (int(i) for i in np.argwhere(bad)[0])
        raise VoiceError(f"code {array[frame, book]} of frame {frame}, codebook {book} is outside "
                         f"{N_AUDIO_SPECIAL}..{high[book] - 1} (codes carry the +{N_AUDIO_SPECIAL} offset)")
    return array


def voice_from_codes(model: str | Path, codes) -> np.ndarray:
    """The voice rows float32 [N, D] of codes [N, 37] (+2 offset): per frame the sum of its 37 codebook
    embeddings, as the runtime feeds a generated frame back. ``model``: a model directory, a hub id
    or an engine directory."""
    path = model_path(model)
    config = ModelConfig.from_file(path)
    codes = check_codes(codes, config)
    if is_engine_dir(path):
        return HostEmbeddings(open_engine(path)).codes(codes)
    table = CheckpointReader(path, config).read(CODEBOOK_TABLE)
    return code_embedding(table, np.asarray(config.audio.codebook_offsets, dtype=np.int64), codes)


@dataclass(frozen=True)
class CreatedVoice:
    """A voice found for a recording: its codes, rows, and how closely the codes decode to the audio."""

    rows: np.ndarray  # float32 [N, D]
    codes: np.ndarray  # int64 [N, 37], +2 offset
    loss: float  # multi-resolution STFT loss of the codes' decoded audio against the prepared recording
    steps: int
    seconds: float  # length of the prepared recording


def default_device() -> str:
    """cuda, else mps, else cpu: whichever torch has here."""
    import torch

    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def find_voice(model: str | Path, audio: str | Path | np.ndarray, sample_rate: int | None = None, *,
               steps: int = DEFAULT_STEPS, seed: int = DEFAULT_SEED, device: str | None = None,
               progress: bool = True, on_step: Callable[[int, int, float], None] | None = None) -> CreatedVoice:
    """:func:`create_voice` with what it found: the codes and their loss as well as the rows.
    ``on_step(done, total, loss)``: called after each optimisation step (see
    :func:`voxtral_tts.model.inversion.invert`)."""
    if steps < 0:
        raise VoxtralError(f"steps must be 0 or more, got {steps}")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise VoxtralError(TORCH_MISSING) from None
    from .model.inversion import invert
    from .model.loading import load_model

    path = model_path(model, progress=progress)
    if is_engine_dir(path):
        raise VoxtralError(f"{path}: an engine directory holds no codec weights for torch; creating a voice needs the "
                           "model directory (params.json, consolidated.safetensors)")
    prepared = prepare(audio, sample_rate)
    device = device or default_device()
    decoder = load_model(path, progress=False, blocks=("audio_tokenizer",)).audio_tokenizer
    log.info("finding the codes of %.1f s of audio on %s: at most %d steps, seed %d", len(prepared) / 24000, device,
             steps, seed)
    try:
        found = invert(decoder, prepared, steps=steps, seed=seed, device=device, progress=progress, on_step=on_step)
    except RuntimeError as exc:  # a device torch cannot use, out of memory
        raise VoxtralError(f"codec inversion on {device} failed: {str(exc).splitlines()[0]}") from None
    return CreatedVoice(voice_from_codes(path, found.codes), found.codes, found.loss, found.steps,
                        len(prepared) / 24000)


def create_voice(model: str | Path, audio: str | Path | np.ndarray, sample_rate: int | None = None, *,
                 steps: int = DEFAULT_STEPS, seed: int = DEFAULT_SEED, device: str | None = None,
                 progress: bool = True) -> np.ndarray:
    """A voice [N, D] float32 from 3–25 s of reference audio: a path (any format PyAV reads) or an
    array with its ``sample_rate``. The recording is made mono, 24 kHz, trimmed and level-set
    (:func:`voxtral_tts.reference_audio.prepare`); codes are found by inverting the codec decoder
    (``steps`` Adam steps at most, seeded) on ``device`` (default cuda, mps or cpu, whichever is
    there) and embedded (:func:`voice_from_codes`). Needs torch (``pip install 'voxtral-tts[torch]'``);
    speaking with the voice does not."""
    return find_voice(model, audio, sample_rate, steps=steps, seed=seed, device=device, progress=progress).rows


def write_voice(path: str | Path, rows: np.ndarray, metadata: dict[str, str] | None = None) -> Path:
    """The voice file every entry point reads: ``.safetensors`` with one float32 tensor ``embedding``."""
    path = Path(path)
    if path.suffix != ".safetensors":
        raise VoxtralError(f"{path}: a voice file is written as .safetensors")
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    try:
        write_safetensors(path, {"embedding": ("F32", rows.shape)}, lambda _: rows, metadata=metadata)
    except OSError as exc:
        raise VoxtralError(f"{path}: cannot write ({exc.strerror or exc})") from None
    return path


def cache_key(model_dir: Path, audio_file: Path, steps: int, seed: int) -> str:
    """sha256 of the recording's bytes, the model (params.json and the checkpoint header) and the settings."""
    digest = hashlib.sha256()
    try:
        digest.update(audio_file.read_bytes())
    except OSError as exc:
        raise VoxtralError(f"{audio_file}: cannot read ({exc.strerror or exc})") from None
    config = ModelConfig.from_file(model_dir)
    digest.update(f"|{config.params_sha256}|{checkpoint_identity(model_dir)}|{steps}|{seed}".encode())
    return digest.hexdigest()


def cached_voice(model: str | Path, audio_file: str | Path, *, steps: int = DEFAULT_STEPS, seed: int = DEFAULT_SEED,
                 device: str | None = None, progress: bool = True,
                 on_step: Callable[[int, int, float], None] | None = None) -> Path:
    """The voice file of ``audio_file`` for ``model``, created once into ``<user cache>/voices/``
    and found there again (same audio bytes, model and settings)."""
    path = model_path(model, progress=progress)
    audio_file = Path(audio_file)
    if not audio_file.is_file():
        raise VoxtralError(f"{audio_file}: not found")
    if is_engine_dir(path):
        raise VoxtralError(f"{path}: --reference-audio needs the model directory, not an engine directory")
    target = cache_root() / "voices" / f"{cache_key(path, audio_file, steps, seed)[:32]}.safetensors"
    if target.is_file():
        log.info("voice of %s: from the cache (%s)", audio_file, target)
        return target
    voice = find_voice(path, audio_file, steps=steps, seed=seed, device=device, progress=progress, on_step=on_step)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_suffix(".partial.safetensors")
    write_voice(partial, voice.rows, voice_metadata(audio_file, voice, steps, seed))
    partial.replace(target)
    log.info("voice of %s: %d frames, codes decode to the audio with loss %.3f; cached as %s", audio_file,
             len(voice.rows), voice.loss, target)
    return target


def voice_metadata(source: str | Path | None, voice: CreatedVoice, steps: int, seed: int) -> dict[str, str]:
    return {"created_by": "voxtral-tts codec inversion", "source": Path(source).name if source else "array",
            "steps": str(steps), "seed": str(seed), "loss": f"{voice.loss:.5f}", "frames": str(len(voice.rows))}
