"""Stage `sft`: a small GPT-style causal LM trained from scratch on the SFT corpus.

Inputs: data/processed/<name>/{sft_train,sft_valid}.jsonl and tokenizer/.
Outputs: the policy as a Hugging Face folder (safetensors), metrics.json (train_loss, valid_loss,
valid_ppl, parameters), history.csv (step, epoch, train_loss, lr; valid_loss at epoch ends), run.json.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel

from rewardlab.data.batching import pad_right
from rewardlab.models.build import build_tiny_gpt, count_parameters
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


def encode_documents(tokenizer, rows: list[dict[str, str]]) -> list[list[int]]:
    texts = [f"{r['prompt']} {r['completion']}" for r in rows]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def lm_batch(rows: list[list[int]], pad_id: int) -> dict[str, torch.Tensor]:
    ids, mask = pad_right(rows, pad_id)
    labels = ids.masked_fill(mask == 0, -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


@torch.no_grad()
def mean_loss(model: PreTrainedModel, docs: list[list[int]], pad_id: int, batch_size: int,
              device: torch.device) -> float:
    """Token-weighted mean next-token loss."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(docs), batch_size):
        batch = {k: v.to(device) for k, v in lm_batch(docs[i : i + batch_size], pad_id).items()}
        out = model(**batch)
        n = int((batch["labels"][:, 1:] != -100).sum())
        total += float(out.loss) * n
        count += n
    model.train()
    return total / max(1, count)


def run(config: dict, data_dir: Path, out: Path, threads: int = 1,
        checkpoint_every: int = 0) -> tuple[dict, list[dict], str]:
    sft = config["sft"]
    seed_everything(sft["seed"])
    accelerator = make_accelerator(config, threads)
    tokenizer = AutoTokenizer.from_pretrained(data_dir / "tokenizer")
    train_docs = encode_documents(tokenizer, read_jsonl(data_dir / "sft_train.jsonl"))
    valid_docs = encode_documents(tokenizer, read_jsonl(data_dir / "sft_valid.jsonl"))
    longest = max(len(d) for d in train_docs)
    model_cfg = config["model"]
    if longest > model_cfg["n_positions"]:
        raise SystemExit(f"model.n_positions: {model_cfg['n_positions']} is shorter than the longest "
                         f"SFT document ({longest} tokens)")
    model = build_tiny_gpt(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
                           **model_cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=sft["lr"], weight_decay=sft["weight_decay"])
    steps_per_epoch = math.ceil(len(train_docs) / sft["batch_size"])
    total = steps_per_epoch * sft["epochs"]
    scheduler = warmup_linear_decay(optimizer, total, sft["warmup_ratio"])
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    checkpointer = Checkpointer(out, checkpoint_steps(accelerator, checkpoint_every), fingerprint("sft", config))
    optimizers = {"optimizer": optimizer, "scheduler": scheduler}
    start, history, _ = restore_training(checkpointer, {"model": unwrapped}, optimizers)

    bar = iter(progress(range(start, total), total, "sft", config.get("progress", True), initial=start))
    model.train()
    step = start
    for step, epoch, indices, epoch_end in epoch_batches(len(train_docs), sft["batch_size"], sft["epochs"],
                                                          sft["seed"], start, accelerator.process_index,
                                                          accelerator.num_processes):
        batch = lm_batch([train_docs[j] for j in indices], tokenizer.pad_token_id)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        loss = model(**batch).loss
        optimizer_step(accelerator, loss, optimizer, scheduler)
        next(bar, None)
        history.append({"step": step, "epoch": epoch,
                        "train_loss": accelerator.reduce(loss.detach(), "mean").item(),
                        "lr": scheduler.get_last_lr()[0]})
        if epoch_end:
            history[-1]["valid_loss"] = mean_loss(model, valid_docs, tokenizer.pad_token_id, 256, accelerator.device)
        if checkpointer.due(step) and accelerator.is_main_process:
            save_training(checkpointer, step, {"model": unwrapped}, optimizers, history)
        accelerator.wait_for_everyone()

    save_model_folder(accelerator, model, tokenizer, out)
    tail = history[-min(50, len(history)) :]
    valid = history[-1]["valid_loss"]
    return {
        "train_loss": sum(h["train_loss"] for h in tail) / len(tail),
        "valid_loss": valid,
        "valid_ppl": math.exp(valid),
        "parameters": count_parameters(unwrapped),
        "steps": step,
    }, history, str(accelerator.device)


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="data/processed/<name>/")
    args = parser.parse_args()
    config = parse_config(args.config)
    started = time.time()
    out = Path(args.out)
    metrics, history, device = run(config, Path(args.data), out, args.threads, args.checkpoint_every)
    if is_main_process():
        finish_stage(out, "sft", config, config["sft"]["seed"], started, device, metrics, history)
        clear_checkpoint(out)


if __name__ == "__main__":
    main()
