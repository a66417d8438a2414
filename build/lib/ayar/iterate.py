"""`ayar iterate`: a served run plus its users' feedback becomes the next run (v2), gated against v1.

1. The feedback in the request log (``POST /v1/feedback``; needs ``--log-text`` for the texts) becomes data:
   a correction an SFT record; a down-rated answer with a correction, or an answer with a preferred
   alternative, a preference pair (the better answer chosen, the served one rejected); a rating alone a
   KTO record. Records that repeat the run's training data or each other are dropped, and so is any
   whose prompt is in the run's test split (no test leakage). A share of the prompts is held out.
2. The drift report over the same log says whether the traffic moved away from the training prompts.
3. v2 trains starting from v1 (a LoRA v1 is merged into its base first, so v1 is v2's reference model)
   with the recipe's method when the feedback fits it, else the method the data calls for.
4. v1 and v2 are evaluated on the original test split (quality, forgetting, risk probes) and on the
   held-out feedback; the gate promotes v2 only inside the recipe's ``iterate`` bounds.

Everything lands in ``<run>-v2/``: ``data/`` (train.jsonl, feedback_heldout.jsonl, card.json),
``model/``, ``metrics.json`` (``iterate``, ``train``, ``eval``, ``forgetting``, ``feedback_eval``, ``gate``) and
the report.
"""

from __future__ import annotations

import hashlib
import json
import math
import random
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

from ayar.console import say
from ayar.errors import UsageError
from ayar.recipe import IterateConfig, Recipe, apply_overrides, dump_recipe, load_recipe, validate_recipe

PAIRWISE = ("dpo", "orpo", "simpo")
PREFERENCE = (*PAIRWISE, "kto")
FEEDBACK_SQL = """
SELECT f.id, f.completion_id, f.rating, f.correction, f.correction_chars, f.preferred_id,
       r.prompt, r.completion, p.completion, p.prompt
FROM feedback f JOIN requests r ON r.completion_id = f.completion_id AND r.status < 400
LEFT JOIN requests p ON p.completion_id = f.preferred_id
ORDER BY f.id
"""


# ---------------------------------------------------------------- feedback -> records


