"""The only module that knows about torch.distributed.

Everything degrades to a single process (rank 0 of world size 1) when the run was not
started by torchrun, so the same code runs on one CPU.
"""

from __future__ import annotations

import torch.distributed as dist


def is_initialized() -> bool:
    return dist.is_available() and dist.is_initialized()


def rank() -> int:
    return dist.get_rank() if is_initialized() else 0


def world_size() -> int:
    return dist.get_world_size() if is_initialized() else 1


def is_main() -> bool:
    return rank() == 0
