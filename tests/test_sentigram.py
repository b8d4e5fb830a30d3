"""The SentiGram gold reward and generator (rlhf-reference.md §4.2), checked against hand computation."""

import random

import pytest

from rewardlab.tasks import sentigram as sg

PROMPT = "<bos> topic: movie <sep> the plot".split()


def gold(response: str, prompt=PROMPT, **cfg) -> float:
    return sg.gold_reward(prompt, response.split(), sg.GoldConfig(**cfg))


def test_credits_sum_to_the_gold_reward_and_align_with_tokens():
    response = "was very great , and the acting felt great great . <eos>".split()
    credits = sg.gold_credits(PROMPT, response)
    assert len(credits) == len(response)
    assert sum(credits) == pytest.approx(sg.gold_reward(PROMPT, response))


def test_hand_computed_credits():
    # was(0) very(0) great(+1.5: first positive, intensified) ,(0) the(0) acting(0) seemed(0)
    # superb(+1/2: second distinct positive) .(0) <eos>(+0.5 proper ending, T = 9 ≤ 12)
    response = "was very great , the acting seemed superb . <eos>".split()
    assert sg.gold_credits(PROMPT, response) == pytest.approx([0, 0, 1.5, 0, 0, 0, 0, 0.5, 0, 0.5])


def test_negative_adjectives_have_diminishing_penalties():
    assert gold("was bad , the cast was awful . <eos>") == pytest.approx(-1 - 0.5 + 0.5)


def test_repetition_hack_lowers_gold():
    clean = gold("was great . <eos>")
    repeated = gold("was great great great . <eos>")
    assert clean == pytest.approx(1.5)
    assert repeated == pytest.approx(clean - 2 * 0.5)
    assert repeated < clean


def test_length_hack_lowers_gold():
    short = "was great , the cast was superb . <eos>"
    long = ("was great , the cast was superb , the acting was fine , the ending was okay ,"
            " the plot was simple . <eos>")
    n_before_eos = len(long.split()) - 1
    assert n_before_eos > 12
    assert gold(long) == pytest.approx(gold(short) - 0.5 * (n_before_eos - 12))
    assert gold(long) < gold(short)


def test_non_termination_hack_lowers_gold():
    ended = gold("was great . <eos>")
    unended = gold("was great .")
    assert unended == pytest.approx(ended - 0.5 - 1.0)
    rambling = gold("was great . the the the")  # keeps generating instead of stopping
    assert rambling < unended


def test_off_topic_noun_costs_one():
    on_topic = gold("was great , the cast was fine . <eos>")
    off_topic = gold("was great , the dessert was fine . <eos>")
    assert off_topic == pytest.approx(on_topic - 1.0)


def test_grammar_automaton_rejects_and_resynchronises():
    # "the plot was great the cast ." : the second DET after an adjective needs a connector → one error
    with_connector = gold("was great , the cast was fine . <eos>")
    assert gold("was great the cast was fine . <eos>") == pytest.approx(with_connector - 1)
    # A token after "." is an error; the ending bonus needs "." right before <eos>.
    assert gold("was great . great <eos>") == pytest.approx(1.0 - 1.0 - 0.5 + 0.0)


def test_empty_response_pays_missing_eos():
    assert sg.gold_credits(PROMPT, []) == [-1.0]


def test_generator_is_deterministic_and_mostly_grammatical():
    docs_a = [sg.sample_document(random.Random(7)) for _ in range(3)]
    docs_b = [sg.sample_document(random.Random(7)) for _ in range(3)]
    assert docs_a == docs_b
    rng = random.Random(0)
    errors = 0
    n = 2000
    for _ in range(n):
        prompt, completion = sg.sample_document(rng)
        assert completion[-1] == sg.EOS
        credits = sg.gold_credits(prompt, completion, sg.GoldConfig(length_penalty=0.0))
        # A clean sentence has no negative credit except negative adjectives; count grammar/topic errors.
        tokens = prompt[4:] + completion[:-1]
        state = sg._SentenceState(adjectives_seen=set())
        for t in tokens:
            before = state.fsa
            sg._token_credit(t, state, prompt[2], sg.GoldConfig())
            if (before, sg.category(t)) not in sg._TRANSITIONS:
                errors += 1
                break
        assert len(credits) == len(completion)
    # Planted deviations: ~3 % insertions/deletions (+ repeated adjectives parse as grammatical).
    assert 0.005 < errors / n < 0.06


def test_prompts_are_clean_and_parse():
    rng = random.Random(1)
    for _ in range(100):
        prompt = sg.sample_prompt(rng)
        topic, prefix = sg.parse_prompt(prompt)
        assert topic in sg.TOPICS
        assert 2 <= len(prefix) <= 3
        assert all(sg.NOUN_TOPIC.get(w, topic) == topic for w in prefix)


def test_components_sum_to_gold():
    response = "was very great great , the dessert felt bad the . <eos>".split()
    parts = sg.gold_components(PROMPT, response)
    assert sum(parts.values()) == pytest.approx(sg.gold_reward(PROMPT, response))
    # great ×1.5, repeat −0.5, bad −1 ; dessert off-topic −1 ; "the" before "." rejected −1, "." after DET −1
    assert parts["sentiment"] == pytest.approx(1.5 - 0.5 - 1.0)
    assert parts["topicality"] == pytest.approx(-1.0)
    assert parts["ending"] == pytest.approx(0.5)


def test_a_quarter_of_the_openings_is_held_out_per_topic():
    assert len(sg.HELD_OUT_OPENINGS) == 5 * len(sg.TOPICS)
    for topic in sg.TOPICS:
        assert sum(o[0] == topic for o in sg.HELD_OUT_OPENINGS) == 5
    rng = random.Random(3)
    assert all(sg.is_held_out(sg.sample_prompt(rng, held_out=True)) for _ in range(200))
    assert not any(sg.is_held_out(sg.sample_prompt(rng, held_out=False)) for _ in range(200))
    assert not any(sg.is_held_out(sum(sg.sample_document(rng), [])) for _ in range(500))


@pytest.mark.parametrize("experiment", ["config/config.yaml", "config/experiments/quick.yaml"])
def test_test_prompts_never_occur_in_training_prompts_or_sft_documents(experiment, tmp_path):
    """Held out by construction: no test prompt is a training prompt (so none is in the label pool, which is
    drawn from the training prompts), and no SFT document starts with one."""
    from pathlib import Path

    from rewardlab import config as C
    from rewardlab.data import preprocess
    from rewardlab.runinfo import read_jsonl

    root = Path(__file__).resolve().parents[1]
    files = [root / "config/config.yaml"] + ([root / experiment] if experiment != "config/config.yaml" else [])
    cfg = C.load(*files)
    cfg["progress"] = False
    preprocess.STAGE.execute(cfg, tmp_path)
    test = {r["prompt"] for r in read_jsonl(tmp_path / "prompts_test.jsonl")}
    train = {r["prompt"] for r in read_jsonl(tmp_path / "prompts_train.jsonl")}
    assert test and train and not test & train
    documents = [f"{r['prompt']} {r['completion']}" for name in ("sft_train", "sft_valid")
                 for r in read_jsonl(tmp_path / f"{name}.jsonl")]
    opening = {" ".join(p.split()[:6]) for p in test}  # every test prompt starts with its held-out opening
    assert not any(" ".join(d.split()[:6]) in opening for d in documents)
    assert len(test) >= 50  # enough distinct held-out prompts to evaluate on
