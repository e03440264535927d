"""Which device, precision and batch size an embed task uses.

A Spark executor with N GPUs runs N embed tasks at once when each task asks for one
(``spark.executor.resource.gpu.amount=N``, ``spark.task.resource.gpu.amount=1``); Spark hands
every running task a distinct GPU address, read from the task context. The address is the
CUDA ordinal the executor's processes see (what the discovery script reports), so the task's
device is ``cuda:<address>``. Precision and batch size then follow that device's properties,
so an executor mixing GPU models still gives each task a setting its GPU can run.

``plan_device`` is a pure function of (what was asked, the task's GPU addresses, a way to
read a GPU's properties): testable without CUDA. ``task_device_plan`` feeds it the running
Spark task's addresses and torch's device properties.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Callable

from curate.errors import DatasetError

CPU_BATCH = 64
GIB = 1 << 30


@dataclass(frozen=True)
class GpuProperties:
    """What the plan needs to know about a GPU (torch.cuda.get_device_properties' fields)."""

    name: str
    total_memory: int  # bytes
    major: int  # compute capability
    minor: int = 0

    @property
    def bf16(self) -> bool:
        """bfloat16 tensor cores: Ampere (8.0) and newer."""
        return self.major >= 8


@dataclass(frozen=True)
class DevicePlan:
    device: str  # cpu, cuda:<index>
    precision: str  # a curate.models.PRECISIONS name
    batch_size: int
    gpu: str | None = None  # the GPU's name
    gpu_memory_gib: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


def gpu_batch_size(props: GpuProperties) -> int:
    """Images per forward pass on a GPU: larger on GPUs with more memory (inference activations
    of a ViT-L/14 at batch 2048 in bf16 take a few GiB; the 40 GiB tier leaves room for more)."""
    gib = props.total_memory / GIB
    if gib >= 40:
        return 2048
    if gib >= 20:
        return 1024
    if gib >= 12:
        return 512
    return 256


def cuda_index(device: str) -> int:
    """``cuda:3`` -> 3; ``cuda`` -> 0 (the current device of a fresh process)."""
    _, _, idx = device.partition(":")
    return int(idx) if idx else 0


def plan_device(device: str, precision: str, batch_size: int, task_gpus: list[str],
                gpu_properties: Callable[[int], GpuProperties], cuda_available: bool) -> DevicePlan:
    """The device, precision and batch size for one embed task.

    ``device``: ``auto`` (the task's GPU, else cuda when visible, else cpu), ``cuda`` (the
    task's GPU, else the current one), ``cuda:N`` or ``cpu``: an explicit index or cpu is kept.
    ``precision`` ``auto``: bf16 autocast on GPUs with bf16, fp16 autocast on older ones, fp32 on
    CPU. ``batch_size`` 0: by the GPU's memory (``gpu_batch_size``), 64 on CPU.
    Only the task's first address is used: ask for one GPU per task.
    """
    if task_gpus and device in ("auto", "cuda", "", None):
        device = f"cuda:{int(task_gpus[0])}"
    elif device in ("auto", "", None):
        device = "cuda:0" if cuda_available else "cpu"
    if not device.startswith("cuda"):
        prec = "fp32" if precision in ("auto", "", None) else precision
        return DevicePlan(device=device, precision=prec, batch_size=batch_size or CPU_BATCH)
    if not task_gpus and not cuda_available:  # asked for CUDA where torch sees none: one line, not torch's trace
        raise DatasetError(f"--device {device}: no CUDA device is visible here (torch.cuda.is_available() is "
                           "False); use --device auto or cpu, or run where a GPU is")
    props = gpu_properties(cuda_index(device))
    if precision in ("auto", "", None):
        precision = "amp_bf16" if props.bf16 else "amp_fp16"
    return DevicePlan(device=device, precision=precision, batch_size=batch_size or gpu_batch_size(props),
                      gpu=props.name, gpu_memory_gib=round(props.total_memory / GIB, 1))


def cuda_properties(index: int) -> GpuProperties:
    import torch

    p = torch.cuda.get_device_properties(index)
    return GpuProperties(name=p.name, total_memory=int(p.total_memory), major=int(p.major), minor=int(p.minor))


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def task_device_plan(device: str = "auto", precision: str = "auto", batch_size: int = 0,
                     gpu_properties: Callable[[int], GpuProperties] = cuda_properties,
                     cuda_available: Callable[[], bool] = _cuda_available) -> DevicePlan:
    """``plan_device`` for the running Spark task (its GPU addresses), or for this process
    outside Spark (no addresses)."""
    from curate.engine.spark import task_resource_addresses

    try:
        gpus = task_resource_addresses("gpu")
    except Exception:  # noqa: BLE001 - no Spark here
        gpus = []
    needs_probe = not gpus and (device in ("auto", "", None) or str(device).startswith("cuda"))
    return plan_device(device, precision, batch_size, gpus, gpu_properties,
                       cuda_available=cuda_available() if needs_probe else False)
