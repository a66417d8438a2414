"""The Ollama Modelfile: the chat template as a Go template, the default system prompt, the stop tokens."""

from __future__ import annotations

from pathlib import Path

from ayar.export.ollama import modelfile_text
from ayar.models.load import load_tokenizer

SMOLLM2_TEMPLATE = (  # SmolLM2-Instruct's own: ChatML with a default system message
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


def test_smollm2_template_becomes_chatml_go_template_with_system_and_stops(chatml_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(chatml_model_dir))
    tokenizer.chat_template = SMOLLM2_TEMPLATE
    text = modelfile_text("m.gguf", tokenizer)
    assert text == (
        "FROM ./m.gguf\n"
        'TEMPLATE """{{- range $i, $_ := .Messages }}{{- $last := eq (len (slice $.Messages $i)) 1 }}'
        '{{- if eq .Role "system" }}<|im_start|>system\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "user" }}<|im_start|>user\n{{ .Content }}<|im_end|>\n'
        '{{ else if eq .Role "assistant" }}<|im_start|>assistant\n{{ .Content }}<|im_end|>\n'
        '{{ end }}{{- if and $last (ne .Role "assistant") }}<|im_start|>assistant\n{{ end }}{{- end }}"""\n'
        'SYSTEM """You are a helpful AI assistant named SmolLM, trained by Hugging Face"""\n'
        'PARAMETER stop "<|im_end|>"\n'
        'PARAMETER stop "<|endoftext|>"\n'
    )


def test_a_template_without_per_role_wrappers_leaves_template_to_ollama(chatml_model_dir: Path) -> None:
    tokenizer = load_tokenizer(str(chatml_model_dir))
    tokenizer.chat_template = "{% for m in messages | reverse %}{{ m['content'] }}{% endfor %}"
    assert modelfile_text("m.gguf", tokenizer) == 'FROM ./m.gguf\nPARAMETER stop "<|endoftext|>"\n'
