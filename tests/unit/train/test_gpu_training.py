"""Training on a CUDA GPU: bf16 autocast in use, the out-of-memory retry under a real memory cap, a LoRA run that
learns. Run by bench/gpu/check.sh (`pytest -m gpu`); deselected everywhere else."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
from resume_helpers import SETTINGS, recipe_for, step_losses
from transformers import TrainerCallback

from ayar.data.prepare import prepare
from ayar.train.engine import train

pytestmark = pytest.mark.gpu

GIB = 2**30
# The recipes these tests train (bench/gpu/gpu_check.py validates them on the CPU): the resume tests' tiny
# settings, LoRA, 24 training examples.
GPU_RECIPES = {
    "bf16-auto": [*SETTINGS, "run.name=gpu-bf16", "train.precision=auto", "train.epochs=1"],
    "oom-halve": [*SETTINGS, "run.name=gpu-oom", "train.grad_accum=1", "train.epochs=1", "train.packing=false",
                  "train.on_oom=halve"],
    "lora-learns": [*SETTINGS, "run.name=gpu-learn", "train.precision=bf16", "train.epochs=8", "method.dropout=0.0",
                    "train.learning_rate=0.02", "train.save_steps=100"],
}


@pytest.fixture(scope="module")
def prepared(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Any:
    tmp = tmp_path_factory.mktemp("gpu_data")
    recipe = recipe_for(tmp, tiny_model_dir, "data", settings=GPU_RECIPES["bf16-auto"])
    return prepare(recipe.data, tmp / "data", recipe.run.seed)


@pytest.fixture(scope="module")
def learner_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny model's tokenizer with a 128-wide decoder: room for LoRA to lower the loss within a few steps
    (the 32-wide one's LoRA lowers it by under 0.1 nats in 24 steps)."""
    from ayar.models.load import load_tokenizer
    from ayar.models.scratch import build_model
    from ayar.recipe import ScratchModelConfig

    out = tmp_path_factory.mktemp("learner")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    build_model(ScratchModelConfig(hidden_size=128, num_layers=2, num_heads=2, intermediate_size=256,
                                   context_length=128), tokenizer, seed=0).save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@pytest.fixture
def memory_cap() -> Any:
    """Sets this process's GPU memory cap (bytes); lifts it after the test."""
    total = torch.cuda.get_device_properties(0).total_memory

    def cap(limit: int) -> None:
        torch.cuda.set_per_process_memory_fraction(min(limit / total, 1.0))

    yield cap
    torch.cuda.set_per_process_memory_fraction(1.0)
    torch.cuda.empty_cache()


def run(name: str, model_dir: Path, tmp: Path, prepared: Any, *callbacks: TrainerCallback) -> Any:
    recipe = recipe_for(tmp, model_dir, name, settings=GPU_RECIPES[name])
    return train(recipe, str(model_dir), prepared, recipe.run_dir, extra_callbacks=list(callbacks))


def base_linear(model: torch.nn.Module) -> torch.nn.Linear:
    """A frozen base projection (not an adapter): what autocast must run in bf16."""
    return next(m for n, m in model.named_modules() if n.endswith("q_proj.base_layer"))


class AutocastProbe(TrainerCallback):
    """Records, for every training forward of a base projection, its output dtype and device and whether CUDA
    autocast was on; and the trainer's precision flags and where the weights live."""

    def __init__(self) -> None:
        self.outputs: set[tuple[torch.dtype, str, bool]] = set()
        self.flags: dict[str, Any] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.flags = {"bf16": args.bf16, "fp16": args.fp16, "device": next(model.parameters()).device.type,
                      "trainable_dtypes": {p.dtype for p in model.parameters() if p.requires_grad}}
        self.handle = base_linear(model).register_forward_hook(self.record)

    def record(self, module: torch.nn.Module, inputs: Any, output: torch.Tensor) -> None:
        if module.training:
            self.outputs.add((output.dtype, output.device.type, torch.is_autocast_enabled("cuda")))

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self.handle.remove()


