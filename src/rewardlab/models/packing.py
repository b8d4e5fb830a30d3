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

**Shared prompts.** A policy-gradient batch holds each prompt G times (one row per sampled response), and every
pass over it used to run the prompt G times. When the caller says where the prompt ends (``prompt_width``) and
rows share a prompt, ``share_prompts`` lays out each bin as prompt segments followed by responses, a prompt once
per bin whatever the number of its responses there, and the pass takes an explicit block mask: a prompt token
sees its prompt up to itself, a response token its own prompt and its own response up to itself, nothing of
another row. A response's positions continue from its prompt's length, as in its own row. With SentiGram's
prompts (6.5 tokens) and responses (8.4), G = 8, this runs ~38 % fewer tokens than the padding-free pass.
Unpacking reads a row's prompt positions from the copy in its bin, so outputs and gradients reach the padded
layout as before (the shared copy's gradient is the sum over its rows, as in the padded pass). A model whose
forward does not honour a 4-D boolean mask (checked once, like ``packs_sequences``) takes the plain packing.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from rewardlab.models import gpt2_forward
from rewardlab.tensors import position_ids_from_mask

PROBE_ATTRIBUTE = "_rewardlab_packs_sequences"
SHARES_PROMPTS_ATTRIBUTE = "_rewardlab_shares_prompts"


@dataclass
class Packing:
    """Where each position of a padded (B, T) batch lives in the packed (bins, capacity) one."""

    input_ids: torch.Tensor  # (bins, capacity)
    position_ids: torch.Tensor  # (bins, capacity): 0, 1, … within each packed row; 0, 1, … over the tail
    flat_index: torch.Tensor  # (B, T): index into the flattened packed batch, −1 at padding
    attention_mask: torch.Tensor | None = None  # (bins, 1, capacity, capacity) bool, when prompts are shared

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


@dataclass
class _Placement:
    """Where ``share_prompts`` puts each prompt copy and response, for one bin width."""

    width: int
    used: list[int]  # slots taken in each bin
    prompt_start: list[dict[int, int]]  # bin → {group: first slot of its prompt there}
    segments: list[tuple[int, int, int, int]]  # (bin, first slot, length, the prompt segment it sees)
    row_place: dict[int, tuple[int, int]]  # row → (bin, first slot of its response)

    @property
    def slots(self) -> int:
        return len(self.used) * self.width


def _place(order: list[int], group_of: list[int], lengths: list[int], prompt_length: dict[int, int],
           width: int) -> _Placement:
    """First fit of rows (in ``order``) into bins of ``width`` slots: a bin that already holds the row's prompt
    and has room for its response, else one with room for both (the prompt copied in), else a new bin."""
    placed = _Placement(width, [], [], [], {})
    prompt_segment: dict[tuple[int, int], int] = {}
    for row in order:
        group, length = group_of[row], lengths[row]
        bins = range(len(placed.used))
        fits = [b for b in bins if group in placed.prompt_start[b] and width - placed.used[b] >= length]
        fits = fits or [b for b in bins if width - placed.used[b] >= prompt_length[group] + length]
        if not fits:
            placed.used.append(0)
            placed.prompt_start.append({})
            fits = [len(placed.used) - 1]
        b = fits[0]
        if group not in placed.prompt_start[b]:
            placed.prompt_start[b][group] = placed.used[b]
            prompt_segment[b, group] = len(placed.segments)
            placed.segments.append((b, placed.used[b], prompt_length[group], len(placed.segments)))
            placed.used[b] += prompt_length[group]
        placed.row_place[row] = (b, placed.used[b])
        placed.segments.append((b, placed.used[b], length, prompt_segment[b, group]))
        placed.used[b] += length
    return placed


def share_prompts(input_ids: torch.Tensor, attention_mask: torch.Tensor, prompt_width: int, capacity: int,
                  pad_id: int = 0) -> Packing | None:
    """Rows of (B, T) whose first ``prompt_width`` columns hold the same real tokens share one copy of that prompt
    per bin (see the module docstring); ``None`` when no two rows share a prompt. Bins hold max(capacity, the
    longest prompt + response) slots; of two first-fit placements (``_place``: rows longest response first, or
    group by group, longest first), the one with fewer bins. (Wider bins, or a search over widths, measured no
    faster on SentiGram rollouts: the masked attention grows with the width, the search costs milliseconds.)"""
    ids, mask = input_ids.tolist(), attention_mask.tolist()
    groups: dict[tuple[int, ...], int] = {}
    group_of, prompt_columns, response_columns = [], [], []
    for row_ids, row_mask in zip(ids, mask):
        prompt = [c for c in range(prompt_width) if row_mask[c]]
        group_of.append(groups.setdefault(tuple(row_ids[c] for c in prompt), len(groups)))
        prompt_columns.append(prompt)
        response_columns.append([c for c in range(prompt_width, len(row_mask)) if row_mask[c]])
    if len(groups) == len(ids):
        return None
    prompt_length = {g: len(key) for key, g in groups.items()}
    lengths = [len(columns) for columns in response_columns]
    rows = range(len(ids))
    longest = max(1, *(prompt_length[group_of[r]] + lengths[r] for r in rows))
    orders = (sorted(rows, key=lambda r: (-lengths[r], r)), sorted(rows, key=lambda r: (group_of[r], -lengths[r], r)))
    width = max(longest, capacity)
    placed = min((_place(order, group_of, lengths, prompt_length, width) for order in orders), key=lambda p: p.slots)
    width, bins = placed.width, len(placed.used)
    segment = [[-1 - slot for slot in range(width)] for _ in range(bins)]  # padding: a segment of its own
    sees = [list(row) for row in segment]
    for index, (b, first, length, seen) in enumerate(placed.segments):
        segment[b][first : first + length] = [index] * length
        sees[b][first : first + length] = [seen] * length
    packed = [[pad_id] * width for _ in range(bins)]
    position = [[0] * width for _ in range(bins)]
    flat_index = [[-1] * len(mask[0]) for _ in rows]
    for row in rows:
        b, first = placed.row_place[row]
        group = group_of[row]
        start = placed.prompt_start[b][group]
        for k, c in enumerate(prompt_columns[row]):
            packed[b][start + k], position[b][start + k] = ids[row][c], k
            flat_index[row][c] = b * width + start + k
        for k, c in enumerate(response_columns[row]):
            packed[b][first + k], position[b][first + k] = ids[row][c], prompt_length[group] + k
            flat_index[row][c] = b * width + first + k
    device = input_ids.device
    segment_t, sees_t = torch.tensor(segment, device=device), torch.tensor(sees, device=device)
    causal = torch.ones((width, width), dtype=torch.bool, device=device).tril()
    visible = (segment_t[:, None, :] == segment_t[:, :, None]) | (segment_t[:, None, :] == sees_t[:, :, None])
    return Packing(torch.tensor(packed, dtype=input_ids.dtype, device=device), torch.tensor(position, device=device),
                   torch.tensor(flat_index, device=device), (visible & causal)[:, None])


def _probe(model: torch.nn.Module, attribute: str, check) -> bool:
    """``check(model)`` once per model object (in eval mode, cached on the model); False if it raises."""
    base = getattr(model, "module", model)
    cached = getattr(base, attribute, None)
    if cached is not None:
        return cached
    was_training = base.training
    base.eval()  # dropout would make the passes differ
    try:
        with torch.no_grad():
            ok = bool(check(base, next(base.parameters()).device))
    except (TypeError, ValueError, RuntimeError):  # a model that takes no position ids or masks, or 1-row batches
        ok = False
    base.train(was_training)
    setattr(base, attribute, ok)
    return ok


def _last_hidden(model: torch.nn.Module, ids: torch.Tensor, **extra) -> torch.Tensor:
    return model(input_ids=ids, use_cache=False, output_hidden_states=True, **extra).hidden_states[-1][0]


def _close(a: torch.Tensor, b: torch.Tensor) -> bool:
    return torch.allclose(a.float(), b.float(), atol=1e-4, rtol=1e-3)


def shares_prompts(model: torch.nn.Module) -> bool:
    """Whether ``model`` honours ``share_prompts``'s block mask: a prompt with two responses in one row gives the
    hidden states of each prompt + response run alone. Checked once per model object."""
    def check(base: torch.nn.Module, device: torch.device) -> bool:
        first, second = torch.tensor([[1, 2, 3, 4, 5]], device=device), torch.tensor([[1, 2, 3, 6]], device=device)
        ids, mask = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 6, 0]]), torch.tensor([[1] * 5, [1, 1, 1, 1, 0]])
        packing = share_prompts(ids.to(device), mask.to(device), 3, capacity=6)
        if packing is None or packing.input_ids.shape[0] != 1:
            return False
        together = _last_hidden(base, packing.input_ids, position_ids=packing.position_ids,
                                attention_mask=packing.attention_mask)
        return _close(_last_hidden(base, first), together[:5]) and _close(_last_hidden(base, second)[3:],
                                                                           together[5:])

    return _probe(model, SHARES_PROMPTS_ATTRIBUTE, check)


