"""The PyTorch reference backend: runs the reference modules behind the runtime's :class:`Inference`.

Float32 compute on CPU (weights optionally stored in bf16, see :func:`load_model`). The KV cache
is the backbone's static cache, allocated at the first prefill.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ..runtime.decoding import Inference
from .loading import VoxtralModel, load_model

DEFAULT_CAPACITY = 4096


class TorchInference(Inference):
    def __init__(self, model: VoxtralModel, capacity: int = DEFAULT_CAPACITY, device: str | torch.device = "cpu"):
        self.model = model.to(device)
        self.config = model.config
        self.device = torch.device(device)
        self._capacity = int(capacity)

    @classmethod
    def from_model_dir(cls, model_dir: str | Path, capacity: int = DEFAULT_CAPACITY, device: str = "cpu",
                       weight_dtype: torch.dtype | None = None, progress: bool = True) -> "TorchInference":
        return cls(load_model(model_dir, weight_dtype=weight_dtype, progress=progress), capacity, device)

    @property
    def capacity(self) -> int:
        return self._capacity

    def _tensor(self, array: np.ndarray, dtype=torch.float32) -> torch.Tensor:
        return torch.as_tensor(np.asarray(array), dtype=dtype, device=self.device)

    @torch.inference_mode()
    def embed_tokens(self, ids: np.ndarray) -> np.ndarray:
        return self.model.backbone.embed_tokens(self._tensor(ids, torch.int64)).cpu().numpy()

    @torch.inference_mode()
    def prefill(self, embeds: np.ndarray, slot: int = 0) -> np.ndarray:
        assert slot == 0, "the torch backend decodes one sequence at a time"
        backbone = self.model.backbone
        if backbone.cache_capacity != self._capacity:
            backbone.setup_cache(1, self._capacity)
        length = embeds.shape[0]
        positions = torch.arange(length, device=self.device)
        hidden = backbone(self._tensor(embeds)[None], positions, kv_len=length)
        return hidden[0, -1].cpu().numpy()

    @torch.inference_mode()
    def decode_step(self, embed: np.ndarray, position: int) -> np.ndarray:
        positions = torch.tensor([position], device=self.device)
        hidden = self.model.backbone(self._tensor(embed)[None, None], positions, kv_len=position + 1)
        return hidden[0, 0].cpu().numpy()

    @torch.inference_mode()
    def flow_frame(self, hidden: np.ndarray, noise: np.ndarray) -> np.ndarray:
        codes = self.model.acoustic_transformer(self._tensor(hidden)[None], self._tensor(noise)[None])
        return codes[0].cpu().numpy()

    @torch.inference_mode()
    def embed_codes(self, codes: np.ndarray) -> np.ndarray:
        return self.model.backbone.embed_codes(self._tensor(codes, torch.int64)).cpu().numpy()

    @torch.inference_mode()
    def decode_audio(self, codes: np.ndarray) -> np.ndarray:
        return self.model.audio_tokenizer(self._tensor(codes, torch.int64)[None])[0].cpu().numpy()
