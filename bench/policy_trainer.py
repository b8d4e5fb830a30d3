"""Benchmark: rewardlab's online RL loop against TRL's ``GRPOTrainer`` and ``RLOOTrainer`` on the same work.

Fair by construction: the same GPT-2-style policy (4 layers, 256 wide, built as rewardlab builds its models —
torch's fused tanh GELU —, briefly SFT-trained
on SentiGram so responses end at realistic lengths, saved and loaded by both sides), the same reward model (a
sequence-classification head on that backbone) scored through one function on the same token ids (TRL hands its
reward function ``completion_ids``; the prompt's ids are the word-level tokenizer's, identical on both sides), the
same prompts in the same steps (repeat r runs both sides from seed r; TRL gets, unshuffled, the prompts our loop
drew in that repeat, step by step, so neither side draws shorter or easier prompts), group size 8, 32 completions
per step, 24 new tokens, temperature 1 with top-k/top-p off, β 0.04
(GRPO: k3 in the loss on both sides; RLOO: KL in the reward), one update per batch, the same learning rate.
TRL's defaults that cost it time and that rewardlab does not do are switched off (gradient checkpointing,
completion logging); bf16 off on CPU. The timers wrap the training loop only (rewardlab's ``PolicyTrainer.train``;
TRL's ``trainer.train()``), not model loading or saving. Runs are interleaved (ours, TRL, ours, TRL, …), each
repeated, medians compared (also per repeat, and per generated token: the two sides sample different completions
from the same distributions, so their lengths differ a little); the one-minute load average before each run is
recorded.

What differs, and is reported rather than removed: rewardlab also scores every rollout with the task's gold
reward and logs more statistics per step (history.csv), which TRL does not do.

Reported per side: completions/s, generated tokens/s (real tokens, up to and including EOS) and the fraction of
this machine's matmul peak the loop reaches: the loop's model FLOPs (2·N per token for a forward pass, 6·N for
forward and backward; N the non-embedding parameters; generation counts each generated token once, with its KV
cache) over its time, against the peak a large fp32 matmul reaches here (measured at start).

    pip install trl==1.16.0    # the `dev` extra has it; only this benchmark and the TRL tests need it
    python bench/policy_trainer.py --steps 12 --repeats 5 --out bench/results/policy_trainer.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from _environment import environment, interleaved, write_result

GROUP, COMPLETIONS, NEW_TOKENS, BETA = 8, 32, 24, 0.04


def matmul_peak(size: int = 1024, repeats: int = 20) -> float:
    """FLOP/s of a square fp32 matmul on this machine (best of ``repeats``)."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best


def prepare(root: Path, n_layer: int, n_embd: int) -> dict[str, Path]:
    """SentiGram data, a policy briefly SFT-trained from a fresh config, and a reward model on its backbone."""
    from transformers import AutoModelForSequenceClassification

    from rewardlab import config as C
    from rewardlab.data import preprocess
    from rewardlab.models.build import NORMALISATION_KEY, build_tiny_gpt
    from rewardlab.models.tokenizer import build_word_tokenizer
    from rewardlab.tasks import sentigram as sg
    from rewardlab.train import sft

    cfg = C.validate({"name": "bench", "progress": False,
                      "data": {"name": "bench", "num_sft_train": 4000, "num_sft_valid": 100,
                               "num_prompts_train": 512, "num_prompts_test": 16},
                      "labels": {"num_prompts": 512},
                      "sft": {"epochs": 1, "batch_size": 64, "lr": 0.001}})
    preprocess.STAGE.execute(cfg, root / "data")
    tokenizer = build_word_tokenizer(sg.VOCAB, sg.SPECIALS)
    torch.manual_seed(0)
    base = build_tiny_gpt(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
                          n_layer=n_layer, n_head=4, n_embd=n_embd, n_positions=128)
    base.save_pretrained(root / "base")
    tokenizer.save_pretrained(root / "base")
    cfg["model"]["name_or_path"] = str(root / "base")
    sft.STAGE.execute(cfg, root / "sft", threads=torch.get_num_threads(), data=root / "data")
    rm = AutoModelForSequenceClassification.from_pretrained(root / "sft", num_labels=1)
    rm.config.pad_token_id = tokenizer.pad_token_id
    setattr(rm.config, NORMALISATION_KEY, {"mean": 0.0, "std": 1.0})
    rm.save_pretrained(root / "rm")
    tokenizer.save_pretrained(root / "rm")
    return {"data": root / "data", "sft": root / "sft", "rm": root / "rm"}


