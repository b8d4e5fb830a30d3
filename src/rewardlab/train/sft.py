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
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from rewardlab.data.batching import pad_right
from rewardlab.models.build import build_tiny_gpt, count_parameters, disable_dropout
from rewardlab.models.tokenizer import join_text
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

TINY_GPT_KEYS = ("n_layer", "n_head", "n_embd", "n_positions")


def encode_documents(tokenizer, rows: list[dict[str, str]]) -> list[list[int]]:
    texts = [join_text(r["prompt"], r["completion"]) for r in rows]
    return tokenizer(texts, add_special_tokens=False)["input_ids"]


def encode_pretrained_documents(tokenizer, rows: list[dict[str, str]]) -> tuple[list[list[int]], list[int]]:
    """Real data: prompt + completion + EOS, and each prompt's length (its tokens carry no loss, as in TRL's
    completion-only SFT)."""
    docs, prompt_lengths = [], []
    for row in rows:
        ids = tokenizer(join_text(row["prompt"], row["completion"]), add_special_tokens=False)["input_ids"]
        prompt = len(tokenizer(row["prompt"], add_special_tokens=False)["input_ids"])
        docs.append(ids + [tokenizer.eos_token_id])
        prompt_lengths.append(min(prompt, len(ids)))
    return docs, prompt_lengths


def lm_batch(rows: list[list[int]], pad_id: int, prompt_lengths: list[int] | None = None) -> dict[str, torch.Tensor]:
    ids, mask = pad_right(rows, pad_id)
    labels = ids.masked_fill(mask == 0, -100)
    if prompt_lengths is not None:
        positions = torch.arange(ids.shape[1])[None, :]
        labels = labels.masked_fill(positions < torch.tensor(prompt_lengths)[:, None], -100)
    return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def load_pretrained_policy(model_cfg: dict, tokenizer) -> PreTrainedModel:
    """model.name_or_path as the policy to fine-tune: dropout off, pad token set, optional gradient
    checkpointing and LoRA (peft)."""
    model = AutoModelForCausalLM.from_pretrained(model_cfg["name_or_path"],
                                                 trust_remote_code=model_cfg["trust_remote_code"])
    model.config.pad_token_id = tokenizer.pad_token_id
    disable_dropout(model)
    if model_cfg["gradient_checkpointing"]:
        # transformers 5 renamed it (the old name warns); 4.x has only the old one.
        getattr(model, "activation_checkpointing_enable", model.gradient_checkpointing_enable)()
        model.config.use_cache = False
    lora = model_cfg["lora"]
    if lora["r"]:
        from peft import LoraConfig, get_peft_model

        model = get_peft_model(model, LoraConfig(r=lora["r"], lora_alpha=lora["alpha"], lora_dropout=lora["dropout"],
                                                 target_modules=lora["target_modules"], task_type="CAUSAL_LM"))
    return model


@torch.no_grad()
def mean_loss(model: PreTrainedModel, docs: list[list[int]], pad_id: int, batch_size: int,
              device: torch.device, prompt_lengths: list[int] | None = None) -> float:
    """Token-weighted mean next-token loss (over completion tokens when prompt lengths are given)."""
    model.eval()
    total, count = 0.0, 0
    for i in range(0, len(docs), batch_size):
        lengths = prompt_lengths[i : i + batch_size] if prompt_lengths is not None else None
        batch = {k: v.to(device) for k, v in lm_batch(docs[i : i + batch_size], pad_id, lengths).items()}
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
    model_cfg = config["model"]
    pretrained = bool(model_cfg.get("name_or_path"))
    train_prompt_lengths = valid_prompt_lengths = None
    if pretrained:
        train_docs, train_prompt_lengths = encode_pretrained_documents(tokenizer,
                                                                       read_jsonl(data_dir / "sft_train.jsonl"))
        valid_docs, valid_prompt_lengths = encode_pretrained_documents(tokenizer,
                                                                       read_jsonl(data_dir / "sft_valid.jsonl"))
        model = load_pretrained_policy(model_cfg, tokenizer)
    else:
        train_docs = encode_documents(tokenizer, read_jsonl(data_dir / "sft_train.jsonl"))
        valid_docs = encode_documents(tokenizer, read_jsonl(data_dir / "sft_valid.jsonl"))
        longest = max(len(d) for d in train_docs)
        if longest > model_cfg["n_positions"]:
            raise SystemExit(f"model.n_positions: {model_cfg['n_positions']} is shorter than the longest "
                             f"SFT document ({longest} tokens)")
        model = build_tiny_gpt(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id,
                               tokenizer.eos_token_id, **{k: model_cfg[k] for k in TINY_GPT_KEYS})
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
        lengths = [train_prompt_lengths[j] for j in indices] if train_prompt_lengths is not None else None
        batch = lm_batch([train_docs[j] for j in indices], tokenizer.pad_token_id, lengths)
        batch = {k: v.to(accelerator.device) for k, v in batch.items()}
        loss = model(**batch).loss
        optimizer_step(accelerator, loss, optimizer, scheduler)
        next(bar, None)
        history.append({"step": step, "epoch": epoch,
                        "train_loss": accelerator.reduce(loss.detach(), "mean").item(),
                        "lr": scheduler.get_last_lr()[0]})
        if epoch_end:
            history[-1]["valid_loss"] = mean_loss(model, valid_docs, tokenizer.pad_token_id, 64, accelerator.device,
                                                  valid_prompt_lengths)
        if checkpointer.due(step) and accelerator.is_main_process:
            save_training(checkpointer, step, {"model": unwrapped}, optimizers, history)
        accelerator.wait_for_everyone()

    if history:
        valid = history[-1]["valid_loss"]
    else:  # sft.epochs: 0 — the pretrained model is the SFT policy as it is
        valid = mean_loss(model, valid_docs, tokenizer.pad_token_id, 64, accelerator.device, valid_prompt_lengths)
    if pretrained and model_cfg["lora"]["r"]:  # LoRA adapters merged: downstream stages load a plain model
        model = accelerator.unwrap_model(model).merge_and_unload()
        unwrapped = model
    save_model_folder(accelerator, model, tokenizer, out)
    tail = history[-min(50, len(history)) :]
    return {
        "train_loss": sum(h["train_loss"] for h in tail) / len(tail) if tail else float("nan"),
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
