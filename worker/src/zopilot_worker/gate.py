"""The GPU-memory gate: the worker's own check before it loads or runs a model.

Third of the three layers of concurrency control (operator admission, this
gate, per-endpoint limits). The operator admits a job against DCGM metrics
that can be seconds old and cannot see memory another tenant of a time-sliced
GPU grabs meanwhile; so right before a model is loaded (or run), the worker
asks the driver how much memory is free now and refuses with
:class:`~zopilot_worker.errors.GPUMemoryUnavailable` (503, retriable) instead
of finding out by an OOM.

:func:`cap_process_memory` turns the operator's memory plan for the job
(``$ZOPILOT_REQUIRED_MIB``) into a hard per-process limit on CUDA
allocations, so a worker that outgrows its plan fails itself.

Without CUDA the gate is a no-op that always passes: a CPU-only worker (tests,
the local demo, a tiny model) has no GPU memory to protect, and the planner's
numbers say nothing about host RAM.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from zopilot_worker.errors import GPUMemoryUnavailable

log = logging.getLogger(__name__)

MIB = 1024 * 1024

MemoryProbe = Callable[[], tuple[int, int] | None]
"""Returns ``(free_bytes, total_bytes)`` of the device now, or None when there is no CUDA."""


def cuda_memory_probe(device_index: int | None = None) -> MemoryProbe:
    """A probe over ``torch.cuda.mem_get_info`` (free memory of the whole device, all processes)."""

    def probe() -> tuple[int, int] | None:
        import torch  # deferred: importing torch costs seconds and is not needed to serve /health

        if not torch.cuda.is_available():
            return None
        index = torch.cuda.current_device() if device_index is None else device_index
        free, total = torch.cuda.mem_get_info(index)
        return int(free), int(total)

    return probe


@dataclass(frozen=True)
class GateDecision:
    """What the gate saw; logged, and handy in tests."""

    required_bytes: int
    headroom_bytes: int
    free_bytes: int | None
    total_bytes: int | None

    @property
    def enabled(self) -> bool:
        return self.free_bytes is not None

    @property
    def allowed(self) -> bool:
        return (
            self.free_bytes is None or self.free_bytes >= self.required_bytes + self.headroom_bytes
        )


class GPUMemoryGate:
    """Refuses work that needs more GPU memory than is free now, plus a headroom.

    The gate only checks; callers serialize check-and-load themselves (the
    engine loads under a lock and runs classifications under its limiter), so
    two loads cannot both pass on the same free memory.
    """

    def __init__(self, headroom_bytes: int, probe: MemoryProbe | None = None) -> None:
        if headroom_bytes < 0:
            raise ValueError("headroom_bytes must be >= 0")
        self.headroom_bytes = headroom_bytes
        self._probe = probe or cuda_memory_probe()

    def decide(self, required_bytes: int) -> GateDecision:
        seen = self._probe()
        free, total = (None, None) if seen is None else seen
        return GateDecision(max(0, required_bytes), self.headroom_bytes, free, total)

    def check(self, required_bytes: int, *, what: str) -> GateDecision:
        """Pass silently, or raise GPUMemoryUnavailable with the numbers in the message."""
        decision = self.decide(required_bytes)
        if not decision.enabled:
            log.debug("GPU memory gate: no CUDA, %s passes without a check", what)
            return decision
        if not decision.allowed:
            assert decision.free_bytes is not None
            need = decision.required_bytes + decision.headroom_bytes
            message = (
                f"not enough free GPU memory to {what}: needs {_mib(decision.required_bytes)} MiB "
                f"+ {_mib(decision.headroom_bytes)} MiB headroom = {_mib(need)} MiB, "
                f"{_mib(decision.free_bytes)} MiB free of {_mib(decision.total_bytes or 0)} MiB; "
                "retry later"
            )
            raise GPUMemoryUnavailable(message)
        log.info(
            "GPU memory gate: %s allowed (needs %d MiB + %d MiB headroom, %d MiB free)",
            what,
            _mib(decision.required_bytes),
            _mib(decision.headroom_bytes),
            _mib(decision.free_bytes or 0),
        )
        return decision


def _mib(n: int) -> int:
    return -(-n // MIB)


# --- the memory plan as a hard cap --------------------------------------------------------


class CudaMemoryApi(Protocol):
    """The part of ``torch.cuda`` the cap uses (a fake device in tests)."""

    def is_available(self) -> bool: ...

    def device_count(self) -> int: ...

    def get_device_properties(self, device: int) -> Any: ...

    def set_per_process_memory_fraction(self, fraction: float, device: int) -> None: ...


def memory_fraction(required_bytes: int, total_bytes: int) -> float | None:
    """The share of a device of ``total_bytes`` that the plan's ``required_bytes`` is.

    None when there is nothing to cap: no plan (0), an unknown device, or a
    plan as large as the device or larger (the whole device is the limit then).
    """
    if required_bytes <= 0 or total_bytes <= 0 or required_bytes >= total_bytes:
        return None
    return required_bytes / total_bytes


def cap_process_memory(required_mib: int, cuda: CudaMemoryApi | None = None) -> dict[int, float]:
    """Cap this process's CUDA allocations at the plan, ``required_mib``, on each device.

    The operator admits a job with ``required_mib`` of GPU memory (its memory
    plan, ``$ZOPILOT_REQUIRED_MIB``) next to other jobs on a time-sliced GPU.
    With ``torch.cuda.set_per_process_memory_fraction`` an allocation past the
    plan raises ``torch.OutOfMemoryError`` in this process (reported as
    ``GPUOutOfMemory``, exit 76, and re-planned with more memory) instead of
    taking memory its neighbours were promised. The cap covers PyTorch's
    caching allocator, i.e. weights, KV cache and activations; the CUDA
    context (a few hundred MiB) is outside it, which the planner's overhead
    term accounts for. Returns ``{device: fraction}`` as applied; ``{}``
    without CUDA or without a plan.
    """
    if required_mib <= 0:
        return {}
    if cuda is None:
        try:
            import torch  # deferred: seconds to import, and only pods with a plan need it
        except ImportError:
            return {}
        cuda = torch.cuda
    if not cuda.is_available():
        log.info("no CUDA device: the %d MiB memory plan is not enforced", required_mib)
        return {}
    applied: dict[int, float] = {}
    for device in range(cuda.device_count()):
        total = int(cuda.get_device_properties(device).total_memory)
        fraction = memory_fraction(required_mib * MIB, total)
        if fraction is None:
            log.warning(
                "memory plan of %d MiB is not below device %d's %d MiB: not capped",
                required_mib,
                device,
                _mib(total),
            )
            continue
        cuda.set_per_process_memory_fraction(fraction, device)
        applied[device] = fraction
        log.info(
            "CUDA allocations on device %d capped at the plan: %d MiB of %d MiB (%.4f)",
            device,
            required_mib,
            _mib(total),
            fraction,
        )
    return applied
