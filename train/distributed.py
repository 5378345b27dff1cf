"""Data-parallel training over N processes (``adedge train --nproc N`` or ``torchrun``).

Every process holds the whole model; each global batch (the paper's batch size, kept) is cut
into N shards of ``batch / N`` (what a ``DistributedSampler`` over the epoch's order gives),
and gradients are averaged over the processes before every optimiser step, so one step is
the single-process step on the whole global batch. BatchNorm layers see the statistics of
the whole global batch (:class:`SyncBatchNorm` on CUDA, :class:`GlooBatchNorm` on CPU, whose
gloo backend torch's SyncBatchNorm refuses), so with synchronised statistics the losses equal
a single process's up to float summation order.

Why gradients are averaged in an optimiser step pre-hook rather than by wrapping the model in
``DistributedDataParallel``: DDP synchronises in its wrapper's ``forward``, but the methods
call their sub-networks directly and step several optimisers per batch (GANs: generator then
critic, each on its own losses); the hook does DDP's reduction (mean of gradients over
processes, one coalesced all-reduce per step) for any method without per-method code.

Rank 0 alone validates, logs and writes (checkpoints, history, run info): a method's
validation loss is any statistic of the held-out set, not always a mean that shards could
be gathered into, and the held-out set is small next to the training set.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data.distributed import DistributedSampler

from adedge.errors import AdedgeError

if TYPE_CHECKING:
    from adedge.train.options import TrainOptions

TIMEOUT = timedelta(hours=2)  # rank 0 validates alone while the others wait
ENV_KEYS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (rank 0 of 1: no distribution)."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.size > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


SINGLE = World()


def check_nproc(nproc: int) -> None:
    if nproc < 1:
        raise AdedgeError(f"--nproc {nproc} must be at least 1", "e.g. --nproc 2")


def check_global_batch(batch: int, world: int) -> None:
    """The global batch is the paper's; each process takes batch / N of it."""
    if batch % world:
        raise AdedgeError(
            f"the global batch size {batch} is not divisible by {world} processes",
            f"pass a --batch-size that is a multiple of {world}, or another --nproc",
        )


def launched_by_torchrun() -> bool:
    return all(key in os.environ for key in ENV_KEYS)


def world_from_env() -> World:
    return World(
        int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"]), int(os.environ["LOCAL_RANK"])
    )


def init(world: World, device: torch.device) -> None:
    """Join the process group (gloo on CPU, NCCL on CUDA); MASTER_ADDR/PORT from the env."""
    if device.type == "cuda":
        torch.cuda.set_device(world.local_rank)
    dist.init_process_group(
        "nccl" if device.type == "cuda" else "gloo",
        rank=world.rank,
        world_size=world.size,
        timeout=TIMEOUT,
    )


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the shards of one global batch ---------------------------------------------------------


def shard(batch: torch.Tensor, world: World) -> torch.Tensor:
    """This process's part of a global batch of indices: a DistributedSampler (no shuffle:
    the epoch's order is already shuffled, the same on every rank) over the batch."""
    if not world.active:
        return batch
    sampler = DistributedSampler(
        range(len(batch)), num_replicas=world.size, rank=world.rank, shuffle=False
    )
    return batch[list(sampler)]


# --- the model: same start, averaged gradients, synchronised BatchNorm ----------------------


def broadcast_state(model: nn.Module) -> None:
    """Rank 0's parameters and buffers everywhere (a start, or a resume, that agrees)."""
    with torch.no_grad():
        for tensor in list(model.parameters()) + list(model.buffers()):
            dist.broadcast(tensor.data, src=0)


def average_gradients(optimizer: torch.optim.Optimizer, *_: Any) -> None:
    """Mean of every gradient over the processes, one coalesced all-reduce (DDP's reduction)."""
    grads = [p.grad for g in optimizer.param_groups for p in g["params"] if p.grad is not None]
    if not grads:
        return
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat)
    flat /= dist.get_world_size()
    offset = 0
    for g in grads:
        g.copy_(flat[offset : offset + g.numel()].view_as(g))
        offset += g.numel()


def average_losses(losses: dict[str, float], world: World, device: torch.device):
    """The mean of each logged value over the processes: the global batch's mean loss."""
    if not world.active or not losses:
        return losses
    keys = sorted(losses)
    values = torch.tensor([float(losses[k]) for k in keys], dtype=torch.float64, device=device)
    dist.all_reduce(values)
    values /= world.size
    means = dict(zip(keys, values.tolist(), strict=True))
    return {k: means[k] for k in losses}


class _SumOverProcesses(torch.autograd.Function):
    """Sum over the processes whose gradient is again the sum (each process's loss depends
    on every process's statistics)."""

    @staticmethod
    def forward(ctx: Any, tensor: torch.Tensor) -> torch.Tensor:
        total = tensor.clone()
        dist.all_reduce(total)
        return total

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> torch.Tensor:
        total = grad.clone()
        dist.all_reduce(total)
        return total


def differentiable_all_reduce(tensor: torch.Tensor) -> torch.Tensor:
    return _SumOverProcesses.apply(tensor)


class GlooBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm over the whole global batch on any backend (torch's SyncBatchNorm runs on
    GPUs only): mean and biased variance from all-reduced sums (two passes, as stable as a
    single process's), differentiable, running statistics updated as ``_BatchNorm`` does
    (``momentum=None``: cumulative average; 0: frozen), so the methods' tricks keep working.
    Outside training, or while no group exists, it is a plain BatchNorm."""

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not (self.training and dist.is_available() and dist.is_initialized()):
            return super().forward(input)
        dims = [0] + list(range(2, input.dim()))
        count = torch.tensor([float(input.numel() // input.shape[1])], dtype=input.dtype)
        dist.all_reduce(count)
        mean = differentiable_all_reduce(input.sum(dims)) / count
        shape = [1, -1] + [1] * (input.dim() - 2)
        centred = input - mean.view(shape)
        var = differentiable_all_reduce((centred * centred).sum(dims)) / count
        if self.track_running_stats and self.running_mean is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)
                factor = (
                    1.0 / float(self.num_batches_tracked)
                    if self.momentum is None
                    else self.momentum
                )
                unbiased = var * count / max(float(count) - 1.0, 1.0)
                self.running_mean.mul_(1 - factor).add_(mean.detach(), alpha=factor)
                self.running_var.mul_(1 - factor).add_(unbiased.detach(), alpha=factor)
        out = centred * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            out = out * self.weight.view(shape) + self.bias.view(shape)
        return out


def synchronise_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Every BatchNorm layer made to use the global batch's statistics (same state keys, so
    checkpoints load into plain models and back)."""
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)
    return _convert(model)


def _convert(module: nn.Module) -> nn.Module:
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(
        module, (GlooBatchNorm, nn.SyncBatchNorm)
    ):
        converted = GlooBatchNorm(
            module.num_features, module.eps, module.momentum, module.affine,
            module.track_running_stats,
        )  # fmt: skip
        with torch.no_grad():
            if module.affine:
                converted.weight = module.weight
                converted.bias = module.bias
        converted.running_mean = module.running_mean
        converted.running_var = module.running_var
        converted.num_batches_tracked = module.num_batches_tracked
        converted.training = module.training
        return converted
    for name, child in module.named_children():
        module.add_module(name, _convert(child))
    return module


def prepare_model(
    model: nn.Module, optimizers: dict[str, torch.optim.Optimizer], world: World, device
) -> nn.Module:
    """Synchronised BatchNorm, rank 0's weights everywhere, gradients averaged at each step."""
    if not world.active:
        return model
    model = synchronise_batchnorm(model, device)
    broadcast_state(model)
    for optimizer in optimizers.values():
        optimizer.register_step_pre_hook(average_gradients)
    return model


def spread_rng(world: World) -> None:
    """Distinct random draws per process (noise, views) from the shared seed's stream."""
    if world.active:
        base = int(torch.randint(0, 2**62, (1,)))
        torch.manual_seed(base + world.rank)


# --- launching -----------------------------------------------------------------------------


def _worker(rank: int, size: int, port: int, options: TrainOptions, errors: Any, log: Any) -> None:
    from adedge.train.trainer import Trainer

    os.environ.update(
        RANK=str(rank), WORLD_SIZE=str(size), LOCAL_RANK=str(rank),
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port),
    )  # fmt: skip
    try:
        Trainer(options, log if rank == 0 and log else silent, World(rank, size, rank)).run()
    except AdedgeError as exc:
        errors.put((rank, exc.message, exc.hint))
        raise SystemExit(2) from None
    except KeyboardInterrupt:  # Ctrl-C reaches every process: the parent says how to resume
        raise SystemExit(130) from None


def silent(_: str) -> None:
    return None


def spawn(options: TrainOptions, log: Callable[[str], None] | None = None) -> None:
    """N local processes on 127.0.0.1 (a free port), each a rank; a user error in any of them
    is re-raised here as one AdedgeError, a crash stops the others."""
    import torch.multiprocessing as mp

    check_nproc(options.nproc)
    context = mp.get_context("spawn")
    errors = context.SimpleQueue()
    port = free_port()
    worker_options = replace(options)  # a copy
    if worker_options.threads is None:
        worker_options.threads = max(1, (os.cpu_count() or 1) // options.nproc)
    processes = [
        context.Process(
            target=_worker, args=(rank, options.nproc, port, worker_options, errors, log)
        )
        for rank in range(options.nproc)
    ]
    for process in processes:
        process.start()
    try:
        _wait(processes)
    finally:  # Ctrl-C, SIGTERM or a failed rank: no process outlives the command
        _stop(processes)
    if not errors.empty():
        rank, message, hint = errors.get()
        raise AdedgeError(message, hint)
    bad = [p.exitcode for p in processes if p.exitcode != 0]
    if bad:
        raise AdedgeError(
            f"a training process stopped with exit code {bad[0]}",
            "see its messages above; rerun with --nproc 1 to debug",
        )


def _wait(processes: list[Any]) -> None:
    """Until all ranks end, or one fails (the others would wait for it for ever)."""
    while any(p.is_alive() for p in processes):
        for p in processes:
            p.join(timeout=0.2)
            if p.exitcode not in (None, 0):
                return


def _stop(processes: list[Any]) -> None:
    for p in processes:
        if p.is_alive():
            p.terminate()
    for p in processes:
        p.join()
