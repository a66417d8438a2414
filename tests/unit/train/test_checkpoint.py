"""Atomic checkpoints: pickle-free state round trips, incomplete ones skipped, only rank 0 writes, SIGKILL-safe."""

from __future__ import annotations

import multiprocessing
import random
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from resume_helpers import plant, recipe_for
from transformers import TrainerCallback

from ayar.data.prepare import prepare
from ayar.safety import UnsafeFileError
from ayar.train import checkpoint as ckpt
from ayar.train.engine import train


def test_optimizer_scheduler_and_rng_states_round_trip_without_pickle(tmp_path: Path) -> None:
    model = torch.nn.Linear(4, 3)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.1, betas=(0.8, 0.95))
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0 / (step + 1))
    model(torch.randn(2, 4)).sum().backward()
    optimizer.step()
    scheduler.step()
    ckpt.save_state(tmp_path, "optimizer", optimizer.state_dict())
    ckpt.save_state(tmp_path, "scheduler", scheduler.state_dict())
    random.seed(1), np.random.seed(2), torch.manual_seed(3)
    ckpt.save_state(tmp_path, "rng", ckpt.capture_rng())
    expected = (random.random(), np.random.rand(), torch.rand(1).item())

    assert sorted(p.suffix for p in tmp_path.iterdir()) == [".json", ".json", ".json", ".safetensors", ".safetensors"]
    loaded = ckpt.load_state(tmp_path, "optimizer")
    assert loaded["param_groups"][0]["betas"] == (0.8, 0.95)  # tuples stay tuples
    fresh = torch.optim.AdamW(model.parameters(), lr=0.1)
    fresh.load_state_dict(loaded)
    for key, state in optimizer.state_dict()["state"].items():
        for name, value in state.items():
            assert torch.equal(fresh.state_dict()["state"][key][name], value)
    assert ckpt.load_state(tmp_path, "scheduler") == scheduler.state_dict()
    random.seed(9), np.random.seed(9), torch.manual_seed(9)
    ckpt.restore_rng(ckpt.load_state(tmp_path, "rng"))
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def _write(parent: Path, step: int, payload: bytes = b"x" * 100) -> Path:
    return ckpt.write_checkpoint(parent, step, lambda folder: (folder / "weights.bin.json").write_bytes(payload))


def test_incomplete_checkpoints_are_skipped_and_temporaries_removed(tmp_path: Path) -> None:
    _write(tmp_path, 1)
    _write(tmp_path, 2)
    assert ckpt.find_resumable(tmp_path, warn=lambda _: None) == tmp_path / "checkpoint-2"
    newest = _write(tmp_path, 3)
    (newest / "weights.bin.json").write_bytes(b"x" * 50)  # truncated after the fact
    (tmp_path / "checkpoint-4").mkdir()  # a folder without a manifest
    (tmp_path / ".tmp-checkpoint-5-123").mkdir()  # a write that never finished
    warnings: list[str] = []
    assert ckpt.find_resumable(tmp_path, warn=warnings.append).name == "checkpoint-2"
    assert any("checkpoint-4: no manifest" in w for w in warnings)
    assert any("checkpoint-3: weights.bin.json has 50 bytes" in w for w in warnings)
    assert not (tmp_path / ".tmp-checkpoint-5-123").exists()


def test_only_the_main_process_writes_and_every_process_waits(tmp_path: Path) -> None:
    waited = []
    path = ckpt.write_checkpoint(tmp_path, 7, lambda folder: (folder / "a.json").write_text("{}"),
                                 is_main=False, barrier=lambda: waited.append("other"))
    assert waited == ["other"] and not path.exists() and not any(tmp_path.iterdir())
    ckpt.write_checkpoint(tmp_path, 7, lambda folder: (folder / "a.json").write_text("{}"),
                          barrier=lambda: waited.append("main"))
    assert waited == ["other", "main"] and ckpt.verify(tmp_path / "checkpoint-7") is None


def test_rotation_keeps_the_newest_and_the_best(tmp_path: Path) -> None:
    for step in range(1, 6):
        _write(tmp_path, step)
    ckpt.rotate(tmp_path, keep=2, protect=str(tmp_path / "checkpoint-1"))
    assert sorted(p.name for p in tmp_path.iterdir() if p.is_dir()) == ["checkpoint-1", "checkpoint-4", "checkpoint-5"]


