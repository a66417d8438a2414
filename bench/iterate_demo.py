"""The iteration loop as a demo: serve a trained run, let a scripted user ask and give feedback, run
`ayar iterate`, and measure whether the user prefers v2's answers to v1's on requests held out of training.

The scripted user asks new instances of the run's synthetic tasks (never in its train or test split) and
knows each right answer: a right answer gets a thumbs up, a wrong one a thumbs down with the right answer as
the correction (a consistent preference). On the held-out requests the user prefers the model whose
greedy answer is right; the win rate of v2 over v1 counts ties as half.

    python bench/iterate_demo.py --run runs/quickstart --requests 400 [--new-tasks parity] [--set ...]

Writes ``<run>-v2/`` (through `ayar iterate`) and ``<run>-v2/demo.json`` with the figures.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from ayar.data.synthetic import generate_records
from ayar.data.templates import alpaca_user_message
from ayar.iterate import iterate, read_promotion, record_prompt
from ayar.recipe import load_recipe


def user_requests(run: Path, count: int, seed: int, new_tasks: list[str] | None = None,
                  new_share: float = 0.0) -> list[dict[str, str]]:
    """New task instances (prompt, answer) whose prompts are in neither the run's train nor its test split.

    With ``new_tasks``, a ``new_share`` of the requests asks for tasks the run never trained on: the need
    that production traffic shows and the training data did not have.
    """
    recipe = load_recipe(run / "recipe.yaml")
    syn = recipe.data.synthetic
    seen = set()
    for split in ("train", "validation", "test"):
        path = run / "data" / f"{split}.jsonl"
        if path.is_file():
            seen |= {record_prompt(json.loads(line)) for line in path.open(encoding="utf-8") if line.strip()}
    new_count = round(count * new_share) if new_tasks else 0
    out = _unseen(list(syn.tasks), list(syn.languages), count - new_count, seed, seen)
    if new_count:
        out += _unseen(list(new_tasks), list(syn.languages), new_count, seed + 1, seen)
        random.Random(seed).shuffle(out)
    return out


def _unseen(tasks: list[str], languages: list[str], count: int, seed: int, seen: set) -> list[dict[str, str]]:
    out = []
    for record in generate_records(count * 4, seed, languages, tasks):
        prompt = alpaca_user_message(record["instruction"], record.get("input"))
        if prompt not in seen:
            seen.add(prompt)
            out.append({"prompt": prompt, "answer": record["output"], "task": record["task"]})
        if len(out) == count:
            break
    return out


def serve_and_collect(run: Path, db: Path, requests: list[dict[str, str]], max_tokens: int,
                      users: int = 16) -> dict[str, int]:
    """Serve the run over the HTTP app (text logging on); ``users`` scripted users ask at once (the engine
    batches them) and rate every answer."""
    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.engine import load_engine

    engine = load_engine(run / "model", served_name="v1").start()
    # a long request timeout: on a busy shared machine a batch of answers can take minutes
    app = create_app(ServeSettings(log_db=db, log_requests=True, log_text=True, request_timeout=1800),
                     engine=engine)
    counts = {"up": 0, "down_with_correction": 0}

    def ask_and_rate(client: TestClient, item: dict[str, str]) -> str:
        body = {"model": "v1", "messages": [{"role": "user", "content": item["prompt"]}],
                "max_tokens": max_tokens, "temperature": 0}
        response = client.post("/v1/chat/completions", json=body)
        if response.status_code != 200:
            raise RuntimeError(f"chat completion failed: {response.status_code} {response.text}")
        reply = response.json()
        if reply["choices"][0]["message"]["content"].strip() == item["answer"]:
            feedback = {"id": reply["id"], "rating": "up"}
        else:  # the consistent preference: the right answer, as a correction of the wrong one
            feedback = {"id": reply["id"], "rating": "down", "correction": item["answer"]}
        stored = client.post("/v1/feedback", json=feedback)
        if stored.status_code != 200:
            raise RuntimeError(f"feedback refused: {stored.status_code} {stored.text}")
        return "up" if feedback["rating"] == "up" else "down_with_correction"

    with TestClient(app) as client, ThreadPoolExecutor(users) as pool:
        for verdict in pool.map(lambda item: ask_and_rate(client, item), requests):
            counts[verdict] += 1
    engine.stop()
    return counts


def logged_verdicts(db: Path) -> dict[str, int]:
    """The verdict counts of a request log an earlier demo run wrote."""
    import sqlite3

    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        rows = dict(conn.execute("SELECT rating, count(*) FROM feedback GROUP BY rating").fetchall())
    finally:
        conn.close()
    return {"up": rows.get("up", 0), "down_with_correction": rows.get("down", 0)}


def held_out_win_rate(v1: Path, v2: Path, held: list[dict], answers: dict[str, str], tasks: dict[str, str],
                      max_tokens: int) -> dict[str, Any]:
    """The scripted user's verdict on v1's and v2's greedy answers to the held-out requests."""
    from ayar.eval.generate import generate_chat
    from ayar.models.load import load_for_inference
    from ayar.recipe import EvalConfig

    prompts = sorted({record_prompt(r) for r in held} & set(answers))  # a prompt PII redaction changed: unknown
    cfg = EvalConfig(max_new_tokens=max_tokens, batch_size=32)
    right = {}
    for name, path in (("v1", v1), ("v2", v2)):
        model, tokenizer = load_for_inference(path)
        outputs = generate_chat(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts], cfg)
        right[name] = [o.strip() == answers[p] for o, p in zip(outputs, prompts, strict=True)]
    return verdicts(right["v1"], right["v2"], [tasks[p] for p in prompts])


