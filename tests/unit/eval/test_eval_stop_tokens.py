"""Generation ends at the chat template's end-of-turn token, not only at eos."""

from __future__ import annotations

from pathlib import Path

import torch

from ayar.data.templates import end_of_turn, render_prompt, set_template, turn_markers
from ayar.eval.generate import generate_chat, stop_token_ids
from ayar.models.load import load_for_inference, load_tokenizer
from ayar.recipe import EvalConfig

IM_END = "<|im_end|>"


def test_end_of_turn_is_found_in_the_template(chatml_model_dir: Path, tiny_model_dir: Path) -> None:
    _, chatml = load_for_inference(chatml_model_dir)
    assert end_of_turn(chatml) == IM_END
    alpaca = load_tokenizer(str(tiny_model_dir))
    set_template(alpaca, "alpaca")
    assert end_of_turn(alpaca) == alpaca.eos_token  # alpaca ends the assistant's turn with eos
    alpaca.chat_template = None
    assert end_of_turn(alpaca) is None


def test_turn_markers_render_like_the_template_and_find_a_default_system(chatml_model_dir: Path) -> None:
    _, tokenizer = load_for_inference(chatml_model_dir)
    tokenizer.chat_template = ("{% if messages[0]['role'] != 'system' %}{{ '<|im_start|>system\\nBe kind.<|im_end|>\\n' }}"
                               "{% endif %}" + tokenizer.chat_template)
    markers = turn_markers(tokenizer)
    assert markers is not None and markers.default_system == "Be kind."
    conversation = [{"role": "user", "content": "1+1?"}, {"role": "assistant", "content": "2"},
                    {"role": "user", "content": "ve 2+2?"}]
    assert markers.render(conversation) == render_prompt(tokenizer, conversation)
    tokenizer.chat_template = "{{ messages | reverse | map(attribute='content') | join(' ') }}"
    assert turn_markers(tokenizer) is None  # not one wrapper per role: no markers rather than wrong ones


def test_generate_stops_at_end_of_turn_where_eos_alone_runs_on(chatml_model_dir: Path) -> None:
    model, tokenizer = load_for_inference(chatml_model_dir)
    end = tokenizer.convert_tokens_to_ids(IM_END)
    assert stop_token_ids(model, tokenizer) == sorted({tokenizer.eos_token_id, end})
    prompt = render_prompt(tokenizer, [{"role": "user", "content": "merhaba"}])
    ids = torch.tensor([tokenizer(prompt, add_special_tokens=False)["input_ids"]])
    with torch.no_grad():  # with eos as the only stop, the model runs past its turn's end
        runs_on = model.generate(ids, max_new_tokens=8, do_sample=False,
                                 eos_token_id=tokenizer.eos_token_id)[0, ids.shape[1]:].tolist()
    assert len(runs_on) == 8 and runs_on[2] == end
    answer = generate_chat(model, tokenizer, [[{"role": "user", "content": "merhaba"}]], EvalConfig(max_new_tokens=8))
    assert answer == [tokenizer.decode(runs_on[:2])]
