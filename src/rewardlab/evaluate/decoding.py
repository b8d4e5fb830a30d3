"""Decoding strategies at evaluation (``evaluate.decoding``): how a trained policy is turned into text.

  sample   ancestral sampling from softmax(logits / T): the training distribution, and the main protocol
  greedy   argmax at each step
  top_k    sampling from the k most likely tokens (Fan et al. 2018), renormalised
  top_p    nucleus sampling (Holtzman et al. 2020): the smallest set of tokens whose mass reaches p
  beam     beam search of the given width; a beam's score is Σ_t log π(y_t|s_t) / |y|^length_penalty
  rerank   best-of-n: n samples per response, the one the reward model scores highest (the inference-time use
           of a reward model; Nakano et al. 2021, Gao et al. 2022)

Sampling, greedy and beam search run through HF ``generate`` (the reference implementation), with the model's
own generation_config set aside, so a decoding is exactly what its name says. Training rollouts never use this
module: their objectives need samples from softmax(logits / T) itself.

A decoder's output distribution q differs from the policy π, and its KL from the reference is what a
decoding costs: for the sampling decoders, KL(q‖π_ref) = E_q Σ_t log q(y_t|s_t) − log π_ref(y_t|s_t), with
q the truncated, renormalised distribution (``decoder_logprobs``); greedy and beam search are deterministic,
q is a point mass on y and KL(δ_y‖π_ref) = −log π_ref(y); best-of-n of a policy's own samples has no such
closed form (its KL is left missing).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F

# Rollouts (and transformers) are imported where a decoding runs: the config's validation parses decodings at
# every Snakefile parse and needs neither.
if TYPE_CHECKING:
    from rewardlab.rl.rollout import Rollout, RolloutBackend

MODES = ("sample", "greedy", "top_k", "top_p", "beam", "rerank")
PARAMETER = {"top_k": "k", "top_p": "p", "beam": "width", "rerank": "n"}  # the one a mode's label shows


@dataclass(frozen=True)
class Decoding:
    """One decoding; a mode named alone in the config takes these defaults."""

    mode: str
    temperature: float = 1.0  # sample, top_k, top_p, rerank
    k: int = 10
    p: float = 0.9
    width: int = 4
    length_penalty: float = 1.0  # beam
    n: int = 8

    @property
    def label(self) -> str:
        """The name in tables, with every setting that changes the decoding: ``sample``, ``greedy``,
        ``top_k10``, ``top_p0.9``, ``beam4``, ``rerank8``; ``_t0.7`` for a temperature other than 1, ``_lp0``
        for a beam length penalty other than 1."""
        name = self.mode + (f"{getattr(self, PARAMETER[self.mode]):g}" if self.mode in PARAMETER else "")
        if not self.deterministic and self.temperature != 1.0:
            name += f"_t{self.temperature:g}"
        if self.mode == "beam" and self.length_penalty != 1.0:
            name += f"_lp{self.length_penalty:g}"
        return name

    @property
    def deterministic(self) -> bool:
        return self.mode in ("greedy", "beam")

    def generation_kwargs(self) -> dict[str, Any]:
        """The settings HF ``generate`` needs for this decoding (rerank: those of its candidates)."""
        if self.mode == "greedy":
            return {"do_sample": False}
        if self.mode == "beam":
            return {"do_sample": False, "num_beams": self.width, "length_penalty": self.length_penalty,
                    "early_stopping": True}
        return {"do_sample": True, "temperature": self.temperature,
                "top_k": self.k if self.mode == "top_k" else 0,
                "top_p": self.p if self.mode == "top_p" else 1.0}

    def seed(self, base: int) -> int:
        """A seed for this decoding's samples that depends on its label only, so adding or reordering the
        decodings of a config leaves every other decoding's samples as they were."""
        return base + zlib.crc32(self.label.encode()) % 100_000


def parse_decodings(items: Sequence[str | Mapping[str, Any]], temperature: float) -> list[Decoding]:
    """``evaluate.decoding`` → decodings: a mode's name (its parameter at the default), or a mapping such as
    ``{mode: top_k, k: 5}`` or ``{mode: beam, width: 8, length_penalty: 0}``. Sampling decoders default to
    ``evaluate.temperature``."""
    decodings = []
    for item in items:
        spec = {"mode": item} if isinstance(item, str) else dict(item)
        decodings.append(Decoding(**{"temperature": temperature, **spec}))
    return decodings


def truncate_logits(logits: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """Logits (already ÷ T) with −inf outside the decoder's support, as HF's TopK / TopP warpers cut them:
    top-k keeps every token at least as likely as the k-th; top-p drops the least likely tokens while their
    cumulative mass stays ≤ 1 − p (so the kept set is the smallest whose mass reaches p), keeping at least one."""
    if decoding.mode == "top_k":
        kth = torch.topk(logits, min(decoding.k, logits.shape[-1]), dim=-1).values[..., -1:]
        return logits.masked_fill(logits < kth, float("-inf"))
    if decoding.mode == "top_p":
        sorted_logits, order = torch.sort(logits, descending=False, dim=-1)
        cumulative = sorted_logits.softmax(-1).cumsum(-1)
        drop_sorted = cumulative <= 1 - decoding.p
        drop_sorted[..., -1] = False
        drop = drop_sorted.scatter(-1, order, drop_sorted)
        return logits.masked_fill(drop, float("-inf"))
    return logits


def decoder_logprobs(logits: torch.Tensor, response_ids: torch.Tensor, decoding: Decoding) -> torch.Tensor:
    """log q(y_t|s_t) of the response tokens under a sampling decoder's per-step distribution: (B, R)."""
    from rewardlab.rl.rollout import token_logprobs

    return token_logprobs(F.log_softmax(truncate_logits(logits, decoding), dim=-1), response_ids)


def best_of(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Rows laid out as n consecutive candidates per response: the index of each block's highest score."""
    blocks = scores.reshape(-1, n)
    return blocks.argmax(-1) + torch.arange(blocks.shape[0], device=scores.device) * n


def decode(policy, prompts: Sequence[Sequence[int]], decoding: Decoding, *, max_new_tokens: int, eos_id: int,
           pad_id: int, device: torch.device, score: Callable[[Rollout], torch.Tensor] | None = None,
           backend: RolloutBackend = "lean") -> Rollout:
    """One response per prompt row under ``decoding``. ``rerank`` needs ``score`` (the reward model's score of
    each row of a rollout); it draws ``n`` samples per row and keeps the best. Plain sampling and greedy
    decoding (and rerank's candidates) go through the rollout ``backend``; top-k, top-p and beams through HF
    ``generate``."""
    from rewardlab.rl.rollout import generate, sample

    options = {"max_new_tokens": max_new_tokens, "eos_id": eos_id, "pad_id": pad_id, "device": device}

    def draw(rows: Sequence[Sequence[int]]) -> Rollout:
        if decoding.mode in ("sample", "rerank", "greedy"):
            return sample(policy, rows, temperature=decoding.temperature, greedy=decoding.mode == "greedy",
                          backend=backend, **options)
        return generate(policy, rows, **options, **decoding.generation_kwargs())

    if decoding.mode != "rerank":
        return draw(prompts)
    if score is None:
        raise ValueError("rerank decoding needs the reward model's score")
    candidates = draw([p for p in prompts for _ in range(decoding.n)])
    return candidates.select(best_of(score(candidates), decoding.n))
