"""Codec inversion: the codes whose decoded audio matches a waveform, found through the decoder.

The release has no codec encoder (spec §2.3), but its decoder is differentiable. Per 80 ms frame
the decoder's input is a 292-value latent: a semantic codebook row (256 values) and 36 FSQ values
in [−1, 1] (spec §7.1). :func:`invert` optimises those latents as free continuous values — the
semantic vector as is, the acoustic values as ``tanh`` of free parameters so they stay in range —
with Adam (cosine-decayed step size) against a multi-resolution STFT loss (spectral convergence +
log-magnitude L1) plus a waveform L1 term between the decoded audio and the target: the decoder is
deterministic, so the waveform term pulls towards the codes themselves where magnitudes alone leave
the acoustic values loose. It then snaps them to codes (the nearest semantic codebook row,
FSQ rounding of the acoustic values, spec §6.3.4) and refines with a straight-through pass: the
forward pass decodes the snapped latents, the gradient flows to the continuous ones. The codes
that decode closest to the target (before or after refinement) are returned.

The loss is level-free: the decoded audio is scaled to the target's RMS before it is compared (the
reference's loudness is a property of the recording, not of the voice, and the recording is
level-set before this), so the codes are asked to match the spectra up to one global gain.

A reference (25 s at most) is decoded as one sequence, its attention computed on the band of each
stage's window only (:func:`.codec.banded_attention`: the same values as the full masked scores, and
on a 10 s sample half the time of the 72-frame windows this used before). Longer audio is decoded
as a batch of windows of ``context + chunk`` frames: each window's first ``context`` frames only
give the decoder its left context (its receptive field is about 21 frames, spec §7.7), and the loss
reads the rest. The first window starts at frame 0 and is read whole.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import numpy as np
import torch

from ..config import N_AUDIO_SPECIAL
from ..reporting import steps as progress_steps
from .codec import CodecDecoder, banded_attention

#: (FFT size, hop) of the STFT loss at 24 kHz: from 85 ms down to 10.7 ms windows
RESOLUTIONS = ((2048, 512), (1024, 256), (512, 128), (256, 64))
#: weight of the waveform L1 term (relative to the target's mean magnitude) beside the spectral terms
WAVEFORM_WEIGHT = 1.0
#: frames of left context in front of each decoded window (≥ the decoder's receptive field, §7.7)
CONTEXT_FRAMES = 24
#: frames the loss reads per window after the first: 25.6 s, so a reference is one window
CHUNK_FRAMES = 320


@dataclass(frozen=True)
class Inversion:
    """The codes found for a waveform and how well they decode to it."""

    codes: np.ndarray  # int64 [T, 37], with the +2 offset
    loss: float  # the loss (:func:`stft_loss`) of the snapped codes' decoded audio, scaled to the target's RMS
    continuous_loss: float  # the loss of the continuous latents before snapping
    steps: int  # optimisation steps taken, both passes together


def stft_loss(pred: torch.Tensor, target: torch.Tensor, target_specs: list[torch.Tensor] | None = None) -> torch.Tensor:
    """Loss of waveforms [B, L]: spectral convergence + log-magnitude L1 averaged over
    :data:`RESOLUTIONS`, plus :data:`WAVEFORM_WEIGHT` × the waveform L1 relative to the target's
    mean magnitude."""
    total = pred.new_zeros(())
    for i, (n_fft, hop) in enumerate(RESOLUTIONS):
        window = torch.hann_window(n_fft, device=pred.device)
        s_pred = torch.stft(pred, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-7)
        s_ref = target_specs[i] if target_specs is not None else spectrum(target, n_fft, hop)
        convergence = torch.linalg.vector_norm(s_ref - s_pred) / torch.linalg.vector_norm(s_ref).clamp_min(1e-7)
        total = total + convergence + (s_ref.log() - s_pred.log()).abs().mean()
    waveform = (pred - target).abs().mean() / target.abs().mean().clamp_min(1e-7)
    return total / len(RESOLUTIONS) + WAVEFORM_WEIGHT * waveform


def spectrum(audio: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    window = torch.hann_window(n_fft, device=audio.device)
    return torch.stft(audio, n_fft, hop, window=window, return_complex=True).abs().clamp_min(1e-7)


def windows(n_frames: int, context: int = CONTEXT_FRAMES, chunk: int = CHUNK_FRAMES) -> list[tuple[int, int, int]]:
    """(start, end, first frame the loss reads) of each decoded window: the first is [0, W) read
    whole, W = context + chunk; each next one ends ``chunk`` frames later (the last at the end,
    overlapping its predecessor if need be) and is read after its ``context`` frames. One window
    when the audio is no longer than W."""
    width = context + chunk
    if n_frames <= width:
        return [(0, n_frames, 0)]
    out = [(0, width, 0)]
    end = width
    while end < n_frames:
        end = min(end + chunk, n_frames)
        out.append((end - width, end, end - chunk))
    return out


class _Decode:
    """Decodes a latent sequence [T, C] as the batch of :func:`windows`; the loss against the target
    is computed on the frames each window reads."""

    def __init__(self, decoder: CodecDecoder, target: torch.Tensor, n_frames: int, chunk: int = CHUNK_FRAMES):
        self.decoder = decoder
        self.spf = decoder.args.samples_per_frame
        self.spans = windows(n_frames, chunk=chunk)
        self.index = torch.tensor([list(range(s, e)) for s, e, _ in self.spans], device=target.device)
        # the target of each window's read part; all but the first are `chunk` frames long
        first_len = self.spans[0][1] * self.spf
        self.first_target = target[None, :first_len]
        self.rest_target = (torch.stack([target[r * self.spf:e * self.spf] for _, e, r in self.spans[1:]])
                            if len(self.spans) > 1 else None)
        self.first_specs = [spectrum(self.first_target, n, h) for n, h in RESOLUTIONS]
        self.rest_specs = ([spectrum(self.rest_target, n, h) for n, h in RESOLUTIONS]
                           if self.rest_target is not None else None)
        self.target_rms = target.pow(2).mean().sqrt()
        self.weight_first = self.spans[0][1] / (self.spans[0][1] + chunk * (len(self.spans) - 1))

    def audio(self, latent: torch.Tensor) -> torch.Tensor:
        """latent [T, C] → the decoded windows [n_windows, W · samples per frame]."""
        x = latent[self.index].transpose(1, 2)  # [n, C, W]
        for block in self.decoder.decoder_blocks:
            x = block(x)
        x = self.decoder.output_proj(x)
        return x.transpose(1, 2).reshape(x.shape[0], -1)

    def loss(self, latent: torch.Tensor) -> torch.Tensor:
        audio = self.audio(latent)
        audio = audio * (self.target_rms / audio.pow(2).mean().sqrt().clamp_min(1e-8))
        first = stft_loss(audio[:1, :self.first_target.shape[-1]], self.first_target, self.first_specs)
        if self.rest_target is None:
            return first
        start = (self.spans[1][2] - self.spans[1][0]) * self.spf
        rest = stft_loss(audio[1:, start:], self.rest_target, self.rest_specs)
        return self.weight_first * first + (1 - self.weight_first) * rest


class _Latents(torch.nn.Module):
    """The free parameters: semantic vectors [T, S] and pre-tanh acoustic values [T, 36]."""

    def __init__(self, codebook: torch.Tensor, n_frames: int, n_acoustic: int, generator: torch.Generator):
        super().__init__()
        device = codebook.device
        # start at the codebook's mean row (the centre of where semantic vectors live) and the middle
        # FSQ level, each with a little seeded noise so frames do not move in lockstep
        spread = codebook.std(dim=0)
        noise = torch.randn(n_frames, codebook.shape[1], generator=generator, device=device)
        self.semantic = torch.nn.Parameter(codebook.mean(dim=0) + 0.1 * spread * noise)
        self.acoustic = torch.nn.Parameter(0.1 * torch.randn(n_frames, n_acoustic, generator=generator, device=device))

    def continuous(self) -> torch.Tensor:
        return torch.cat((self.semantic, torch.tanh(self.acoustic)), dim=-1)


def snap(codebook: torch.Tensor, semantic: torch.Tensor, acoustic: torch.Tensor, levels: int):
    """Continuous latents → (semantic indices [T], FSQ levels [T, 36]): the nearest codebook row
    (squared distance) and ``round((x + 1) / 2 · (levels − 1))`` of the clamped values (spec §6.3.4)."""
    distance = (semantic.pow(2).sum(-1, keepdim=True) - 2 * semantic @ codebook.T + codebook.pow(2).sum(-1)[None])
    index = distance.argmin(dim=-1)
    level = torch.round((acoustic.clamp(-1, 1) + 1) / 2 * (levels - 1)).long()
    return index, level


def dequantize_levels(decoder: CodecDecoder, index: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """(semantic indices [T], FSQ levels [T, 36]) → latent [T, S + 36], by the decoder's own dequantisation."""
    codes = torch.cat((index[:, None], level), dim=-1) + N_AUDIO_SPECIAL
    return decoder.dequantize(codes[None])[0]