def non_embedding_parameters(model: torch.nn.Module) -> int:
    return sum(p.numel() for name, p in model.named_parameters() if "wte" not in name and "wpe" not in name)


def loop_flops(n_policy: int, n_rm: int, prompt_tokens: int, completion_tokens: int, completions: int) -> float:
    """Model FLOPs of one step (see the module docstring): generation, the reference and reward passes, and the
    policy's forward and backward over prompt + completion tokens."""
    sequence = completions * prompt_tokens + completion_tokens
    generate = 2 * n_policy * (completions * prompt_tokens + completion_tokens)
    return generate + 2 * n_policy * sequence + 2 * n_rm * sequence + 6 * n_policy * sequence


def run_rewardlab(root: Path, paths: dict[str, Path], algorithm: str, args, seed: int) -> dict:
    """Our loop from ``seed``; also returns the prompts it drew, step by step (row numbers of prompts_train.jsonl),
    which TRL then gets in the same order."""
    from rewardlab import config as C
    from rewardlab.train import policy

    kl = {"kl_in": "loss", "kl_estimator": "k3"} if algorithm == "grpo" else {"kl_in": "reward", "kl_estimator": "k1"}
    cfg = C.validate({
        "name": "bench", "progress": False, "checkpoint_every": 0, "task": {"max_new_tokens": NEW_TOKENS},
        "policy": {"algorithms": [algorithm], "steps": args.steps, "prompts_per_step": COMPLETIONS // GROUP,
                   "group_size": GROUP, "kl_coef": BETA, **kl, "epochs": 1, "minibatches": 1, "lr": args.lr,
                   "temperature": 1.0, "overrides": {}},
    })
    timed: dict[str, float] = {}
    drawn: list[int] = []
    original_train, original_rollout = policy.PolicyTrainer.train, policy.PolicyTrainer.rollout

    def timed_train(self):
        started = time.perf_counter()
        history = original_train(self)
        timed["seconds"] = time.perf_counter() - started
        return history

    def recorded_rollout(self):  # the group's G copies of a prompt are one draw
        rollout, prompts, group = original_rollout(self)
        index = {tuple(ids): i for i, ids in reversed(list(enumerate(self.prompts)))}
        drawn.extend(index[tuple(ids)] for ids in prompts[::GROUP])
        return rollout, prompts, group

    policy.PolicyTrainer.train, policy.PolicyTrainer.rollout = timed_train, recorded_rollout
    try:
        result = policy.STAGE.execute(cfg, root / "policy", threads=args.threads, algorithm=algorithm,
                                      shaping="sparse", seed=seed, data=paths["data"], sft=paths["sft"],
                                      rm=paths["rm"])
    finally:
        policy.PolicyTrainer.train, policy.PolicyTrainer.rollout = original_train, original_rollout
    lengths = [row["length"] + row["eos_rate"] for row in result.history]  # tokens generated, EOS included
    return {"train_seconds": timed["seconds"], "completion_tokens": sum(lengths) * COMPLETIONS,
            "mean_completion_length": statistics.mean(lengths), "seed": seed, "prompts": drawn}


