"""What every backend of an engine directory (``voxtral-export``) shares: opening the directory
(:func:`~voxtral_tts.engine.open_engine` and the backend's own check of the engine), the host
embedding tables, and the fixed host buffers of the decode step and the flow frame that the
ONNX Runtime and TensorRT backends bind or copy from.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...engine import Engine, is_engine_dir, open_engine
from ...errors import OptionError, VoxtralError
from ..backend import Backend
from ..guidance import guidance_weights
from ..load_options import LoadOptions
from .host_embeddings import HostEmbeddings


class EngineBackend(Backend):
    """A backend over an :class:`~voxtral_tts.engine.Engine`: ``capacity`` defaults to the engine's,
    the embeddings are looked up on the host from its tables."""

    #: what ``voxtral-export`` needs after ``-o ENGINE_DIR`` to make an engine for this backend
    export_flags: str = ""

    def __init__(self, engine: Engine, options: LoadOptions):
        self.check_engine(engine)
        super().__init__(engine.config, options.capacity or engine.capacity, options.max_batch, HostEmbeddings(engine))
        self.engine = engine

    @classmethod
    def from_path(cls, path: str | Path, options: LoadOptions | None = None) -> "EngineBackend":
        """The backend of an engine directory (one that :meth:`check_engine` accepts)."""
        path = Path(path)
        if not is_engine_dir(path):
            raise VoxtralError(f"{path}: the {cls.name} backend needs an engine directory; make one with "
                               f"voxtral-export {path} -o ENGINE_DIR{cls.export_flags}")
        return cls(open_engine(path), options or cls.options_type())

    @classmethod
    def check_engine(cls, engine: Engine) -> None:
        """Refuse an engine this backend cannot run, in one :class:`VoxtralError` line."""

    def check_guidance(self, scale: float) -> None:
        """An engine whose flow graph has no ``guidance`` input (format 3) runs its built-in scale only."""
        if not self.engine.flow_guidance:
            raise OptionError("expressiveness", f"{scale:g} cannot be used with {self.engine.path}: its flow graph has "
                                                f"{self.config.flow.cfg_alpha:g} built in (engine format 3); re-export "
                                                "it with this version of voxtral-export")

    # --- host buffers of the step and the flow frame ------------------------------------------------
    def _host_buffers(self, flow_rows: int) -> None:
        """The step's inputs and output for every slot, and ``flow_rows`` rows of the flow frame's."""
        b, a, slots = self.config.backbone, self.config.audio, self.max_batch
        self._step_embeds = np.zeros((slots, 1, b.dim), np.float32)
        self._step_positions = np.zeros((slots, 1), np.int64)
        self._step_hidden = np.zeros((slots, 1, b.dim), np.float32)
        self._flow_hidden = np.zeros((flow_rows, b.dim), np.float32)
        self._flow_noise = np.zeros((flow_rows, a.n_acoustic_codebook), np.float32)
        self._flow_semantic = np.zeros((flow_rows, a.semantic_head_rows), np.float32)  # zeros unless sampling
        self._flow_sampled = False  # whether _flow_semantic holds a sample (to be zeroed for greedy)
        self._flow_guidance = guidance_weights([self.config.flow.cfg_alpha] * flow_rows)
        self._flow_codes = np.zeros((flow_rows, a.num_codebooks), np.int64)

    def _stage_step(self, embeds: np.ndarray, positions: np.ndarray, rows: np.ndarray) -> None:
        """The step's inputs: each sequence in its row (:mod:`.kv_slots`); the rows not named decode
        a dummy token at position 0 whose keys/values are never stored."""
        self._step_embeds.fill(0.0)
        self._step_positions.fill(0)
        self._step_embeds[rows, 0] = embeds
        self._step_positions[rows, 0] = positions

    def _stage_flow(self, hidden: np.ndarray, noise: np.ndarray, semantic: np.ndarray | None,
                    expressiveness: np.ndarray) -> bool:
        """The flow frame's inputs in the first rows (the rest zeros; guidance: the default's weights);
        True when the semantic noise changed (a sample now, or zeros again after one)."""
        n = len(hidden)
        self._flow_hidden.fill(0.0)
        self._flow_noise.fill(0.0)
        self._flow_hidden[:n], self._flow_noise[:n] = hidden, noise
        self._flow_guidance[:] = guidance_weights([self.config.flow.cfg_alpha])
        self._flow_guidance[:n] = guidance_weights(expressiveness)
        changed = semantic is not None or self._flow_sampled
        if changed:
            self._flow_semantic.fill(0.0)
            if semantic is not None:
                self._flow_semantic[:n] = semantic
        self._flow_sampled = semantic is not None
        return changed