def _norm(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def read_feedback(db: Path) -> list[dict[str, Any]]:
    """Every feedback row joined with its logged request (and the preferred completion's text, if any)."""
    if not Path(db).is_file():
        raise UsageError(f"request log not found: {db} (serve with --log-text --log-db {db})")
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute(FEEDBACK_SQL).fetchall()
    except sqlite3.Error as exc:
        raise UsageError(f"{db} holds no feedback table (an ayar request log from before /v1/feedback?): "
                         f"{exc}") from None
    finally:
        conn.close()
    keys = ("feedback_id", "completion_id", "rating", "correction", "correction_chars", "preferred_id", "prompt",
            "completion", "preferred", "preferred_prompt")
    return [dict(zip(keys, row, strict=True)) for row in rows]


def feedback_records(rows: list[dict[str, Any]]) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """SFT records, preference pairs and KTO records from feedback rows; counts of what could not be used."""
    out: dict[str, list[dict[str, Any]]] = {"sft": [], "pairs": [], "kto": []}
    skipped = {"no_text": 0, "correction_without_text": 0, "preferred_without_text": 0,
               "preferred_other_prompt": 0}
    for row in rows:
        prompt, served = row["prompt"], row["completion"]
        if not prompt or served is None:
            skipped["no_text"] += 1  # served without --log-text: nothing to learn from but the count
            continue
        source = {"feedback_id": row["feedback_id"], "completion_id": row["completion_id"]}
        correction = row["correction"]
        if row["correction_chars"] and not correction:
            skipped["correction_without_text"] += 1
        if correction:
            out["sft"].append({**source, "instruction": prompt, "output": correction})
            if row["rating"] != "up" and _norm(correction) != _norm(served):
                out["pairs"].append({**source, "prompt": prompt, "chosen": correction, "rejected": served})
        if row["preferred_id"]:
            if row["preferred"] and row.get("preferred_prompt") != prompt:
                skipped["preferred_other_prompt"] += 1  # an answer to another question is no alternative
            elif row["preferred"] and _norm(row["preferred"]) != _norm(served):
                out["pairs"].append({**source, "prompt": prompt, "chosen": row["preferred"], "rejected": served})
            elif not row["preferred"]:
                skipped["preferred_without_text"] += 1
        if row["rating"] and not correction and not row["preferred_id"]:
            out["kto"].append({**source, "prompt": prompt, "completion": served, "label": row["rating"] == "up"})
    return out, skipped


def record_prompt(record: dict[str, Any]) -> str | None:
    """The user-side text of a training or test record of any format, as the server logs a prompt."""
    from ayar.data.templates import record_to_messages

    if isinstance(record.get("prompt"), str):
        return record["prompt"]
    if isinstance(record.get("prompt"), list):
        return "\n".join(m["content"] for m in record["prompt"] if m.get("role") == "user")
    try:
        messages = record_to_messages({**record, "output": record.get("output", "")})
    except (KeyError, TypeError, UsageError):
        return record.get("text") if isinstance(record.get("text"), str) else None
    users = [m["content"] for m in messages if m["role"] == "user"]
    return "\n".join(users) or None


def _answer(record: dict[str, Any]) -> str:
    value = record.get("output", record.get("chosen", record.get("completion", "")))
    return value[-1]["content"] if isinstance(value, list) and value else str(value)


def _key(kind: str, record: dict[str, Any]) -> tuple[str, ...]:
    prompt = _norm(record_prompt(record) or "")
    if kind == "pairs":
        return (kind, prompt, _norm(record["chosen"]), _norm(record["rejected"]))
    if kind == "kto":
        return (kind, prompt, _norm(record["completion"]), str(record["label"]))
    return ("sft", prompt, _norm(_answer(record)))


def deduplicate(records: dict[str, list[dict[str, Any]]], train: list[dict[str, Any]], test: list[dict[str, Any]]
                ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, int]]:
    """Drop records whose prompt is in the test split, that repeat a training record, or that repeat each other."""
    test_prompts = {_norm(p) for p in (record_prompt(r) for r in test) if p}
    seen = {("sft", _norm(record_prompt(r) or ""), _norm(_answer(r))) for r in train}
    seen |= {_key("pairs", r) for r in train if "chosen" in r and "rejected" in r}
    dropped = {"test_prompt": 0, "in_training_data": 0, "repeated": 0}
    kept: dict[str, list[dict[str, Any]]] = {kind: [] for kind in records}
    own: set[tuple[str, ...]] = set()
    for kind, items in records.items():
        for record in items:
            key = _key(kind, record)
            if key[1] in test_prompts:
                dropped["test_prompt"] += 1
            elif key in seen:
                dropped["in_training_data"] += 1
            elif key in own:
                dropped["repeated"] += 1
            else:
                own.add(key)
                kept[kind].append(record)
    return kept, dropped


def hold_out(records: dict[str, list[dict[str, Any]]], share: float, seed: int
             ) -> tuple[dict[str, list[dict[str, Any]]], dict[str, list[dict[str, Any]]]]:
    """(train, held-out): whole prompts go to one side, chosen by a seeded hash so reruns agree."""
    prompts = sorted({_norm(record_prompt(r) or "") for items in records.values() for r in items},
                     key=lambda p: hashlib.sha256(f"{seed}:{p}".encode()).hexdigest())
    held = set(prompts[:math.ceil(share * len(prompts))]) if share > 0 and len(prompts) > 1 else set()
    train = {k: [r for r in v if _norm(record_prompt(r) or "") not in held] for k, v in records.items()}
    test = {k: [r for r in v if _norm(record_prompt(r) or "") in held] for k, v in records.items()}
    return train, test