def reward_function(paths: dict[str, Path]):
    """TRL's reward function: rewardlab's RewardScorer (normalised score) on prompt ids + completion ids, laid
    out as a rewardlab rollout (left-padded prompts, then right-padded completions) and scored by the same call
    the rewardlab loop makes, the group's shared prompt run once (``prompt_width``)."""
    from transformers import AutoTokenizer

    from rewardlab.models.reward import RewardScorer
    from rewardlab.tensors import pad_left, pad_right

    tokenizer = AutoTokenizer.from_pretrained(paths["rm"])
    scorer = RewardScorer(paths["rm"], "cpu")

    def score(prompts, completions, completion_ids, **kwargs):
        prompt_ids, prompt_mask = pad_left(tokenizer(list(prompts), add_special_tokens=False)["input_ids"],
                                           tokenizer.pad_token_id)
        completion, completion_mask = pad_right([list(c) or [tokenizer.pad_token_id] for c in completion_ids],
                                                tokenizer.pad_token_id)
        completion_mask = completion_mask * torch.tensor([[bool(c)] for c in completion_ids])
        ids, mask = torch.cat([prompt_ids, completion], 1), torch.cat([prompt_mask, completion_mask], 1)
        with torch.no_grad():
            return scorer.normalised(ids, mask, prompt_width=prompt_ids.shape[1]).tolist()

    return score


