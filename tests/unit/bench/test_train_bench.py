"""The training benchmark's judging: which rows run on this CPU, which peer row the goals judge against."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "bench"))
import train_bench

NATIVE = {"float32": 160.0, "bfloat16": 420.0}
EMULATED = {"float32": 160.0, "bfloat16": 0.7}


def test_bf16_rows_are_left_out_where_the_cpu_emulates_bf16() -> None:
    systems = ["baseline", "baseline-bf16", "trl-bf16", "ayar-pack-bf16", "ayar-default"]
    kept, reason = train_bench.bf16_rows_this_cpu_can_run(systems, EMULATED, chosen=False)
    assert kept == ["baseline", "ayar-default"]
    assert "baseline-bf16" in reason and "no bf16 units" in reason


def test_bf16_rows_run_on_a_cpu_with_bf16_units_or_when_named() -> None:
    systems = ["baseline", "baseline-bf16", "trl-bf16"]
    assert train_bench.bf16_rows_this_cpu_can_run(systems, NATIVE, chosen=False) == (systems, "")
    assert train_bench.bf16_rows_this_cpu_can_run(systems, EMULATED, chosen=True) == (systems, "")


def row(system: str, method: str, tokens_per_s: float, loss: float, rss: float = 1000.0) -> dict[str, Any]:
    return {"model": "m", "method": method, "system": system, "real_tokens_per_s": tokens_per_s,
            "real_tokens_per_cpu_s": tokens_per_s / 2, "eval_loss": loss, "mfu": 0.5, "peak_rss_mb": rss,
            "rss_before_train_mb": 500.0}


def test_goals_judge_ayar_against_the_fastest_peer_row_not_the_baseline() -> None:
    rows = [row("baseline", "lora", 100, 2.0), row("baseline-group", "lora", 150, 2.0),
            row("trl", "lora", 120, 2.0), row("trl-padfree", "lora", 130, 2.0),
            row("ayar-default", "lora", 180, 2.02)]
    (goal,) = train_bench.goals(rows)
    assert goal["best_peer"] == "baseline-group"
    assert goal["speedup_vs_best_peer"] == pytest.approx(1.2)
    assert goal["loss_gap_vs_best_peer"] == pytest.approx(0.01)
    assert goal["speedup_vs_baseline"] == pytest.approx(1.8)
    assert goal["fastest_trl"] == "trl-padfree"
    assert goal["speedup_vs_trl"] == pytest.approx(180 / 130)


def test_memory_goal_compares_lora_with_full_and_what_training_adds() -> None:
    rows = [row("ayar-default", "lora", 180, 2.0, rss=1500), row("ayar-default", "full", 120, 2.0, rss=3000)]
    memory = [g for g in train_bench.goals(rows) if "lora_rss_over_full" in g]
    assert memory[0]["lora_rss_over_full"] == pytest.approx(0.5)
    assert memory[0]["lora_training_rss_over_full"] == pytest.approx(1000 / 2500)


def test_trl_rows_train_without_gradient_checkpointing(tiny_model_dir: Path, tmp_path: Path) -> None:
    """SFTConfig turns checkpointing on by default; the fastest TRL setting, which the bench judges, has it off."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    train = [tokenizer("a short record" + tokenizer.eos_token)["input_ids"]] * 4
    spec = {"batch_size": 2, "max_length": 64}
    common = {"num_train_epochs": 1, "learning_rate": 1e-3, "save_strategy": "no", "report_to": "none",
              "use_cpu": True}
    trainer = train_bench.trl_trainer(model, tokenizer, train, "lora", spec, str(tmp_path), common,
                                      train_bench.PEER_VARIANTS["trl"])
    assert trainer.args.gradient_checkpointing is False
    assert trainer.args.bf16 is False


def test_the_model_shape_peak_counts_each_linear_map_and_judges_the_bf16_goal(tiny_model_dir: Path) -> None:
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir)
    shapes = train_bench.linear_shapes(model)
    layers = model.config.num_hidden_layers
    assert sum(shapes.values()) == 7 * layers + 1  # q, k, v, o, gate, up, down per layer, and the LM head
    assert shapes[(model.config.hidden_size, model.config.intermediate_size)] == 2 * layers  # gate and up
    assert train_bench.model_shape_peak("float32", shapes, tokens=64, seconds=0.2) > 0
    derived = train_bench.derive({"real_tokens": 1000, "wall_s": 1.0, "cpu_s": 2.0, "steps": 1, "slots": 1000,
                                  "matmul_params": 10**6}, "lora", NATIVE, True, {"float32": 100.0, "bfloat16": 8.0})
    assert derived["mfu"] == pytest.approx(4.0 / 420) and derived["mfu_model_shapes"] == pytest.approx(0.5)
    goal = {"model": "smollm2", "method": "full", "mfu": 0.2, "mfu_reference": "bf16", "mfu_model_shapes": 0.36}
    assert "goal >= 35%: met" in train_bench.mfu_goal(goal)
    assert "NOT met" in train_bench.mfu_goal({**goal, "mfu_model_shapes": 0.2})


def test_a_lever_row_undoes_what_prepare_model_did_in_bf16(tiny_model_dir: Path) -> None:
    from peft.tuners.tuners_utils import BaseTunerLayer
    from transformers import AutoModelForCausalLM

    from ayar.methods import build_method
    from ayar.models.load import unwrapped
    from ayar.train.attention import NAME
    from ayar.train.trainer import prepare_model

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="sdpa")
    model = prepare_model(build_method("lora", {"r": 4}), model, "causal_lm", "bf16")
    adapters = [m for m in model.modules() if isinstance(m, BaseTunerLayer)]
    assert unwrapped(model).config._attn_implementation == NAME and not any(a.cast_input_dtype_enabled for a in adapters)
    for lever in ("short_rows_attention", "adapter_input_casts"):
        train_bench.undo_lever(model, lever)
    assert unwrapped(model).config._attn_implementation == "sdpa" and all(a.cast_input_dtype_enabled for a in adapters)
    with pytest.raises(ValueError, match="no lever named"):
        train_bench.undo_lever(model, "warp")
