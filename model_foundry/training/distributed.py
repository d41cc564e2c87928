"""Several processes training one model (DDP or FSDP2 through `torch.distributed`), and one process alone.

Launch: `torchrun ... -m model_foundry train CONFIG` starts the workers (the environment variables
RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, ... say who each is); `foundry train CONFIG --nproc N`
runs torchrun's own launcher in its process (`training.launch`). NCCL joins CUDA workers, gloo CPU ones.

The same config trains the same model on 1 or N processes:

- Every process reads the same stream of micro-batches, the one a single process reads, and a
  step's global batch is its `gradient_accumulation_steps` micro-batches of `batch_size` rows. Laid
  end to end they are `batch_size x gradient_accumulation_steps` rows, which N must divide: process
  r trains on the r-th of N equal, contiguous stretches of those rows (`step_pieces`). A stretch is
  cut into pieces, one per micro-batch it touches, so no forward pass is larger than one process's.
  A micro-batch is collated whole before it is cut, so its padding and its masked positions are the
  ones one process draws; micro-batches a process has no piece of are skipped, not read.
- The data position is therefore global, the same on every process and for every N.
- Each piece's mean loss is weighted by its targets over the targets of the whole global batch
  (counted on the host and summed over the processes on the host), and multiplied by N because DDP
  averages gradients: the summed gradient is the one-process gradient. Gradients are synchronised
  only in the backward pass of a process's last piece (`gradient_sync`, covering the forward too).

Only rank 0 writes files; everything that decides what happens next (evaluation metrics, a stop
signal) is agreed on by all processes, so they always take the same branch and meet at the same
collectives. Checkpoints keep the one-process format whatever the strategy: under FSDP2 the full
weights and optimizer state are gathered for them (`training.sharded_state`).
"""
from __future__ import annotations

import copy
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from typing import Any, ContextManager, TypeVar

import torch
import torch.distributed as dist
from torch import nn

from model_foundry.config.schema import TrainingSection
from model_foundry.data.batches import mix_seed
from model_foundry.errors import UserError
from model_foundry.ranks import WRITER_RANK, is_writer, process_rank
from model_foundry.training.precision import resolve_device
from model_foundry.training.sharded_state import ReplicatedState, ShardedState

T = TypeVar("T")


# ---- the global batch and each process's share of it -------------------------------------------------
@dataclass(frozen=True)
class Piece:
    """Rows [start, stop) of the step's micro-batch number `micro_batch`: one forward and backward."""

    micro_batch: int
    start: int
    stop: int

    def of(self, batch: dict) -> dict:
        """These rows of the collated micro-batch (the batch itself when the piece is all of it)."""
        rows = next(v.shape[0] for v in batch.values() if isinstance(v, torch.Tensor))
        if self.start == 0 and self.stop == rows:
            return batch
        return {k: v[self.start:self.stop] if isinstance(v, torch.Tensor) else v for k, v in batch.items()}


def check_world_size(training: TrainingSection, world_size: int) -> None:
    """Refuse a global batch the processes cannot split into equal shares (the shares must be equal
    for every process to train on the rows one process would, in the same steps)."""
    rows = training.batch_size * training.gradient_accumulation_steps
    if rows % world_size:
        raise UserError(f"training.batch_size x training.gradient_accumulation_steps ({training.batch_size} x "
                        f"{training.gradient_accumulation_steps} = {rows} rows per optimizer step) must be divisible "
                        f"by the number of processes ({world_size}), which split every step's rows equally; "
                        "change training.batch_size or training.gradient_accumulation_steps, or the number of "
                        "processes.")


def step_pieces(batch_size: int, accumulation: int, world_size: int, rank: int) -> list[Piece]:
    """Process `rank`'s pieces of every step: its contiguous share of the step's rows, cut at
    micro-batch boundaries. One process gets every micro-batch whole."""
    share = batch_size * accumulation // world_size
    first, last = rank * share, (rank + 1) * share
    pieces = []
    for index in range(accumulation):
        offset = index * batch_size
        start, stop = max(first, offset), min(last, offset + batch_size)
        if start < stop:
            pieces.append(Piece(index, start - offset, stop - offset))
    return pieces


