"""Stage `reward`: a reward model trained with a loss from ``rewardlab.losses`` on the label set it needs.

The model is the SFT backbone with a head read at the last non-pad token (one output, or five for the
multi-attribute loss), dropout off. All sequences of a batch (chosen and rejected of each pair, or the K
responses of each ranking) go through one forward pass, padded only to the batch's longest row. After
training, the RM is normalised to mean 0 / std 1 on SFT samples (rlhf-reference.md §1.12); the statistics
are stored in config.json and applied when the RM scores rollouts. With ``reward.ensemble.members`` = N > 1,
N members with different seeds are trained (head init and data order) and saved as one ensemble folder.

Outputs: the RM as a Hugging Face folder (``AutoModelForSequenceClassification``), metrics.json
(train_loss, train_accuracy, reward_mean, reward_std, …), history.csv, run.json.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoTokenizer, PreTrainedModel

from rewardlab import losses
from rewardlab.data.annotators import ATTRIBUTES
from rewardlab.data.batching import pad_right
from rewardlab.data.formats import read_pairs
from rewardlab.losses.catalog import LABEL_FILES
from rewardlab.models.build import (
    ATTRIBUTE_KEY,
    NORMALISATION_KEY,
    head_outputs,
    last_token_index,
    reward_model_from_backbone,
    sequence_scores,
)
from rewardlab.models.reward import ENSEMBLE_FILE
from rewardlab.models.tokenizer import join_text
from rewardlab.runinfo import (
    finish_stage,
    read_jsonl,
    seed_everything,
    write_json,
)
from rewardlab.train.checkpoint import (
    CHECKPOINT_DIR,
    Checkpointer,
    clear_checkpoint,
    fingerprint,
    restore_training,
    save_training,
)
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


def encode(tokenizer, prompts: list[str], responses: list[str]) -> list[list[int]]:
    """Token ids of prompt + response (the same join the policy's rollouts produce)."""
    return tokenizer([join_text(p, r) for p, r in zip(prompts, responses)], add_special_tokens=False)["input_ids"]


@dataclass
class Batch:
    """Sequences for one forward pass, and how to turn their outputs into a loss and statistics."""

    sequences: list[list[int]]
    prompt_lengths: list[int]
    to_loss: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[dict, dict]]


class LabelSet:
    """Examples of one label shape, encoded once; ``batch(index)`` assembles one training step."""

    def __init__(self, shape: str, rows: list[dict], tokenizer, combination: dict | None = None):
        self.shape = shape
        prompt_lengths = {}
        if shape == "pairs":
            pairs = read_pairs(rows, LABEL_FILES[shape])
            prompts = [p["prompt"] for p in pairs]
            self.chosen = encode(tokenizer, prompts, [p["chosen"] for p in pairs])
            self.rejected = encode(tokenizer, prompts, [p["rejected"] for p in pairs])
            self.margin = torch.tensor([p["margin"] for p in pairs], dtype=torch.float)
            self.size = len(pairs)
        elif shape == "rankings":
            prompts = [r["prompt"] for r in rows]
            self.k = len(rows[0]["responses"])
            self.responses = [encode(tokenizer, [r["prompt"]] * self.k, r["responses"]) for r in rows]
            self.order = torch.tensor([r["order"] for r in rows], dtype=torch.long)
            self.size = len(rows)
        else:
            prompts = [r["prompt"] for r in rows]
            self.sequences = encode(tokenizer, prompts, [r["response"] for r in rows])
            self.attributes = torch.tensor([[float(r[a]) for a in ATTRIBUTES] for r in rows])
            weights = torch.tensor(combination["weights"]) if combination else None
            # The scalar target: the same fixed combination of ratings that estimates R*, standardised over the
            # training ratings. R* sits far from 0 (about −20 on a young SFT policy's samples): regressing it raw,
            # the first hundreds of steps only move the output's offset (seen in bf16 on a GPU: no progress in a
            # short run). An affine change of target leaves the learned order unchanged.
            scalar = (self.attributes @ weights + combination["offset"]) if combination else None
            self.scalar = None if scalar is None else (scalar - scalar.mean()) / scalar.std().clamp_min(1e-8)
            self.size = len(rows)
        for p in set(prompts):
            prompt_lengths[p] = len(tokenizer(p, add_special_tokens=False)["input_ids"])
        self.prompt_length = [prompt_lengths[p] for p in prompts]

    def __len__(self) -> int:
        return self.size

    def batch(self, index: list[int], head_dim: int) -> Batch:
        idx = torch.tensor(index)
        if self.shape == "pairs":
            n = len(index)

            def to_loss(scores, hidden, prompt_hidden):
                r_c, r_r = scores[:n], scores[n:]
                inputs = {"chosen": r_c, "rejected": r_r, "margin": self.margin[idx].to(scores.device),
                          "h_chosen": hidden[:n], "h_rejected": hidden[n:], "h_prompt": prompt_hidden[:n]}
                return inputs, {"accuracy": (r_c > r_r).float().mean().item(), "margin": (r_c - r_r).mean().item()}

            lengths = [self.prompt_length[i] for i in index]
            return Batch([self.chosen[i] for i in index] + [self.rejected[i] for i in index], lengths * 2, to_loss)
        if self.shape == "rankings":
            k = self.k

            def to_loss(scores, hidden, prompt_hidden):
                grid = scores.view(len(index), k)
                order = self.order[idx].to(scores.device)
                top1 = (grid.argmax(1) == order[:, 0]).float().mean().item()
                return {"scores": grid, "order": order}, {"accuracy": top1}

            seqs = [s for i in index for s in self.responses[i]]
            return Batch(seqs, [self.prompt_length[i] for i in index for _ in range(k)], to_loss)

        def to_loss(scores, hidden, prompt_hidden):
            target = self.attributes[idx] if head_dim > 1 else self.scalar[idx]
            return {"predicted": scores, "target": target.to(scores.device)}, {}

        return Batch([self.sequences[i] for i in index], [self.prompt_length[i] for i in index], to_loss)


