"""Padding-free passes: the real tokens of a padded batch packed into a few short rows.

A rollout batch is padded to its longest row: with responses of 8 tokens on average and a longest of 20, about
half of every scoring and training pass goes to padding. Packing lays the rows' real tokens end to end in bins
of ``capacity`` tokens (first fit, longest rows first), each row's positions counting from 0, and runs the model
with no attention mask: transformers then reads the position ids as packed sequences and gives each token a
block-diagonal causal mask (``masking_utils.find_packed_sequence_indices``), so a token attends to its own row
only, as in the padded pass. The outputs are scattered back to the padded layout (zeros at padding).

Whether a model honours packed position ids is checked once per model by ``packs_sequences`` (two sequences
packed against each alone); a model that does not (remote code, a custom attention) takes the padded pass.
The values agree with the padded pass to floating-point rounding, not bit for bit (the matmuls have other
shapes).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rewardlab.tensors import position_ids_from_mask

PROBE_ATTRIBUTE = "_rewardlab_packs_sequences"


@dataclass
class Packing:
    """Where each position of a padded (B, T) batch lives in the packed (bins, capacity) one."""

    input_ids: torch.Tensor  # (bins, capacity)
    position_ids: torch.Tensor  # (bins, capacity): 0, 1, … within each packed row; 0, 1, … over the tail
    flat_index: torch.Tensor  # (B, T): index into the flattened packed batch, −1 at padding

    def unpack(self, packed: torch.Tensor, columns: slice = slice(None)) -> torch.Tensor:
        """(bins, capacity, …) outputs → (B, T', …) at the padded batch's ``columns``, zeros at padding."""
        index = self.flat_index[:, columns]
        flat = packed.reshape(-1, *packed.shape[2:])
        gathered = flat[index.clamp(min=0)]
        keep = (index >= 0).reshape(*index.shape, *([1] * (gathered.dim() - 2)))
        return gathered.masked_fill(~keep, 0)


def pack(input_ids: torch.Tensor, attention_mask: torch.Tensor, capacity: int, pad_id: int = 0) -> Packing:
    """First-fit-decreasing packing of each row's real tokens into bins of max(capacity, longest row) tokens."""
    lengths = attention_mask.sum(-1).tolist()
    width = max(capacity, max(lengths, default=1), 1)
    bins: list[list[int]] = []  # the rows of each bin
    room: list[int] = []
    for row in sorted(range(len(lengths)), key=lambda r: (-lengths[r], r)):
        for b, free in enumerate(room):
            if free >= lengths[row]:
                bins[b].append(row)
                room[b] -= lengths[row]
                break
        else:
            bins.append([row])
            room.append(width - lengths[row])
    device = input_ids.device
    start = [0] * len(lengths)  # each row's first slot in the flattened packed batch
    ends = []  # where each bin's tail (a sequence of its own) begins
    for b, rows in enumerate(bins):
        offset = b * width
        for row in rows:
            start[row] = offset
            offset += lengths[row]
        ends.append(offset - b * width)
    real = attention_mask.bool()
    rank = attention_mask.long().cumsum(-1) - 1  # each real token's position within its row
    flat_index = torch.where(real, torch.tensor(start, device=device)[:, None] + rank, -1)
    packed = torch.full((len(bins) * width,), pad_id, dtype=input_ids.dtype, device=device)
    packed[flat_index[real]] = input_ids[real]
    slots = torch.arange(width, device=device).expand(len(bins), width)
    tail_start = torch.tensor(ends, device=device)[:, None]
    positions = torch.where(slots >= tail_start, slots - tail_start, 0).reshape(-1)
    positions[flat_index[real]] = rank[real]
    return Packing(packed.view(len(bins), width), positions.view(len(bins), width), flat_index)


@torch.no_grad()
def packs_sequences(model: torch.nn.Module) -> bool:
    """Whether ``model`` keeps packed sequences apart: the last hidden states of two sequences packed in one row
    equal those of each run alone. Checked once per model object."""
    base = getattr(model, "module", model)
    cached = getattr(base, PROBE_ATTRIBUTE, None)
    if cached is not None:
        return cached
    device = next(base.parameters()).device
    was_training = base.training
    base.eval()  # dropout would make the two passes differ
    first, second = torch.tensor([[1, 2, 3]], device=device), torch.tensor([[4, 5]], device=device)
    try:
        def last_hidden(ids: torch.Tensor, **extra) -> torch.Tensor:
            return base(input_ids=ids, use_cache=False, output_hidden_states=True, **extra).hidden_states[-1][0]

        alone = [last_hidden(ids) for ids in (first, second)]
        together = last_hidden(torch.cat([first, second], 1), position_ids=torch.tensor([[0, 1, 2, 0, 1]],
                                                                                          device=device))
        ok = all(torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-3)
                 for a, b in zip(alone, (together[:3], together[3:])))
    except (TypeError, ValueError, RuntimeError):  # a model that takes no position ids, or cannot run 1-row batches
        ok = False
    base.train(was_training)
    setattr(base, PROBE_ATTRIBUTE, ok)
    return ok


def forward(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            capacity: int = 64) -> tuple[object, Packing | None]:
    """The model's output over the batch, packed when the model allows it (then with the ``Packing`` to read
    it back), else padded with position ids that skip left padding (then ``None``)."""
    if packs_sequences(model):
        packing = pack(input_ids, attention_mask, capacity)
        return model(input_ids=packing.input_ids, position_ids=packing.position_ids, use_cache=False), packing
    return model(input_ids=input_ids, attention_mask=attention_mask,
                 position_ids=position_ids_from_mask(attention_mask), use_cache=False), None
