"""A corpus of bad inputs and faults: each is refused before any training with a message naming the config
key, the file and the row, never a bare traceback, and no earlier result is lost."""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from rewardlab import config as C
from rewardlab import dag
from rewardlab.data import ingest
from rewardlab.data.adapters import read_records
from rewardlab.data.records import BadFile, BadRow
from rewardlab.models.folder import ModelFolderError, check_model_folder
from rewardlab.runtime import NonFiniteLoss
from rewardlab.train import sft
from tests.tiny_hf import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "tests/fixtures/datasets"
SNAKEMAKE = [sys.executable, "-m", "snakemake"]
UF_ROW = {"prompt": "Name a colour.", "chosen": [{"role": "user", "content": "Name a colour."},
                                                 {"role": "assistant", "content": "Blue."}],
          "rejected": [{"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Seven."}],
          "score_chosen": 8.0, "score_rejected": 2.0}


def jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def uf(**changes) -> dict:
    row = json.loads(json.dumps(UF_ROW))
    for key, value in changes.items():
        if key in ("chosen", "rejected"):
            row[key][-1]["content"] = value
        else:
            row[key] = value
    return row


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    return save_tiny_model(tmp_path_factory.mktemp("model") / "gpt2", "gpt2")


# --- files and rows: read_records names the file and the row -----------------------------------------------

def test_truncated_gzip_names_the_file(tmp_path):
    packed = tmp_path / "train.jsonl.gz"
    packed.write_bytes(gzip.compress((FIXTURES / "hh_rlhf.jsonl").read_bytes())[:60])
    with pytest.raises(BadFile, match=r"train.jsonl.gz: a truncated or corrupt gzip file"):
        read_records(packed, "hh_rlhf")


def test_non_utf8_bytes_name_the_row(tmp_path):
    path = tmp_path / "pairs.jsonl"
    path.write_bytes(json.dumps(UF_ROW).encode() + b"\n" + b'{"prompt": "caf\xe9"}\n')
    with pytest.raises(BadRow, match=r"pairs.jsonl: row 2: not UTF-8 text \(byte 0xe9"):
        read_records(path, "ultrafeedback_binarized")


def test_a_parquet_file_that_is_not_parquet_names_the_file(tmp_path):
    path = tmp_path / "train.parquet"
    path.write_text("not parquet at all\n")
    with pytest.raises(BadFile, match=r"train.parquet: not a readable Parquet file"):
        read_records(path, "ultrafeedback_binarized")


