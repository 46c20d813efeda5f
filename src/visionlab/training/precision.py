"""`trainer.precision`: the forward pass in float32, bfloat16 or float16, and the gradient scaler fp16 needs.

bf16 and fp16 run the forward pass and the loss under `torch.autocast`: matrix products and
convolutions in 16 bits, reductions and the loss in float32, the weights and the optimizer in
float32 throughout. float16's narrow range lets small gradients underflow to zero, so fp16 also
scales the loss up before backward and the gradients down before the step (`GradScaler`), skipping
a step whose gradients overflowed. At 32 every method here is a no-op.

auto is bf16 where the hardware multiplies bfloat16 natively (a GPU that supports it, a CPU with
AVX-512 BF16 or AMX) and 32 elsewhere, where emulated bf16 is slower than float32: a recipe
meant for any machine can ask for it.
"""

from __future__ import annotations

import torch

from visionlab import patches
from visionlab.errors import UserError

PRECISIONS = {"32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
CHOICES = (*PRECISIONS, "auto")


def resolved(precision: str | int, device: torch.device) -> str:
    """The precision a run on this device uses: `auto` becomes bf16 where it is computed in hardware, else 32."""
    if str(precision) != "auto":
        return str(precision)
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "32"
    return "bf16" if device.type == "cpu" and patches.cpu_computes_bfloat16() else "32"


def slow_choice(precision: str | int, device: torch.device) -> str | None:
    """What to say when the precision asked for is much slower than float32 on this device; None when it is not.

    A CPU has no float16 arithmetic: autocast emulates it, and the gradient scaler guards against an
    underflow float32 never has. It still runs (and trains as fp16 would), so a run can try fp16 before a GPU.
    """
    if str(precision) == "fp16" and device.type == "cpu":
        return (
            "trainer.precision=fp16 on the CPU: float16 is emulated there and runs several times slower than "
            "float32; use trainer.precision=32, or auto (bf16 where this CPU computes it, else 32)"
        )
    return None


class Precision:
    def __init__(self, precision: str | int = "32", device: torch.device = torch.device("cpu")):
        self.name = resolved(precision, device)
        self.dtype = PRECISIONS[self.name]
        self.device_type = device.type
        if self.dtype is torch.bfloat16 and device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise UserError(
                f"trainer.precision=bf16 but {torch.cuda.get_device_name(device)} has no bfloat16: use 32 or fp16"
            )
        self.scaler = torch.amp.GradScaler(device.type, enabled=self.dtype is torch.float16)

    def autocast(self) -> torch.autocast:
        """The context the forward pass and the data loss run in."""
        return torch.autocast(self.device_type, dtype=self.dtype, enabled=self.dtype is not None)

    def backward(self, loss: torch.Tensor) -> None:
        self.scaler.scale(loss).backward()

    def unscale(self, optimizer: torch.optim.Optimizer) -> None:
        """True gradients in place, before anything reads them (clipping); once per step at most."""
        self.scaler.unscale_(optimizer)

    def step(self, optimizer: torch.optim.Optimizer) -> None:
        self.scaler.step(optimizer)
        self.scaler.update()

    def state_dict(self) -> dict[str, float | int]:
        """The scaler's scale and growth counter (empty unless fp16):
        a resumed run scales as the stopped one would have."""
        return self.scaler.state_dict()

    def load_state_dict(self, state: dict[str, float | int]) -> None:
        if state:
            self.scaler.load_state_dict(state)
