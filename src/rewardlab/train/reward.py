"""Stage `reward`: a reward model trained with a loss from ``rewardlab.losses`` on the label set it needs.

The model is the SFT backbone with a head read at the last non-pad token (one output, or five for the
multi-attribute loss), dropout off. All sequences of a batch (chosen and rejected of each pair, or the K
responses of each ranking) go through one forward pass, padded only to the batch's longest row. After
training, the RM is normalised to mean 0 / std 1 on SFT samples (rlhf-reference.md §1.12); the statistics
are stored in config.json and applied when the RM scores rollouts. With ``reward.ensemble.members`` = N > 1,
N members with different seeds are trained (head init and data order) and saved as one ensemble folder.
With ``--eval-out`` the stage then evaluates the model it trained (``rewardlab.evaluate.reward_model``).

Outputs: the RM as a Hugging Face folder (``AutoModelForSequenceClassification``), metrics.json
(train_loss, train_accuracy, reward_mean, reward_std, …), history.csv, run.json.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from transformers import AutoTokenizer, PreTrainedModel

from rewardlab import losses
from rewardlab.checkpoint import CHECKPOINT_DIR, Checkpointer
from rewardlab.evaluate import reward_model as rm_eval
from rewardlab.models.build import ATTRIBUTE_KEY, NORMALISATION_KEY, head_outputs, reward_model_from_backbone
from rewardlab.models.reward import ENSEMBLE_FILE, score_texts
from rewardlab.runinfo import read_jsonl, seed_everything, write_json
from rewardlab.runner import Argument, Stage, StageContext, StageResult, optional_path
from rewardlab.runtime import save_model_folder
from rewardlab.tensors import last_token_index, pad_right
from rewardlab.train.label_sets import LABEL_SETS, Batch, HeadOutputs, LabelSet
from rewardlab.train.supervised import Schedule, tail_means, train_supervised


def forward(model: PreTrainedModel, batch: Batch, pad_id: int, device: torch.device) -> HeadOutputs:
    """Head outputs at the last token (N,) or (N, D), and last-token / last-prompt-token hidden states."""
    ids, mask = pad_right(batch.sequences, pad_id)
    ids, mask = ids.to(device), mask.to(device)
    hidden, outputs = head_outputs(model, ids, mask)
    rows = torch.arange(ids.shape[0], device=device)
    last = last_token_index(mask)
    scores = outputs[rows, last]
    scores = scores.squeeze(-1) if scores.shape[-1] == 1 else scores
    prompt_last = torch.tensor(batch.prompt_lengths, device=device) - 1
    return HeadOutputs(scores.float(), hidden[rows, last].float(), hidden[rows, prompt_last].float())


def normalise(model: PreTrainedModel, pool_dir: Path, tokenizer: Any, limit: int,
              device: torch.device) -> tuple[float, float]:
    """Mean and std of the RM on SFT samples from the training pool (§1.12, pitfall §6.4)."""
    rows = read_jsonl(pool_dir / "train.jsonl")
    prompts = [row["prompt"] for row in rows for _ in row["responses"]][:limit]
    responses = [response for row in rows for response in row["responses"]][:limit]
    scores = score_texts(model, tokenizer, prompts, responses, device)
    return scores.mean().item(), max(scores.std().item(), 1e-6)


def train_member(ctx: StageContext, spec: losses.LossSpec, data: LabelSet, seed: int, sft_dir: Path, tokenizer: Any,
                 combination: dict | None, checkpointer: Checkpointer, desc: str) -> tuple[torch.nn.Module, list[dict]]:
    """One member's training run on the shared loop; returns the model as prepared by Accelerate."""
    rcfg = ctx.config["reward"]
    seed_everything(seed)
    model = reward_model_from_backbone(sft_dir, seed, num_labels=spec.head_dim,
                                       trust_remote_code=ctx.config.get("model", {}).get("trust_remote_code", False))
    if combination is not None and spec.head_dim > 1:
        setattr(model.config, ATTRIBUTE_KEY, combination)
    device, pad_id = ctx.device, tokenizer.pad_token_id

    def step(model: torch.nn.Module, indices: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        batch = data.batch(indices)
        return data.loss(spec, batch, forward(model, batch, pad_id, device), rcfg["loss_params"])

    schedule = Schedule(len(data), rcfg["batch_size"], rcfg["epochs"], seed, rcfg["lr"], rcfg["weight_decay"],
                        rcfg["warmup_ratio"])
    return train_supervised(ctx, model, schedule, step, desc, checkpointer)


def finish_member(ctx: StageContext, prepared: torch.nn.Module, history: list[dict], member: int, loss_name: str,
                  pool_dir: Path, tokenizer: Any) -> dict[str, float]:
    """Normalise a trained member on SFT samples and save it (member 0 at the top, others in members/<m>/)."""
    accelerator = ctx.accelerator
    model = accelerator.unwrap_model(prepared)
    mean, std = normalise(model, pool_dir, tokenizer, ctx.config["reward"]["normalise_samples"], ctx.device)
    setattr(model.config, NORMALISATION_KEY, {"mean": mean, "std": std})
    model.config.rewardlab_loss = loss_name
    tails = tail_means(history, ["loss", "accuracy"])
    metrics = {"train_loss": tails["loss"], **({"train_accuracy": tails["accuracy"]} if "accuracy" in tails else {}),
               "reward_mean": mean, "reward_std": std}
    save_model_folder(accelerator, prepared, tokenizer, ctx.out if member == 0 else ctx.out / "members" / str(member))
    return metrics


def rating_combination(labels_dir: Path) -> dict | None:
    """The rating combination an mse_multiattr reward model scores with: the simulated annotators' estimate of
    R* (SentiGram), or the real data's ``data.source.attribute_weights``."""
    if not (labels_dir / "scales.json").is_file():
        return None
    scales = json.loads((labels_dir / "scales.json").read_text())
    return {"weights": scales["weights"], "offset": scales["offset"], "attributes": scales["attributes"]}


def run(ctx: StageContext, loss: str, seed: int, labels: Path, pool: Path, sft: Path,
        eval_out: Path | None = None) -> StageResult:
    rcfg, spec = ctx.config["reward"], losses.get(loss)
    tokenizer = AutoTokenizer.from_pretrained(sft)
    combination = rating_combination(labels)
    rows = read_jsonl(labels / spec.label_file)
    if not rows:  # real data whose files held none of this label shape (e.g. HelpSteer2's preference subset)
        raise SystemExit(f"reward.losses: {loss} trains on {spec.label_shape}, and {labels / spec.label_file} has "
                         "none; the data gives no such labels (see preprocess's metrics.json)")
    data = LABEL_SETS[spec.label_shape](rows, tokenizer, combination)
    members = rcfg["ensemble"]["members"]
    histories, member_metrics = [], []
    for m in range(members):
        checkpointer = ctx.checkpointer(loss, seed, m, name=f"{CHECKPOINT_DIR}/member-{m}")
        done = checkpointer.root / "done.json"
        if done.exists():  # a member finished before the stage was killed: its folder is saved already
            record = json.loads(done.read_text())
        else:
            member_seed = seed if members == 1 else seed * 1000 + m
            desc = f"reward[{loss}]" + (f" member {m}" if members > 1 else "")
            prepared, history = train_member(ctx, spec, data, member_seed, sft, tokenizer, combination, checkpointer,
                                             desc)
            record = {"metrics": finish_member(ctx, prepared, history, m, loss, pool, tokenizer),
                      "history": [{**h, "member": m} for h in history]}
            if members > 1 and ctx.checkpoint_every and ctx.is_main_process:
                checkpointer.clear()
                write_json(done, record)
            del prepared
        histories += record["history"]
        member_metrics.append(record["metrics"])
    ensemble = rcfg["ensemble"]
    if members > 1 and ctx.is_main_process:
        write_json(ctx.out / ENSEMBLE_FILE, {"members": ["."] + [f"members/{m}" for m in range(1, members)],
                                             "aggregate": ensemble["aggregate"], "uwo_lambda": ensemble["uwo_lambda"]})
    metrics = {k: sum(mm[k] for mm in member_metrics) / members for k in member_metrics[0]}
    metrics.update({"train_examples": len(data), "members": members, "steps": len(histories)})
    if eval_out is not None and ctx.is_main_process:
        rm_eval.STAGE.execute(ctx.config, eval_out, accelerator=ctx.accelerator, rm=ctx.out, labels=labels, pool=pool)
    return StageResult(metrics, histories, {"loss": loss})


STAGE = Stage("reward", run, (
    Argument("--loss", str, "A registered loss (rewardlab.losses)."),
    Argument("--seed", int),
    Argument("--labels", Path, "labels/<noise>/ folder"),
    Argument("--pool", Path, "pool/ folder (SFT samples for normalisation)"),
    Argument("--sft", Path),
    Argument("--eval-out", optional_path, "Also evaluate the trained model here (eval/rm/<run>/): held-out pairs "
             "from --labels, ToyRewardBench and best-of-n from --pool", required=False),
), seed=lambda config, inputs: inputs["seed"], description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
