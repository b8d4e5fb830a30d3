"""A local Hugging Face model folder, checked before anything loads it: the config, weights as safetensors
(complete files), tokenizer files, and no remote code unless the user allowed it. Each refusal is one line
naming the config key the folder came from (``model.name_or_path``, ``evaluate.gold_model``)."""

from __future__ import annotations

import json
from pathlib import Path

TOKENIZER_FILES = ("tokenizer.json", "vocab.json", "vocab.txt", "tokenizer.model", "spiece.model")
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


class ModelFolderError(SystemExit):
    """A model folder that cannot be used; exits with its one-line message."""


def check_model_folder(path: str | Path, key: str, trust_remote_code: bool = False, tokenizer: bool = True) -> Path:
    folder = Path(path)
    config_file = folder / "config.json"
    if not config_file.is_file():
        raise ModelFolderError(f"{key}: {folder} is not a local Hugging Face model folder (no config.json); place "
                               "the weights there (nothing is downloaded)")
    try:
        config = json.loads(config_file.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ModelFolderError(f"{key}: {config_file} is not valid JSON ({err})") from None
    if not isinstance(config, dict):
        raise ModelFolderError(f"{key}: {config_file} is not a JSON object")
    if config.get("auto_map") and not trust_remote_code:
        raise ModelFolderError(f"{key}: {folder} needs its own Python code (auto_map in config.json); set "
                               "model.trust_remote_code: true only if you trust that code")
    _check_weights(folder, key)
    if tokenizer and not any((folder / name).is_file() for name in TOKENIZER_FILES):
        raise ModelFolderError(f"{key}: {folder} has no tokenizer files (one of {', '.join(TOKENIZER_FILES)})")
    return folder


def _check_weights(folder: Path, key: str) -> None:
    from safetensors import safe_open

    weights = sorted(folder.glob("*.safetensors"))
    if not weights:
        pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise ModelFolderError(
                f"{key}: {folder} holds pickle weights only ({', '.join(pickles)}); rewardlab loads safetensors, "
                "which cannot run code — convert them with save_pretrained(..., safe_serialization=True)")
        raise ModelFolderError(f"{key}: {folder} holds no weights (model.safetensors)")
    for file in weights:
        try:
            with safe_open(str(file), framework="pt") as handle:
                names = list(handle.keys())
                if names:
                    handle.get_slice(names[-1])
        except Exception as err:  # safetensors raises its own SafetensorError for a truncated or corrupt file
            raise ModelFolderError(f"{key}: {file} is not a complete safetensors file ({err})") from None
