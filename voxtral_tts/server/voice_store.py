"""The voices a server's clients created, kept in a directory (``voxtral-serve --voices-dir``): the
records ``POST /v1/audio/voices`` answers, their uploads and, once made, their rows. Torch-free:
speaking with a created voice reads its ``.safetensors`` file like any voice file.

One folder per voice, named by its id — a UUID the server generates, checked against
:data:`VOICE_ID` before it is ever joined to a path, so no client text (a name, a filename, an id
in a URL) becomes a path::

    <voices dir>/<id>/record.json        the record (Mistral's fields, status, progress), rewritten atomically
    <voices dir>/<id>/upload<.ext>       the uploaded file, until the voice is made
    <voices dir>/<id>/sample.wav         the prepared recording (24 kHz mono, trimmed, level set)
    <voices dir>/<id>/voice.safetensors  the rows, key ``embedding`` (the voice file every entry point reads)

The directory is read again on each lookup, so voices created by another process on the same
directory (a restarted server, another replica) are found without a restart. Presets are not
here: they are the model's, and an id of this store can never name one.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import threading
import uuid
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ..errors import VoiceError
from ..voices import Voice, read_voice_file

log = logging.getLogger(__name__)

#: a created voice's id: a UUID in its canonical lower-case form (what :func:`uuid.uuid4` gives)
VOICE_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
#: an upload's extension kept for the decoder's format detection: a dot and 1–5 letters or digits
SUFFIX = re.compile(r"\.[a-z0-9]{1,5}")
RECORD, ROWS, SAMPLE, UPLOAD = "record.json", "voice.safetensors", "sample.wav", "upload"
#: a voice's states: waiting for the worker, being made, usable, failed (with its ``error``)
QUEUED, PROCESSING, READY, FAILED = "queued", "processing", "ready", "failed"


def default_voices_dir() -> Path:
    """Where ``voxtral-serve`` keeps created voices unless told otherwise: the user's data directory
    (``$XDG_DATA_HOME``, default ``~/.local/share``) under ``voxtral-tts/voices``."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "voxtral-tts" / "voices"


def is_voice_id(text: str) -> bool:
    return isinstance(text, str) and VOICE_ID.fullmatch(text) is not None


def upload_suffix(filename: str | None) -> str:
    """The extension of an upload's original name, if it looks like one (``.wav``, ``.mp3``), else ''."""
    suffix = Path(filename or "").suffix.lower()
    return suffix if SUFFIX.fullmatch(suffix) else ""


def now() -> str:
    return datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")


class VoiceStore:
    """The created voices under ``directory`` (None: none can be created; the server lists presets only)."""

    def __init__(self, directory: str | Path | None):
        self.directory = Path(directory).expanduser() if directory is not None else None
        self._lock = threading.Lock()  # record writes: the worker's progress and a client's delete
        self._voices: dict[str, tuple[float, Voice]] = {}  # id → (file's mtime, voice)

    @property
    def enabled(self) -> bool:
        return self.directory is not None

    def _folder(self, voice_id: str) -> Path | None:
        """The folder of a well-formed id (never anything else), or None."""
        if self.directory is None or not is_voice_id(voice_id):
            return None
        return self.directory / voice_id

    # --- records ------------------------------------------------------------------------------------
    def add(self, fields: dict, upload: bytes, filename: str | None) -> dict:
        """A new voice: its record (``fields`` and the server's: id, created_at, status) and its upload."""
        if self.directory is None:
            raise VoiceError("no voices directory")
        voice_id = str(uuid.uuid4())
        folder = self.directory / voice_id
        folder.mkdir(parents=True)
        (folder / (UPLOAD + upload_suffix(filename))).write_bytes(upload)
        record = {**fields, "id": voice_id, "created_at": now(), "status": QUEUED, "progress": 0.0, "error": None}
        self._write(folder, record)
        return record

    def get(self, voice_id: str) -> dict | None:
        folder = self._folder(voice_id)
        if folder is None:
            return None
        try:
            record = json.loads((folder / RECORD).read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            log.error("created voice %s: unreadable record (%s)", voice_id, exc)
            return None
        return record if isinstance(record, dict) and record.get("id") == voice_id else None

    def all(self) -> list[dict]:
        """Every created voice's record, oldest first."""
        if self.directory is None or not self.directory.is_dir():
            return []
        records = [r for entry in self.directory.iterdir() if (r := self.get(entry.name)) is not None]
        return sorted(records, key=lambda r: (r.get("created_at", ""), r["id"]))

    def update(self, voice_id: str, **changes) -> dict | None:
        """The record with ``changes`` written (None when the voice was deleted meanwhile)."""
        with self._lock:
            record = self.get(voice_id)
            if record is None:
                return None
            record.update(changes)
            self._write(self.directory / voice_id, record)
            return record

    def delete(self, voice_id: str) -> dict | None:
        """Remove a created voice (its record as it was), or None if there is none by that id."""
        with self._lock:
            record = self.get(voice_id)
            if record is None:
                return None
            shutil.rmtree(self.directory / voice_id, ignore_errors=True)
            self._voices.pop(voice_id, None)
            return record

    def _write(self, folder: Path, record: dict) -> None:
        partial = folder / (RECORD + ".partial")
        partial.write_text(json.dumps(record, indent=1))
        partial.replace(folder / RECORD)

    # --- files ----------------------------------------------------------------------------------------
    def upload_path(self, voice_id: str) -> Path | None:
        folder = self._folder(voice_id)
        found = sorted(folder.glob(UPLOAD + "*")) if folder is not None and folder.is_dir() else []
        return found[0] if found else None

    def path(self, voice_id: str, name: str) -> Path:
        """The file ``name`` (:data:`ROWS`, :data:`SAMPLE`) of a well-formed id."""
        folder = self._folder(voice_id)
        if folder is None:
            raise VoiceError(f"not a created voice's id: {voice_id!r}")
        return folder / name

    def voice(self, record: dict, language: str | None) -> Voice:
        """A ready voice's rows, read once per version of its file (torch-free)."""
        path = self.path(record["id"], ROWS)
        try:
            mtime = path.stat().st_mtime
        except OSError:
            raise VoiceError(f"voice {record['id']}: its file is missing") from None
        cached = self._voices.get(record["id"])
        if cached is None or cached[0] != mtime:
            embedding = read_voice_file(path)
            cached = (mtime, Voice(record["id"], np.ascontiguousarray(embedding), language))
            self._voices[record["id"]] = cached
        return cached[1]