def test_a_json_array_cut_short_names_line_and_column(tmp_path):
    path = tmp_path / "batch.json"
    text = json.dumps([UF_ROW, UF_ROW], indent=1)
    path.write_text(text[: len(text) // 2])
    with pytest.raises(BadFile, match=r"batch.json: line \d+, column \d+: not valid JSON .*one complete array"):
        read_records(path, "ultrafeedback_binarized")


def test_an_empty_file_says_so(tmp_path):
    with pytest.raises(BadFile, match=r"empty.jsonl: the file is empty"):
        read_records(jsonl(tmp_path / "empty.jsonl", []), "ultrafeedback_binarized")


@pytest.mark.parametrize(("row", "message"), [
    (uf(score_chosen=float("nan")), r"row 2: score_chosen is nan, not a finite number"),
    (uf(score_rejected=float("inf")), r"row 2: score_rejected is inf, not a finite number"),
    (uf(chosen="  "), r"row 2: the chosen response is empty"),
    (uf(rejected=""), r"row 2: the rejected response is empty"),
    (uf(score_chosen="high"), r"row 2: score_chosen is 'high', not a number"),
])
def test_bad_values_name_the_row_and_field(tmp_path, row, message):
    path = jsonl(tmp_path / "pairs.jsonl", [UF_ROW, row])
    with pytest.raises(BadRow, match=message):
        read_records(path, "ultrafeedback_binarized")
    counts: dict = {}
    from collections import Counter

    counts = Counter()
    kept = read_records(path, "ultrafeedback_binarized", on_bad_row="skip", counts=counts)
    assert len(kept) == 1 and counts["rows_skipped"] == 1  # or dropped and counted


def test_a_negative_shp_score_ratio_says_what_is_wrong(tmp_path):
    row = {"history": "Why?", "human_ref_A": "Because.", "human_ref_B": "No idea.", "labels": 1,
           "score_ratio": -2.0}
    with pytest.raises(BadRow, match=r"row 1: score_ratio is -2.0; it must be positive"):
        read_records(jsonl(tmp_path / "shp.jsonl", [row]), "shp")


# --- "no pairs left" says why ------------------------------------------------------------------------------

def real_config(tmp_path: Path, source: dict, model: Path, **data) -> dict:
    return C.validate({"name": "bad", "progress": False, "data": {"name": "bad", "source": source, **data},
                       "model": {"name_or_path": str(model), "max_length": 160}})


@pytest.mark.parametrize(("rows", "on_bad_row", "reason"), [
    ([uf(score_rejected=8.0)] * 4, "error", "every row is a tie"),
    ([{"chosen": 1}] * 4, "skip", "every row was skipped as bad"),
])
def test_no_pairs_left_gives_the_reason(tmp_path, tiny_model, rows, on_bad_row, reason):
    path = jsonl(tmp_path / "pairs.jsonl", rows)
    cfg = real_config(tmp_path, {"format": "ultrafeedback_binarized", "path": str(path)}, tiny_model,
                      on_bad_row=on_bad_row)
    with pytest.raises(SystemExit, match=f"0 training and 0 held-out pairs are left: {reason}"):
        ingest.STAGE.execute(cfg, tmp_path / "out")
    assert not (tmp_path / "out/metrics.json").exists()


# --- model folders: one line naming the key ---------------------------------------------------------------

def broken_copy(model: Path, tmp_path: Path, fix) -> Path:
    folder = tmp_path / "broken"
    shutil.copytree(model, folder)
    fix(folder)
    return folder


def drop_weights(folder: Path) -> None:
    (folder / "model.safetensors").unlink()


def pickle_weights(folder: Path) -> None:
    from safetensors.torch import load_file

    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    drop_weights(folder)


def remote_code(folder: Path) -> None:
    config = json.loads((folder / "config.json").read_text())
    config["auto_map"] = {"AutoModelForCausalLM": "modeling_evil.EvilForCausalLM"}
    (folder / "config.json").write_text(json.dumps(config))


def no_tokenizer(folder: Path) -> None:
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)


def truncated_weights(folder: Path) -> None:
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])