def run_trl(root: Path, paths: dict[str, Path], algorithm: str, args, seed: int, prompt_order: list[int]) -> dict:
    """TRL from ``seed`` on the prompts ``prompt_order`` names, in that order (no shuffling): step k takes rows
    k·P … k·P + P − 1 of it, P = 32 / 8 prompts, each repeated 8 times, as our loop's step k did."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rewardlab.runinfo import read_jsonl

    tokenizer = AutoTokenizer.from_pretrained(paths["sft"])
    tokenizer.padding_side = "left"
    prompts = [r["prompt"] for r in read_jsonl(paths["data"] / "prompts_train.jsonl")]
    dataset = Dataset.from_list([{"prompt": prompts[i]} for i in prompt_order])
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(paths["sft"])
    common = dict(output_dir=str(root / "trl"), per_device_train_batch_size=COMPLETIONS, num_generations=GROUP,
                  max_completion_length=NEW_TOKENS, beta=BETA, learning_rate=args.lr, max_steps=args.steps,
                  gradient_checkpointing=False, bf16=False, use_cpu=not torch.cuda.is_available(), report_to=[],
                  save_strategy="no", logging_steps=10**6, disable_tqdm=True, seed=seed, temperature=1.0, top_k=0,
                  top_p=1.0, dataloader_num_workers=0, log_completions=False, lr_scheduler_type="constant",
                  shuffle_dataset=False)
    completion_tokens: list[int] = []
    if algorithm == "grpo":
        from trl import GRPOConfig, GRPOTrainer

        config = GRPOConfig(**common, num_iterations=1, steps_per_generation=1, loss_type="grpo")
        trainer_class = GRPOTrainer
    else:
        from trl import RLOOConfig, RLOOTrainer

        config = RLOOConfig(**common, num_iterations=1, steps_per_generation=1)
        trainer_class = RLOOTrainer
    score = reward_function(paths)

    scored_prompts: list[str] = []

    def counted(prompts, completions, completion_ids, **kwargs):
        completion_tokens.extend(len(c) for c in completion_ids)
        scored_prompts.extend(prompts[::GROUP])
        return score(prompts, completions, completion_ids, **kwargs)

    counted.__name__ = "rewardlab_rm"
    trainer = trainer_class(model=model, reward_funcs=[counted], args=config, train_dataset=dataset,
                            processing_class=tokenizer)
    started = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - started
    if scored_prompts != [prompts[i] for i in prompt_order]:
        raise RuntimeError("TRL did not take the prompts our loop drew, in its order")
    return {"train_seconds": seconds, "completion_tokens": sum(completion_tokens),
            "mean_completion_length": statistics.mean(completion_tokens), "seed": seed,
            "prompts": prompt_order}


def compare(root: Path, paths: dict[str, Path], algorithm: str, peak: float, args) -> dict:
    """Interleaved repeats; repeat r runs both sides from seed r, TRL on the prompts our loop drew in that repeat."""
    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    from rewardlab.runinfo import read_jsonl

    n_policy = non_embedding_parameters(AutoModelForCausalLM.from_pretrained(paths["sft"]))
    n_rm = non_embedding_parameters(AutoModelForSequenceClassification.from_pretrained(paths["rm"]))
    prompt_words = [len(r["prompt"].split()) for r in read_jsonl(paths["data"] / "prompts_train.jsonl")]
    ours: list[dict] = []  # interleaved runs our side first in each repeat: TRL's run follows the last of these

    def measured(side: str, work: Path) -> dict:
        if side == "rewardlab":
            run = run_rewardlab(work, paths, algorithm, args, seed=len(ours))
            ours.append(run)
        else:
            run = run_trl(work, paths, algorithm, args, seed=ours[-1]["seed"], prompt_order=ours[-1]["prompts"])
        prompt_tokens = statistics.mean(prompt_words[i] for i in run["prompts"])
        flops = args.steps * loop_flops(n_policy, n_rm, prompt_tokens, run["completion_tokens"] / args.steps,
                                        COMPLETIONS)
        return run | {"completions_per_second": COMPLETIONS * args.steps / run["train_seconds"],
                      "generated_tokens_per_second": run["completion_tokens"] / run["train_seconds"],
                      "fraction_of_matmul_peak": flops / run["train_seconds"] / peak}

    runs = interleaved(root, algorithm, args.repeats, measured)
    medians = {side: statistics.median(r["train_seconds"] for r in rs) for side, rs in runs.items()}
    paired = [t["train_seconds"] / o["train_seconds"] for o, t in zip(runs["rewardlab"], runs["trl"])]
    per_token = [o["generated_tokens_per_second"] / t["generated_tokens_per_second"]
                 for o, t in zip(runs["rewardlab"], runs["trl"])]
    return {"algorithm": algorithm, "runs": runs, "median_train_seconds": medians,
            "median_completions_per_second": {s: COMPLETIONS * args.steps / m for s, m in medians.items()},
            "median_generated_tokens_per_second": {s: statistics.median(r["generated_tokens_per_second"] for r in rs)
                                                   for s, rs in runs.items()},
            "median_fraction_of_matmul_peak": {s: statistics.median(r["fraction_of_matmul_peak"] for r in rs)
                                               for s, rs in runs.items()},
            "median_completion_length": {s: statistics.median(r["mean_completion_length"] for r in rs)
                                         for s, rs in runs.items()},
            "speedup_vs_trl": medians["trl"] / medians["rewardlab"],
            "speedup_per_repeat": {"min": min(paired), "median": statistics.median(paired), "max": max(paired)},
            "speedup_per_generated_token": statistics.median(per_token),
            "non_embedding_parameters": {"policy": n_policy, "reward_model": n_rm}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--algorithms", nargs="+", default=["grpo", "rloo"])
    parser.add_argument("--n-layer", type=int, default=4)
    parser.add_argument("--n-embd", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-5)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default="bench/results/policy_trainer.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    peak = matmul_peak()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        paths = prepare(root, args.n_layer, args.n_embd)
        results = [compare(root, paths, algorithm, peak, args) for algorithm in args.algorithms]
    result = {
        "benchmark": "online RL (GRPO, RLOO): the same policy, reward model, prompts and settings, interleaved repeats",
        "settings": {**vars(args), "group_size": GROUP, "completions_per_step": COMPLETIONS,
                     "max_new_tokens": NEW_TOKENS, "beta": BETA},
        "matmul_peak_flops": peak,
        "algorithms": results,
        **environment(args.threads),
    }
    write_result(args.out, result)
    print(json.dumps({r["algorithm"]: {k: r[k] for k in ("median_train_seconds", "median_completions_per_second",
                                                          "median_fraction_of_matmul_peak", "median_completion_length",
                                                          "speedup_vs_trl", "speedup_per_repeat",
                                                          "speedup_per_generated_token")}
                      for r in results}, indent=2))


if __name__ == "__main__":
    main()
