"""The training batches: random examples drawn so that a resumed run redraws exactly the batches it would have
drawn without stopping."""
from __future__ import annotations

import torch

from makemore.distributed import World

BATCH_CHUNK = 256  # steps of batch indices drawn at once; fixed, so resuming redraws the same batches
GATHER = 65536  # examples whose contexts are gathered at once, then handed out a batch at a time


class BatchSampler:
    """The batch of every step from step onwards, from a generator seeded with seed or set to rng.

    Indices are drawn a chunk of BATCH_CHUNK steps at a time; the generator's state at a chunk's start is what
    resume_state() gives a checkpoint. Every process draws the global batch and keeps its own columns.
    """

    def __init__(self, dataset, batch_size: int, seed: int, rng: torch.Tensor | None = None, step: int = 0,
                 world: World = World()):
        self.dataset = dataset
        self.width, self.mine = batch_size * world.size, world.columns(batch_size)
        self.group = max(1, min(BATCH_CHUNK, GATHER // batch_size))  # steps gathered at once
        self.gen = torch.Generator(device="cpu")
        if rng is not None:
            self.gen.set_state(rng)
        else:
            self.gen.manual_seed(seed)
        self.step = step
        self.chunk_start = step - step % BATCH_CHUNK
        self._draw()
        self.group_start, self.xs, self.ys, self.labels = step, (), (), ()

    def _draw(self) -> None:
        self.chunk_rng = self.gen.get_state()
        self.indices = torch.randint(len(self.dataset), (BATCH_CHUNK, self.width),
                                     generator=self.gen)[:, self.mine].to(self.dataset.positions.device)

    def resume_state(self) -> torch.Tensor:
        """The generator state from which a resumed run draws the batch of the next step."""
        return self.gen.get_state() if self.step - self.chunk_start == BATCH_CHUNK else self.chunk_rng

    def _row(self) -> int:
        """The current step's row of the chunk of indices, drawing the next chunk where this one ends."""
        if self.step - self.chunk_start == BATCH_CHUNK:
            self.chunk_start = self.step
            self._draw()
        return self.step - self.chunk_start

    def peek(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The current step's batch, without moving on."""
        return self.dataset.batch(self.indices[self._row()])

    def next(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The current step's batch (as Dataset.batch gives it); then the sampler is at the next step."""
        row, i = self._row(), self.step - self.group_start
        if i >= len(self.xs):
            self.group_start, i = self.step, 0
            rows = self.indices[row:min(row + self.group, BATCH_CHUNK)]
            n, B = rows.shape
            x, y, label = self.dataset.batch(rows.reshape(-1))
            self.xs, self.ys = x.view(n, B, -1).unbind(0), y.view(n, B, *y.shape[1:]).unbind(0)
            self.labels = label.view(n, B).unbind(0) if label is not None else (None,) * n
        self.step += 1
        return self.xs[i], self.ys[i], self.labels[i]