@pytest.mark.parametrize(("fix", "message"), [
    (drop_weights, "holds no weights"),
    (pickle_weights, r"holds pickle weights only \(pytorch_model.bin\)"),
    (remote_code, r"needs its own Python code \(auto_map"),
    (no_tokenizer, "has no tokenizer files"),
    (truncated_weights, "is not a complete safetensors file"),
])
def test_a_bad_model_folder_is_refused_naming_the_key(tmp_path, tiny_model, fix, message):
    folder = broken_copy(tiny_model, tmp_path, fix)
    with pytest.raises(ModelFolderError, match=f"model.name_or_path: .*{message}"):
        check_model_folder(folder, "model.name_or_path")
    source = {"format": "hh_rlhf", "path": str(FIXTURES / "hh_rlhf.jsonl")}
    cfg = real_config(tmp_path, source, folder)
    with pytest.raises(C.ConfigError, match=f"model.name_or_path: .*{message}"):  # the Snakefile's parse-time check
        dag.check_inputs(cfg, tmp_path)
    with pytest.raises(SystemExit, match=message):  # and the stage's own, before anything loads
        ingest.STAGE.execute(cfg, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_remote_code_is_allowed_when_the_user_turns_it_on(tmp_path, tiny_model):
    folder = broken_copy(tiny_model, tmp_path, remote_code)
    assert check_model_folder(folder, "model.name_or_path", trust_remote_code=True) == folder


# --- config: names and YAML -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["..", ".", "a/b", "../results", "-x", ".hidden"])
def test_experiment_and_data_names_cannot_leave_their_folders(name):
    with pytest.raises(C.ConfigError, match=r"^invalid configuration:\n  name: "):
        C.validate({"name": name})
    with pytest.raises(C.ConfigError, match=r"data.name: "):
        C.validate({"data": {"name": name}})


def test_validate_prints_yaml_errors_with_file_and_line(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\npolicy:\n  steps: [1\nreward: {}\n")
    proc = subprocess.run([sys.executable, "-m", "rewardlab.cli", "validate", str(bad)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 2
    assert f"{bad}: line 4, column 7: not valid YAML" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- training: a non-finite loss stops the run, naming the step --------------------------------------------

def test_a_non_finite_loss_stops_training_without_metrics(tiny_pipeline, tmp_path, monkeypatch):
    cfg, data = tiny_pipeline["config"], tiny_pipeline["data"]
    real = torch.nn.functional.cross_entropy
    calls = {"n": 0}

    def nan_at_step_3(*args, **kwargs):
        calls["n"] += 1
        loss = real(*args, **kwargs)
        return loss * float("nan") if calls["n"] == 3 else loss

    monkeypatch.setattr(torch.nn.functional, "cross_entropy", nan_at_step_3)
    with pytest.raises(NonFiniteLoss, match=r"sft: the loss is nan at step 3; stopped without writing metrics.json"):
        sft.STAGE.execute(cfg, tmp_path / "out", data=data)
    assert not (tmp_path / "out/metrics.json").exists()


# --- no result lost: the Snakefile refuses before Snakemake removes earlier outputs ---------------------------

def workdir(tmp_path: Path) -> Path:
    for name in ("Snakefile", "workflow", "config"):
        src = ROOT / name
        (shutil.copytree if src.is_dir() else shutil.copy)(src, tmp_path / name)
    (tmp_path / "profiles").symlink_to("workflow/profiles")
    return tmp_path


def run_snakemake(work: Path, experiment: dict, target: str) -> subprocess.CompletedProcess:
    (work / "exp.yaml").write_text(yaml.safe_dump(experiment))
    return subprocess.run([*SNAKEMAKE, target, "--cores", "2", "--configfile", "exp.yaml"], cwd=work,
                          capture_output=True, text=True, timeout=600)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_processed_data_made_with_other_settings_is_never_overwritten(tmp_path):
    work = workdir(tmp_path)
    small = {"name": "a", "progress": False, "data": {"name": "shared", "num_sft_train": 300, "num_sft_valid": 20,
                                                       "num_prompts_train": 64, "num_prompts_test": 16},
             "labels": {"num_prompts": 64}}
    target = "data/processed/shared/metrics.json"
    assert run_snakemake(work, small, target).returncode == 0
    before = snapshot(work / "data/processed/shared")
    other = {**small, "name": "b", "data": {**small["data"], "num_sft_train": 200}}
    proc = run_snakemake(work, other, target)
    assert proc.returncode != 0
    assert ("data.name: data/processed/shared/ holds data made with other settings (data.num_sft_train: 300 there, "
            "200 here)") in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert snapshot(work / "data/processed/shared") == before


def test_a_bad_source_after_a_good_one_keeps_the_good_output(tmp_path, tiny_model):
    """The same data.source path, its content now corrupt: Snakemake would rerun preprocess and remove its
    outputs first; the Snakefile reads the rows at parse time and refuses before that."""
    work = workdir(tmp_path)
    source = work / "pairs.jsonl"
    shutil.copy(FIXTURES / "ultrafeedback_binarized.jsonl", source)
    experiment = {"name": "real", "progress": False,
                  "data": {"name": "real", "source": {"format": "ultrafeedback_binarized", "path": "pairs.jsonl",
                                                      "test_fraction": 0.3}},
                  "model": {"name_or_path": str(tiny_model), "max_length": 160}}
    target = "data/processed/real/metrics.json"
    proc = run_snakemake(work, experiment, target)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = snapshot(work / "data/processed/real")
    rows = source.read_text().splitlines()
    bad = json.loads(rows[1])
    bad["score_chosen"] = float("nan")
    source.write_text("\n".join([rows[0], json.dumps(bad), *rows[2:]]) + "\n")
    proc = run_snakemake(work, experiment, target)
    assert proc.returncode != 0
    assert "data.source.path: pairs.jsonl: row 2: score_chosen is nan, not a finite number" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert snapshot(work / "data/processed/real") == before