def invert(decoder: CodecDecoder, audio: np.ndarray, *, steps: int = 600, seed: int = 0, lr: float = 0.1,
           refine_fraction: float = 0.25, patience: int = 60, device: str | torch.device = "cpu",
           progress: bool = True, on_step: Callable[[int, int, float], None] | None = None) -> Inversion:
    """Codes [T, 37] (+2 offset) for a 24 kHz waveform of T·1920 samples (a trailing partial frame is
    dropped): ``steps`` Adam steps on the continuous latents at most — fewer when the loss has not
    improved by 0.1 % for ``patience`` steps —, then ``refine_fraction`` of that many straight-through
    steps on the snapped codes. Seeded: the same audio, seed and device give the same codes.
    ``on_step(done, total, loss)`` is called after each step (``total``: the steps planned, fewer
    once the first pass stopped early); an exception it raises ends the search."""
    args = decoder.args
    spf = args.samples_per_frame
    n_frames = len(audio) // spf
    if n_frames < 1:
        raise ValueError(f"audio of {len(audio)} samples is shorter than one frame ({spf} samples)")
    device = torch.device(device)
    decoder = decoder.to(device)
    generator = torch.Generator(device=device).manual_seed(seed)
    target = torch.from_numpy(np.ascontiguousarray(audio[:n_frames * spf], dtype=np.float32)).to(device)
    codebook = decoder.semantic_codebook.float()
    levels = args.acoustic_codebook_size
    decode = _Decode(decoder, target, n_frames)
    latents = _Latents(codebook, n_frames, args.acoustic_dim, generator)
    with banded_attention(decoder):
        return _search(decode, latents, codebook, levels, steps=steps, lr=lr, refine_fraction=refine_fraction,
                       patience=patience, progress=progress, on_step=on_step)


