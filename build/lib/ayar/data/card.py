"""The data card: what went in, what came out of every step and why, written as JSON, Markdown and PNG."""

from __future__ import annotations

import json
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

# Steps in pipeline order, with the removal reasons each can give.
STEP_REASONS: list[tuple[str, tuple[str, ...]]] = [
    ("sampling", ("sampled_out",)),
    ("consent", ("no_consent", "opted_out")),
    ("quality", ("empty_response", "too_short", "too_long", "too_few_tokens", "too_many_tokens",
                 "repeated_lines", "repeated_ngrams", "symbol_ratio")),
    ("exact_dedup", ("exact_duplicate",)),
    ("near_dedup", ("near_duplicate",)),
]
EXAMPLE_CHARS = 300


def _summary(values: array) -> dict[str, float]:
    if not values:
        return {"count": 0}
    data = np.frombuffer(values, dtype=np.uint32)
    return {"count": int(data.size), "mean": round(float(data.mean()), 1), "p50": float(np.percentile(data, 50)),
            "p95": float(np.percentile(data, 95)), "max": int(data.max())}


@dataclass
class DataCard:
    """Counts collected while records stream through the pipeline."""

    examples_per_reason: int = 3
    records_in: int = 0
    rejected: int = 0
    kept: int = 0
    removed: Counter = field(default_factory=Counter)
    cleaned: Counter = field(default_factory=Counter)
    pii: Counter = field(default_factory=Counter)
    pii_records: int = 0
    examples: dict[str, list[Any]] = field(default_factory=dict)
    reject_examples: list[dict[str, Any]] = field(default_factory=list)
    sources: list[dict[str, Any]] = field(default_factory=list)
    prompt_chars: array = field(default_factory=lambda: array("I"))
    response_chars: array = field(default_factory=lambda: array("I"))
    splits: dict[str, int] = field(default_factory=dict)
    train_repeats: int = 0
    tokens: dict[str, Any] | None = None
    windows: dict[str, Any] | None = None
    loss_mask: dict[str, Any] | None = None
    notes: list[str] = field(default_factory=list)

    def remove(self, reason: str, example: Callable[[], Any]) -> None:
        """Count a removal; ``example`` builds the shown example, only while more are wanted."""
        self.removed[reason] += 1
        shown = self.examples.setdefault(reason, [])
        if len(shown) < self.examples_per_reason:
            shown.append(example())

    def reject(self, reject: dict[str, Any]) -> None:
        self.rejected += 1
        if len(self.reject_examples) < self.examples_per_reason:
            self.reject_examples.append(reject)

    def keep(self, prompt_chars: int, response_chars: int) -> None:
        self.kept += 1
        self.prompt_chars.append(min(prompt_chars, 2**32 - 1))
        self.response_chars.append(min(response_chars, 2**32 - 1))

    @property
    def removed_total(self) -> int:
        return sum(self.removed.values())

    @property
    def balanced(self) -> bool:
        return self.records_in == self.kept + self.removed_total + self.rejected

    def accounting_line(self) -> str:
        reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(self.removed.items())) or "none"
        ok = "" if self.balanced else "  [MISMATCH]"
        return (f"records in {self.records_in} = kept {self.kept} + removed {self.removed_total} ({reasons})"
                f" + rejected {self.rejected}{ok}")

    def steps(self) -> list[dict[str, Any]]:
        """In and out counts of every step, in pipeline order."""
        current = self.records_in - self.rejected
        rows: list[dict[str, Any]] = [{"step": "read", "in": self.records_in, "out": current,
                                       "rejected": self.rejected}]
        for step, reasons in STEP_REASONS:
            removed = {r: self.removed[r] for r in reasons if self.removed[r]}
            out = current - sum(removed.values())
            row = {"step": step, "in": current, "out": out, "removed": removed}
            if step == "consent":
                rows.append(row)
                rows.append({"step": "clean", "in": out, "out": out, "records_changed_by": dict(self.cleaned)})
                rows.append({"step": "pii", "in": out, "out": out, "records_changed": self.pii_records,
                             "placeholders": dict(self.pii)})
            else:
                rows.append(row)
            current = out
        if self.windows:
            windows = self.windows["windows"] - self.windows["documents"]  # records added by splitting documents
            rows.append({"step": "window", "in": current, "out": current + windows,
                         "documents_split": self.windows["documents_split"]})
            current += windows
        rows.append({"step": "split", "in": current, "out": sum(self.splits.values()) - self.train_repeats,
                     "splits": dict(self.splits)})
        return rows

    def to_dict(self) -> dict[str, Any]:
        return {
            "records_in": self.records_in,
            "kept": self.kept,
            "removed_total": self.removed_total,
            "removed": dict(sorted(self.removed.items())),
            "rejected": self.rejected,
            "accounting": self.accounting_line(),
            "accounting_balanced": self.balanced,
            "sources": self.sources,
            "steps": self.steps(),
            "pii": dict(self.pii),
            "splits": dict(self.splits),
            "train_repeats": self.train_repeats,
            "lengths_chars": {"prompt": _summary(self.prompt_chars), "response": _summary(self.response_chars)},
            "tokens": self.tokens,
            "windows": self.windows,
            "loss_mask": self.loss_mask,
            "removed_examples": self.examples,
            "reject_examples": self.reject_examples,
            "notes": self.notes,
        }

    def write(self, out_dir: Path) -> dict[str, Any]:
        """Write data_card.json, data_card.md and length_hist.png; return the card's dict."""
        data = self.to_dict()
        if self.kept:
            plot_lengths(self.prompt_chars, self.response_chars, out_dir / "length_hist.png")
            data["histograms"] = ["length_hist.png"]
        (out_dir / "data_card.json").write_text(json.dumps(data, indent=2, ensure_ascii=False), encoding="utf-8")
        (out_dir / "data_card.md").write_text(render_markdown(data), encoding="utf-8")
        return data


