"""The CLI end to end on a tiny recipe: the run folder contract, exit codes, and portable adapters."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
TINY = [
    "--set", "pretrain.max_steps=4", "--set", "pretrain.batch_size=4",
    "--set", "pretrain.model.hidden_size=32", "--set", "pretrain.model.num_layers=1",
    "--set", "pretrain.model.intermediate_size=64", "--set", "pretrain.tokenizer.vocab_size=512",
    "--set", "data.synthetic.num_records=120", "--set", "train.max_steps=5",
    "--set", "eval.max_examples=8", "--set", "eval.max_new_tokens=4",
]


def ayar(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "AYAR_NO_PROGRESS": "1"}
    return subprocess.run([sys.executable, "-m", "ayar.cli", *args], cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("cli")
    result = ayar("run", str(ROOT / "recipes/from-scratch.yaml"), "--set", "run.name=smoke",
                  "--set", f"run.output_dir={work / 'runs'}", *TINY, cwd=work)
    assert result.returncode == 0, result.stderr[-3000:]
    return work / "runs" / "smoke"


def test_run_writes_the_run_folder_contract(smoke_run: Path) -> None:
    for name in ("recipe.yaml", "metrics.json", "loss_curve.png", "samples.jsonl", "report.md",
                 "model/adapter_model.safetensors", "model/adapter_config.json", "model/tokenizer.json",
                 "pretrain/model/model.safetensors", "data/train.jsonl", "data/test.jsonl"):
        assert (smoke_run / name).is_file(), name
    assert list((smoke_run / "tb").glob("events.out.tfevents.*"))
    assert not list(smoke_run.rglob("*.bin")) and not list(smoke_run.rglob("*.pt"))
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert metrics["train"]["steps"] == 5
    assert metrics["train"]["tokens_seen"] > 0
    assert metrics["train"]["packed"] is True  # train.packing: auto packs a plain causal LM's LoRA run
    for block in ("base", "tuned"):
        assert 0.0 <= metrics["eval"][block]["exact_match"] <= 1.0
        assert metrics["eval"][block]["perplexity"] > 1.0
    assert "train.max_steps: 5" not in (smoke_run / "recipe.yaml").read_text()  # nested YAML, resolved
    assert "max_steps: 5" in (smoke_run / "recipe.yaml").read_text()


def test_adapter_loads_with_plain_peft_and_keeps_the_template(smoke_run: Path) -> None:
    script = f"""
import sys
from peft import PeftModel
from transformers import AutoModelForCausalLM, AutoTokenizer
base = AutoModelForCausalLM.from_pretrained({str(smoke_run / 'pretrain/model')!r})
model = PeftModel.from_pretrained(base, {str(smoke_run / 'model')!r})
tok = AutoTokenizer.from_pretrained({str(smoke_run / 'model')!r})
ids = tok.apply_chat_template([{{"role": "user", "content": "2 + 3"}}], add_generation_prompt=True,
                              return_tensors="pt", return_dict=True)
out = model.generate(**ids, max_new_tokens=3, do_sample=False)
assert out.shape[1] > ids["input_ids"].shape[1]
assert "ayar" not in sys.modules
print(tok.chat_template)
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    from ayar.data.templates import ALPACA

    assert result.stdout.strip() == ALPACA.strip()


def test_misspelled_key_exits_2_with_one_line(tmp_path: Path) -> None:
    result = ayar("run", str(ROOT / "recipes/quickstart.yaml"), "--set", "train.learnig_rate=1", cwd=tmp_path)
    assert result.returncode == 2
    assert "train.learnig_rate" in result.stderr and "train.learning_rate" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_misspelled_method_key_exits_2_before_any_stage(tmp_path: Path) -> None:
    """The recipe schema cannot know a method's keys; the CLI checks them (ayar.methods.check_method) on load."""
    result = ayar("run", str(ROOT / "recipes/quickstart.yaml"), "--set", "method.alpah=4", cwd=tmp_path)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "unknown recipe key 'method.alpah' (did you mean 'method.alpha'?)" in result.stderr
    assert not (tmp_path / "runs").exists()  # no stage ran


def test_missing_recipe_and_missing_stage_inputs(tmp_path: Path) -> None:
    missing = ayar("train", "nope.yaml", cwd=tmp_path)
    assert missing.returncode == 2 and "recipe file not found: nope.yaml" in missing.stderr
    no_data = ayar("eval", str(ROOT / "recipes/quickstart.yaml"), "--set", f"run.output_dir={tmp_path}",
                   cwd=tmp_path)
    assert no_data.returncode == 2 and "run `ayar train` first" in no_data.stderr
    assert "Traceback" not in missing.stderr + no_data.stderr


def test_help_lists_subcommands_and_methods(tmp_path: Path) -> None:
    top = ayar("--help", cwd=tmp_path)
    for command in ("pretrain", "prepare", "train", "eval", "generate", "export", "run"):
        assert command in top.stdout
    train_help = ayar("train", "--help", cwd=tmp_path)
    assert "lora" in train_help.stdout and "full" in train_help.stdout
