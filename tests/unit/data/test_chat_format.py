"""Chat formatting: prompt masking, EOS, and the saved template equal to the training one."""

from __future__ import annotations

from pathlib import Path

from ayar.data.synthetic import generate_records, turkish_upper
from ayar.data.templates import ALPACA, CHATML, record_to_messages, render_prompt, set_template
from ayar.data.tokenize import IGNORE_INDEX, tokenize_chat
from ayar.models.load import load_tokenizer


def test_synthetic_records_are_seeded_and_verifiable() -> None:
    first = list(generate_records(50, 7, ["tr", "en"], ["add", "reverse", "upper", "date"]))
    assert first == list(generate_records(50, 7, ["tr", "en"], ["add", "reverse", "upper", "date"]))
    for r in first:
        if r["task"] == "add":
            a, b = r["input"].split(" + ")
            assert int(r["output"]) == int(a) + int(b)
        if r["task"] == "reverse":
            assert r["output"][::-1] == r["input"]
    assert turkish_upper("istanbul ırmak") == "İSTANBUL IRMAK"


def test_prompt_tokens_are_masked_and_response_ends_with_eos(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    set_template(tok, "alpaca")
    messages = record_to_messages({"instruction": "Add the two numbers.", "input": "2 + 3", "output": "5"})
    encoded = tokenize_chat(tok, messages, max_length=256)
    prompt_ids = tok(render_prompt(tok, messages[:-1]), add_special_tokens=False)["input_ids"]
    n = len(prompt_ids)
    assert encoded["input_ids"][:n] == prompt_ids  # training sees exactly what generation will see
    assert encoded["labels"][:n] == [IGNORE_INDEX] * n
    response = encoded["labels"][n:]
    assert response == encoded["input_ids"][n:]
    assert response[-1] == tok.eos_token_id
    assert tok.decode(response, skip_special_tokens=True) == "5"


def test_unmasked_and_multi_turn(tiny_model_dir: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    set_template(tok, "chatml")
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": "bye"},
                {"role": "assistant", "content": "ciao"}]
    masked = tokenize_chat(tok, messages, 512)
    trained = tok.decode([t for t, lab in zip(masked["input_ids"], masked["labels"], strict=True)
                          if lab != IGNORE_INDEX])
    assert "hello" in trained and "ciao" in trained and "bye" not in trained and "Be brief" not in trained
    unmasked = tokenize_chat(tok, messages, 512, mask_prompt=False)
    assert IGNORE_INDEX not in unmasked["labels"]


def test_template_is_saved_with_the_tokenizer(tiny_model_dir: Path, tmp_path: Path) -> None:
    tok = load_tokenizer(str(tiny_model_dir))
    set_template(tok, "alpaca")
    tok.save_pretrained(tmp_path)
    again = load_tokenizer(str(tmp_path))
    assert again.chat_template == ALPACA != CHATML
