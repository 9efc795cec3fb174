"""Mixed precision with one code path on every device: which dtype a run autocasts to, and whether its loss goes
through a GradScaler.

`--amp` picks the dtype: `auto` (default) is the protocol's reference precision on a GPU (the preset's `amp`,
`fp16` or `amp_dtype`: what the paper's code ran) and float32 elsewhere, so CPU records are unchanged; `bf16` /
`fp16` autocast to that dtype on any device, the CPU included; `off` is float32 everywhere. The device decides
only the dtype: the autocast context and the GradScaler are entered on every device (disabled when the dtype is
float32), so what CI runs on the CPU is what runs on the GPU. A GradScaler is enabled only for float16, whose
5-bit exponent underflows small gradients; bfloat16 has float32's range (torch.amp docs).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import BenchError

__all__ = ["AMP_CHOICES", "Precision", "resolve_precision", "amp_arg", "amp_key"]

AMP_CHOICES = ("auto", "off", "bf16", "fp16")
_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class Precision:
    """The autocast dtype of one part of a run (None: float32, autocast off) on one device type."""
    device_type: str = "cpu"
    dtype: str | None = None

    @property
    def name(self) -> str:
        return self.dtype or "float32"

    @property
    def enabled(self) -> bool:
        return self.dtype is not None

    def autocast(self) -> torch.autocast:
        # a disabled context still names a dtype autocast accepts on this device, so it is entered everywhere
        return torch.autocast(self.device_type, dtype=getattr(torch, self.dtype or "bfloat16"), enabled=self.enabled)

    def grad_scaler(self) -> torch.amp.GradScaler:
        return torch.amp.GradScaler(self.device_type, enabled=self.dtype == "float16")

    @property
    def cache_key(self) -> bool | str:
        """The value feature-cache keys and records hold: False for float32 and True for bfloat16 (what `--amp`
        meant before it took a dtype, so earlier caches and run ids still match), else the dtype's name."""
        return {None: False, "bfloat16": True}.get(self.dtype, self.dtype)


def amp_arg(value: str | bool | None) -> str:
    """--amp's value, checked: a bare `--amp` (or True) is bf16, as it was when the flag took no value."""
    if value is True:
        return "bf16"
    if value in (None, False):
        return "auto"
    if value not in AMP_CHOICES:
        raise BenchError(f"--amp {value}: not a precision; use one of {', '.join(AMP_CHOICES)}")
    return value


def amp_key(amp: str) -> bool | str:
    """--amp in run keys: auto as False and bf16 as True, the flag's values before it took a dtype, so earlier run
    ids and run directories still match."""
    return {"auto": False, "bf16": True}.get(amp, amp)


def resolve_precision(amp: str, device: torch.device | str, reference: str | None = None) -> Precision:
    """The precision a run part uses: `reference` is the dtype the protocol's reference code autocasts to on a
    GPU ("float16", "bfloat16" or None for float32)."""
    device_type = torch.device(device).type
    amp = amp_arg(amp)
    if reference not in (None, "float16", "bfloat16"):
        raise BenchError(f"amp dtype {reference!r}: use float16 or bfloat16")
    if amp == "auto":
        # the only device branch: on a GPU the reference's dtype, elsewhere float32 (bf16 on a CPU without native
        # bf16 units is slower than float32, and CPU records stay what they were)
        return Precision(device_type, reference if device_type == "cuda" else None)
    return Precision(device_type, _DTYPES.get(amp))