def plot_lengths(prompt: array, response: array, path: Path) -> None:
    """Histograms of prompt and response length (characters) of the kept records."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2))
    for ax, values, title in ((axes[0], prompt, "prompt"), (axes[1], response, "response")):
        ax.hist(np.frombuffer(values, dtype=np.uint32), bins=40, color="#3b6ea8")
        ax.set_title(f"{title} length (characters)")
        ax.set_xlabel("characters")
        ax.set_ylabel("records")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _table(rows: list[list[Any]], header: list[str]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def render_markdown(data: dict[str, Any]) -> str:
    """The card as Markdown, for people."""
    lines = ["# Data card", "", f"**{data['accounting']}**", "", "## Steps", ""]
    step_rows = []
    for step in data["steps"]:
        detail = {k: v for k, v in step.items() if k not in ("step", "in", "out") and v}
        step_rows.append([step["step"], step["in"], step["out"], json.dumps(detail, ensure_ascii=False)])
    lines += _table(step_rows, ["step", "in", "out", "details"])
    lines += ["", "## Sources", ""]
    lines += _table([[s.get("path"), s.get("format"), s.get("weight"), s.get("records_in"), s.get("rejected")]
                     for s in data["sources"]], ["source", "format", "weight", "records in", "rejected"])
    lines += ["", "## PII placeholders", ""]
    lines += _table([[k, v] for k, v in sorted(data["pii"].items())] or [["-", 0]], ["type", "count"])
    lines += ["", "## Splits", ""]
    lines += _table([[k, v] for k, v in data["splits"].items()], ["split", "records"])
    lines += ["", "## Lengths (characters)", ""]
    lines += _table([[k, *[v.get(s, "") for s in ("count", "mean", "p50", "p95", "max")]]
                     for k, v in data["lengths_chars"].items()], ["field", "count", "mean", "p50", "p95", "max"])
    if data.get("tokens"):
        lines += ["", "## Tokens (target tokenizer)", "", "```json", json.dumps(data["tokens"], indent=2), "```"]
    if data.get("windows"):
        w = data["windows"]
        lines += ["", "## Long documents (windows)", "",
                  f"{w['documents']} documents, {w['documents_split']} split, {w['windows']} windows of at most "
                  f"{w['window_tokens']} tokens ({w['overlap_tokens']} shared; measured with {w['measured_with']})", ""]
        lines += _table([[d["doc"], d["windows"]] for d in w["per_document"]], ["document", "windows"])
    if data.get("loss_mask"):
        mask = data["loss_mask"]
        lines += ["", f"## Loss mask (tokens learned per role, {mask['records_measured']} training records)", ""]
        lines += _table([[role, v["tokens"], v["learned"]] for role, v in mask["roles"].items()],
                        ["role", "tokens", "learned"])
        if mask.get("records_without_learned_tokens"):
            lines += ["", f"{mask['records_without_learned_tokens']} records have no learned token."]
    if data.get("histograms"):
        lines += ["", "![length histograms](length_hist.png)"]
    if data.get("rehearsal"):
        r = data["rehearsal"]
        lines += ["", "## Rehearsal (the base model's own answers, mixed into training)", "",
                  f"{r['answered']} of {r['asked']} general instructions ({r['prompts']}) answered by the base within "
                  f"{r['max_new_tokens']} tokens, {r['records']} rows ({r['share']:.0%} of training); "
                  f"{len(r['probes_dropped'])} prompts dropped as forgetting probes."]
    lines += ["", "## Removal examples", ""]
    for reason, examples in data["removed_examples"].items():
        lines.append(f"- **{reason}**")
        lines += [f"  - `{json.dumps(e, ensure_ascii=False)[:EXAMPLE_CHARS]}`" for e in examples]
    if data["reject_examples"]:
        lines += ["", "## Reject examples", ""]
        lines += [f"- {r['source']}:{r['line']}: {r['reason']}" for r in data["reject_examples"]]
    if data["notes"]:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in data["notes"]]
    return "\n".join(lines) + "\n"