def _search(decode: _Decode, latents: _Latents, codebook: torch.Tensor, levels: int, *, steps: int, lr: float,
            refine_fraction: float, patience: int, progress: bool,
            on_step: Callable[[int, int, float], None] | None) -> Inversion:
    """The two passes of :func:`invert`: Adam on the continuous latents, then straight through the snapped codes."""
    refine_steps = max(1, int(steps * refine_fraction)) if steps > 0 else 0
    bar = progress_steps(range(steps + refine_steps), desc="finding codes", unit="step", disable=not progress)
    optimiser = torch.optim.Adam(latents.parameters(), lr=lr)
    best, since_best, taken, continuous_loss = math.inf, 0, 0, math.inf
    phase, end = "continuous", steps
    best_codes, best_snapped = None, math.inf
    for step in bar:
        if phase == "continuous" and (step >= steps or since_best >= patience):
            continuous_loss = best
            best_codes, best_snapped = _snapped(decode, latents, codebook, levels)
            phase, best, since_best, end = "refine", math.inf, 0, step + refine_steps
            optimiser = torch.optim.Adam(latents.parameters(), lr=lr * 0.3)
        if step >= end:
            break
        if phase == "continuous":  # cosine decay to a tenth: large moves first, then settling
            for group in optimiser.param_groups:
                group["lr"] = lr * (0.1 + 0.45 * (1 + math.cos(math.pi * step / steps)))
        optimiser.zero_grad(set_to_none=True)
        latent = latents.continuous()
        if phase == "refine":  # decode the snapped latents, send the gradient to the continuous ones
            index, level = snap(codebook, latents.semantic, torch.tanh(latents.acoustic), levels)
            latent = latent + (dequantize_levels(decode.decoder, index, level) - latent).detach()
        loss = decode.loss(latent)
        loss.backward()
        optimiser.step()
        value = loss.item()
        taken += 1
        if value < best * 0.999:
            best, since_best = value, 0
        else:
            since_best += 1
        if step % 10 == 0:
            bar.set_postfix_str(f"{phase} loss {value:.4f}")
        if on_step is not None:
            on_step(step + 1, end if phase == "refine" else steps + refine_steps, value)
    bar.close()
    if phase == "continuous":  # steps == 0, or the loop ended in the first phase
        continuous_loss = best
        best_codes, best_snapped = _snapped(decode, latents, codebook, levels)
    codes, loss = _snapped(decode, latents, codebook, levels)
    if loss > best_snapped:
        codes, loss = best_codes, best_snapped
    return Inversion(codes, loss, continuous_loss, taken)


@torch.no_grad()
def _snapped(decode: _Decode, latents: _Latents, codebook: torch.Tensor, levels: int) -> tuple[np.ndarray, float]:
    """The codes of the current latents and the loss of their decoded audio."""
    index, level = snap(codebook, latents.semantic, torch.tanh(latents.acoustic), levels)
    loss = float(decode.loss(dequantize_levels(decode.decoder, index, level)))
    codes = torch.cat((index[:, None], level), dim=-1) + N_AUDIO_SPECIAL
    return codes.cpu().numpy().astype(np.int64), loss
