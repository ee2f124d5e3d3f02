"""One process per GPU: joining the process group, and who writes.

A SLURM job with several tasks (`hydra.launcher.tasks_per_node`, one per GPU) runs the whole
pipeline in every task. submitit knows the task layout; its TorchDistributedEnvironment turns it
into torch.distributed's env:// variables, and accelerate's PartialState joins the group. Jobs
started by torchrun or `accelerate launch` already carry those variables and are left as they are.
Rank 0 alone writes run files and talks to W&B; every rank computes.
"""

from __future__ import annotations

import os


def export_submitit_task_layout() -> None:
    """Inside a multi-task submitit job, set MASTER_ADDR/PORT, RANK, WORLD_SIZE, LOCAL_RANK."""
    if "WORLD_SIZE" in os.environ or not os.environ.get("SUBMITIT_EXECUTOR"):
        return
    import submitit

    if submitit.JobEnvironment().num_tasks > 1:
        # every task sees all of the node's GPUs and picks cuda:LOCAL_RANK (accelerate does)
        submitit.helpers.TorchDistributedEnvironment().export(set_cuda_visible_devices=False)


def world_size() -> int:
    """Processes in this job, from the launcher's environment (accelerate, torchrun, our SLURM path)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def join_process_group():
    """accelerate's process state, created once per process before any Trainer makes its own.

    Creating it here, first, means the cold start's SFT trainer and the RL trainer share one
    process group instead of each guessing at it.
    """
    from accelerate import PartialState

    export_submitit_task_layout()
    if world_size() == 1:
        return PartialState()
    import torch

    return PartialState(cpu=not torch.cuda.is_available())


def rank() -> int:
    """This process's rank in the job (0 alone)."""
    return int(os.environ.get("RANK", "0"))


def local_rank() -> int:
    """This process's index on its node: which of the node's GPUs is its own."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def is_main_process() -> bool:
    return rank() == 0


def wait_for_everyone() -> None:
    """A barrier when several processes run this job; nothing otherwise."""
    if world_size() > 1:
        from accelerate import PartialState

        PartialState().wait_for_everyone()


def main_process_decides(value):
    """Rank 0's `value` on every rank (so all take the same branch)."""
    if world_size() == 1:
        return value
    from accelerate.utils import broadcast_object_list

    return broadcast_object_list([value], from_process=0)[0]


def leave_process_group() -> None:
    """Leave the job's process group once every rank is done with it. A process that exits while
    gloo's threads still run is aborted by the C++ runtime (SIGABRT after its work is done)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def free_accelerator_memory() -> None:
    """Return what a finished trainer held, so an evaluation engine (or the next phase) can have the GPU."""
    import gc

    import torch

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
