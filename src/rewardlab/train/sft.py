"""Stage `sft`: a small GPT-style causal LM trained from scratch on the SFT corpus.

Inputs: data/processed/<name>/{sft_train,sft_valid}.jsonl and tokenizer/.
Outputs: the policy as a Hugging Face folder (safetensors), metrics.json (train_loss, valid_loss,
valid_ppl, parameters), history.csv (step, epoch, loss, lr; valid_loss at epoch ends), run.json.
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedModel

from rewardlab.models.build import build_tiny_gpt, count_parameters, disable_dropout
from rewardlab.models.folder import check_model_folder
from rewardlab.models.tokenizer import join_text
from rewardlab.runinfo import read_jsonl
from rewardlab.runner import Argument, Stage, StageContext, StageResult
from rewardlab.runtime import save_model_folder
from rewardlab.tensors import pad_right
from rewardlab.train.supervised import Schedule, tail_means, train_supervised

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
    check_model_folder(model_cfg["name_or_path"], "model.name_or_path", model_cfg["trust_remote_code"], tokenizer=False)
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


def build_model(model_cfg: dict, tokenizer, longest: int) -> PreTrainedModel:
    """The tiny GPT from scratch, sized by ``model``; refused when the longest document does not fit."""
    if longest > model_cfg["n_positions"]:
        raise SystemExit(f"model.n_positions: {model_cfg['n_positions']} is shorter than the longest "
                         f"SFT document ({longest} tokens)")
    return build_tiny_gpt(len(tokenizer), tokenizer.pad_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id,
                          **{k: model_cfg[k] for k in TINY_GPT_KEYS})


def run(ctx: StageContext, data: Path) -> StageResult:
    config, sft = ctx.config, ctx.config["sft"]
    accelerator = ctx.accelerator
    tokenizer = AutoTokenizer.from_pretrained(data / "tokenizer")
    model_cfg = config["model"]
    pretrained = bool(model_cfg.get("name_or_path"))
    train_rows, valid_rows = read_jsonl(data / "sft_train.jsonl"), read_jsonl(data / "sft_valid.jsonl")
    train_lengths = valid_lengths = None
    if pretrained:
        train_docs, train_lengths = encode_pretrained_documents(tokenizer, train_rows)
        valid_docs, valid_lengths = encode_pretrained_documents(tokenizer, valid_rows)
        model = load_pretrained_policy(model_cfg, tokenizer)
    else:
        train_docs, valid_docs = encode_documents(tokenizer, train_rows), encode_documents(tokenizer, valid_rows)
        model = build_model(model_cfg, tokenizer, max(len(d) for d in train_docs))
    pad_id = tokenizer.pad_token_id

    def step(model: torch.nn.Module, indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        lengths = [train_lengths[j] for j in indices] if train_lengths is not None else None
        batch = lm_batch([train_docs[j] for j in indices], pad_id, lengths)
        return model(**{k: v.to(accelerator.device) for k, v in batch.items()}).loss, {}

    def validate(model: torch.nn.Module) -> dict[str, float]:
        return {"valid_loss": mean_loss(model, valid_docs, pad_id, 64, accelerator.device, valid_lengths)}

    schedule = Schedule(len(train_docs), sft["batch_size"], sft["epochs"], sft["seed"], sft["lr"],
                        sft["weight_decay"], sft["warmup_ratio"])
    model, history = train_supervised(ctx, model, schedule, step, "sft", ctx.checkpointer(), validate)
    # sft.epochs: 0 keeps the pretrained model as it is: it is the SFT policy
    valid = history[-1]["valid_loss"] if history else validate(model)["valid_loss"]
    if pretrained and model_cfg["lora"]["r"]:  # LoRA adapters merged: downstream stages load a plain model
        model = accelerator.unwrap_model(model).merge_and_unload()
    save_model_folder(accelerator, model, tokenizer, ctx.out)
    return StageResult({"train_loss": tail_means(history, ["loss"])["loss"], "valid_loss": valid,
                        "valid_ppl": math.exp(valid), "parameters": count_parameters(accelerator.unwrap_model(model)),
                        "steps": history[-1]["step"] if history else 0}, history)


STAGE = Stage("sft", run, (Argument("--data", Path, "data/processed/<name>/"),),
              seed=lambda config, inputs: config["sft"]["seed"], description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
