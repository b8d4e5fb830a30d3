"""Stage `policy` for the offline baselines: DPO, IPO and cDPO on the reward model's preference pairs.

The policy starts from SFT and is trained directly on labels/<noise>/pairs_train.jsonl (the same pairs the
reward models see), with the SFT policy as the frozen reference. Log-probabilities are taken at
temperature 1 over response tokens only. Outputs: the policy folder, history.csv (loss, accuracy of the
implicit reward, chosen/rejected implicit rewards), metrics.json, run.json.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from rewardlab.data.batching import pad_right
from rewardlab.data.formats import read_pairs
from rewardlab.models.build import load_policy
from rewardlab.models.tokenizer import join_text
from rewardlab.rl import offline
from rewardlab.runinfo import finish_stage, read_jsonl, seed_everything
from rewardlab.train.checkpoint import Checkpointer, clear_checkpoint, fingerprint, restore_training, save_training
from rewardlab.train.common import (
    checkpoint_steps,
    epoch_batches,
    is_main_process,
    make_accelerator,
    optimizer_step,
    parse_config,
    progress,
    save_model_folder,
    stage_parser,
    warmup_linear_decay,
)


def sequence_logps(model, sequences: list[list[int]], prompt_lengths: list[int], pad_id: int,
                   device) -> tuple[torch.Tensor, torch.Tensor]:
    """(Σ_t log π(y_t|s_t) over response tokens, response lengths) for right-padded prompt+response rows."""
    ids, mask = pad_right(sequences, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
    logp = F.log_softmax(logits, -1).gather(-1, ids[:, 1:, None]).squeeze(-1)
    positions = torch.arange(ids.shape[1] - 1, device=device)[None, :]
    response = (positions >= (torch.tensor(prompt_lengths, device=device)[:, None] - 1)) & (mask[:, 1:] == 1)
    return (logp * response).sum(-1), response.sum(-1)


def run(config: dict, algo: str, seed: int, labels_dir: Path, sft_dir: Path, out: Path,
        threads: int = 1, checkpoint_every: int = 0) -> tuple[dict, list[dict], str]:
    dcfg = config["policy"]["dpo"]
    seed_everything(seed)
    accelerator = make_accelerator(config, threads)
    device = accelerator.device
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    pad_id = tokenizer.pad_token_id
    pairs = read_pairs(read_jsonl(labels_dir / "pairs_train.jsonl"), "pairs_train.jsonl")
    prompts = [p["prompt"] for p in pairs]
    enc = lambda texts: tokenizer(texts, add_special_tokens=False)["input_ids"]  # noqa: E731
    chosen = enc([join_text(p["prompt"], p["chosen"]) for p in pairs])
    rejected = enc([join_text(p["prompt"], p["rejected"]) for p in pairs])
    prompt_len = [len(x) for x in enc(prompts)]
    policy = load_policy(sft_dir)
    reference = load_policy(sft_dir).to(device).eval()
    # Under the policy's autocast (bf16 on a GPU), so that π = π_ref gives log-ratios of 0, not rounding noise.
    with torch.no_grad(), accelerator.autocast():
        ref_c, ref_r = [], []
        for i in range(0, len(pairs), 256):
            sl = slice(i, i + 256)
            ref_c.append(sequence_logps(reference, chosen[sl], prompt_len[sl], pad_id, device)[0])
            ref_r.append(sequence_logps(reference, rejected[sl], prompt_len[sl], pad_id, device)[0])
        ref_c, ref_r = torch.cat(ref_c), torch.cat(ref_r)
    optimizer = torch.optim.AdamW(policy.parameters(), lr=dcfg["lr"])
    total = math.ceil(len(pairs) / dcfg["batch_size"]) * dcfg["epochs"]
    scheduler = warmup_linear_decay(optimizer, total, 0.1)
    policy, optimizer, scheduler = accelerator.prepare(policy, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(policy)
    checkpointer = Checkpointer(out, checkpoint_steps(accelerator, checkpoint_every),
                                fingerprint("dpo", config, algo, seed))
    optimizers = {"optimizer": optimizer, "scheduler": scheduler}
    start, history, _ = restore_training(checkpointer, {"model": unwrapped}, optimizers)
    beta = dcfg["beta"]
    bar = iter(progress(range(start, total), total, f"policy[{algo}]", config.get("progress", True), initial=start))
    step = start
    for step, _, idx, _ in epoch_batches(len(pairs), dcfg["batch_size"], dcfg["epochs"], seed, start,
                                         accelerator.process_index, accelerator.num_processes):
        n = len(idx)
        logps, lengths = sequence_logps(policy, [chosen[j] for j in idx] + [rejected[j] for j in idx],
                                        [prompt_len[j] for j in idx] * 2, pad_id, device)
        ratio_c = logps[:n] - ref_c[idx].to(device)
        ratio_r = logps[n:] - ref_r[idx].to(device)
        if algo == "ipo":
            h = ratio_c / lengths[:n].clamp(min=1) - ratio_r / lengths[n:].clamp(min=1)
            loss = offline.ipo_loss(h, dcfg["ipo_tau"])
        elif algo == "cdpo":
            loss = offline.cdpo_loss(ratio_c - ratio_r, beta, dcfg["cdpo_epsilon"])
        else:
            loss = offline.dpo_loss(ratio_c - ratio_r, beta)
        optimizer_step(accelerator, loss, optimizer, scheduler)
        next(bar, None)
        history.append({"step": step, "loss": accelerator.reduce(loss.detach(), "mean").item(),
                        "accuracy": (ratio_c > ratio_r).float().mean().item(),
                        "reward_chosen": beta * ratio_c.mean().item(),
                        "reward_rejected": beta * ratio_r.mean().item()})
        if checkpointer.due(step) and accelerator.is_main_process:
            save_training(checkpointer, step, {"model": unwrapped}, optimizers, history)
        accelerator.wait_for_everyone()
    save_model_folder(accelerator, policy, tokenizer, out)
    tail = history[-max(1, len(history) // 10) :]
    metrics = {f"train_{k}": sum(h[k] for h in tail) / len(tail) for k in history[-1] if k != "step"}
    metrics.update(steps=step, pairs=len(pairs))
    return metrics, history, str(device)


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--algorithm", required=True, choices=["dpo", "ipo", "cdpo"])
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--sft", required=True)
    args = parser.parse_args()
    config = parse_config(args.config)
    started = time.time()
    out = Path(args.out)
    metrics, history, device = run(config, args.algorithm, args.seed, Path(args.labels), Path(args.sft), out,
                                   args.threads, args.checkpoint_every)
    if is_main_process():
        finish_stage(out, "dpo", config, args.seed, started, device, metrics, history,
                     extra={"algorithm": args.algorithm, "ipo_log_ratio": "length-normalised (TRL)"})
        clear_checkpoint(out)


if __name__ == "__main__":
    main()
