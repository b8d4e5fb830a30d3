"""Stage `evaluate` (policy): a policy's samples on held-out prompts, judged by the gold reward.

For each held-out prompt, ``evaluate.samples_per_prompt`` responses from the policy and as many from the
SFT policy (the reference), both sampled at ``evaluate.temperature`` (the main protocol, metrics.json):
  reward_proxy     normalised RM score of the policy's samples
  reward_gold      gold reward R*
  kl               Σ_t log π(y_t|s_t) − log π_ref(y_t|s_t) per response (k1, unbiased), mean; kl_k3 too
  entropy          mean per-token entropy of π along its samples
  length           response tokens before EOS; eos_rate, repetition too
  win_rate_vs_sft  P(R*(y_π) > R*(y_sft)) on the same prompts, ties ½
  distinct_2       distinct bigrams / bigrams over all responses (diversity across prompts)
  self_bleu        each response's BLEU against the other responses to its prompt (diversity within a prompt;
                   high = repetitive; needs samples_per_prompt ≥ 2)
  perplexity_sft   exp(−mean log π_sft(y_t|s_t)) over the response tokens at T = 1: fluency under the SFT model
  rouge1, rouge2, rougeL   ROUGE F1 against the reference y* (rewardlab.evaluate.references: the summarize task's,
                   or real data's human summaries with data.source.prompts_from: sft)
Then the same judges for each decoding of ``evaluate.decoding`` (``rewardlab.evaluate.decoding``: greedy,
top-k, top-p, beam search, best-of-n reranked by the RM), in decoding.csv, one row each: gold, proxy, the
decoder's KL from the reference where defined, diversity and length. Deterministic decoders decode each prompt
once; their answer stands for all of the prompt's samples. Win rates are against the same SFT samples.
Writes metrics.json, decoding.csv, samples.jsonl (decoding, prompt, response, gold, proxy) and run.json.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import pandas as pd
import torch
from transformers import AutoTokenizer

from rewardlab.evaluate import metrics as M
from rewardlab.evaluate.decoding import Decoding, decode, decoder_logprobs, parse_decodings
from rewardlab.evaluate.gold import GoldReward, gold_reward
from rewardlab.evaluate.references import References, references
from rewardlab.models.build import load_policy
from rewardlab.models.reward import RewardScorer
from rewardlab.rl.advantages import masked_mean
from rewardlab.rl.kl import kl_estimate
from rewardlab.rl.rollout import (
    logprobs_and_entropy,
    logprobs_and_entropy_from_logits,
    response_logits,
    rollout_backend,
    rows_to_lists,
    sample,
)
from rewardlab.runinfo import atomic_write_text, read_jsonl, write_jsonl
from rewardlab.runner import Argument, Stage, StageContext, StageResult

DECODING_COLUMNS = ["decoding", "reward_gold", "reward_proxy", "kl", "length", "eos_rate", "win_rate_vs_sft",
                    "distinct_2", "self_bleu", "perplexity_sft", "repetition"]


class Judge:
    """Decodes held-out prompts with a policy and scores the responses: gold, proxy, KL, text statistics."""

    def __init__(self, policy, reference, scorer: RewardScorer, gold: GoldReward, tokenizer, cfg: dict,
                 device: torch.device, batch_size: int = 256, references: References | None = None):
        self.policy, self.reference, self.scorer, self.gold = policy, reference, scorer, gold
        self.references = references  # y* per prompt: ROUGE columns when the experiment has them
        self.tokenizer, self.device, self.batch_size = tokenizer, device, batch_size
        self.temperature = cfg["evaluate"]["temperature"]
        self.max_new_tokens = cfg["task"]["max_new_tokens"]
        self.backend = rollout_backend(cfg)

    def _proxy(self, rollout) -> torch.Tensor:
        return self.scorer.normalised(rollout.input_ids, rollout.attention_mask, rollout.prompt_width)

    @torch.no_grad()
    def responses(self, rows: list[list[int]], decoding: Decoding) -> dict[str, list]:
        """Per response: gold, proxy, KL (k1, and k3 for plain sampling), entropy, SFT log-likelihood, …"""
        out: dict[str, list] = defaultdict(list)
        eos = self.tokenizer.eos_token_id
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            rollout = decode(self.policy, chunk, decoding, max_new_tokens=self.max_new_tokens, eos_id=eos,
                             pad_id=self.tokenizer.pad_token_id, device=self.device, score=self._proxy,
                             backend=self.backend)
            mask, ids = rollout.response_mask.float(), rollout.response_ids
            logits = response_logits(self.policy, rollout, self.temperature)
            logp, entropy = logprobs_and_entropy_from_logits(logits, ids)
            ref_logp, _ = logprobs_and_entropy(self.reference, rollout, self.temperature)
            sft_logp = ref_logp if self.temperature == 1.0 else logprobs_and_entropy(self.reference, rollout, 1.0)[0]
            if decoding.deterministic:  # q = δ_y: KL(δ_y‖π_ref) = −log π_ref(y)
                kl = -(ref_logp * mask).sum(-1)
            elif decoding.mode == "rerank":  # best-of-n of the policy's own samples: no closed form
                kl = torch.full((len(chunk),), float("nan"))
            else:
                # (padding may lie outside a truncated support: −inf there, so fill rather than multiply)
                logq = decoder_logprobs(logits, ids, decoding).masked_fill(mask == 0, 0.0)
                kl = (logq - ref_logp * mask).sum(-1)
            responses = rows_to_lists(rollout)
            bodies = [r[:-1] if r and r[-1] == eos else r for r in responses]
            out["gold"] += self.gold.rewards(chunk, responses)
            out["proxy"] += self._proxy(rollout).tolist()
            out["kl"] += kl.tolist()
            out["kl_k3"] += (kl_estimate(logp, ref_logp, "k3") * mask).sum(-1).tolist()
            out["entropy"] += masked_mean(entropy, mask, dim=-1).tolist()
            out["sft_logp"] += [v for row, m in zip(sft_logp.tolist(), mask.tolist())
                                for v, keep in zip(row, m) if keep]
            out["length"] += (rollout.lengths - rollout.has_eos.long()).tolist()
            out["eos"] += rollout.has_eos.float().tolist()
            out["bodies"] += bodies
            if self.references is not None:
                words, references = [self.references.words(b) for b in bodies], self.references(chunk)
                for kind in M.ROUGE_TYPES:
                    out[kind] += M.rouge(words, references, kind)
            out["text"] += [self.tokenizer.decode(b, skip_special_tokens=True) for b in bodies]
            out["samples"] += [{"decoding": decoding.label, "prompt": self.tokenizer.decode(p),
                                "response": self.tokenizer.decode(r), "gold": g, "proxy": q}
                               for p, r, g, q in zip(chunk, responses, out["gold"][-len(chunk):],
                                                     out["proxy"][-len(chunk):])]
        return out

    def decoded(self, prompts: list[list[int]], per_prompt: int, decoding: Decoding) -> dict[str, list]:
        """``per_prompt`` responses for each prompt, laid out prompt by prompt; a deterministic decoder answers
        each prompt once and that answer stands for all of its samples."""
        if not decoding.deterministic:
            return self.responses([p for p in prompts for _ in range(per_prompt)], decoding)
        once = self.responses(prompts, decoding)
        repeated = {k: [v for v in values for _ in range(per_prompt)] for k, values in once.items()
                    if k not in ("sft_logp", "samples")}
        return repeated | {"sft_logp": once["sft_logp"] * per_prompt, "samples": once["samples"]}

    @torch.no_grad()
    def reference_gold(self, prompts: list[list[int]], per_prompt: int, seed: int) -> list[float]:
        """The SFT policy's samples' gold on the same prompts, from a fixed stream (the win rates' other side)."""
        generator_state = torch.random.get_rng_state()
        torch.manual_seed(seed)
        rows, golds = [p for p in prompts for _ in range(per_prompt)], []
        for start in range(0, len(rows), self.batch_size):
            chunk = rows[start : start + self.batch_size]
            rollout = sample(self.reference, chunk, max_new_tokens=self.max_new_tokens, temperature=self.temperature,
                             eos_id=self.tokenizer.eos_token_id, pad_id=self.tokenizer.pad_token_id,
                             device=self.device, backend=self.backend)
            golds += self.gold.rewards(chunk, rows_to_lists(rollout))
        torch.random.set_rng_state(generator_state)
        return golds


def summarise(judged: dict[str, list], per_prompt: int, gold_sft: list[float]) -> dict[str, float]:
    """One row of metrics from a decoding's judged responses."""
    def mean(xs):
        return sum(xs) / len(xs)

    groups = [judged["text"][i : i + per_prompt] for i in range(0, len(judged["text"]), per_prompt)]
    return {
        "reward_gold": mean(judged["gold"]), "reward_proxy": mean(judged["proxy"]), "kl": mean(judged["kl"]),
        "length": mean(judged["length"]), "eos_rate": mean(judged["eos"]),
        "win_rate_vs_sft": M.win_rate(judged["gold"], gold_sft),
        "distinct_2": M.distinct_n(judged["bodies"], 2), "self_bleu": M.self_bleu(groups),
        "perplexity_sft": M.perplexity(judged["sft_logp"]), "repetition": M.repetition_rate(judged["bodies"]),
    } | {kind: mean(judged[kind]) for kind in M.ROUGE_TYPES if judged.get(kind)}


def evaluate(judge: Judge, prompts: list[list[int]], cfg: dict) -> tuple[dict, pd.DataFrame, list[dict]]:
    """The main protocol (sampling at evaluate.temperature) and each extra decoding: (metrics, decoding table,
    samples)."""
    ecfg = cfg["evaluate"]
    per_prompt = ecfg["samples_per_prompt"]
    gold_sft = judge.reference_gold(prompts, per_prompt, ecfg["seed"] + 1)
    main = Decoding("sample", temperature=ecfg["temperature"])
    judged = judge.decoded(prompts, per_prompt, main)  # the stage's seed (evaluate.seed) drives these samples
    result = summarise(judged, per_prompt, gold_sft) | {
        "kl_k3": sum(judged["kl_k3"]) / len(judged["kl_k3"]),
        "entropy": sum(judged["entropy"]) / len(judged["entropy"]), "samples": len(judged["gold"])}
    rows, samples = [], list(judged["samples"])
    columns = DECODING_COLUMNS + [kind for kind in M.ROUGE_TYPES if kind in result]
    for decoding in parse_decodings(ecfg["decoding"], ecfg["temperature"]):
        if decoding == main:
            rows.append({"decoding": main.label, **{k: result[k] for k in columns[1:]}})
            continue
        torch.manual_seed(decoding.seed(ecfg["seed"]))
        other = judge.decoded(prompts, per_prompt, decoding)
        rows.append({"decoding": decoding.label, **summarise(other, per_prompt, gold_sft)})
        samples += other["samples"]
    return result, pd.DataFrame(rows, columns=columns), samples


def run(ctx: StageContext, policy: Path, sft: Path, rm: Path, data: Path) -> StageResult:
    config, device = ctx.config, ctx.device
    trust = config.get("model", {}).get("trust_remote_code", False)
    tokenizer = AutoTokenizer.from_pretrained(sft)
    model = load_policy(policy, trust).to(device).eval()
    reference = load_policy(sft, trust).to(device).eval()
    scorer = RewardScorer(rm, device)
    gold = gold_reward(config, tokenizer, device)
    rows = read_jsonl(data / "prompts_test.jsonl")
    prompts = tokenizer([r["prompt"] for r in rows], add_special_tokens=False)["input_ids"]
    judge = Judge(model, reference, scorer, gold, tokenizer, config, device,
                  references=references(config, tokenizer, rows, str(data / "prompts_test.jsonl")))
    result, decodings, samples = evaluate(judge, prompts, config)
    ctx.out.mkdir(parents=True, exist_ok=True)
    write_jsonl(ctx.out / "samples.jsonl", samples)
    atomic_write_text(ctx.out / "decoding.csv", decodings.to_csv(index=False, float_format="%.6g"))
    return StageResult(result)


STAGE = Stage("evaluate_policy", run, (
    Argument("--policy", Path, "The policy to evaluate (the SFT folder for SFT)."),
    Argument("--sft", Path, "The reference policy."),
    Argument("--rm", Path, "The reward model that gives reward_proxy."),
    Argument("--data", Path),
), seed=lambda config, inputs: config["evaluate"]["seed"], description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
