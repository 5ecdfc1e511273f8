"""Data parallelism across processes started by ``torchrun``.

Each rank trains on its shard of every global batch; after each backward pass the gradients are averaged over the
ranks with one all-reduce of a flattened buffer (what DistributedDataParallel does, done by hand so that models with
several optimizer phases, like the adversarial auto-encoder, need no special wrapping). Only rank 0 writes files.
"""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
from torch._utils import _flatten_dense_tensors, _unflatten_dense_tensors


def launched_by_torchrun() -> bool:
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def restarted() -> bool:
    """Whether torchrun relaunched this worker after a failure (``--max-restarts``)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")) > 0


def init_from_env(device: torch.device) -> torch.device:
    """Join the process group described by torchrun's environment; returns this rank's device."""
    if not dist.is_initialized():
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo", **_store_of_this_attempt())
    return device


def _store_of_this_attempt() -> dict:
    """Where the ranks meet: torchrun's own key-value store, with a key prefix naming the restart attempt.

    torchrun's agent hosts one TCPStore for the whole job and hands the same address to every attempt, and the
    process group's rendezvous keys (each rank's listening address under gloo, NCCL's unique id) carry no attempt in
    their names. After a restart a rank could read its dead predecessor's address and fail to connect, unless its peer
    happened to overwrite the key first. One agent numbers the attempts of all its workers alike, so under a single
    agent each attempt gets keys of its own; with several agents (several machines), whose counts can differ, torch's
    default is kept (see README.md, "Mistakes and faults").
    """
    if os.environ.get("TORCHELASTIC_USE_AGENT_STORE") != "True" or os.environ.get("GROUP_WORLD_SIZE", "1") != "1":
        return {}
    from torch.distributed.constants import default_pg_timeout  # here: aekit must import where torch has no c10d

    store = dist.TCPStore(
        os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), is_master=False, timeout=default_pg_timeout
    )  # as long as env:// would wait
    attempt = os.environ.get("TORCHELASTIC_RESTART_COUNT", "0")
    return {
        "store": dist.PrefixStore(f"aekit/attempt_{attempt}", store),
        "rank": int(os.environ["RANK"]),
        "world_size": int(os.environ["WORLD_SIZE"]),
    }


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def average_gradients(parameters: list[torch.nn.Parameter]) -> None:
    """Replace each gradient by its mean over the ranks (missing gradients count as zero)."""
    params = [p for p in parameters if p.requires_grad]
    grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    flat = _flatten_dense_tensors(grads)
    dist.all_reduce(flat)
    flat /= world_size()
    for p, g in zip(params, _unflatten_dense_tensors(flat, grads)):
        p.grad = g


def wait_for_all() -> None:
    """Block until every process of the group gets here, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def shutdown() -> None:
    """Leave the process group, if this process joined one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()
