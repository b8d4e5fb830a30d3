"""Stage `reward`: a reward model trained on labelled pairs with a loss from ``rewardlab.losses``.

The model is the SFT backbone with a scalar head read at the last non-pad token, dropout off. Chosen and
rejected responses of a batch go through one forward pass, padded only to the batch's longest row.
After training, the RM is normalised to mean 0 / std 1 on SFT samples (rlhf-reference.md §1.12); the
statistics are stored in config.json and applied when the RM scores rollouts.

Outputs: the RM as a Hugging Face folder (``AutoModelForSequenceClassification``), metrics.json
(train_loss, train_accuracy, train_margin, reward_mean, reward_std), history.csv, run.json.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel

from rewardlab import losses
from rewardlab.data.batching import pad_right
from rewardlab.models.build import NORMALISATION_KEY, reward_model_from_backbone, sequence_scores
from rewardlab.runinfo import read_jsonl, seed_everything, write_history, write_metrics, write_run_info
from rewardlab.train.common import make_accelerator, parse_config, progress, stage_parser, warmup_linear_decay


def encode_pairs(tokenizer, rows: list[dict]) -> tuple[list[list[int]], list[list[int]]]:
    """Token ids of prompt + chosen and prompt + rejected (the same truncation-free join for both)."""
    chosen = tokenizer([f"{r['prompt']} {r['chosen']}" for r in rows], add_special_tokens=False)["input_ids"]
    rejected = tokenizer([f"{r['prompt']} {r['rejected']}" for r in rows], add_special_tokens=False)["input_ids"]
    return chosen, rejected


def pair_scores(model: PreTrainedModel, chosen: list[list[int]], rejected: list[list[int]], pad_id: int,
                device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """r(x, y_c), r(x, y_r) from one forward pass over the concatenated batch."""
    ids, mask = pad_right(chosen + rejected, pad_id)
    scores = sequence_scores(model, ids.to(device), mask.to(device))
    return scores[: len(chosen)], scores[len(chosen) :]


@torch.no_grad()
def score_texts(model: PreTrainedModel, sequences: list[list[int]], pad_id: int, device: torch.device,
                batch_size: int = 512) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(sequences), batch_size):
        ids, mask = pad_right(sequences[i : i + batch_size], pad_id)
        out.append(sequence_scores(model, ids.to(device), mask.to(device)).float().cpu())
    return torch.cat(out)


def run(config: dict, loss_name: str, seed: int, labels_dir: Path, sft_dir: Path, out: Path,
        threads: int = 1) -> tuple[dict, list[dict], str]:
    rcfg = config["reward"]
    spec = losses.get(loss_name)
    seed_everything(seed)
    accelerator = make_accelerator(config, threads)
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    pad_id = tokenizer.pad_token_id
    rows = read_jsonl(labels_dir / "train.jsonl")
    chosen, rejected = encode_pairs(tokenizer, rows)
    model = reward_model_from_backbone(sft_dir, seed)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rcfg["lr"], weight_decay=rcfg["weight_decay"])
    steps_per_epoch = math.ceil(len(rows) / rcfg["batch_size"])
    total = steps_per_epoch * rcfg["epochs"]
    scheduler = warmup_linear_decay(optimizer, total, 0.05)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    generator = torch.Generator().manual_seed(seed)

    history: list[dict] = []
    bar = iter(progress(range(total), total, f"reward[{loss_name}]", config.get("progress", True)))
    step = 0
    model.train()
    for epoch in range(rcfg["epochs"]):
        order = torch.randperm(len(rows), generator=generator).tolist()
        for i in range(0, len(order), rcfg["batch_size"]):
            index = order[i : i + rcfg["batch_size"]]
            r_c, r_r = pair_scores(model, [chosen[j] for j in index], [rejected[j] for j in index], pad_id,
                                   accelerator.device)
            loss = spec.fn(r_c.float(), r_r.float())
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            next(bar, None)
            with torch.no_grad():
                history.append({"step": step, "epoch": epoch, "loss": loss.item(),
                                "accuracy": (r_c > r_r).float().mean().item(),
                                "margin": (r_c - r_r).mean().item(), "lr": scheduler.get_last_lr()[0]})

    model = accelerator.unwrap_model(model)
    # Normalise on SFT samples (the label pool's responses): mean 0, std 1 (§1.12, pitfall §6.4).
    seen, samples = set(), []
    for row, c, r in zip(rows, chosen, rejected):
        for text, ids in ((row["chosen"], c), (row["rejected"], r)):
            if (row["prompt"], text) not in seen:
                seen.add((row["prompt"], text))
                samples.append(ids)
    scores = score_texts(model, samples[: rcfg["normalise_samples"]], pad_id, accelerator.device)
    mean, std = scores.mean().item(), max(scores.std().item(), 1e-6)
    setattr(model.config, NORMALISATION_KEY, {"mean": mean, "std": std})
    model.config.rewardlab_loss = loss_name
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)

    tail = history[-min(50, len(history)) :]
    metrics = {
        "train_loss": sum(h["loss"] for h in tail) / len(tail),
        "train_accuracy": sum(h["accuracy"] for h in tail) / len(tail),
        "train_margin": sum(h["margin"] for h in tail) / len(tail),
        "train_pairs": len(rows),
        "reward_mean": mean,
        "reward_std": std,
        "steps": step,
    }
    return metrics, history, str(accelerator.device)


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--loss", required=True, help="A name from rewardlab.losses.REGISTRY.")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--labels", required=True)
    parser.add_argument("--sft", required=True)
    args = parser.parse_args()
    config = parse_config(args.config)
    started = time.time()
    out = Path(args.out)
    metrics, history, device = run(config, args.loss, args.seed, Path(args.labels), Path(args.sft), out,
                                   args.threads)
    write_history(out, history)
    write_run_info(out, "reward", config, args.seed, started, device, {"loss": args.loss})
    write_metrics(out, metrics)


if __name__ == "__main__":
    main()