def packs_sequences(model: torch.nn.Module) -> bool:
    """Whether ``model`` keeps packed sequences apart: the last hidden states of two sequences packed in one row
    equal those of each run alone. Checked once per model object."""
    def check(base: torch.nn.Module, device: torch.device) -> bool:
        first, second = torch.tensor([[1, 2, 3]], device=device), torch.tensor([[4, 5]], device=device)
        together = _last_hidden(base, torch.cat([first, second], 1),
                                position_ids=torch.tensor([[0, 1, 2, 0, 1]], device=device))
        return _close(_last_hidden(base, first), together[:3]) and _close(_last_hidden(base, second), together[3:])

    return _probe(model, PROBE_ATTRIBUTE, check)


# The layouts of the last few batches, by the batch tensors' identity: the passes over one batch (the policy, the
# reference, the critic, the reward model; a mini-batch's policy and critic passes) share one layout instead of
# each building it (~0.5 ms a mini-batch in Python). An entry holds its tensors, so their ids stay theirs.
_RECENT_LAYOUTS: list[tuple[torch.Tensor, torch.Tensor, tuple, Packing | None]] = []
_KEEP_LAYOUTS = 4


def _layout(kind: str, input_ids: torch.Tensor, attention_mask: torch.Tensor, capacity: int,
            prompt_width: int | None) -> Packing | None:
    key = (kind, capacity, prompt_width, input_ids._version, attention_mask._version)
    for ids, mask, seen, packing in _RECENT_LAYOUTS:
        if ids is input_ids and mask is attention_mask and seen == key:
            return packing
    if kind == "shared":
        packing = share_prompts(input_ids, attention_mask, prompt_width, capacity)
    else:
        packing = pack(input_ids, attention_mask, capacity)
    _RECENT_LAYOUTS.append((input_ids, attention_mask, key, packing))
    del _RECENT_LAYOUTS[:-_KEEP_LAYOUTS]
    return packing


