"""What this machine's CPU can do natively, detected (never guessed): the default compute path
follows from it (``voxtral_tts.load``).

bf16 dot products in hardware: x86 AVX-512 BF16 (``avx512_bf16``) or AMX (``amx_bf16``) in
``/proc/cpuinfo``'s flags; Arm's BF16 extension (``bf16`` in its Features on Linux,
``hw.optional.arm.FEAT_BF16`` on macOS). Without them a bf16 matmul is emulated and slower than
float32. Torch-free.
"""

from __future__ import annotations

import functools
import platform
import subprocess
import sys

#: cpuinfo flag → the name logged; the first one present wins (AMX also implies its tiles)
X86_BF16 = (("amx_bf16", "AMX-BF16"), ("avx512_bf16", "AVX-512 BF16"))


def bf16_from_cpuinfo(text: str) -> str | None:
    """The native bf16 feature a ``/proc/cpuinfo`` text lists, or None."""
    features: set[str] = set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() in ("flags", "Features"):
            features.update(value.split())
    for flag, name in X86_BF16:
        if flag in features:
            return name
    return "Arm BF16" if "bf16" in features else None


@functools.lru_cache(maxsize=1)
def cpu_bf16() -> str | None:
    """This CPU's native bf16 dot-product feature (e.g. ``AVX-512 BF16``), or None."""
    if sys.platform == "darwin" and platform.machine() == "arm64":
        try:
            out = subprocess.run(["sysctl", "-n", "hw.optional.arm.FEAT_BF16"], capture_output=True, text=True,
                                 timeout=5).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None
        return "Arm BF16" if out == "1" else None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return bf16_from_cpuinfo(f.read())
    except OSError:
        return None