def choose_method(recipe: Recipe, counts: dict[str, int], wanted: str | None) -> str:
    """The v2 method: the one asked for, else the recipe's if the feedback fits it, else what the data calls for."""
    if wanted:
        return wanted
    v1 = recipe.method.name
    if counts["pairs"]:
        return v1 if v1 in PREFERENCE else "dpo"
    if counts["kto"]:
        return "kto"
    if v1 in PREFERENCE:  # corrections alone: supervised fine-tuning on the v1 method's base
        return recipe.method.params().get("base", "lora")
    return v1


def training_records(method: str, records: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    """What the v2 method trains on: pairs (DPO, ORPO, SimPO), pairs and ratings (KTO) or corrections (SFT)."""
    if method in PAIRWISE:
        return records["pairs"]
    if method == "kto":
        return records["pairs"] + records["kto"]
    return records["sft"]


def replay_records(v1_train: list[dict[str, Any]], feedback_count: int, share: float, seed: int
                   ) -> list[dict[str, Any]]:
    """A seeded sample of v1's training records, ``share`` of v2's rows beside ``feedback_count`` feedback rows.

    Training v2 on feedback alone moved the quickstart's model off what v1 had learned (test exact match
    51% -> 39% after 24 steps on 233 corrections, most of them a task v1 never saw); replaying v1's own data
    is the usual guard against that forgetting.
    """
    if share <= 0 or not v1_train:
        return []
    wanted = min(len(v1_train), round(share / (1 - share) * feedback_count))
    return random.Random(seed).sample(v1_train, wanted)


# ---------------------------------------------------------------- v2 recipe and base


def _method_params(recipe: Recipe, method: str) -> dict[str, Any]:
    """Parameters for the v2 method: the recipe's own when unchanged, else its adapter settings carried over."""
    v1, params = recipe.method.name, recipe.method.params()
    if method == v1:
        return params
    if method in PREFERENCE:
        if v1 in PREFERENCE:
            return {"base": params.get("base", "lora"), "base_params": params.get("base_params", {})}
        if v1 in ("lora", "dora", "full"):
            return {"base": v1, "base_params": params}
        return {"base": "lora"}
    return params.get("base_params", {}) if v1 in PREFERENCE else {}


def v2_recipe(recipe: Recipe, name: str, base: Path, method: str, overrides: list[str]) -> Recipe:
    """The v1 recipe with v2's name, base model, method and data format; ``--set`` overrides win."""
    data = recipe.model_dump(mode="json")
    data["run"]["name"] = name
    data["model"]["name_or_path"] = str(base)
    data["pretrain"]["enabled"] = False
    data["method"] = {"name": method, **_method_params(recipe, method)}
    data["data"]["format"] = "kto" if method == "kto" else "preference" if method in PREFERENCE else "alpaca"
    data["data"]["synthetic"], data["data"]["inputs"] = None, []
    return validate_recipe(apply_overrides(data, overrides))


def merged_base(v1_model: Path, out: Path) -> Path:
    """v1 as a plain model folder: a LoRA-like adapter merged into its base; a full model as it is."""
    from ayar.models.load import is_adapter_dir, load_for_inference, merge_adapter

    if not is_adapter_dir(v1_model):
        return v1_model
    if (out / "config.json").is_file():
        return out
    model, tokenizer = load_for_inference(v1_model)
    merged = merge_adapter(model)
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    merged.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    tmp.rename(out)
    return out


def next_run_name(name: str) -> str:
    """run -> run-v2, run-v2 -> run-v3."""
    match = re.fullmatch(r"(.*)-v(\d+)", name)
    return f"{match.group(1)}-v{int(match.group(2)) + 1}" if match else f"{name}-v2"


def _write_jsonl(records: list[dict[str, Any]], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")


# ---------------------------------------------------------------- evaluation and the gate


def feedback_eval(v1_model: Path, v2_model: Path, held: dict[str, list[dict[str, Any]]], recipe: Recipe
                  ) -> dict[str, Any]:
    """v1 and v2 on the held-out feedback: preference accuracy/margin on pairs, log-prob of corrections."""
    from ayar.data.templates import set_template
    from ayar.eval.preference import completion_logps, preference_scores
    from ayar.models.load import load_for_inference

    result: dict[str, Any] = {"pairs": len(held["pairs"]), "corrections": len(held["sft"]),
                              "ratings": len(held["kto"])}
    targets = held_out_targets(held)
    right: dict[str, list[bool]] = {}
    for name, path in (("v1", v1_model), ("v2", v2_model)):
        model, tokenizer = load_for_inference(path)
        if not tokenizer.chat_template:
            set_template(tokenizer, recipe.data.template)
        block: dict[str, Any] = {}
        if targets:
            right[name] = greedy_hits(model, tokenizer, targets, recipe)
            block["answers_right"] = sum(right[name])
        if held["pairs"]:
            scores = preference_scores(model, tokenizer, held["pairs"], recipe.data.system_prompt)
            block["preference"] = {k: v for k, v in scores.items() if k != "margins"}
        if held["sft"]:
            logps = completion_logps(model, tokenizer, [[{"role": "user", "content": r["instruction"]}]
                                                        for r in held["sft"]],
                                     [[{"role": "assistant", "content": r["output"]}] for r in held["sft"]])
            block["correction_logp_mean"] = sum(logps) / len(logps)
        result[name] = block
        del model
    if targets:
        wins = sum(b and not a for a, b in zip(right["v1"], right["v2"], strict=True))
        losses = sum(a and not b for a, b in zip(right["v1"], right["v2"], strict=True))
        result["answers"] = {"requests": len(targets), "v2_wins": wins, "v2_losses": losses,
                             "win_rate": (wins + (len(targets) - wins - losses) / 2) / len(targets)}
    return result


def held_out_targets(held: dict[str, list[dict[str, Any]]]) -> list[tuple[str, str]]:
    """(prompt, the answer the user wanted) for each held-out prompt that has one: its correction, or the
    served answer the user rated up."""
    targets = {r["instruction"]: r["output"] for r in held["sft"]}
    for r in held["kto"]:
        if r["label"]:
            targets.setdefault(r["prompt"], r["completion"])
    return sorted(targets.items())


def greedy_hits(model: Any, tokenizer: Any, targets: list[tuple[str, str]], recipe: Recipe) -> list[bool]:
    """Whether the model's greedy answer to each prompt is the wanted answer (whitespace stripped): the
    user's own verdict, where preference accuracy is only a log-probability proxy for it."""
    from ayar.eval.generate import generate_chat

    cfg = recipe.eval.model_copy(update={"do_sample": False})
    outputs = generate_chat(model, tokenizer, [[{"role": "user", "content": p}] for p, _ in targets], cfg)
    return [o.strip() == want.strip() for o, (_, want) in zip(outputs, targets, strict=True)]


RISK_RATES = (  # (name, path in the risk report, True when a higher value is worse)
    ("security leak rate", ("security", "leak_rate"), True),
    ("security refusal rate", ("security", "refusal_rate"), False),
    ("unsupported facts rate", ("hallucination", "unsupported_rate"), True),
    ("memorisation rate", ("privacy", "memorization", "rate"), True),
)


def _dig(block: Any, path: tuple[str, ...]) -> float | None:
    for key in path:
        if not isinstance(block, dict) or key not in block:
            return None
        block = block[key]
    return float(block) if isinstance(block, int | float) and not isinstance(block, bool) else None


def gate(evals: dict[str, Any], feedback: dict[str, Any], cfg: IterateConfig,
         forgetting: dict[str, Any] | None = None) -> dict[str, Any]:
    """Promote v2 only if it keeps the test metric, gains on held-out feedback, passes the forgetting report's
    own gate (``eval.forgetting``: general text and answers, v2 against v1) and worsens no risk rate."""
    checks: list[dict[str, Any]] = []

    def check(name: str, v1: float | None, v2: float | None, passed: bool, bound: str) -> None:
        checks.append({"check": name, "v1": v1, "v2": v2, "bound": bound, "passed": bool(passed)})

    v1m, v2m = (evals.get("base") or {}).get(cfg.gate_metric), (evals.get("tuned") or {}).get(cfg.gate_metric)
    if v1m is None or v2m is None:
        check(f"test {cfg.gate_metric}", v1m, v2m, False, f"metric '{cfg.gate_metric}' missing from the eval")
    else:
        check(f"test {cfg.gate_metric}", v1m, v2m, v2m >= v1m - cfg.max_test_drop,
              f"v2 >= v1 - {cfg.max_test_drop:g}")
    p1 = _dig(feedback, ("v1", "preference", "accuracy"))
    p2 = _dig(feedback, ("v2", "preference", "accuracy"))
    c1, c2 = _dig(feedback, ("v1", "correction_logp_mean")), _dig(feedback, ("v2", "correction_logp_mean"))
    answers = feedback.get("answers")
    if answers:  # the user's verdict on greedy answers: v2 must win more held-out requests than it loses
        check("held-out requests: answers the user wanted", _dig(feedback, ("v1", "answers_right")),
              _dig(feedback, ("v2", "answers_right")), answers["v2_wins"] > answers["v2_losses"],
              f"v2 wins more than it loses (won {answers['v2_wins']}, lost {answers['v2_losses']} "
              f"of {answers['requests']})")
    if p1 is not None and p2 is not None:
        check("held-out feedback preference accuracy", p1, p2, p2 - p1 > cfg.min_feedback_gain,
              f"v2 - v1 > {cfg.min_feedback_gain:g}")
    elif c1 is not None and c2 is not None:
        check("held-out corrections log-probability", c1, c2, c2 > c1, "v2 > v1")
    else:
        check("held-out feedback", None, None, False, "no held-out feedback shows a gain (raise iterate.holdout)")
    if forgetting is not None:
        text = forgetting["text"]["en"]
        check("forgetting: general-text perplexity and answers", text["base_perplexity"], text["tuned_perplexity"],
              forgetting["gate"]["passed"], "; ".join(forgetting["gate"]["reasons"]) or "within eval.forgetting")
    risks = evals.get("risks") or {}
    for name, path, higher_is_worse in RISK_RATES:
        r1, r2 = _dig(risks.get("base"), path), _dig(risks.get("tuned"), path)
        if r1 is None or r2 is None:
            continue
        worse = (r2 - r1) if higher_is_worse else (r1 - r2)
        check(name, r1, r2, worse <= cfg.max_risk_increase, f"worsens by at most {cfg.max_risk_increase:g}")
    failed = [c for c in checks if not c["passed"]]
    reasons = ([f"{c['check']}: v1 {_fmt(c['v1'])}, v2 {_fmt(c['v2'])} (bound: {c['bound']})" for c in failed]
               or ["every check within its bound"])
    return {"decision": "block" if failed else "promote", "reasons": reasons, "checks": checks,
            "bounds": cfg.model_dump(mode="json")}


def _fmt(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.4g}"


def iteration_blocks(metrics: dict[str, Any]) -> list[Any]:
    """The report's v1-against-v2 section: gate, held-out feedback, data card, drift."""
    from ayar.eval.report_render import Heading, Para, Table

    info, decision = metrics["iterate"], metrics["gate"]
    blocks: list[Any] = [Heading(2, f"Iteration: {info['v1_run']} (v1) -> {info['v2_run']} (v2)"),
                         Para(f"Gate: **{decision['decision'].upper()}**. " + "; ".join(decision["reasons"])),
                         Table(["check", "v1", "v2", "bound", "passed"],
                               [[c["check"], _fmt(c["v1"]), _fmt(c["v2"]), c["bound"], "yes" if c["passed"] else "NO"]
                                for c in decision["checks"]])]
    fb = metrics.get("feedback_eval") or {}
    rows = []
    for label, path in (("preference accuracy", ("preference", "accuracy")), ("margin (chosen - rejected)",
                        ("preference", "margin_mean")), ("correction log-prob", ("correction_logp_mean",)),
                        ("greedy answers the user wanted", ("answers_right",))):
        v1, v2 = _dig(fb, ("v1", *path)), _dig(fb, ("v2", *path))
        if v1 is not None or v2 is not None:
            rows.append([label, _fmt(v1), _fmt(v2)])
    blocks.append(Heading(3, "Held-out feedback"))
    blocks.append(Table(["metric", "v1", "v2"], rows) if rows else Para("No held-out feedback."))
    card = info["card"]
    blocks += [Heading(3, "Feedback data card"),
               Table(["", "SFT (corrections)", "pairs", "KTO (ratings)"],
                     [["usable", *(card["usable"][k] for k in ("sft", "pairs", "kto"))],
                      ["trained on", *(card["train"][k] for k in ("sft", "pairs", "kto"))],
                      ["held out", *(card["held_out"][k] for k in ("sft", "pairs", "kto"))]]),
               Para(f"Feedback rows {card['feedback_rows']}; unusable: {card['skipped']}; dropped: {card['dropped']}."
                    f" v2 method: {info['method']}, trained on {card['trained_records']} records."),
               Heading(3, "Drift of the served traffic")]
    drift = info.get("drift") or {}
    blocks.append(Para(f"Drift: {drift['status']} (live prompts {drift['n_live']}); scores: "
                       + ", ".join(f"{k} {v:.3f}" for k, v in drift["scores"].items()) if "status" in drift
                       else f"Drift not measured: {drift.get('skipped', 'no log')}"))
    blocks.append(Para("Below: the original test split, where 'base' is v1 and 'tuned' is v2."))
    return blocks


def write_iteration_report(run_dir: Path, metrics: dict[str, Any], name: str) -> Path:
    """report.md and report.html: the iteration section, then the usual report of v1 ('base') vs v2 ('tuned')."""
    from ayar.eval.report import build_blocks
    from ayar.eval.report_render import render_html, render_markdown

    blocks = build_blocks(run_dir, metrics, name)
    blocks = blocks[:1] + iteration_blocks(metrics) + blocks[1:]
    (run_dir / "report.html").write_text(render_html(blocks, f"ayar iterate {name}"), encoding="utf-8")
    path = run_dir / "report.md"
    path.write_text(render_markdown(blocks, run_dir, "report_files"), encoding="utf-8")
    return path


# ---------------------------------------------------------------- the stage


def _drift(v1_dir: Path, db: Path, recipe: Recipe) -> dict[str, Any]:
    from ayar.serve.drift import check_drift

    try:
        report = check_drift(v1_dir / "data", db, thresholds=recipe.monitor, embeddings=recipe.iterate.drift_embeddings,
                             seed=recipe.run.seed, record=False)
    except UsageError as exc:
        return {"skipped": str(exc)}
    return report.as_dict()


def iterate(run: Path, db: Path, overrides: list[str] | None = None) -> dict[str, Any]:
    """Turn run ``run`` and the feedback in ``db`` into the gated run ``<run>-v2``; returns its metrics.json."""
    from ayar.data.prepare import PreparedData
    from ayar.eval.evaluate import evaluate
    from ayar.pipeline import update_metrics
    from ayar.train.engine import train

    run = Path(run)
    if not (run / "recipe.yaml").is_file() or not (run / "model").is_dir():
        raise UsageError(f"{run} is not a trained ayar run (it needs recipe.yaml and model/): run `ayar run` first")
    # iterate.* (the gate) and eval.* (how v1 and v2 are compared) apply to both; everything applies to v2.
    v1 = load_recipe(run / "recipe.yaml", [o for o in overrides or [] if o.startswith(("iterate.", "eval."))])
    cfg = v1.iterate
    v1_data = PreparedData(run / "data")
    records, skipped = feedback_records(read_feedback(db))
    v1_train, v1_test = v1_data.read_split("train"), v1_data.read_split("test")
    usable, dropped = deduplicate(records, v1_train, v1_test)
    train_part, held = hold_out(usable, cfg.holdout, v1.run.seed)
    method = choose_method(v1, {k: len(v) for k, v in train_part.items()}, cfg.method)
    trained = training_records(method, train_part)
    if len(trained) < cfg.min_records:
        raise UsageError(f"only {len(trained)} usable feedback records for method '{method}' (iterate.min_records "
                         f"is {cfg.min_records}): feedback rows {sum(len(v) for v in records.values())}, unusable "
                         f"{skipped}, dropped {dropped}. Serve with --log-text so texts are kept.")
    name = next_run_name(run.name)
    v2_dir = run.parent / name
    v2_dir.mkdir(parents=True, exist_ok=True)
    base = merged_base(run / "model", v2_dir / "base")
    recipe = v2_recipe(v1, name, base.resolve(), method, overrides or [])
    dump_recipe(recipe, v2_dir / "recipe.yaml")
    data_dir = v2_dir / "data"
    same_format = recipe.data.format == v1.data.format  # v1's rows train v2 as they are (SFT after SFT)
    replayed = replay_records(v1_train, len(trained), cfg.replay if same_format else 0.0, v1.run.seed)
    _write_jsonl(trained + replayed, data_dir / "train.jsonl")
    _write_jsonl([], data_dir / "validation.jsonl")
    _write_jsonl(v1_test, data_dir / "test.jsonl")  # the original test split, untouched
    _write_jsonl([r for items in held.values() for r in items], data_dir / "feedback_heldout.jsonl")
    card = {"feedback_rows": sum(len(v) for v in records.values()) + skipped["no_text"], "skipped": skipped,
            "dropped": dropped, "usable": {k: len(v) for k, v in usable.items()},
            "train": {k: len(v) for k, v in train_part.items()}, "held_out": {k: len(v) for k, v in held.items()},
            "trained_records": len(trained), "replayed_v1_records": len(replayed), "method": method}
    (data_dir / "card.json").write_text(json.dumps(card, indent=2), encoding="utf-8")
    say(f"iterate: {card['usable']} usable feedback records; v2 trains {method} on {len(trained)} "
          f"(held out {card['held_out']}) and {len(replayed)} of v1's training records; dropped {dropped}")
    drift = _drift(run, db, v1)
    update_metrics(v2_dir, "iterate", {"v1_run": str(run), "v2_run": str(v2_dir), "db": str(db), "method": method,
                                       "base": str(base), "card": card, "drift": drift})
    result = train(recipe, str(base.resolve()), PreparedData(data_dir), v2_dir)
    update_metrics(v2_dir, "train", result.summary())
    eval_recipe = v1.model_copy(update={"eval": v1.eval.model_copy(update={"compare_base": True})})
    evals = evaluate(eval_recipe, v2_dir / "model", str((run / "model").resolve()), v1_data, v2_dir)
    forgetting = evals.pop("forgetting", None)  # ayar.eval.forgetting: v2 ('tuned') against v1 ('base')
    if forgetting is not None:
        update_metrics(v2_dir, "forgetting", forgetting)
    update_metrics(v2_dir, "eval", evals)
    fb = feedback_eval(run / "model", v2_dir / "model", held, v1)
    update_metrics(v2_dir, "feedback_eval", fb)
    metrics = update_metrics(v2_dir, "gate", gate(evals, fb, cfg, forgetting))
    write_iteration_report(v2_dir, metrics, name)
    return metrics