def test_planted_pickles_in_a_checkpoint_are_refused(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path, tiny_model_dir, "pickled", "train.max_steps=2", "method.dropout=0.0")
    prepared = prepare(recipe.data, tmp_path / "data", recipe.run.seed)
    train(recipe, str(tiny_model_dir), prepared, recipe.run_dir)
    checkpoint = recipe.run_dir / "checkpoints" / "checkpoint-2"
    marker = tmp_path / "marker"
    for name in ("optimizer.pt", "rng_state.pth", "adapter_model.bin", "pytorch_model.bin"):
        plant(checkpoint / name, marker)
        ckpt.write_manifest(checkpoint, {"step": 2})  # even a manifest that vouches for the file
        with pytest.raises(UnsafeFileError, match=name.replace(".", r"\.")):
            train(recipe, str(tiny_model_dir), prepared, recipe.run_dir, resume=True)
        (checkpoint / name).unlink()
    ckpt.write_manifest(checkpoint, {"step": 2})
    # a Trainer-style checkpoint (no manifest, pickles inside) is skipped and never opened
    legacy = recipe.run_dir / "checkpoints" / "checkpoint-9"
    legacy.mkdir()
    plant(legacy / "optimizer.pt", marker)
    warnings: list[str] = []
    assert ckpt.find_resumable(legacy.parent, warn=warnings.append).name == "checkpoint-2"
    assert any("checkpoint-9" in w and "optimizer.pt" in w for w in warnings)
    assert not marker.exists()


# ---------------------------------------------------------------- SIGKILL during checkpoint saves

KILLS = 20


class RecordStart(TrainerCallback):
    def __init__(self, path: Path) -> None:
        self.path = path

    def on_train_begin(self, args, state, control, **kwargs):
        self.path.write_text(str(state.global_step))


def _child(recipe, model_dir: str, prepared, started: Path) -> None:
    slow = ckpt._fsync_file

    def slow_fsync(path: Path) -> None:  # stretch each save so that kills land inside it
        slow(path)
        time.sleep(0.004)

    ckpt._fsync_file = slow_fsync
    train(recipe, model_dir, prepared, recipe.run_dir, resume=True, extra_callbacks=[RecordStart(started)])


@pytest.mark.slow
def test_sigkill_during_saves_never_leaves_a_partial_checkpoint(tiny_model_dir: Path, tmp_path: Path) -> None:
    recipe = recipe_for(tmp_path, tiny_model_dir, "killed", "train.max_steps=400", "train.save_total_limit=2",
                        "method.dropout=0.0", "train.logging_steps=50")
    prepared = prepare(recipe.data, tmp_path / "data", recipe.run.seed)
    folder = recipe.run_dir / "checkpoints"
    started = tmp_path / "started"
    rng = random.Random(0)
    # A forked pytest worker carries whatever threads and locks earlier tests left in it (a child once hung
    # before its first step on the AVX2 EPYC); the fork server is a clean process, preloaded so that each
    # child starts in well under a second.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["torch", "transformers", "ayar.train.engine", "resume_helpers"])
    killed_mid_write = 0
    for kill in range(KILLS):
        expected = ckpt.find_resumable(folder, warn=lambda _: None) if folder.is_dir() else None
        started.unlink(missing_ok=True)
        child = context.Process(target=_child, args=(recipe, str(tiny_model_dir), prepared, started))
        child.start()
        deadline = time.monotonic() + 120
        while not (folder.is_dir() and any(p.name.startswith(".tmp-checkpoint") for p in folder.iterdir())):
            assert child.is_alive() and time.monotonic() < deadline, f"kill {kill}: the child never saved"
            time.sleep(0.001)
        time.sleep(rng.uniform(0, 0.03))
        killed_mid_write += any(p.name.startswith(".tmp-") for p in folder.iterdir())
        child.kill()
        child.join()
        assert child.exitcode == -9
        assert started.read_text() == str(ckpt.step_of(expected) if expected else 0), \
            f"kill {kill}: the resume did not start from the newest complete checkpoint"
        for path in ckpt.checkpoints(folder):  # a checkpoint under its real name is always complete
            assert ckpt.verify(path) is None, f"kill {kill}: {path.name} is partial: {ckpt.verify(path)}"
    assert killed_mid_write >= KILLS // 2  # most kills did land inside a write
    final = train(recipe.model_copy(update={"train": recipe.train.model_copy(update={"max_steps": 1})}),
                  str(tiny_model_dir), prepared, recipe.run_dir, resume=True)
    assert final.steps >= 1
    leftovers = [p.name for p in folder.iterdir() if p.name.startswith((ckpt.TMP_PREFIX, ckpt.TRASH_PREFIX))]
    assert leftovers == []
