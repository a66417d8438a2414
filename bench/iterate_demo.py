"""The iteration loop as a demo: serve a trained run, let a scripted user ask and give feedback, run
`ayar iterate`, and measure whether the user prefers v2's answers to v1's on requests held out of training.

The scripted user asks new instances of the run's synthetic tasks (never in its train or test split) and
knows each right answer: a right answer gets a thumbs up, a wrong one a thumbs down with the right answer as
the correction (a consistent preference). On the held-out requests the user prefers the model whose
greedy answer is right; the win rate of v2 over v1 counts ties as half.

    python bench/iterate_demo.py --run runs/quickstart --requests 400 [--set train.epochs=3 ...]

Writes ``<run>-v2/`` (through `ayar iterate`) and ``<run>-v2/demo.json`` with the figures.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from fastapi.testclient import TestClient

from ayar.data.synthetic import generate_records
from ayar.data.templates import alpaca_user_message
from ayar.iterate import iterate, record_prompt
from ayar.recipe import load_recipe


def user_requests(run: Path, count: int, seed: int) -> list[dict[str, str]]:
    """New task instances (prompt, answer) whose prompts are in neither the run's train nor its test split."""
    recipe = load_recipe(run / "recipe.yaml")
    syn = recipe.data.synthetic
    seen = set()
    for split in ("train", "validation", "test"):
        path = run / "data" / f"{split}.jsonl"
        if path.is_file():
            seen |= {record_prompt(json.loads(line)) for line in path.open(encoding="utf-8") if line.strip()}
    out = []
    for record in generate_records(count * 4, seed, list(syn.languages), list(syn.tasks)):
        prompt = alpaca_user_message(record["instruction"], record.get("input"))
        if prompt not in seen:
            out.append({"prompt": prompt, "answer": record["output"], "task": record["task"]})
        if len(out) == count:
            break
    return out


def serve_and_collect(run: Path, db: Path, requests: list[dict[str, str]], max_tokens: int) -> dict[str, int]:
    """Serve the run over the HTTP app (text logging on); the scripted user asks and rates every answer."""
    from ayar.serve.app import ServeSettings, create_app
    from ayar.serve.engine import load_engine

    engine = load_engine(run / "model", served_name="v1").start()
    app = create_app(ServeSettings(log_db=db, log_requests=True, log_text=True), engine=engine)
    counts = {"up": 0, "down_with_correction": 0}
    with TestClient(app) as client:
        for item in requests:
            body = {"model": "v1", "messages": [{"role": "user", "content": item["prompt"]}],
                    "max_tokens": max_tokens, "temperature": 0}
            reply = client.post("/v1/chat/completions", json=body).json()
            answer = reply["choices"][0]["message"]["content"].strip()
            if answer == item["answer"]:
                feedback = {"id": reply["id"], "rating": "up"}
                counts["up"] += 1
            else:
                feedback = {"id": reply["id"], "rating": "down", "correction": item["answer"]}
                counts["down_with_correction"] += 1
            assert client.post("/v1/feedback", json=feedback).status_code == 200
    engine.stop()
    return counts


def held_out_win_rate(v1: Path, v2: Path, held: list[dict], answers: dict[str, str], max_tokens: int) -> dict:
    """The scripted user's verdict on v1's and v2's greedy answers to the held-out requests."""
    from ayar.eval.generate import generate_chat
    from ayar.models.load import load_for_inference
    from ayar.recipe import EvalConfig

    prompts = sorted({record_prompt(r) for r in held})
    cfg = EvalConfig(max_new_tokens=max_tokens, batch_size=32)
    right = {}
    for name, path in (("v1", v1), ("v2", v2)):
        model, tokenizer = load_for_inference(path)
        outputs = generate_chat(model, tokenizer, [[{"role": "user", "content": p}] for p in prompts], cfg)
        right[name] = [o.strip() == answers[p] for o, p in zip(outputs, prompts, strict=True)]
    wins = sum(b and not a for a, b in zip(right["v1"], right["v2"], strict=True))
    losses = sum(a and not b for a, b in zip(right["v1"], right["v2"], strict=True))
    ties = len(prompts) - wins - losses
    return {"held_out_requests": len(prompts), "v1_right": sum(right["v1"]), "v2_right": sum(right["v2"]),
            "wins": wins, "losses": losses, "ties": ties,
            "win_rate_v2_over_v1": (wins + ties / 2) / len(prompts) if prompts else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, required=True, help="a trained run folder (v1)")
    parser.add_argument("--requests", type=int, default=400)
    parser.add_argument("--max-tokens", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7, help="seed of the user's requests (not the run's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], help="passed to ayar iterate")
    args = parser.parse_args()
    start = time.perf_counter()
    db = args.run.parent / f"{args.run.name}-feedback.sqlite"
    db.unlink(missing_ok=True)
    requests = user_requests(args.run, args.requests, args.seed)
    counts = serve_and_collect(args.run, db, requests, args.max_tokens)
    served_s = time.perf_counter() - start
    metrics = iterate(args.run, db, args.overrides)
    v2 = Path(metrics["iterate"]["v2_run"])
    held = [json.loads(line) for line in (v2 / "data" / "feedback_heldout.jsonl").open(encoding="utf-8")]
    answers = {r["prompt"]: r["answer"] for r in requests}
    result = {"requests": len(requests), "feedback": counts, "card": metrics["iterate"]["card"],
              "method": metrics["iterate"]["method"], "drift": metrics["iterate"]["drift"].get("status"),
              "feedback_eval": metrics["feedback_eval"], "gate": metrics["gate"]["decision"],
              "gate_reasons": metrics["gate"]["reasons"],
              "test_exact_match": {"v1": metrics["eval"]["base"].get("exact_match"),
                                   "v2": metrics["eval"]["tuned"].get("exact_match")},
              "held_out": held_out_win_rate(args.run / "model", v2 / "model", held, answers, args.max_tokens),
              "serve_and_feedback_s": served_s, "total_s": time.perf_counter() - start}
    (v2 / "demo.json").write_text(json.dumps(result, indent=2, ensure_ascii=False), encoding="utf-8")
    print(json.dumps(result, indent=2, ensure_ascii=False))


if __name__ == "__main__":
    main()