def test_precision_auto_trains_under_bf16_autocast_on_cuda(tiny_model_dir: Path, tmp_path: Path, prepared: Any) -> None:
    assert torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    probe = AutocastProbe()
    result = run("bf16-auto", tiny_model_dir, tmp_path, prepared, probe)
    assert probe.flags == {"bf16": True, "fp16": False, "device": "cuda", "trainable_dtypes": {torch.float32}}
    assert probe.outputs == {(torch.bfloat16, "cuda", True)}  # every training forward multiplied in bf16 on the GPU
    assert result.steps == 3


class Ballast(TrainerCallback):
    """From optimizer step 2 on, each forward takes rows x 1 GiB of GPU memory at its input embeddings (a stand-in
    for activations, which grow with the micro-batch), so a memory cap between 2 and 4 GiB above the model's own
    use runs out at 4 rows and fits 2. Records the rows of every forward and of every one that ran out."""

    def __init__(self) -> None:
        self.armed, self.rows, self.out_of_memory = False, [], []

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.handle = model.get_input_embeddings().register_forward_pre_hook(self.allocate)

    def on_step_begin(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.armed = state.global_step >= 1

    def allocate(self, module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
        if not (module.training and self.armed):
            return
        rows = inputs[0].shape[0]
        try:
            torch.empty(rows * GIB, dtype=torch.uint8, device=inputs[0].device)
        except torch.OutOfMemoryError:
            self.out_of_memory.append(rows)
            raise
        self.rows.append(rows)

    def on_train_end(self, *args: Any, **kwargs: Any) -> None:
        self.handle.remove()


def test_running_out_of_gpu_memory_halves_the_micro_batch(tiny_model_dir: Path, tmp_path: Path, prepared: Any,
                                                          memory_cap: Any, capsys: pytest.CaptureFixture) -> None:
    torch.cuda.empty_cache()
    memory_cap(torch.cuda.memory_reserved() + 3 * GIB)  # the tiny model and its optimizer take a few MB
    ballast = Ballast()
    result = run("oom-halve", tiny_model_dir, tmp_path, prepared, ballast)
    assert ballast.out_of_memory == [4]  # the real allocator ran out once, at micro-batch 4
    assert "retrying with 2 x 2 (effective batch 4 -> 4) from checkpoint-1" in capsys.readouterr().out
    assert ballast.rows and set(ballast.rows) == {2}  # every armed forward after the retry had half the rows
    assert result.steps == 6  # 24 examples, effective batch 4: the whole epoch, none lost to the retry


class AdapterMotion(TrainerCallback):
    """The trainable weights (copied to the CPU) when training begins and ends, and where they trained."""

    def __init__(self) -> None:
        self.before: dict[str, torch.Tensor] = {}
        self.after: dict[str, torch.Tensor] = {}
        self.devices: set[str] = set()

    @staticmethod
    def trainable(model: Any) -> dict[str, torch.Tensor]:
        return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters() if p.requires_grad}

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.before = self.trainable(model)
        self.devices = {p.device.type for p in model.parameters() if p.requires_grad}

    def on_train_end(self, args: Any, state: Any, control: Any, model: Any = None, **kwargs: Any) -> None:
        self.after = self.trainable(model)


def test_lora_learns_on_cuda_and_every_adapter_moves(learner_dir: Path, tmp_path: Path, prepared: Any) -> None:
    motion = AdapterMotion()
    result = run("lora-learns", learner_dir, tmp_path, prepared, motion)
    assert motion.devices == {"cuda"}
    assert motion.before and all("lora_" in n for n in motion.before)
    unmoved = [n for n in motion.before if torch.equal(motion.before[n], motion.after[n])]
    assert unmoved == []
    losses = list(step_losses(result.loss_history).values())
    assert len(losses) == 24 and all(torch.isfinite(torch.tensor(losses)))
    # On the CPU (bf16 autocast) the first three steps average 6.08 and the last three 5.73: steps vary by about
    # 0.1, so a fall of 0.2 nats is learning, not noise
    assert sum(losses[-3:]) / 3 < sum(losses[:3]) / 3 - 0.2