# ---- the processes -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Workers:
    """The processes training one model, as the trainer sees them; `Workers()` is one process alone,
    for which every method is free (no collective, no copy), so that path is exactly the old one."""

    rank: int = 0
    world_size: int = 1
    device: torch.device | None = None  # this process's device; None: training.device decides
    host_group: Any = None  # a gloo group for host values (the default group when that is gloo already)

    @property
    def is_writer(self) -> bool:
        """Rank 0 alone writes checkpoints, metrics, results and the progress display (`ranks.is_writer`)."""
        return is_writer(self.rank)

    @property
    def alone(self) -> bool:
        return self.world_size == 1

    def barrier(self) -> None:
        if not self.alone:
            dist.barrier()

    def sum_on_host(self, *values: float) -> tuple[float, ...]:
        """`values` summed over the processes, through a host (gloo) group: no device is waited for.
        Integers stay exact up to 2**53."""
        if self.alone:
            return values
        summed = torch.tensor(values, dtype=torch.float64)
        dist.all_reduce(summed, group=self.host_group)
        return tuple(int(s) if isinstance(v, int) else s for v, s in zip(values, summed.tolist()))

    def agreed_signal(self, signum: int | None) -> int | None:
        """The stop signal any process has received, or None; all processes get the same answer, so a
        signal to one worker stops them all at the same step boundary."""
        if self.alone:
            return signum
        flag = torch.tensor([signum or 0], dtype=torch.int64)
        dist.all_reduce(flag, op=dist.ReduceOp.MAX, group=self.host_group)
        return int(flag) or None

    def sum_on_device(self, tensor: torch.Tensor) -> torch.Tensor:
        """`tensor` summed over the processes, in place, on its device (no host sync of its own)."""
        if not self.alone:
            dist.all_reduce(tensor)
        return tensor

    def gather_objects(self, value: T) -> list[T]:
        """Every process's `value`, in rank order (picklable values, through the host group)."""
        if self.alone:
            return [value]
        gathered: list[Any] = [None] * self.world_size
        dist.all_gather_object(gathered, value, group=self.host_group)
        return gathered

    def broadcast_object(self, value: T) -> T:
        """Rank 0's `value` on every process."""
        if self.alone:
            return value
        box = [value]
        dist.broadcast_object_list(box, src=WRITER_RANK, group=self.host_group)
        return box[0]

    def rank_zero_first(self, on_rank_zero: Callable[[], T], on_others: Callable[[], T] | None = None) -> T:
        """Run `on_rank_zero` on rank 0, then `on_others` (default: the same) on the other ranks.

        For work that writes shared files (a tokenizer, the token cache, the run directory): the other
        ranks read what rank 0 wrote instead of racing it. A failure on rank 0 fails every rank, a
        user error with the same message (so all exit 2), rather than leaving them waiting.
        """
        if self.alone:
            return on_rank_zero()
        failure: tuple[type[Exception], str] | None = None
        result = None
        if self.is_writer:
            try:
                result = on_rank_zero()
            except UserError as error:
                failure = (UserError, str(error))
            except Exception:
                self.broadcast_object((RuntimeError, "rank 0 failed; its error is above."))
                raise
        failure = self.broadcast_object(failure)
        if failure is not None:
            kind, message = failure
            raise kind(message)
        if not self.is_writer:
            result = (on_others or on_rank_zero)()
        return result

    def seed_dropout(self, seed: int) -> None:
        """Give each process its own random stream for what it draws while training (dropout): the
        same stream on every process would drop the same units of different rows. The model was
        initialised before, from the run's seed, identically everywhere."""
        if not self.alone:
            torch.manual_seed(mix_seed(seed, self.rank))

    # ---- the model ------------------------------------------------------------------------------------
    def model_state(self, model: nn.Module, strategy: str) -> ReplicatedState | ShardedState:
        """How the trainer reads and writes the full state of `model` under `strategy`; call it before
        the model moves to its device or is wrapped (FSDP2 keeps a CPU copy on rank 0 to save from)."""
        if self.alone or strategy != "fsdp":
            return ReplicatedState()
        return ShardedState(copy.deepcopy(model) if self.is_writer else None)

    def wrap(self, model: nn.Module, strategy: str, precision: str = "fp32") -> nn.Module:
        """The module the training forward and backward go through: the model itself for one process,
        else DDP around it (FSDP2 shards the model in place and returns it, computing in `precision`)."""
        if self.alone:
            return model
        if strategy == "fsdp":
            check_shardable(model)
            return shard_fully(model, self.device, self.world_size, precision)
        # Unused parameters are normal here: frozen ones (transfer, LoRA) and objectives a batch
        # does not train (the hybrid's shared design). Buffers never change during training.
        device_ids = [self.device.index] if self.device is not None and self.device.type == "cuda" else None
        return nn.parallel.DistributedDataParallel(model, device_ids=device_ids, find_unused_parameters=True,
                                                   broadcast_buffers=False)

    def gradient_sync(self, wrapped: nn.Module, synchronise: bool) -> ContextManager:
        """Where the forward and backward of a piece run: without gradient synchronisation unless
        `synchronise` (a process's last piece of the step), so gradients cross the network once a step."""
        if self.alone or synchronise:
            return nullcontext()
        if isinstance(wrapped, nn.parallel.DistributedDataParallel):
            return wrapped.no_sync()
        return fsdp_no_sync(wrapped)