def _run(model: torch.nn.Module, input_ids: torch.Tensor, position_ids: torch.Tensor,
         attention_mask: torch.Tensor | None = None) -> object:
    """The model's pass: ``gpt2_forward`` where it gives the same numbers with less overhead, else its forward."""
    if gpt2_forward.supports(model):
        return gpt2_forward.forward(model, input_ids, position_ids, attention_mask)
    if attention_mask is None:
        return model(input_ids=input_ids, position_ids=position_ids, use_cache=False)
    return model(input_ids=input_ids, position_ids=position_ids, attention_mask=attention_mask, use_cache=False)


def forward(model: torch.nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor,
            capacity: int = 64, prompt_width: int | None = None) -> tuple[object, Packing | None]:
    """The model's output over the batch, packed when the model allows it (then with the ``Packing`` to read
    it back), else padded with position ids that skip left padding (then ``None``). Given ``prompt_width``,
    rows that share a prompt share its pass (``share_prompts``) when the model honours the block mask. A GPT-2
    LM's output has ``logits`` at every position; for a sequence-classification model, read the head's
    per-position outputs through a hook on it (``build.head_outputs``), not the pooled ``logits``."""
    if prompt_width and shares_prompts(model):
        packing = _layout("shared", input_ids, attention_mask, capacity, prompt_width)
        if packing is not None:
            return _run(model, packing.input_ids, packing.position_ids, packing.attention_mask), packing
    if packs_sequences(model):
        packing = _layout("packed", input_ids, attention_mask, capacity, None)
        return _run(model, packing.input_ids, packing.position_ids), packing
    return model(input_ids=input_ids, attention_mask=attention_mask,
                 position_ids=position_ids_from_mask(attention_mask), use_cache=False), None
