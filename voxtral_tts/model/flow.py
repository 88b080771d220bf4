"""Block 2: the flow-matching head ("acoustic transformer") — one audio frame from one hidden state.

Spec §6.2–6.3. From the backbone's final-normed hidden ``h``:

1. the semantic code: greedy argmax of ``semantic_codebook_output · h`` with EMPTY_AUDIO and the
   padding rows masked (END_AUDIO stays allowed: that is how generation stops); a
   ``semantic_noise`` added to the masked logits first samples it instead (temperature × Gumbel
   noise: the Gumbel-max trick draws from softmax(logits / temperature)); zeros, the default,
   are the reference's argmax;
2. the 36 acoustic values: 7 Euler steps of a velocity field from the start noise ``x0``, with
   classifier-free guidance (the unconditional branch zeroes ``h``; both branches in one batch),
   each row at its own scale α when ``guidance`` [B, 2] = (α, 1 − α) is given
   (:func:`~voxtral_tts.runtime.guidance.guidance_weights`), else at the checkpoint's ``cfg_alpha``;
3. FSQ: clamp to [-1, 1], round to 21 levels, +2 offset.

The velocity network is a 3-token, bidirectional transformer without positional encoding over
``[input_projection(x), time_projection(TE(t)), llm_projection(h)]``, read at token 0.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ..config import END_AUDIO, EMPTY_AUDIO, N_AUDIO_SPECIAL, AudioArgs, FlowArgs
from ..runtime.guidance import guidance_weights
from .layers import Linear, RMSNorm, TransformerBlock


class FlowHead(nn.Module):
    def __init__(self, args: FlowArgs, audio: AudioArgs):
        super().__init__()
        self.args, self.audio = args, audio
        n_acoustic = audio.n_acoustic_codebook
        self.input_projection = Linear(n_acoustic, args.dim)
        self.time_projection = Linear(args.dim, args.dim)
        self.llm_projection = Linear(args.input_dim, args.dim)
        self.semantic_codebook_output = Linear(args.input_dim, audio.semantic_head_rows)
        self.acoustic_codebook_output = Linear(args.dim, n_acoustic)
        self.layers = nn.ModuleList(
            TransformerBlock(args.dim, args.hidden_dim, args.n_heads, args.n_kv_heads, args.head_dim, args.norm_eps)
            for _ in range(args.n_layers)
        )
        self.norm = RMSNorm(args.dim, args.norm_eps)
        self.compute_dtype = torch.float32  # of the velocity network; the GPU backend sets bfloat16
        self.init_buffers()

    def init_buffers(self) -> None:
        """Constants computed, never loaded (``time_embedding.inv_freq`` is absent, spec §2.2)."""
        args, audio = self.args, self.audio
        half = args.dim // 2
        inv_freq = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("inv_freq", inv_freq, persistent=False)
        grid = torch.linspace(0.0, 1.0, args.n_decoding_steps + 1, dtype=torch.float32)
        self.register_buffer("time_grid", grid, persistent=False)
        allowed = torch.zeros(audio.semantic_head_rows, dtype=torch.bool)
        allowed[END_AUDIO : audio.semantic_codebook_size + N_AUDIO_SPECIAL] = True
        self.register_buffer("semantic_allowed", allowed, persistent=False)

    # --- semantic code ----------------------------------------------------------------------------
    def semantic_logits(self, h: torch.Tensor) -> torch.Tensor:
        """Raw semantic head output [B, semantic_head_rows] in float32, before masking."""
        return self.semantic_codebook_output(h.float()).float()

    def semantic_code(self, h: torch.Tensor, semantic_noise: torch.Tensor | None = None) -> torch.Tensor:
        """The masked argmax, of ``logits + semantic_noise`` when given ([B, semantic_head_rows]:
        masked rows stay −∞, so sampling never picks them)."""
        logits = self.semantic_logits(h).masked_fill(~self.semantic_allowed, float("-inf"))
        if semantic_noise is not None:
            logits = logits + semantic_noise.float()
        return logits.argmax(dim=-1)

    # --- velocity field ----------------------------------------------------------------------------
    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """TE(t) = [cos(t·inv_freq), sin(t·inv_freq)] — cos first (spec §6.3.1)."""
        angles = t.float()[..., None] * self.inv_freq
        return torch.cat((torch.cos(angles), torch.sin(angles)), dim=-1)

    def velocity(self, x: torch.Tensor, t_token: torch.Tensor, h_token: torch.Tensor) -> torch.Tensor:
        """v(x, t, h) for x [B, 36], the projected time token [D] and projected hidden tokens [B, D]
        → float32 [B, 36]. The transformer runs in ``compute_dtype``."""
        x_token = self.input_projection(x.to(self.compute_dtype))
        seq = torch.stack((x_token, t_token.expand_as(h_token), h_token), dim=1)
        for layer in self.layers:
            seq = layer(seq)
        return self.acoustic_codebook_output(self.norm(seq)[:, 0]).float()

    def time_token(self, t: torch.Tensor) -> torch.Tensor:
        """time_projection(TE(t)): the embedding in float32, the projection in ``compute_dtype``."""
        return self.time_projection(self.time_embedding(t).to(self.compute_dtype))

    def guidance(self, batch: int, device=None) -> torch.Tensor:
        """The checkpoint's ``cfg_alpha`` for every row, as the ``guidance`` weights [B, 2]."""
        weights = torch.from_numpy(guidance_weights([self.args.cfg_alpha] * batch))
        return weights if device is None else weights.to(device)

    def solve(self, h: torch.Tensor, noise: torch.Tensor, trace: dict | None = None,
              guidance: torch.Tensor | None = None) -> torch.Tensor:
        """Euler integration with CFG from x0 = ``noise`` [B, 36]; returns x before clamping.
        ``guidance`` [B, 2]: each row's weights (α, 1 − α) of the conditional and unconditional
        velocities (None: the checkpoint's ``cfg_alpha`` for every row).

        ``trace``, if given, receives ``x_t`` [steps, B, 36] and ``velocity`` [steps, 2, B, 36]
        (conditional, unconditional) for tests.
        """
        batch = h.shape[0]
        if guidance is None:
            guidance = self.guidance(batch, h.device)
        w_cond, w_uncond = guidance[:, 0:1].float(), guidance[:, 1:2].float()
        h_cond = self.llm_projection(h.to(self.compute_dtype))
        h_pair = torch.cat((h_cond, torch.zeros_like(h_cond)), dim=0)
        x = noise.float()
        states, velocities = [], []
        for k in range(self.args.n_decoding_steps):
            t, dt = self.time_grid[k], self.time_grid[k + 1] - self.time_grid[k]
            t_token = self.time_token(t)
            v_pair = self.velocity(torch.cat((x, x), dim=0), t_token, h_pair)
            v_cond, v_uncond = v_pair[:batch], v_pair[batch:]
            if trace is not None:
                states.append(x)
                velocities.append(torch.stack((v_cond, v_uncond)))
            x = x + (w_cond * v_cond + w_uncond * v_uncond) * dt
        if trace is not None:
            trace["x_t"], trace["velocity"] = torch.stack(states), torch.stack(velocities)
        return x

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        """FSQ: [-1, 1] → levels 0..20 (round half to even) → codes 2..22."""
        levels = self.audio.acoustic_codebook_size - 1
        q = torch.round((x.clamp(-1.0, 1.0) + 1.0) / 2.0 * levels)
        return q.to(torch.int64) + N_AUDIO_SPECIAL

    def forward(self, h: torch.Tensor, noise: torch.Tensor, semantic_noise: torch.Tensor | None = None,
                guidance: torch.Tensor | None = None) -> torch.Tensor:
        """One frame: hidden [B, D], noise [B, 36] (and optionally the semantic code's sampling
        noise [B, semantic_head_rows] and each row's guidance weights [B, 2]) → codes [B, 37]
        (int64, +2 offset)."""
        semantic = self.semantic_code(h, semantic_noise)
        acoustic = self.quantize(self.solve(h, noise, guidance=guidance))
        ended = (semantic == END_AUDIO)[:, None]
        acoustic = torch.where(ended, torch.full_like(acoustic, EMPTY_AUDIO + N_AUDIO_SPECIAL), acoustic)
        return torch.cat((semantic[:, None], acoustic), dim=1)