def forward(model: PreTrainedModel, batch: Batch, pad_id: int, device: torch.device):
    """Head outputs at the last token (N,) or (N, D), and last-token / last-prompt-token hidden states."""
    ids, mask = pad_right(batch.sequences, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    hidden, outputs = head_outputs(model, ids, mask)
    rows = torch.arange(ids.shape[0], device=device)
    last = last_token_index(mask)
    scores = outputs[rows, last]
    scores = scores.squeeze(-1) if scores.shape[-1] == 1 else scores
    prompt_last = torch.tensor(batch.prompt_lengths, device=device) - 1
    return scores.float(), hidden[rows, last].float(), hidden[rows, prompt_last].float()


@torch.no_grad()
def score_sequences(model: PreTrainedModel, sequences: list[list[int]], pad_id: int, device: torch.device,
                    batch_size: int = 512) -> torch.Tensor:
    model.eval()
    out = []
    for i in range(0, len(sequences), batch_size):
        ids, mask = pad_right(sequences[i : i + batch_size], pad_id)
        out.append(sequence_scores(model, ids.to(device), mask.to(device)).float().cpu())
    return torch.cat(out)


def train_member(config: dict, spec: losses.LossSpec, data: LabelSet, seed: int, sft_dir: Path, accelerator,
                 pad_id: int, desc: str, combination: dict | None,
                 checkpointer: Checkpointer) -> tuple[torch.nn.Module, list[dict]]:
    """One member's training loop; returns the model as prepared by Accelerate (unwrap it to read it)."""
    rcfg = config["reward"]
    seed_everything(seed)
    model = reward_model_from_backbone(sft_dir, seed, num_labels=spec.head_dim,
                                       trust_remote_code=config.get("model", {}).get("trust_remote_code", False))
    if combination is not None and spec.head_dim > 1:
        setattr(model.config, ATTRIBUTE_KEY, combination)
    optimizer = torch.optim.AdamW(model.parameters(), lr=rcfg["lr"], weight_decay=rcfg["weight_decay"])
    total = math.ceil(len(data) / rcfg["batch_size"]) * rcfg["epochs"]
    scheduler = warmup_linear_decay(optimizer, total, 0.05)
    model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
    unwrapped = accelerator.unwrap_model(model)
    optimizers = {"optimizer": optimizer, "scheduler": scheduler}
    start, history, _ = restore_training(checkpointer, {"model": unwrapped}, optimizers)
    bar = iter(progress(range(start, total), total, desc, config.get("progress", True), initial=start))
    model.train()
    for step, epoch, indices, _ in epoch_batches(len(data), rcfg["batch_size"], rcfg["epochs"], seed, start,
                                                 accelerator.process_index, accelerator.num_processes):
        batch = data.batch(indices, spec.head_dim)
        scores, hidden, prompt_hidden = forward(model, batch, pad_id, accelerator.device)
        inputs, stats = batch.to_loss(scores, hidden, prompt_hidden)
        loss = losses.call(spec, inputs, rcfg["loss_params"])
        optimizer_step(accelerator, loss, optimizer, scheduler)
        next(bar, None)
        history.append({"step": step, "epoch": epoch, "loss": accelerator.reduce(loss.detach(), "mean").item(),
                        **stats, "lr": scheduler.get_last_lr()[0]})
        if checkpointer.due(step) and accelerator.is_main_process:
            save_training(checkpointer, step, {"model": unwrapped}, optimizers, history)
        accelerator.wait_for_everyone()
    return model, history


def normalise(model: PreTrainedModel, pool_dir: Path, tokenizer, limit: int,
              device: torch.device) -> tuple[float, float]:
    """Mean and std of the RM on SFT samples from the training pool (§1.12, pitfall §6.4)."""
    prompts, responses = [], []
    for row in read_jsonl(pool_dir / "train.jsonl"):
        for response in row["responses"]:
            prompts.append(row["prompt"])
            responses.append(response)
    scores = score_sequences(model, encode(tokenizer, prompts[:limit], responses[:limit]), tokenizer.pad_token_id,
                             device)
    return scores.mean().item(), max(scores.std().item(), 1e-6)


def run(config: dict, loss_name: str, seed: int, labels_dir: Path, pool_dir: Path, sft_dir: Path, out: Path,
        threads: int = 1, checkpoint_every: int = 0) -> tuple[dict, list[dict], str]:
    rcfg = config["reward"]
    spec = losses.get(loss_name)
    accelerator = make_accelerator(config, threads)
    tokenizer = AutoTokenizer.from_pretrained(sft_dir)
    combination = None  # the rating combination of the simulated annotators (SentiGram only)
    if (labels_dir / "scales.json").is_file():
        scales = json.loads((labels_dir / "scales.json").read_text())
        combination = {"weights": scales["weights"], "offset": scales["offset"], "attributes": scales["attributes"]}
    data = LabelSet(spec.label_shape, read_jsonl(labels_dir / LABEL_FILES[spec.label_shape]), tokenizer,
                    combination)
    ensemble = rcfg["ensemble"]
    members = ensemble["members"]
    histories, member_metrics = [], []
    for m in range(members):
        member_seed = seed if members == 1 else seed * 1000 + m
        checkpointer = Checkpointer(out / CHECKPOINT_DIR, checkpoint_steps(accelerator, checkpoint_every),
                                    fingerprint("reward", config, loss_name, seed, m), name=f"member-{m}")
        done = checkpointer.root / "done.json"
        if done.exists():  # a member finished before the stage was killed: its folder is saved already
            record = json.loads(done.read_text())
            histories += record["history"]
            member_metrics.append(record["metrics"])
            continue
        prepared, history = train_member(config, spec, data, member_seed, sft_dir, accelerator,
                                         tokenizer.pad_token_id,
                                         f"reward[{loss_name}]" + (f" member {m}" if members > 1 else ""),
                                         combination, checkpointer)
        model = accelerator.unwrap_model(prepared)
        mean, std = normalise(model, pool_dir, tokenizer, rcfg["normalise_samples"], accelerator.device)
        setattr(model.config, NORMALISATION_KEY, {"mean": mean, "std": std})
        model.config.rewardlab_loss = loss_name
        tail = history[-min(50, len(history)) :]
        metrics = {"train_loss": sum(h["loss"] for h in tail) / len(tail),
                   **({"train_accuracy": sum(h["accuracy"] for h in tail) / len(tail)}
                      if "accuracy" in tail[0] else {}),
                   "reward_mean": mean, "reward_std": std}
        history = [{**h, "member": m} for h in history]
        save_model_folder(accelerator, prepared, tokenizer, out if m == 0 else out / "members" / str(m))
        if accelerator.is_main_process:
            if members > 1 and checkpoint_every:
                checkpointer.clear()
                write_json(done, {"metrics": metrics, "history": history})
        histories += history
        member_metrics.append(metrics)
        del model, prepared
    if members > 1 and accelerator.is_main_process:
        write_json(out / ENSEMBLE_FILE, {"members": ["."] + [f"members/{m}" for m in range(1, members)],
                                         "aggregate": ensemble["aggregate"], "uwo_lambda": ensemble["uwo_lambda"]})
    metrics = {k: sum(mm[k] for mm in member_metrics) / members for k in member_metrics[0]}
    metrics.update({"train_examples": len(data), "members": members, "steps": len(histories)})
    return metrics, histories, str(accelerator.device)


def main() -> None:
    parser = stage_parser(__doc__.splitlines()[0])
    parser.add_argument("--loss", required=True, help="A name from rewardlab.losses.REGISTRY.")
    parser.add_argument("--seed", type=int, required=True)
    parser.add_argument("--labels", required=True, help="labels/<noise>/ folder")
    parser.add_argument("--pool", required=True, help="pool/ folder (SFT samples for normalisation)")
    parser.add_argument("--sft", required=True)
    parser.add_argument("--eval-out", help="Also evaluate the trained model here (eval/rm/<run>/): held-out pairs "
                        "from --labels, ToyRewardBench and best-of-n from --pool")
    args = parser.parse_args()
    config = parse_config(args.config)
    started = time.time()
    out = Path(args.out)
    metrics, history, device = run(config, args.loss, args.seed, Path(args.labels), Path(args.pool), Path(args.sft),
                                   out, args.threads, args.checkpoint_every)
    if is_main_process():
        finish_stage(out, "reward", config, args.seed, started, device, metrics, history, extra={"loss": args.loss})
        clear_checkpoint(out)
        if args.eval_out:
            from rewardlab.evaluate.reward_model import evaluate

            evaluate(config, out, Path(args.labels), Path(args.pool), Path(args.eval_out), torch.device(device),
                     time.time())


if __name__ == "__main__":
    main()
