"""Which label shape each reward-model loss consumes, importable without torch (the Snakefile reads it).

``rewardlab.losses.REGISTRY`` takes its shapes from here; a test keeps the two and the config schema in step.
"""

LABEL_FILES = {"pairs": "pairs_train.jsonl", "rankings": "rankings_train.jsonl", "ratings": "ratings_train.jsonl"}

LOSS_SHAPES = {
    "bt": "pairs",
    "bt_margin": "pairs",
    "kwise_allpairs": "rankings",
    "plackett_luce": "rankings",
    "best_of_k": "rankings",
    "hinge": "pairs",
    "mse_rating": "ratings",
    "mse_multiattr": "ratings",
    "focal": "pairs",
    "label_smoothing": "pairs",
    "robust_bt": "pairs",
    "bt_centered": "pairs",
    "classification": "pairs",
    "triplet_aux": "pairs",
}


def label_file(loss: str) -> str:
    return LABEL_FILES[LOSS_SHAPES[loss]]
