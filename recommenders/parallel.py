"""Data-parallel training under ``accelerate launch``: the processes accelerate starts share every batch.

``accelerate launch -m benchmark run ...`` starts one process per device; :class:`accelerate.PartialState`
joins them (NCCL on GPUs, gloo on CPU). Every process builds the same model from the same seed, reads the
same batch order and takes its share of each batch (rows ``rank::world``); after the backward pass the
gradients are averaged with all-reduce, weighted by each share's size, so every process takes the same
optimiser step on the gradient of the whole batch (the mean loss over its rows), as one process would.
Validation and test ranking run in every process on identical weights (identical early stopping; no
gathering needed). Only the main process writes records and checkpoints (:func:`is_main`); resume reads
the checkpoint in every process. Outside ``accelerate launch`` (one process) nothing here does anything.

Caveat: this is gradient averaging over the process group, not ``DistributedDataParallel``'s bucketed
overlap of communication with the backward pass, so it scales less well on many GPUs; FSDP (sharded
weights) is not supported.
"""
from __future__ import annotations

import os
from functools import lru_cache

import torch
import torch.distributed as dist
from accelerate import PartialState

from benchmark.batches import HistoryBatch


@lru_cache(maxsize=1)
def state() -> PartialState:
    """The process group accelerate set up (initialised on first use; a single process without a launcher). On a
    machine without CUDA the launched processes join over gloo (``cpu=True``): accelerate otherwise leaves each
    one alone, training the whole batch, as if it were the only one."""
    return PartialState(cpu=launched() and not torch.cuda.is_available())


def launched() -> bool:
    """Whether a multi-process launcher (``accelerate launch``, ``torchrun``) started this process: it sets
    ``WORLD_SIZE`` before any process group exists."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def distributed() -> bool:
    return state().num_processes > 1


def is_main() -> bool:
    """True in the process that writes records and checkpoints (the only one without a launcher)."""
    return state().is_main_process


def barrier() -> None:
    if distributed():
        state().wait_for_everyone()


def shard(batch: HistoryBatch) -> HistoryBatch:
    """This process's rows of ``batch`` (``rank::world``; all rows in a single process)."""
    if not distributed():
        return batch
    rows = slice(state().process_index, None, state().num_processes)
    return HistoryBatch(users=batch.users[rows], items=batch.items[rows], mask=batch.mask[rows],
                        targets=batch.targets[rows],
                        histories=None if batch.histories is None else batch.histories[rows],
                        host_users=None if batch.host_users is None else batch.host_users[rows])


def average(loss: torch.Tensor | None, rows: int, total: int, parameters: list[torch.nn.Parameter]) -> torch.Tensor:
    """All-reduce the gradients of ``parameters`` and the loss, each process weighted by its ``rows`` of
    ``total``; returns the whole batch's loss, a 0-d tensor on the device (read without a sync in one process).
    ``loss`` None: this process had no rows (zero gradients)."""
    weight = rows / total
    if not distributed():
        return loss.detach()
    for parameter in parameters:
        if parameter.grad is None:
            parameter.grad = torch.zeros_like(parameter)
        parameter.grad.mul_(weight)
        dist.all_reduce(parameter.grad)
    value = torch.zeros(1, device=parameters[0].device)
    if loss is not None:
        value += loss.detach().float() * weight
    dist.all_reduce(value)
    return value[0]
