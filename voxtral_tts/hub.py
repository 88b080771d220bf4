"""The real weights by name: a Hugging Face hub id → the model directory, from the standard hub cache.

Every entry point (``voxtral_tts.load``, ``voxtral-run``, ``voxtral-serve``, ``voxtral-export``)
takes a local model or engine directory, or a hub id such as ``mistralai/Voxtral-4B-TTS-2603``.
A hub id is downloaded with ``huggingface_hub`` — only what the model needs: ``params.json``,
``consolidated.safetensors``, ``tekken.json`` and the ``voice_embedding/*.pt`` presets, read as
they are (no conversion step) — into the standard cache (``$HF_HOME``, default
``~/.cache/huggingface``), with progress bars, and found there again offline (``HF_HUB_OFFLINE=1``,
or no network). Without network and not yet cached, or for a gated repository without access, the
error is one line saying what happened and what to do.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

from .errors import VoxtralError

log = logging.getLogger(__name__)

#: the released model
MODEL_ID = "mistralai/Voxtral-4B-TTS-2603"
#: the files of a model directory, as hub patterns
MODEL_FILES = ["params.json", "consolidated.safetensors", "tekken.json", "voice_embedding/*"]
_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*/[A-Za-z0-9][A-Za-z0-9_.-]*$")


def is_hub_id(source: str | Path) -> bool:
    """``owner/name`` that is not a path on this machine."""
    text = str(source)
    return bool(_HUB_ID.match(text)) and not Path(text).exists() and ".." not in text


def model_path(source: str | Path, progress: bool = True) -> Path:
    """A local directory as it is; a hub id downloaded (or found in the hub cache)."""
    if not is_hub_id(source):  # an existing path is never a hub id
        path = Path(source)
        if not path.is_dir():
            raise VoxtralError(f"{source}: not a directory (expected a model or engine directory, or a Hugging Face "
                               f"hub id such as {MODEL_ID})")
        return path
    return download(str(source), progress)


def download(repo_id: str, progress: bool = True) -> Path:
    """The model's files from the hub (or its cache, offline) → the snapshot directory."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError,
                                        RepositoryNotFoundError, RevisionNotFoundError)
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    page = f"https://huggingface.co/{repo_id}"
    quiet = not progress and not are_progress_bars_disabled()
    if quiet:
        disable_progress_bars()
    try:
        log.info("%s: from the Hugging Face hub cache, downloading what is missing", repo_id)
        path = Path(snapshot_download(repo_id, allow_patterns=MODEL_FILES))
    except GatedRepoError:
        raise VoxtralError(f"{repo_id}: the repository is gated: accept its licence at {page} while logged in, then "
                           "log in here (hf auth login) or set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise VoxtralError(f"{repo_id}: no such model on the Hugging Face hub (a private one needs HF_TOKEN); a local "
                           "model directory works too") from None
    except RevisionNotFoundError:
        raise VoxtralError(f"{repo_id}: the hub has no such revision") from None
    except LocalEntryNotFoundError:
        raise VoxtralError(f"{repo_id}: not in the local hub cache and the hub cannot be reached (no network, or "
                           "HF_HUB_OFFLINE=1): connect once to download it, or pass the path of a downloaded model "
                           "directory") from None
    except (HfHubHTTPError, OSError) as exc:
        log.info("download of %s failed: %r", repo_id, exc)
        raise VoxtralError(f"{repo_id}: the download failed ({type(exc).__name__}); check the network and the disk "
                           "space, or pass a local model directory") from None
    finally:
        if quiet:
            enable_progress_bars()
    missing = [
        name for name in ("params.json", "consolidated.safetensors", "tekken.json") if not (path / name).is_file()
    ]
    if missing:
        raise VoxtralError(f"{repo_id}: not a Voxtral TTS model repository (it lacks {', '.join(missing)})")
    return path