def check_shardable(model: nn.Module) -> None:
    """Refuse a model whose processes would train different parameters in the same step: FSDP2
    reduce-scatters the gradients each process has, and they must be the same set everywhere. The
    hybrid's shared design draws one objective (one head) per micro-batch, so its processes differ;
    DDP handles it (`find_unused_parameters`)."""
    if getattr(getattr(model, "config", None), "hybrid_design", None) == "shared":
        raise UserError("training.distributed: fsdp cannot train model.hybrid_design: shared (each micro-batch "
                        "trains one objective's head, so processes would hold gradients for different "
                        "parameters); use training.distributed: ddp, or hybrid_design: two_stack.")


def shard_fully(model: nn.Module, device: torch.device, world_size: int, precision: str = "fp32") -> nn.Module:
    """FSDP2: every block of the model's layer lists, then the root, sharded over the processes (in
    place). Each block's weights are gathered just for its own forward and backward.

    The shards (the optimizer's master weights) stay float32. Under bf16 or fp16 the weights are
    gathered and computed in that dtype, which halves what crosses the network, while gradients are
    reduced in float32 so that summing many processes loses nothing. Autocast still runs around the
    forward, so the operations it keeps in float32 (softmax, norms, the loss) stay there as in one process.
    """
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    compute_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(precision)
    # Inputs keep their dtype (float labels and masks stay exact); autocast casts where it matters.
    policy = MixedPrecisionPolicy(param_dtype=compute_dtype, reduce_dtype=torch.float32 if compute_dtype else None,
                                  cast_forward_inputs=False)
    mesh = init_device_mesh(device.type, (world_size,))
    for module in list(model.modules()):
        if isinstance(module, nn.ModuleList):
            for block in module:
                fully_shard(block, mesh=mesh, mp_policy=policy)
    fully_shard(model, mesh=mesh, mp_policy=policy)
    return model


@contextmanager
def fsdp_no_sync(model: nn.Module) -> Iterator[None]:
    """FSDP2's counterpart of DDP's `no_sync`: gradients stay unsharded and local until the last piece."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


# ---- starting and ending -------------------------------------------------------------------------------
def world_size_from_environment() -> int:
    """How many processes torchrun started (1 outside torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


@contextmanager
def process_group(device_name: str, clean_exits: tuple[type[BaseException], ...] = ()) -> Iterator[Workers]:
    """The processes torchrun started, as `Workers`, joined on entry and parted on exit.

    On a clean exit (returning, or an exception in `clean_exits` that every process raises at the
    same point, such as a stop signal) all processes meet at a barrier before the group is
    destroyed: a process that tears the group down while another still talks to it can abort
    (`terminate called without an active exception`) after the work is done. After an error only
    this process may be here, so it does not wait for the others.
    """
    world_size = world_size_from_environment()
    if world_size == 1:
        yield Workers()
        return
    device = worker_device(device_name)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    host_group = dist.new_group(backend="gloo") if device.type == "cuda" else dist.group.WORLD
    clean = False
    try:
        yield Workers(rank=process_rank(), world_size=world_size, device=device, host_group=host_group)
        clean = True
    except clean_exits:
        clean = True
        raise
    finally:
        if clean:
            dist.barrier()
        dist.destroy_process_group()


def worker_device(device_name: str) -> torch.device:
    """This worker's device: its own GPU (LOCAL_RANK) on CUDA, else the CPU."""
    device = resolve_device(device_name)
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
    elif device.type != "cpu":
        raise UserError(f"Several processes train on CUDA GPUs (NCCL) or on the CPU (gloo), not on {device.type}; "
                        "set training.device: cpu or cuda, or train in one process.")
    return device
