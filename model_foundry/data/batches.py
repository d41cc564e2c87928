"""An endless, exactly resumable stream of batches, optionally sharded by rank.

Everything random is a pure function of (seed, epoch, batch index, rank): the order of an epoch is
a permutation drawn from a generator seeded by (seed, epoch), and each batch's collator gets a
generator seeded by (seed, epoch, batch index, rank). So the stream's whole position is two
integers, and resuming jumps straight there instead of replaying the batches before it. The global
RNG is never touched, so the model's dropout does not shift the data and vice versa.

The trainer's data-parallel processes do not shard the stream: each reads the one stream a single
process reads and trains on its share of every step's rows (`model_foundry.training.distributed`),
so N processes train on what one would, step for step, and the position is the same for every N.
"""
from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator

import torch
from torch.utils.data import Dataset

from model_foundry.errors import UserError

Collate = Callable[..., dict[str, torch.Tensor]]
# Length bucketing sorts items within windows of this many batches, by length rounded up to a
# multiple of BUCKET_WIDTH tokens (at most BUCKET_WIDTH - 1 padding tokens per row are wasted).
BUCKET_WINDOW = 50
BUCKET_WIDTH = 8


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers; unlike `hash()` it is the same in every process."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def seeded_generator(*parts: int) -> torch.Generator:
    return torch.Generator().manual_seed(mix_seed(*parts))


class BatchStream:
    """Collated batches of `dataset`, epoch after epoch, forever.

    With `world_size` > 1 each rank reads a disjoint, strided slice of every epoch's permutation
    (ranks get equal numbers of batches when `drop_last`, as data-parallel training needs).
    `epoch` and `batch_index` name the next batch to be produced.
    """

    def __init__(self, dataset: Dataset, batch_size: int, collate: Collate, *, seed: int, shuffle: bool = True,
                 drop_last: bool = True, rank: int = 0, world_size: int = 1, lengths: list[int] | None = None):
        if batch_size < 1:
            raise UserError(f"training.batch_size must be at least 1, got {batch_size}.")
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is outside world_size {world_size}.")
        self.dataset, self.batch_size, self.collate = dataset, batch_size, collate
        self.seed, self.shuffle, self.drop_last = seed, shuffle, drop_last
        self.rank, self.world_size = rank, world_size
        self.lengths = torch.as_tensor(lengths) if lengths is not None and shuffle else None
        self.num_items = len(dataset)
        self.items_per_rank = self.num_items // world_size if drop_last else -(-(self.num_items - rank) // world_size)
        if drop_last:
            self.batches_per_epoch = self.items_per_rank // batch_size
        else:
            self.batches_per_epoch = -(-self.items_per_rank // batch_size)
        if self.batches_per_epoch == 0:
            raise UserError(self.too_small_message())
        self.epoch, self.batch_index = 0, 0
        self.order_epoch, self.order = -1, torch.empty(0, dtype=torch.int64)

    def too_small_message(self) -> str:
        per_rank = f" per rank ({self.world_size} ranks)" if self.world_size > 1 else ""
        return (f"The dataset has {self.num_items} items (packed windows or rows), too few for one batch of "
                f"{self.batch_size}{per_rank}; lower training.batch_size or model.block_size, or give more data.")

    # ---- order -----------------------------------------------------------------------------------
    def epoch_order(self, epoch: int) -> torch.Tensor:
        """This rank's item indices for `epoch`, in the order they are read."""
        if self.order_epoch != epoch:
            if self.shuffle:
                permutation = torch.randperm(self.num_items, generator=seeded_generator(self.seed, epoch))
            else:
                permutation = torch.arange(self.num_items)
            self.order = permutation[self.rank::self.world_size][:self.items_per_rank]
            if self.lengths is not None:
                self.order = self.bucketed(self.order, epoch)
            self.order_epoch = epoch
        return self.order

    def bucketed(self, order: torch.Tensor, epoch: int) -> torch.Tensor:
        """`order` regrouped so each batch holds items of similar length, the batches still in random order.

        Items are sorted by length within windows of BUCKET_WINDOW batches (so a batch mixes items
        from all over the epoch, not only the shortest or longest), cut into batches, and the batches
        shuffled. Batches padded to their longest item then waste little compute on padding.
        """
        window = self.batch_size * BUCKET_WINDOW
        # Lengths are rounded up to a multiple of BUCKET_WIDTH first: items of nearly equal length stay
        # in random order, so a batch is not filled with one exact length (which can mean one class).
        buckets = (self.lengths + BUCKET_WIDTH - 1) // BUCKET_WIDTH
        chunks = [chunk[torch.argsort(buckets[chunk], stable=True)] for chunk in order.split(window)]
        batches = torch.cat(chunks).split(self.batch_size)
        full = [b for b in batches if len(b) == self.batch_size]
        shuffled = torch.randperm(len(full), generator=seeded_generator(self.seed, epoch, -1))
        # A short batch stays last, so every batch still starts at a multiple of batch_size.
        return torch.cat([full[i] for i in shuffled] + [b for b in batches if len(b) < self.batch_size])

    def batch_at(self, epoch: int, batch_index: int) -> dict[str, torch.Tensor]:
        indices = self.epoch_order(epoch)[batch_index * self.batch_size:(batch_index + 1) * self.batch_size]
        items = [self.dataset[int(i)] for i in indices]
        return self.collate(items, generator=seeded_generator(self.seed, epoch, batch_index, self.rank))

    # ---- iteration -------------------------------------------------------------------------------
    def __iter__(self) -> BatchStream:
        return self

    def __next__(self) -> dict[str, torch.Tensor]:
        return self.batch_at(*self.advance())

    def skip(self) -> None:
        """Move past the next batch without reading or collating it (data-parallel training skips the
        micro-batches that other processes train on, so every process keeps the same position)."""
        self.advance()

    def advance(self) -> tuple[int, int]:
        """The (epoch, batch index) of the next batch, moving the position past it."""
        if self.batch_index >= self.batches_per_epoch:
            self.epoch, self.batch_index = self.epoch + 1, 0
        position = (self.epoch, self.batch_index)
        self.batch_index += 1
        return position

    def one_pass(self) -> Iterator[dict[str, torch.Tensor]]:
        """One epoch's batches in a fixed order (epoch 0), without moving the stream's position.

        Every call yields the same batches (masking included), so evaluations are comparable.
        """
        for batch_index in range(self.batches_per_epoch):
            yield self.batch_at(0, batch_index)

    # ---- resume ----------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch_index": self.batch_index}

    def load_state_dict(self, state: dict[str, int]) -> None:
        """Continue from a saved position: the epoch's permutation is recomputed, nothing replayed."""
        self.epoch, self.batch_index = int(state["epoch"]), int(state["batch_index"])
