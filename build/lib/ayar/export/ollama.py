"""An Ollama ``Modelfile`` beside an exported GGUF: the same chat template, system prompt and stop tokens.

Ollama's templates are Go templates, not the Jinja of Hugging Face chat templates, and no library
translates one into the other; the translation here covers templates that wrap each role's content in
fixed text (ChatML, alpaca, Llama 3, ...), found and checked by ``turn_markers``. For any other template
the Modelfile leaves TEMPLATE out and Ollama falls back to matching the template stored in the GGUF.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar.data.templates import TurnMarkers, end_of_turn, turn_markers


def go_template(markers: TurnMarkers) -> str:
    """The Go template (Ollama's ``.Messages`` form) that renders conversations as the markers do."""
    branches = " else if ".join(f'eq .Role "{role}" }}}}{before}{{{{ .Content }}}}{after}{{{{'
                                for role, (before, after) in markers.wrap.items())
    return ("{{- range $i, $_ := .Messages }}"
            "{{- $last := eq (len (slice $.Messages $i)) 1 }}"
            f"{{{{- if {branches} end }}}}"
            f'{{{{- if and $last (ne .Role "assistant") }}}}{markers.generation_prompt}{{{{ end }}}}'
            "{{- end }}")


def stop_tokens(tokenizer: Any) -> list[str]:
    """The end-of-turn token of the chat template, then eos when it differs."""
    tokens = [end_of_turn(tokenizer), tokenizer.eos_token]
    return list(dict.fromkeys(t for t in tokens if t))


def modelfile_text(gguf_name: str, tokenizer: Any) -> str:
    """The Modelfile for ``<folder>/gguf_name`` with the tokenizer's chat template."""
    lines = [f"FROM ./{gguf_name}"]
    markers = turn_markers(tokenizer)
    literal = "".join(f"{b}{a}" for b, a in markers.wrap.values()) + markers.generation_prompt if markers else ""
    if markers and "{{" not in literal and '"""' not in literal:
        lines.append(f'TEMPLATE """{go_template(markers)}"""')
        if markers.default_system and '"""' not in markers.default_system:
            lines.append(f'SYSTEM """{markers.default_system}"""')
    lines += [f"PARAMETER stop {json.dumps(token)}" for token in stop_tokens(tokenizer)]
    return "\n".join(lines) + "\n"


def write_modelfile(path: Path, gguf_file: Path, tokenizer: Any) -> Path:
    """Write the Modelfile; ``ollama create NAME -f path`` then imports the GGUF."""
    path.write_text(modelfile_text(gguf_file.name, tokenizer), encoding="utf-8")
    return path
