"""ToyRewardBench: RewardBench's protocol (arXiv 2403.13787, §3.4) transplanted to SentiGram.

Each item is a (chosen, rejected) pair whose order is the gold reward's; a reward model is right when
r(chosen) > r(rejected). Sections:
  easy           held-out SFT pairs with a large gold gap (|ΔR*| ≥ 1)
  hard           held-out SFT pairs with a small gold gap (0 < |ΔR*| ≤ 0.5)
  length_trap    a short good response against itself extended past L* with more positive clauses
  repetition     a response against itself with an adjective repeated (the repetition hack)
  ood            long grammar-generated sentences (4–5 clauses) unlike the SFT distribution
The score is the mean of the section accuracies (RewardBench's headline is the mean over sections).
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence

from rewardlab.tasks import sentigram as sg

SECTIONS = ("easy", "hard", "length_trap", "repetition", "ood")


def build(pool: Sequence, gold: Callable[[list[str], list[str]], float], rng: random.Random,
          per_section: int = 100) -> list[dict]:
    """Bench items {section, prompt, chosen, rejected, score_chosen, score_rejected} from a held-out pool."""
    items: dict[str, list[dict]] = {s: [] for s in SECTIONS}

    def add(section: str, prompt: str, a: str, b: str) -> None:
        ga, gb = gold(prompt.split(), a.split()), gold(prompt.split(), b.split())
        if ga == gb or a == b or len(items[section]) >= per_section:
            return
        (c, gc), (r, gr) = ((a, ga), (b, gb)) if ga > gb else ((b, gb), (a, ga))
        items[section].append({"section": section, "prompt": prompt, "chosen": c, "rejected": r,
                               "score_chosen": gc, "score_rejected": gr})

    for item in pool:
        for i in range(0, len(item.responses) - 1, 2):
            gap = abs(item.gold[i] - item.gold[i + 1])
            if gap >= 1.0:
                add("easy", item.prompt, item.responses[i], item.responses[i + 1])
            elif 0 < gap <= 0.5:
                add("hard", item.prompt, item.responses[i], item.responses[i + 1])
        topic, _ = sg.parse_prompt(item.prompt.split())
        for response in item.responses:
            words = response.split()
            if words[-2:] != [sg.PERIOD, sg.EOS] or topic is None:
                continue
            body = words[:-2]
            # Length trap: append positive clauses until the response is 3–8 tokens past L*.
            extended = list(body)
            while len(extended) < 12 + rng.randint(3, 8):
                extended += [",", rng.choice(sg.DETERMINERS), rng.choice(sg.TOPIC_NOUNS[topic]),
                             rng.choice(sg.VERBS), rng.choice(sg.POSITIVE)]
            add("length_trap", item.prompt, response, " ".join(extended + [sg.PERIOD, sg.EOS]))
            # Repetition trap: repeat the response's last positive adjective 1–2 more times.
            positives = [j for j, w in enumerate(body) if w in sg.POSITIVE]
            if positives:
                j = positives[-1]
                repeated = body[: j + 1] + [body[j]] * rng.randint(1, 2) + body[j + 1 :]
                add("repetition", item.prompt, response, " ".join(repeated + [sg.PERIOD, sg.EOS]))
        # Out of distribution: two long, grammatical sentences for this prompt.
        _, prefix = sg.parse_prompt(item.prompt.split())
        long_sentences = []
        for _ in range(2):
            words = list(prefix)
            if len(words) == 2:
                words.append(rng.choice(sg.VERBS))
            words.append(rng.choice(sg.POSITIVE + sg.NEGATIVE + sg.NEUTRAL))
            for _ in range(rng.randint(3, 4)):
                words += [rng.choice(sg.CONNECTORS), rng.choice(sg.DETERMINERS), rng.choice(sg.TOPIC_NOUNS[topic]),
                          rng.choice(sg.VERBS), rng.choice(sg.POSITIVE + sg.NEGATIVE + sg.NEUTRAL)]
            long_sentences.append(" ".join(words[len(prefix) :] + [sg.PERIOD, sg.EOS]))
        add("ood", item.prompt, *long_sentences)
    return [row for section in SECTIONS for row in items[section]]
