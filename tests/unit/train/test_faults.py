"""Faults during training: NaN/inf loss and gradient (stop or skip), SIGTERM, out of memory."""

from __future__ import annotations

import signal
from pathlib import Path

import pytest
import torch
from resume_helpers import AtStep, assert_same_weights, recipe_for, send_sigterm, step_losses
from safetensors.torch import load_file
from transformers import TrainerCallback

from ayar.data.prepare import prepare
from ayar.train.engine import train
from ayar.train.faults import EXIT_NON_FINITE, EXIT_STOPPED, NonFiniteError, OutOfMemory, TrainingStopped


@pytest.fixture(scope="module")
def setup(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    tmp = tmp_path_factory.mktemp("faults")
    recipe = recipe_for(tmp, tiny_model_dir, "straight", "method.dropout=0.0")
    prepared = prepare(recipe.data, tmp / "data", recipe.run.seed)
    return {"tmp": tmp, "prepared": prepared, "full": train(recipe, str(tiny_model_dir), prepared, recipe.run_dir)}


def nan_weights(model, args):
    for name, param in model.named_parameters():
        if "lora_A" in name:
            param.data.fill_(float("nan"))


def nan_output(model, args):
    # On the input embeddings: the chunked loss runs the output layer outside the model's forward
    embeddings = model.get_input_embeddings()
    return embeddings.register_forward_hook(lambda module, inp, out: out * float("nan"))


def nan_gradient(model, args):
    param = next(p for n, p in model.named_parameters() if "lora_B" in n)
    return param.register_hook(lambda grad: grad * float("inf"))


def _run(setup: dict, tiny_model_dir: Path, name: str, callback: TrainerCallback, *extra: str):
    recipe = recipe_for(setup["tmp"], tiny_model_dir, name, "method.dropout=0.0", *extra)
    return recipe, lambda resume=False: train(recipe, str(tiny_model_dir), setup["prepared"], recipe.run_dir,
                                              resume=resume, extra_callbacks=[callback])


def _checkpoint_steps(run_dir: Path) -> list[int]:
    return sorted(int(p.name.split("-")[1]) for p in (run_dir / "checkpoints").glob("checkpoint-*"))


@pytest.mark.parametrize(("poison", "what"), [(nan_weights, "loss"), (nan_gradient, "gradient")])
def test_non_finite_stops_at_that_step_without_a_later_checkpoint(setup, tiny_model_dir, poison, what) -> None:
    recipe, run = _run(setup, tiny_model_dir, f"stop-{what}", AtStep(3, poison))
    with pytest.raises(NonFiniteError, match=f"non-finite {what}.* at step 3") as err:
        run()
    assert err.value.exit_code == EXIT_NON_FINITE
    assert _checkpoint_steps(recipe.run_dir) == [1, 2]
    assert not (recipe.run_dir / "model").exists()


def test_skip_drops_bad_batches_and_counts_them(setup, tiny_model_dir) -> None:
    recipe, run = _run(setup, tiny_model_dir, "skip-loss", AtStep(3, nan_output), "train.on_nonfinite=skip")
    result = run()
    assert result.skipped_batches == 2 and result.skipped_steps == 0  # both micro-batches of step 3
    assert result.steps == setup["full"].steps
    assert all(torch.isfinite(t).all() for t in load_file(result.model_dir / "adapter_model.safetensors").values())
    assert all(torch.isfinite(torch.tensor(v)) for v in step_losses(result.loss_history).values())


def test_skip_drops_a_step_with_a_non_finite_gradient(setup, tiny_model_dir) -> None:
    recipe, run = _run(setup, tiny_model_dir, "skip-grad", AtStep(3, nan_gradient), "train.on_nonfinite=skip")
    result = run()
    assert result.skipped_steps == 1
    checkpoints = recipe.run_dir / "checkpoints"
    before = load_file(checkpoints / "checkpoint-2" / "adapter_model.safetensors")
    after = load_file(checkpoints / "checkpoint-3" / "adapter_model.safetensors")
    assert all(torch.equal(before[k], after[k]) for k in before)  # step 3 changed no weight
    last = load_file(result.model_dir / "adapter_model.safetensors")
    assert all(torch.isfinite(t).all() for t in last.values())
    assert any(not torch.equal(before[k], last[k]) for k in before)  # the later steps trained


def test_sigterm_finishes_the_step_checkpoints_and_resume_is_exact(setup, tiny_model_dir) -> None:
    recipe, run = _run(setup, tiny_model_dir, "sigterm", AtStep(2, send_sigterm), "train.save_steps=100")
    with pytest.raises(TrainingStopped, match="stopped by SIGTERM at step 2.*--resume") as err:
        run()
    assert err.value.exit_code == EXIT_STOPPED
    assert _checkpoint_steps(recipe.run_dir) == [2]  # written on the signal, though saves were every 100 steps
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handlers are put back
    resumed = train(recipe, str(tiny_model_dir), setup["prepared"], recipe.run_dir, resume=True)
    full = setup["full"]
    losses, reference = step_losses(resumed.loss_history), step_losses(full.loss_history)
    assert sorted(losses) == list(range(3, full.steps + 1))
    assert all(abs(losses[s] - reference[s]) <= 1e-6 for s in losses)
    assert_same_weights(full.model_dir, resumed.model_dir)


def test_cpu_out_of_memory_is_one_clear_message(setup, tiny_model_dir) -> None:
    def allocate(model, args):
        torch.empty(2**50, dtype=torch.uint8)

    _, run = _run(setup, tiny_model_dir, "cpu-oom", AtStep(2, allocate))
    with pytest.raises(OutOfMemory, match=r"out of memory on the CPU.*1,125,899,906,842,624 bytes.*batch_size 4"):
        run()


def test_accelerator_out_of_memory_halves_the_micro_batch(setup, tiny_model_dir, capsys) -> None:
    def fail_at_batch_4(model, args):
        if args.per_device_train_batch_size == 4:
            raise torch.OutOfMemoryError("CUDA out of memory (simulated)")

    _, run = _run(setup, tiny_model_dir, "oom-halve", AtStep(3, fail_at_batch_4))
    result = run()
    assert "retrying with 2 x 4 (effective batch 8 -> 8) from checkpoint-2" in capsys.readouterr().out
    assert result.steps == setup["full"].steps
    full = load_file(setup["full"].model_dir / "adapter_model.safetensors")
    halved = load_file(result.model_dir / "adapter_model.safetensors")
    for key in full:  # the same examples per step, summed in two halves: equal up to float rounding
        torch.testing.assert_close(full[key], halved[key], rtol=0, atol=1e-5)
