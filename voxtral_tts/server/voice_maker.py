"""The server's voice-creation worker: codec inversion (many minutes on a CPU) off the request path.

:class:`VoiceMaker` owns one thread, apart from the model's worker (:mod:`.worker`) and the event
loop: the decode batch keeps stepping while a voice is made, and on Linux the thread runs at a lower
CPU priority (nice +10, inherited by the threads torch starts from it) so that speech keeps the
cores first. Jobs run one at a time, in order:

- a created voice (:meth:`VoiceMaker.enqueue`): its upload is prepared (24 kHz mono, trimmed,
  level set; kept as ``sample.wav``), inverted (:func:`voxtral_tts.voice_create.find_voice`) and its
  rows written; its record says ``queued`` → ``processing`` (with ``progress`` from 0 to 1 and the
  loss, rewritten at most once a second, and a log line every tenth) → ``ready`` or ``failed``
  (with the error). Deleting it while it is made stops the job at its next step. A job the server
  stopped before it was done is queued again at the next start.
- a speech request's ``ref_audio`` (:meth:`VoiceMaker.reference`): the voice of those bytes from the
  user cache that ``voxtral-run --reference-audio`` uses (:func:`voxtral_tts.voice_create.cached_voice`,
  keyed by the audio, the model and the settings), made there first if need be; the same bytes
  asked for twice share one job.

Creation needs torch and the model directory (the codec decoder's weights); :meth:`VoiceMaker.unavailable`
says which is missing. Speaking with a made voice needs neither.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import importlib.util
import logging
import os
import queue
import tempfile
import threading
import time
from pathlib import Path
from typing import Callable

from ..audio import SAMPLE_RATE
from ..encoding import encode_audio
from ..engine import is_engine_dir
from ..errors import VoxtralError
from ..reference_audio import prepare
from ..voice_create import (DEFAULT_SEED, DEFAULT_STEPS, TORCH_MISSING, cached_voice, find_voice, voice_metadata,
                            write_voice)
from .voice_store import FAILED, PROCESSING, QUEUED, READY, ROWS, SAMPLE, VoiceStore

log = logging.getLogger(__name__)

#: seconds between two writes of a voice's progress to its record
PROGRESS_EVERY = 1.0


class Stopped(Exception):
    """Ends a job at its next step: the voice was deleted, or the server is stopping."""


def check_sample(data: bytes, suffix: str, label: str) -> float:
    """The seconds an upload keeps once prepared, or its :class:`ReferenceAudioError` (not audio,
    too short, silence only): the quick check a request gets before its voice is queued."""
    with tempfile.TemporaryDirectory(prefix="voxtral-sample-") as folder:
        path = Path(folder) / ("sample" + suffix)
        path.write_bytes(data)
        return len(prepare(path, label=label)) / SAMPLE_RATE


class VoiceMaker:
    """Makes voices from recordings with the codec of ``model`` (a model directory; None: creation
    is unavailable), ``steps`` optimisation steps at most, on one low-priority thread."""

    def __init__(self, store: VoiceStore, model: str | Path | None, steps: int = DEFAULT_STEPS,
                 seed: int = DEFAULT_SEED, device: str | None = None):
        self.store, self.model, self.steps, self.seed, self.device = store, model, steps, seed, device
        self._jobs: queue.Queue[Callable[[], None] | None] = queue.Queue()
        self._references: dict[str, concurrent.futures.Future] = {}
        self._lock = threading.Lock()
        self._stopping = False
        self._thread = threading.Thread(target=self._run, name="voxtral-voice-maker", daemon=True)

    def unavailable(self) -> str | None:
        """Why this server cannot create voices (one line naming what to install or pass), or None."""
        if self.model is None:
            return ("creating a voice needs the model directory (its codec decoder's weights): start voxtral-serve "
                    "with the model directory or a hub id, or pass --voice-model DIR")
        if is_engine_dir(self.model):
            return (f"creating a voice needs the model directory, not the engine directory {self.model}: pass "
                    "--voice-model DIR (params.json, consolidated.safetensors)")
        if importlib.util.find_spec("torch") is None:
            return TORCH_MISSING
        return None

    def start(self) -> None:
        """Start the thread, queueing again the voices a previous server left unfinished."""
        self._thread.start()
        for record in self.store.all():
            if record.get("status") in (QUEUED, PROCESSING):
                log.info("voice %s (%s): left unfinished; queued again", record["id"], record.get("name"))
                self.store.update(record["id"], status=QUEUED, progress=0.0)
                self.enqueue(record["id"])

    def stop(self) -> None:
        self._stopping = True
        self._jobs.put(None)

    def enqueue(self, voice_id: str) -> None:
        self._jobs.put(lambda: self._make(voice_id))

    def reference(self, data: bytes, suffix: str) -> concurrent.futures.Future:
        """A future of the cached voice file made from ``data`` (an audio file's bytes)."""
        key = hashlib.sha256(data).hexdigest()
        with self._lock:
            future = self._references.get(key)
            if future is None:
                future = self._references[key] = concurrent.futures.Future()
                self._jobs.put(lambda: self._reference(key, data, suffix, future))
            return future

    # --- the thread ---------------------------------------------------------------------------------
    def _run(self) -> None:
        try:  # below the decode batch's priority (Linux: per thread; torch's threads inherit it)
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 10)
        except (AttributeError, OSError):
            pass
        while (job := self._jobs.get()) is not None:
            job()

    def _progress(self, label: str, still_wanted: Callable[[float, float], bool]):
        """An ``on_step`` for :func:`find_voice`: a log line every tenth, ``still_wanted(fraction,
        loss)`` at most once a second (False, or the server stopping, ends the job)."""
        state = {"written": 0.0, "tenth": 0}

        def on_step(done: int, total: int, loss: float) -> None:
            if self._stopping:
                raise Stopped
            fraction = min(done / max(total, 1), 1.0)
            if int(fraction * 10) > state["tenth"]:
                state["tenth"] = int(fraction * 10)
                log.info("%s: step %d of %d, loss %.4f", label, done, total, loss)
            if time.monotonic() - state["written"] >= PROGRESS_EVERY:
                state["written"] = time.monotonic()
                if not still_wanted(fraction, loss):
                    raise Stopped

        return on_step

    def _make(self, voice_id: str) -> None:
        record = self.store.update(voice_id, status=PROCESSING, progress=0.0)
        if record is None:  # deleted while queued
            return
        label = f"voice {voice_id} ({record.get('name')})"
        started = time.perf_counter()
        try:
            if (why := self.unavailable()) is not None:
                raise VoxtralError(why)
            upload = self.store.upload_path(voice_id)
            if upload is None:
                raise VoxtralError("its uploaded sample is missing from the voices directory")
            prepared = prepare(upload, label=label)
            self.store.path(voice_id, SAMPLE).write_bytes(encode_audio(prepared, "wav", SAMPLE_RATE))
            self.store.update(voice_id, trimmed_seconds=round(len(prepared) / SAMPLE_RATE, 2))
            log.info("%s: finding the codes of %.1f s of audio, %d steps at most", label,
                     len(prepared) / SAMPLE_RATE, self.steps)

            def still_wanted(fraction: float, loss: float) -> bool:
                return self.store.update(voice_id, progress=round(fraction, 4), loss=round(loss, 5)) is not None

            found = find_voice(self.model, prepared, SAMPLE_RATE, steps=self.steps, seed=self.seed,
                               device=self.device, progress=False, on_step=self._progress(label, still_wanted))
            rows = self.store.path(voice_id, ROWS)
            partial = rows.with_suffix(".partial.safetensors")
            write_voice(partial, found.rows, voice_metadata(upload, found, self.steps, self.seed))
            partial.replace(rows)
            upload.unlink(missing_ok=True)
        except Stopped:
            if self._stopping:  # queued again at the next start
                self.store.update(voice_id, status=QUEUED, progress=0.0)
            else:
                log.info("%s: deleted while it was being made; stopped", label)
            return
        except VoxtralError as exc:
            log.warning("%s: failed: %s", label, exc)
            self.store.update(voice_id, status=FAILED, error=str(exc))
            return
        except Exception:
            log.exception("%s: failed", label)
            self.store.update(voice_id, status=FAILED,
                              error="internal error while making the voice; see the server log")
            return
        if self.store.update(voice_id, status=READY, progress=1.0, loss=round(found.loss, 5),
                             frames=len(found.rows), steps=found.steps) is None:
            return
        log.info("%s: ready in %.1f s: %d frames, %d steps, loss %.4f", label, time.perf_counter() - started,
                 len(found.rows), found.steps, found.loss)

    def _reference(self, key: str, data: bytes, suffix: str, future: concurrent.futures.Future) -> None:
        label = f"ref_audio {key[:12]}"
        try:
            if not future.set_running_or_notify_cancel():
                return
            if (why := self.unavailable()) is not None:
                raise VoxtralError(why)
            with tempfile.TemporaryDirectory(prefix="voxtral-ref-") as folder:
                path = Path(folder) / ("ref_audio" + suffix)
                path.write_bytes(data)
                voice = cached_voice(self.model, path, steps=self.steps, seed=self.seed, device=self.device,
                                     progress=False, on_step=self._progress(label, lambda *_: True))
            future.set_result(voice)
        except Stopped:
            future.set_exception(VoxtralError("the server stopped before the voice of ref_audio was made"))
        except Exception as exc:  # VoxtralError: the client's; anything else: logged by its request
            future.set_exception(exc)
        finally:
            with self._lock:
                self._references.pop(key, None)
