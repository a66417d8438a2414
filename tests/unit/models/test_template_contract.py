"""The train-to-serve contract: training writes it; serve, batch and export accept an unchanged folder and refuse
(exit 2, naming the conversation and position) one whose chat template or tokenizer changed after training,
unless --force."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from ayar.data.prepare import PreparedData
from ayar.data.synthetic import generate_records, write_jsonl
from ayar.data.templates import set_template
from ayar.errors import UsageError
from ayar.models.load import load_tokenizer
from ayar.models.template_contract import (
    CONTRACT_FILE,
    build_contract,
    check_contract,
    check_token_ids,
    write_contract,
)
from ayar.recipe import load_recipe
from ayar.train.engine import train


@pytest.fixture(scope="module")
def trained(chatml_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A LoRA adapter folder written by one step of the training engine on a ChatML model."""
    tmp = tmp_path_factory.mktemp("contract_run")
    write_jsonl(list(generate_records(8, 0, ["en"], ["add"])), tmp / "data" / "train.jsonl")
    write_jsonl([], tmp / "data" / "validation.jsonl")
    recipe = load_recipe(None, [f"model.name_or_path={chatml_model_dir}", "data.template=auto",
                                "data.max_length=96", "train.precision=fp32", "train.max_steps=1",
                                "train.batch_size=4", "train.logging_steps=1000", "run.seed=0"])
    return train(recipe, str(chatml_model_dir), PreparedData(tmp / "data"), tmp / "run").model_dir


@pytest.fixture
def folder(trained: Path, tmp_path: Path) -> Path:
    """A copy of the trained folder, free to edit."""
    return Path(shutil.copytree(trained, tmp_path / "model"))


