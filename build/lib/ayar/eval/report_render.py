"""Report blocks and their two renderings: Markdown and one self-contained HTML page (no CDN, images inline)."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class Heading:
    level: int
    text: str


@dataclass
class Para:
    text: str


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    table_id: str | None = None


@dataclass
class Image:
    title: str
    png: bytes = field(repr=False)
    filename: str


Block = Heading | Para | Table | Image

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; } h2 { margin-top: 1.8em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; max-width: 28em;
         overflow-wrap: anywhere; }
th { background: #f0f0f0; } tr:nth-child(even) td { background: #fafafa; }
figure { margin: 1em 0; } figcaption { color: #555; font-size: 0.9em; }
"""


def fmt(value: Any) -> str:
    """A figure as the report shows it."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return "n/a" if math.isnan(value) else f"{value:.4g}"
    if value is None:
        return "n/a"
    return str(value)


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def render_markdown(blocks: list[Block], run_dir: Path, image_dir: str) -> str:
    """Markdown with images written next to it under image_dir."""
    lines: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            lines += ["#" * block.level + " " + block.text, ""]
        elif isinstance(block, Para):
            lines += [block.text, ""]
        elif isinstance(block, Table) and not block.rows:
            lines += ["(none)", ""]
        elif isinstance(block, Table):
            lines.append("| " + " | ".join(_md_cell(h) for h in block.headers) + " |")
            lines.append("|" + "---|" * len(block.headers))
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in block.rows]
            lines.append("")
        else:
            folder = run_dir / image_dir
            folder.mkdir(exist_ok=True)
            (folder / block.filename).write_bytes(block.png)
            lines += [f"![{block.title}]({image_dir}/{block.filename})", ""]
    return "\n".join(lines)


def _html_block(block: Block) -> str:
    if isinstance(block, Heading):
        return f"<h{block.level}>{html.escape(block.text)}</h{block.level}>"
    if isinstance(block, Para):
        return f"<p>{html.escape(block.text)}</p>"
    if isinstance(block, Table) and not block.rows:
        return "<p>(none)</p>"
    if isinstance(block, Table):
        ident = f' id="{html.escape(block.table_id)}"' if block.table_id else ""
        head = "".join(f"<th>{html.escape(str(h))}</th>" for h in block.headers)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>"
                       for row in block.rows)
        return f"<table{ident}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    data = base64.b64encode(block.png).decode("ascii")
    return (f'<figure><img alt="{html.escape(block.title)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{html.escape(block.title)}</figcaption></figure>")


def render_html(blocks: list[Block], title: str) -> str:
    """One HTML page that opens offline: inline CSS, images as base64 data URIs, no scripts."""
    body = "\n".join(_html_block(b) for b in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
            f'<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            f"<style>{STYLE}</style></head><body>\n{body}\n</body></html>\n")
