"""Stage `policy` for the offline baselines: DPO, IPO and cDPO (``rewardlab.rl.offline``) on the preference pairs.

The policy starts from SFT and is trained directly on labels/<noise>/pairs_train.jsonl (the same pairs the
reward models see), with the SFT policy as the frozen reference, on the shared supervised loop. Log-probabilities
are taken at temperature 1 over response tokens only. Outputs: the policy folder, history.csv (loss, accuracy of
the implicit reward, chosen/rejected implicit rewards), metrics.json, run.json.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from transformers import AutoTokenizer

from rewardlab.data.formats import chat_renderer, read_pairs
from rewardlab.models.build import load_policy
from rewardlab.models.tokenizer import encode_prompt_responses
from rewardlab.rl.offline import OFFLINE, LogRatios
from rewardlab.runinfo import read_jsonl
from rewardlab.runner import Argument, Stage, StageContext, StageResult
from rewardlab.runtime import save_model_folder
from rewardlab.tensors import pad_right
from rewardlab.train.supervised import Schedule, tail_means, train_supervised

METRICS = ("loss", "accuracy", "reward_chosen", "reward_rejected")


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


@torch.no_grad()
def reference_logps(ctx: StageContext, reference, chosen, rejected, prompt_len, pad_id,
                    batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """The reference's log-probs of every pair, once, under the policy's autocast (bf16 on a GPU), so that
    π = π_ref gives log-ratios of 0, not rounding noise."""
    ref_c, ref_r = [], []
    with ctx.accelerator.autocast():
        for i in range(0, len(chosen), batch_size):
            sl = slice(i, i + batch_size)
            ref_c.append(sequence_logps(reference, chosen[sl], prompt_len[sl], pad_id, ctx.device)[0])
            ref_r.append(sequence_logps(reference, rejected[sl], prompt_len[sl], pad_id, ctx.device)[0])
    return torch.cat(ref_c), torch.cat(ref_r)


def run(ctx: StageContext, algorithm: str, seed: int, labels: Path, sft: Path) -> StageResult:
    dcfg, device = ctx.config["policy"]["dpo"], ctx.device
    objective = OFFLINE.get(algorithm)
    tokenizer = AutoTokenizer.from_pretrained(sft)
    pad_id = tokenizer.pad_token_id
    pairs = read_pairs(read_jsonl(labels / "pairs_train.jsonl"), "pairs_train.jsonl", chat_renderer(tokenizer))
    prompts = [p["prompt"] for p in pairs]
    chosen = encode_prompt_responses(tokenizer, prompts, [p["chosen"] for p in pairs])
    rejected = encode_prompt_responses(tokenizer, prompts, [p["rejected"] for p in pairs])
    prompt_len = [len(x) for x in tokenizer(prompts, add_special_tokens=False)["input_ids"]]
    policy = load_policy(sft)
    reference = load_policy(sft).to(device).eval()
    ref_c, ref_r = reference_logps(ctx, reference, chosen, rejected, prompt_len, pad_id)
    beta = dcfg["beta"]

    def step(model: torch.nn.Module, idx: list[int]) -> tuple[torch.Tensor, dict[str, float]]:
        n = len(idx)
        logps, lengths = sequence_logps(model, [chosen[j] for j in idx] + [rejected[j] for j in idx],
                                        [prompt_len[j] for j in idx] * 2, pad_id, device)
        ratios = LogRatios(logps[:n] - ref_c[idx].to(device), logps[n:] - ref_r[idx].to(device), lengths[:n],
                           lengths[n:])
        return objective(ratios, dcfg), {"accuracy": (ratios.chosen > ratios.rejected).float().mean().item(),
                                         "reward_chosen": beta * ratios.chosen.mean().item(),
                                         "reward_rejected": beta * ratios.rejected.mean().item()}

    schedule = Schedule(len(pairs), dcfg["batch_size"], dcfg["epochs"], seed, dcfg["lr"], dcfg["weight_decay"],
                        dcfg["warmup_ratio"])
    policy, history = train_supervised(ctx, policy, schedule, step, f"policy[{algorithm}]",
                                       ctx.checkpointer(algorithm, seed))
    save_model_folder(ctx.accelerator, policy, tokenizer, ctx.out)
    metrics = {f"train_{k}": v for k, v in tail_means(history, METRICS).items()}
    metrics.update(steps=len(history), pairs=len(pairs))
    return StageResult(metrics, history, {"algorithm": algorithm, "ipo_log_ratio": "length-normalised (TRL)"})


STAGE = Stage("dpo", run, (
    Argument("--algorithm", str, "A registered offline objective (rewardlab.rl.offline)."),
    Argument("--seed", int),
    Argument("--labels", Path),
    Argument("--sft", Path),
), seed=lambda config, inputs: inputs["seed"], description=__doc__.splitlines()[0])

if __name__ == "__main__":
    STAGE.main()
