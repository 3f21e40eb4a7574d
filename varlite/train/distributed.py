"""Data-parallel training: this process's place in a run started by ``torchrun`` (it sets RANK / WORLD_SIZE), and
the few collective operations the loop needs. Gradients are averaged by DDP (gloo on CPU, nccl on CUDA)."""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..device import pick_device


@dataclass
class Dist:
    """This process's place in a data-parallel run (rank 0 of 1 when not started by torchrun)."""
    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.world > 1

    def mean(self, values: list[float]) -> list[float]:
        """The mean of each value over all processes (every process gets the same numbers)."""
        if not self.active:
            return list(values)
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return (t / self.world).tolist()

    def any(self, flag: bool) -> bool:
        """True on every process if ``flag`` is true on any process."""
        if not self.active:
            return flag
        t = torch.tensor([int(flag)], device=self.device)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return bool(t.item())

    def gather(self, obj) -> list:
        """``obj`` of every process, by rank."""
        if not self.active:
            return [obj]
        out = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def setup_distributed(device_name: str = "auto") -> Dist:
    """Join the process group when started by torchrun (WORLD_SIZE > 1): gloo on CPU, nccl on CUDA."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank, local_rank = int(os.environ.get("RANK", "0")), int(os.environ.get("LOCAL_RANK", "0"))
    device = pick_device(device_name, local_rank)
    if world > 1 and not dist.is_initialized():
        # torch 2.13: torch._dynamo (which the first optimizer or DDP wrapper imports), when first imported after
        # the group exists, keeps references to it, and destroy_process_group() can then no longer free it.
        import torch._dynamo  # noqa: F401 -- imported here, before the group, so that teardown frees it
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return Dist(rank, world, device)


def teardown_distributed() -> None:
    """Leave the process group, if this process joined one. This frees the group, so gloo's worker threads stop
    here: one still running as the interpreter exits can abort a finished run (SIGABRT, "terminate called without
    an active exception", when it frees a tensor after Python has gone). ``tests/torchrun_entry.py`` checks that a
    finished run has no gloo thread left."""
    if dist.is_initialized():
        dist.destroy_process_group()