def cli(monkeypatch: pytest.MonkeyPatch, *args: str) -> int:
    """Run `ayar ARGS` in this process; its exit code."""
    from ayar.cli import main

    monkeypatch.setattr(sys, "argv", ["ayar", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code or 0


def change_template(folder: Path) -> None:
    """What a user does by hand after training: one more newline after each turn of the saved template."""
    tokenizer = load_tokenizer(str(folder))
    assert "'<|im_end|>' + '\n'" in tokenizer.chat_template  # the template holds a real newline there
    tokenizer.chat_template = tokenizer.chat_template.replace("'<|im_end|>' + '\n'", "'<|im_end|>' + '\n\n'")
    tokenizer.save_pretrained(str(folder))


def change_tokenizer(folder: Path) -> None:
    """Same template, different ids: a token added to the vocabulary after training."""
    tokenizer = load_tokenizer(str(folder))
    tokenizer.add_tokens(["Merhaba"])
    tokenizer.save_pretrained(str(folder))


def test_training_writes_the_contract_with_text_ids_and_stop_tokens(trained: Path) -> None:
    contract = json.loads((trained / CONTRACT_FILE).read_text())
    tokenizer = load_tokenizer(str(trained))
    assert [c["name"] for c in contract["conversations"]] == ["no_system", "system", "multi_turn"]
    assert contract["stop_tokens"]["end_of_turn"] == {"token": "<|im_end|>",
                                                      "id": tokenizer.convert_tokens_to_ids("<|im_end|>")}
    assert contract["stop_tokens"]["eos"]["id"] == tokenizer.eos_token_id
    multi = contract["conversations"][2]
    assert multi["text"].count("<|im_start|>assistant\n") == 2 and multi["prompt"].endswith("<|im_start|>assistant\n")
    assert multi["ids"] == tokenizer(multi["text"], add_special_tokens=False)["input_ids"]
    assert check_contract(trained, tokenizer) is True


def test_tool_conversations_only_where_trained_with_tools_and_the_template_renders_them(trained: Path) -> None:
    tokenizer = load_tokenizer(str(trained))
    names = lambda contract: [c["name"] for c in contract["conversations"]]  # noqa: E731
    assert "tools" not in names(build_contract(tokenizer, tools_used=True))  # plain ChatML drops tool schemas
    set_template(tokenizer, "chatml_tools")
    assert "tools" not in names(build_contract(tokenizer, tools_used=False))
    tools = build_contract(tokenizer, tools_used=True)["conversations"][-1]
    assert tools["name"] == "tools" and "get_weather" in tools["text"] and "<tool_response>" in tools["text"]


def test_changed_template_or_tokenizer_is_named_and_force_only_warns(folder: Path, capsys) -> None:
    change_template(folder)
    with pytest.raises(UsageError, match=r"'no_system' differs in its text at character \d+.*--force"):
        check_contract(folder, load_tokenizer(str(folder)))
    assert check_contract(folder, load_tokenizer(str(folder)), force=True) is True
    assert "warning (--force)" in capsys.readouterr().out


def test_changed_tokenizer_is_refused_by_its_token_ids(folder: Path) -> None:
    change_tokenizer(folder)
    with pytest.raises(UsageError, match=r"differs in its token ids at token \d+"):
        check_contract(folder, load_tokenizer(str(folder)))


def test_a_folder_without_contract_passes_with_a_note(folder: Path, capsys) -> None:
    (folder / CONTRACT_FILE).unlink()
    change_template(folder)
    assert check_contract(folder, load_tokenizer(str(folder))) is False
    assert f"has no {CONTRACT_FILE}" in capsys.readouterr().out


def test_batch_accepts_unchanged_refuses_changed_and_force_overrides(folder: Path, tmp_path: Path, monkeypatch,
                                                                     capsys) -> None:
    prompts = tmp_path / "in.jsonl"
    prompts.write_text('{"id": "a", "messages": [{"role": "user", "content": "merhaba"}]}\n')
    args = ["batch", "--model", folder, "--input", prompts, "--max-new-tokens", "2"]
    assert cli(monkeypatch, *args, "--output", tmp_path / "ok.jsonl") == 0
    change_template(folder)
    capsys.readouterr()
    assert cli(monkeypatch, *args, "--output", tmp_path / "refused.jsonl") == 2
    err = capsys.readouterr().err
    assert "reference conversation 'no_system'" in err and "--force" in err and "Traceback" not in err
    assert not (tmp_path / "refused.jsonl").exists()
    assert cli(monkeypatch, *args, "--output", tmp_path / "forced.jsonl", "--force") == 0
    assert (tmp_path / "forced.jsonl").read_text().count('"id": "a"') == 1


def test_serve_refuses_a_changed_tokenizer_before_the_port_opens(folder: Path, monkeypatch, capsys) -> None:
    import ayar.serve.server as server
    from ayar.serve.server import check_serve_contract

    def never(*args: object) -> None:
        raise AssertionError("the server was started")

    monkeypatch.setattr(server, "DrainingServer", never)
    check_serve_contract(folder, {"extra": folder}, force=False)  # unchanged: the model and an adapter pass
    change_tokenizer(folder)
    assert cli(monkeypatch, "serve", folder, "--port", "1") == 2  # refused before anything binds
    assert "token ids" in capsys.readouterr().err
    check_serve_contract(folder, None, force=True)  # --force: a warning, then serving goes on


def test_hf_export_carries_the_contract_and_refuses_a_changed_folder(folder: Path, tmp_path: Path, monkeypatch,
                                                                     capsys) -> None:
    assert cli(monkeypatch, "export", folder, "--out", tmp_path / "merged") == 0
    merged = tmp_path / "merged"
    assert (merged / CONTRACT_FILE).read_text() == (folder / CONTRACT_FILE).read_text()
    assert check_contract(merged, load_tokenizer(str(merged))) is True  # the merged tokenizer renders identically
    change_template(folder)
    capsys.readouterr()
    assert cli(monkeypatch, "export", folder, "--out", tmp_path / "refused") == 2
    assert "differs in its text" in capsys.readouterr().err and not (tmp_path / "refused").exists()
    assert cli(monkeypatch, "export", folder, "--out", tmp_path / "forced", "--force") == 0


def test_gguf_export_refuses_other_token_ids_in_llama_cpp(folder: Path, tmp_path: Path, monkeypatch) -> None:
    import ayar.export.llamacpp as llamacpp
    from ayar.export import export_model

    real = llamacpp.gguf_token_ids
    monkeypatch.setattr(llamacpp, "gguf_token_ids", lambda path, texts: [[*ids, 0] for ids in real(path, texts)])
    with pytest.raises(UsageError, match=r"llama.cpp reading \S+\.gguf\): stop token eos"):
        export_model(folder, tmp_path / "refused", fmt="gguf", gguf_dtype="f32", verify=False)
    assert export_model(folder, tmp_path / "forced", fmt="gguf", gguf_dtype="f32", verify=False,
                        force=True).is_file()


def test_gguf_token_ids_in_llama_cpp_are_checked(folder: Path, tmp_path: Path) -> None:
    from ayar.export import export_model
    from ayar.export.llamacpp import gguf_token_ids  # llama.cpp installed by `make test`

    path = export_model(folder, tmp_path / "gguf", fmt="gguf", gguf_dtype="f32", verify=False)
    assert check_token_ids(folder, lambda texts: gguf_token_ids(path, texts), "llama.cpp") is True
    contract = json.loads((folder / CONTRACT_FILE).read_text())
    contract["conversations"][1]["ids"][3] += 1  # what a different pre-tokenizer in the GGUF would look like
    (folder / CONTRACT_FILE).write_text(json.dumps(contract))
    with pytest.raises(UsageError, match="llama.cpp.*'system' differs in its token ids at token 3"):
        check_token_ids(folder, lambda texts: gguf_token_ids(path, texts), "llama.cpp")


def test_write_contract_skips_a_tokenizer_without_template(tiny_model_dir: Path, tmp_path: Path) -> None:
    tokenizer = load_tokenizer(str(tiny_model_dir))
    tokenizer.chat_template = None
    assert write_contract(tmp_path, tokenizer, tools_used=False) is None and not (tmp_path / CONTRACT_FILE).exists()


def test_templates_that_print_the_date_or_refuse_system_turns_still_get_a_contract(trained: Path,
                                                                                   tmp_path: Path) -> None:
    tokenizer = load_tokenizer(str(trained))
    chatml = tokenizer.chat_template
    # Llama 3.x prints today's date unless given one: the contract must not depend on the clock
    tokenizer.chat_template = ("{% if date_string is not defined %}{% set date_string = strftime_now('%H:%M:%S.%f') %}"
                               "{% endif %}{{ date_string }}" + chatml)
    write_contract(tmp_path, tokenizer, tools_used=False)
    assert check_contract(tmp_path, tokenizer) is True
    # Gemma's template raises on a system turn: those conversations are left out, the others kept
    tokenizer.chat_template = ("{% if messages[0]['role'] == 'system' %}{{ raise_exception('no system role') }}"
                               "{% endif %}" + chatml)
    write_contract(tmp_path, tokenizer, tools_used=False)
    names = [c["name"] for c in json.loads((tmp_path / CONTRACT_FILE).read_text())["conversations"]]
    assert names == ["no_system"] and check_contract(tmp_path, tokenizer) is True
