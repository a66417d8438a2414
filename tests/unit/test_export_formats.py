"""Export: merged HF folder, and GGUF files that transformers' own GGUF reader loads back to the same model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from gguf import GGUFReader
from transformers import AutoModelForCausalLM, AutoTokenizer

from ayar.errors import AyarError, UsageError
from ayar.export import export_model

IDS = torch.tensor([[5, 17, 200, 33, 9, 101]])


@pytest.fixture(scope="module")
def chat_dir(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from ayar.data.templates import set_template
    from ayar.models.load import load_tokenizer

    out = tmp_path_factory.mktemp("chat")
    tokenizer = load_tokenizer(str(tiny_model_dir))
    set_template(tokenizer, "alpaca")
    tokenizer.save_pretrained(out)
    AutoModelForCausalLM.from_pretrained(tiny_model_dir).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def adapter_dir(chat_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(chat_dir),
                           LoraConfig(r=4, lora_alpha=32, target_modules=["q_proj", "k_proj", "v_proj"],
                                      init_lora_weights=False))
    out = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(chat_dir).save_pretrained(out)
    return out


def _logits(model_dir: Path, gguf_file: str | None = None) -> torch.Tensor:
    kwargs = {"gguf_file": gguf_file} if gguf_file else {}
    with torch.no_grad():
        return AutoModelForCausalLM.from_pretrained(str(model_dir), **kwargs).eval()(IDS).logits


def test_gguf_of_an_adapter_is_the_merged_model_in_f16(adapter_dir: Path, chat_dir: Path, tmp_path: Path) -> None:
    merged = export_model(adapter_dir, tmp_path / "hf")
    assert not (merged / "adapter_config.json").exists()
    merged_logits = _logits(merged)
    assert not torch.allclose(merged_logits, _logits(chat_dir), atol=1e-3)  # the adapter changed the model
    # llama.cpp's check is tests/unit/test_export_llamacpp.py's: this random tiny model's f16 greedy answers
    # sit on near ties, whose outcome may hang on llama.cpp's thread count
    path = export_model(adapter_dir, tmp_path / "gguf", fmt="gguf", verify=False)
    assert torch.allclose(_logits(path.parent, path.name), merged_logits, atol=2e-2)
    assert path.stat().st_size < (tmp_path / "hf" / "model.safetensors").stat().st_size
    assert {p.name for p in path.parent.iterdir()} == {"Modelfile", "gguf_export.json", path.name}
    modelfile = (path.parent / "Modelfile").read_text()
    # the alpaca template of training, as a Go template, and eos (alpaca's end of turn) as the stop token
    assert modelfile.startswith(f"FROM ./{path.name}\nTEMPLATE \"\"\"")
    assert '{{- else if eq .Role "user" }}### Instruction:\n{{ .Content }}\n\n' in modelfile.replace("{{ else", "{{- else")
    assert modelfile.endswith('PARAMETER stop "<|endoftext|>"\n')


def test_gguf_takes_the_converters_architectures_and_passes_on_its_refusals(tmp_path: Path,
                                                                           tiny_model_dir: Path) -> None:
    from transformers import OPTConfig

    from ayar.models.scratch import build_model
    from ayar.recipe import ScratchModelConfig

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    gpt2 = tmp_path / "gpt2"
    # llama.cpp's GPT-2 takes the feed-forward width to be 4 x hidden: a narrower one it refuses to load
    narrow = tmp_path / "narrow"
    build_model(ScratchModelConfig(architecture="gpt2", hidden_size=32, num_layers=1, num_heads=2,
                                   intermediate_size=64, context_length=64), tokenizer, seed=0).save_pretrained(narrow)
    tokenizer.save_pretrained(narrow)
    with pytest.raises(AyarError, match="llama.cpp cannot load it"):
        export_model(narrow, tmp_path / "narrow-gguf", fmt="gguf", gguf_dtype="f32")
    build_model(ScratchModelConfig(architecture="gpt2", hidden_size=32, num_layers=1, num_heads=2,
                                   intermediate_size=128, context_length=64), tokenizer, seed=0).save_pretrained(gpt2)
    tokenizer.save_pretrained(gpt2)
    path = export_model(gpt2, tmp_path / "gpt2-gguf", fmt="gguf", gguf_dtype="f32")
    check = json.loads((path.parent / "gguf_export.json").read_text())["llama_cpp_check"]
    assert check["passed"] and check["answers_agree"] == check["prompts"]  # GPT-2 runs in llama.cpp as trained
    fields = GGUFReader(path).fields  # llama.cpp runs it: tests/unit/test_export_llamacpp.py
    assert fields["general.architecture"].contents() == "gpt2"
    assert fields["tokenizer.ggml.pre"].contents() == "smollm"  # ayar's own pre-tokenizer, named for llama.cpp
    opt = tmp_path / "opt"  # an architecture llama.cpp's converter does not know
    AutoModelForCausalLM.from_config(OPTConfig(vocab_size=len(tokenizer), hidden_size=32, num_hidden_layers=1,
                                               ffn_dim=64, num_attention_heads=2, max_position_embeddings=64,
                                               word_embed_proj_dim=32)).save_pretrained(opt)
    tokenizer.save_pretrained(opt)
    with pytest.raises(UsageError, match="converter could not convert opt(.|\\n)*OPTForCausalLM is not supported"):
        export_model(opt, tmp_path / "opt-gguf", fmt="gguf")


def test_export_mistakes_are_usage_errors(chat_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="not supported"):
        export_model(chat_dir, tmp_path / "o", fmt="tflite")
    with pytest.raises(UsageError, match="dtype"):
        export_model(chat_dir, tmp_path / "o", fmt="gguf", gguf_dtype="q4")
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("x")
    with pytest.raises(UsageError, match="not empty"):
        export_model(chat_dir, tmp_path / "full", fmt="gguf")
    with pytest.raises(UsageError, match="not an adapter"):
        export_model(chat_dir, tmp_path / "a", fmt="adapter")


def test_a_new_format_is_one_registered_writer(chat_dir: Path, tmp_path: Path) -> None:
    from ayar import export

    @export.register_format("txt-test", "a test format")
    def write_txt(source: Path, out_dir: Path, note: str = "", **_: object) -> Path:
        out_dir.mkdir(parents=True)
        (out_dir / "note.txt").write_text(f"{source.name}:{note}")
        return out_dir / "note.txt"

    try:
        path = export_model(chat_dir, tmp_path / "t", fmt="txt-test", note="hi")
        assert path.read_text() == f"{chat_dir.name}:hi"
        assert "txt-test" in export.formats()
    finally:
        export._FORMATS.pop("txt-test")


def test_the_recipe_allows_exactly_the_registered_formats_and_gguf_types() -> None:
    import typing

    from ayar import export
    from ayar.export.gguf import CONVERTER_TYPES, QUANTIZED_TYPES
    from ayar.recipe import ExportFormat, GgufDtype

    assert set(typing.get_args(ExportFormat)) == set(export.formats())
    assert set(typing.get_args(GgufDtype)) == set(CONVERTER_TYPES) | set(QUANTIZED_TYPES)