def verdicts(v1_right: list[bool], v2_right: list[bool], tasks: list[str], resamples: int = 2000,
             seed: int = 0) -> dict[str, Any]:
    """The user's verdicts, request by request: v2 wins where only v2 is right, loses where only v1 is, ties
    otherwise. Win rate counts ties as half, with a seeded bootstrap 95% interval over the requests and the
    exact two-sided sign test of wins against losses."""
    from scipy.stats import binomtest

    scores = [0.5 + 0.5 * (b - a) for a, b in zip(v1_right, v2_right, strict=True)]  # 1 win, 0.5 tie, 0 loss
    n, wins, losses = len(scores), scores.count(1.0), scores.count(0.0)
    rng = random.Random(seed)
    boots = sorted(sum(rng.choices(scores, k=n)) / n for _ in range(resamples)) if n else []
    per_task: dict[str, dict[str, int]] = {}
    for task, a, b in zip(tasks, v1_right, v2_right, strict=True):
        row = per_task.setdefault(task, {"requests": 0, "v1_right": 0, "v2_right": 0})
        row["requests"] += 1
        row["v1_right"] += a
        row["v2_right"] += b
    return {"held_out_requests": n, "v1_right": sum(v1_right), "v2_right": sum(v2_right), "wins": wins,
            "losses": losses, "ties": n - wins - losses, "win_rate_v2_over_v1": sum(scores) / n if n else None,
            "win_rate_ci95": [boots[int(0.025 * resamples)], boots[int(0.975 * resamples) - 1]] if n else None,
            "sign_test_p": binomtest(wins, wins + losses).pvalue if wins + losses else None, "per_task": per_task}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder (v1)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7, help="seed of the user's requests (not the run's)")
    parser.add_argument("--new-tasks", nargs="*", default=[],
                        help="synthetic tasks the run never trained on, asked by part of the users")
    parser.add_argument("--new-share", type=float, default=0.5, help="share of requests for --new-tasks")
    parser.add_argument("--users", type=int, default=16, help="scripted users asking at once")
    parser.add_argument("--reuse-log", action="store_true",
                        help="keep the request log of an earlier demo run (same --requests and --seed): iterate only")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed to ayar iterate")
    args = parser.parse_args()
    start = time.perf_counter()
    db = args.run.parent / f"{args.run.name}-feedback.sqlite"
    requests = user_requests(args.run, args.requests, args.seed, args.new_tasks, args.new_share)
    if args.reuse_log and db.is_file():
        counts = logged_verdicts(db)
    else:
        db.unlink(missing_ok=True)
        counts = serve_and_collect(args.run, db, requests, args.max_tokens, args.users)
    served_s = time.perf_counter() - start
    metrics = iterate(args.run, db, args.overrides)
    v2 = Path(metrics["iterate"]["v2_run"])
    held = [json.loads(line) for line in (v2 / "data" / "feedback_heldout.jsonl").open(encoding="utf-8")]
    answers = {r["prompt"]: r["answer"] for r in requests}
    tasks = {r["prompt"]: r["task"] for r in requests}
    forgetting = metrics.get("forgetting") or {}
    result = {"v1_run": str(args.run), "requests": len(requests), "new_tasks": args.new_tasks,
              "new_share": args.new_share if args.new_tasks else 0.0, "feedback": counts,
              "card": metrics["iterate"]["card"], "method": metrics["iterate"]["method"],
              "v2_overrides": args.overrides, "v2_train": {k: metrics["train"].get(k) for k in
                                                           ("steps", "final_loss", "wall_time_s")},
              "drift": {k: metrics["iterate"]["drift"].get(k) for k in ("status", "scores", "n_live", "skipped")},
              "feedback_eval": metrics["feedback_eval"],
              "test_exact_match": {"v1": metrics["eval"]["base"].get("exact_match"),
                                   "v2": metrics["eval"]["tuned"].get("exact_match")},
              "forgetting": {"text": forgetting.get("text"),
                             "answers": {k: v for k, v in (forgetting.get("answers") or {}).items()
                                         if k != "lost_examples"},
                             "gate": forgetting.get("gate")},
              "gate": read_promotion(metrics)["decision"], "gate_reasons": read_promotion(metrics)["reasons"],
              "gate_checks": read_promotion(metrics)["checks"],
              "held_out": held_out_win_rate(args.run / "model", v2 / "model", held, answers, tasks, args.max_tokens),
              "serve_and_feedback_s": served_s, "total_s": time.perf_counter() - start}
    (v2 / "demo.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
