"""Server-rendered pages. Every value from a run folder is escaped; scripts come only from /static."""

from __future__ import annotations

import base64
import json
import time
from html import escape
from pathlib import Path
from typing import Any

from ayar.run_folder import RunFolder
from ayar.ui import runs as R
from ayar.ui.benchmarks import benchmarks_section, compare_rows
from ayar.ui.forms import MAIN_KEYS, FormField, is_unused, section_switches, text_of
from ayar.ui.i18n import t

KNOWN_SECTIONS = {"format_version", "pretrain", "train", "eval", "carbon", "comparison", "judge", "human",
                  "error_analysis", "risks", "histograms", "split", "base", "tuned", "forgetting", "benchmarks"}
CUT = 200


def _cut(value: Any) -> str:
    text = "" if value is None else str(value)
    return text if len(text) <= CUT else text[: CUT - 1] + "…"


def fmt(value: Any) -> str:
    from ayar.eval.report import fmt as report_fmt

    return report_fmt(value)


def _when(stamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(stamp)) if stamp else ""


def table(headers: list[str], rows: list[list[Any]], table_id: str | None = None, sortable: bool = False,
          raw: bool = False) -> str:
    """An HTML table; cells are escaped unless ``raw`` (then the caller escaped them)."""
    ident = f' id="{escape(table_id)}"' if table_id else ""
    cls = ' class="sortable"' if sortable else ""
    head = "".join(f"<th>{escape(str(h))}</th>" for h in headers)
    cell = (lambda c: str(c)) if raw else (lambda c: escape(_cut(c)))
    body = "".join("<tr>" + "".join(f"<td>{cell(c)}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table{ident}{cls}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def blocks_html(blocks: list[Any]) -> str:
    """The static report's blocks (ayar.eval.report) as page HTML, one heading level down."""
    from ayar.eval.report_render import Heading, Image, Para, Table

    out = []
    for block in blocks:
        if isinstance(block, Heading):
            level = min(block.level + 1, 6)
            out.append(f"<h{level}>{escape(block.text)}</h{level}>")
        elif isinstance(block, Para):
            out.append(f"<p>{escape(block.text)}</p>")
        elif isinstance(block, Table):
            out.append(table(block.headers, block.rows, block.table_id) if block.rows else "<p>(none)</p>")
        elif isinstance(block, Image):
            data = base64.b64encode(block.png).decode("ascii")
            out.append(f'<figure><img alt="{escape(block.title)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{escape(block.title)}</figcaption></figure>")
    return "\n".join(out)


def generic_html(value: Any, depth: int = 0) -> str:
    """Any JSON section (a newer stage's figures the UI has no layout for) as nested tables."""
    if isinstance(value, dict):
        scalars = [[k, fmt(v)] for k, v in value.items() if not isinstance(v, dict | list)]
        out = [table(["key", "value"], scalars)] if scalars else []
        for k, v in value.items():
            if isinstance(v, dict | list) and v and depth < 4:
                out.append(f"<details{' open' if depth < 1 else ''}><summary>{escape(str(k))}</summary>"
                           f"{generic_html(v, depth + 1)}</details>")
        return "\n".join(out)
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        keys = list(dict.fromkeys(k for v in value[:50] for k in v))
        return table(keys, [[fmt(v.get(k)) if not isinstance(v.get(k), dict | list) else json.dumps(
            v.get(k), ensure_ascii=False) for k in keys] for v in value[:50]])
    if isinstance(value, list):
        return f"<p>{escape(', '.join(fmt(v) for v in value[:200]))}</p>"
    return f"<p>{escape(fmt(value))}</p>"


def layout(lang: str, title: str, body: str, active: str = "", extra: dict[str, Any] | None = None) -> str:
    """The page frame: navigation, language switch, the stylesheet and the one script."""
    other = "tr" if lang == "en" else "en"
    nav = "".join(f'<a href="{href}"{" class=active" if key == active else ""}>{escape(t(lang, key))}</a>'
                  for key, href in (("runs", "/"), ("sweeps", "/sweeps"), ("compare", "/compare"),
                                    ("new_run", "/new")))
    texts = {k: t(lang, k) for k in ("running", "done", "gate_failed", "failed", "loading_model", "ready",
                                     "no_curve", "valid", "base", "tuned", "loss_curve")}
    data = escape(json.dumps({"lang": lang, "text": texts, **(extra or {})}, ensure_ascii=False))
    return (f'<!DOCTYPE html>\n<html lang="{lang}"><head><meta charset="utf-8"><title>{escape(title)} · ayar</title>'
            '<meta name="viewport" content="width=device-width, initial-scale=1"><link rel="icon" href="data:,">'
            '<link rel="stylesheet" href="/static/ui.css"><script src="/static/ui.js" defer></script></head>'
            f'<body data-ui="{data}"><header><span class="brand">ayar</span><nav>{nav}</nav>'
            f'<a class="lang" id="lang-switch" href="?lang={other}">{escape(t(lang, "language"))}</a></header>'
            f"<main>\n{body}\n</main></body></html>\n")


def status_badge(lang: str, status: str, gate: dict[str, Any] | None = None) -> str:
    """The run's status; a failed run's badge says why when hovered (its forgetting gate's reasons)."""
    hint = {"failed": t(lang, "failed_hint"), "gate_failed": "; ".join((gate or {}).get("reasons", []))}.get(status)
    title = f' title="{escape(hint)}"' if hint else ""
    return f'<span class="status {status}" data-status="{status}"{title}>{escape(t(lang, status))}</span>'


def gate_section(lang: str, status: str, gate: dict[str, Any] | None) -> str:
    """The forgetting gate's verdict at the top of the run page; nothing for a run without a gate."""
    if gate is None or status not in ("done", "gate_failed"):  # else the figures are an earlier evaluation's
        return ""
    if gate["passed"]:
        return f'<p class="gate passed" id="gate-verdict">{escape(t(lang, "gate_passed"))}</p>'
    reasons = "".join(f"<li>{escape(r)}</li>" for r in gate["reasons"])
    levers = (f"<p>{escape(t(lang, 'gate_levers'))}: {escape(', '.join(gate['levers']))}</p>"
              if gate["levers"] else "")
    return (f'<div class="gate failed" id="gate-verdict" role="alert"><p><b>{escape(t(lang, "gate_failed"))}'
            f"</b>. {escape(t(lang, 'gate_failed_note'))}</p><ul>{reasons}</ul>{levers}</div>")


# ---------------------------------------------------------------- runs list


def runs_page(lang: str, root: Path, summaries: list[R.RunSummary]) -> str:
    if not summaries:
        return layout(lang, t(lang, "runs"), f"<h1>{escape(t(lang, 'runs'))}</h1>"
                      f"<p>{escape(t(lang, 'no_runs', root=str(root)))}</p>", "runs")
    metric_names = list(dict.fromkeys(m for s in summaries for m in s.metrics))
    headers = ["", t(lang, "name"), t(lang, "task"), t(lang, "method"), t(lang, "base_model"), t(lang, "status")]
    for m in metric_names:
        headers += [f"{m} ({t(lang, 'tuned')})", f"Δ {m}"]
    headers += [t(lang, "started"), t(lang, "updated")]
    rows = []
    for s in summaries:
        name = escape(s.name)
        cells = [f'<input type="checkbox" name="runs" value="{name}">',
                 f'<a href="/runs/{name}">{name}</a>', escape(s.task), escape(s.method),
                 escape(_cut(s.base_model)), status_badge(lang, s.status, s.gate)]
        for m in metric_names:
            figures = s.metrics.get(m, {})
            for key in ("tuned", "delta"):
                value = figures.get(key)
                sort = "" if value is None else f"{value:.10g}"
                cells.append(f'<span data-sort="{sort}">{escape(fmt(value))}</span>')
        cells += [f'<span data-sort="{s.started}">{_when(s.started)}</span>',
                  f'<span data-sort="{s.updated}">{_when(s.updated)}</span>']
        rows.append(cells)
    body = (f"<h1>{escape(t(lang, 'runs'))}</h1><form action=\"/compare\" method=\"get\">"
            f"{table(headers, rows, 'runs-table', sortable=True, raw=True)}"
            f"<p>{escape(t(lang, 'select_compare'))} <button type=\"submit\" id=\"compare-button\">"
            f"{escape(t(lang, 'compare'))}</button></p></form>")
    return layout(lang, t(lang, "runs"), body, "runs", {"poll": "/api/runs"})


# ---------------------------------------------------------------- run page


def _metrics_section(lang: str, metrics: dict[str, Any]) -> str:
    from ayar.eval.report import comparison_blocks, metric_table, section

    evals = metrics.get("eval") or {}
    if not R.model_blocks(metrics):
        return f"<h2>{escape(t(lang, 'metrics'))}</h2><p>{escape(t(lang, 'no_eval'))}</p>"
    split = evals.get("split") or {}
    out = [f"<h2>{escape(t(lang, 'metrics'))}</h2>",
           f"<p>{escape(str(split.get('examples', '?')))} {escape(t(lang, 'examples'))} "
           f"({escape(str(split.get('name', 'test')))})</p>"]
    metric = metric_table(evals, section(metrics, "comparison"))
    out.append(table(metric.headers, metric.rows, "metric-table"))
    if section(metrics, "comparison"):
        out.append(blocks_html(comparison_blocks(section(metrics, "comparison"))[1:]))  # without its heading
    return "\n".join(out)


def _training_section(lang: str, run: str, metrics: dict[str, Any], live: bool) -> str:
    train = metrics.get("train") or {}
    figures = [[k, fmt(v)] for k, v in train.items() if not isinstance(v, dict | list)]
    chart = (f'<div class="chart" id="loss-chart" data-src="/api/runs/{escape(run)}/curve" '
             f'data-live="{"1" if live else "0"}"></div>')
    note = f' <small>({escape(t(lang, "live"))})</small>' if live else ""
    return (f"<h2>{escape(t(lang, 'loss_curve'))}{note}</h2>{chart}"
            + (f"<h3>{escape(t(lang, 'training'))}</h3>{table(['figure', 'value'], figures, 'train-table')}"
               if figures else ""))


def _data_card_section(lang: str, run_dir: Path) -> str:
    card = R.read_json(RunFolder(run_dir).data / "data_card.json")
    if not isinstance(card, dict):
        return ""
    out = [f"<h2>{escape(t(lang, 'data_card'))}</h2>",
           table([t(lang, "records_in"), t(lang, "kept"), t(lang, "removed"), t(lang, "rejected")],
                 [[card.get("records_in"), card.get("kept"), card.get("removed_total"), card.get("rejected")]],
                 "data-card-table"),
           f"<p>{escape(str(card.get('accounting', '')))}</p>"]
    examples = card.get("removed_examples") or {}
    rows = [[reason, count, " | ".join(_cut(json.dumps(e, ensure_ascii=False)) for e in examples.get(reason, []))]
            for reason, count in (card.get("removed") or {}).items()]
    if rows:
        out.append(table([t(lang, "reason"), t(lang, "count"), t(lang, "examples")], rows, "removed-table"))
    rejects = card.get("reject_examples") or []
    if rejects:
        out.append(f"<h3>{escape(t(lang, 'rejected'))}</h3>" + generic_html(rejects))
    if card.get("steps"):
        out.append(f"<details><summary>steps</summary>{generic_html(card['steps'])}</details>")
    for key in ("splits", "tokens", "lengths_chars", "notes"):
        if card.get(key):
            out.append(f"<details><summary>{escape(key)}</summary>{generic_html(card[key])}</details>")
    mask = card.get("loss_mask") or R.read_json(RunFolder(run_dir).data / "loss_mask.json")
    if mask:
        out.append(f"<h3>{escape(t(lang, 'loss_mask'))}</h3>{generic_html(mask)}")
    return "\n".join(out)


def _risk_section(lang: str, metrics: dict[str, Any]) -> str:
    from ayar.eval.report import carbon_blocks, section
    from ayar.eval.report_sections import forgetting_blocks, risk_blocks

    out = []
    forgetting = section(metrics, "forgetting")
    if forgetting:
        try:  # the report's own layout; a section of another shape (an older run) as plain tables
            body = blocks_html(forgetting_blocks(forgetting)[1:])
        except (KeyError, TypeError):
            body = generic_html(forgetting)
        out.append(f"<h2>{escape(t(lang, 'forgetting'))}</h2>{body}")
    risky = []
    if section(metrics, "risks"):
        risky += risk_blocks(section(metrics, "risks"))
    if section(metrics, "carbon"):
        risky += carbon_blocks(section(metrics, "carbon"))
    if risky:
        out.append(f"<h2>{escape(t(lang, 'risks'))}</h2>{blocks_html(risky)}")
    return "\n".join(out)


def _examples_section(lang: str, run_dir: Path, metrics: dict[str, Any]) -> str:
    from ayar.eval.report import section
    from ayar.eval.report_sections import error_blocks

    out = []
    samples = R.read_jsonl(RunFolder(run_dir).samples, limit=20)
    if samples:
        models = [k.removesuffix("_output") for k in samples[0] if k.endswith("_output")]
        out.append(f"<h2>{escape(t(lang, 'samples'))}</h2>" + table(
            [t(lang, "prompt"), t(lang, "reference"), *[t(lang, m) if m in ("base", "tuned") else m for m in models]],
            [[r.get("prompt"), r.get("reference"), *[r.get(f"{m}_output") for m in models]] for r in samples],
            "samples-table"))
    if section(metrics, "error_analysis"):
        out.append(f"<h2>{escape(t(lang, 'worst'))}</h2>{blocks_html(error_blocks(section(metrics, 'error_analysis'))[1:])}")
    return "\n".join(out)


def _other_sections(lang: str, metrics: dict[str, Any]) -> str:
    extra = {k: v for k, v in metrics.items() if k not in KNOWN_SECTIONS}
    extra.update({f"eval.{k}": v for k, v in (metrics.get("eval") or {}).items() if k not in KNOWN_SECTIONS})
    if not extra:
        return ""
    return f"<h2>{escape(t(lang, 'other_sections'))}</h2>" + "".join(
        f"<details><summary>{escape(k)}</summary>{generic_html(v)}</details>" for k, v in extra.items())


def run_page(lang: str, summary: R.RunSummary, shown_as: str) -> str:
    run_dir, name = summary.path, escape(summary.name)
    metrics = R.read_json(RunFolder(run_dir).metrics_file, {}) or {}
    live = summary.status == "running"
    recipe_text = RunFolder(run_dir).recipe_file.read_text(encoding="utf-8")
    arts = R.artifacts(run_dir, shown_as)
    art_rows = [[escape(a.kind), f"<code>{escape(str(a.path.relative_to(run_dir)))}</code>",
                 "".join(f"<pre>{escape(c)}</pre>" for c in a.commands)] for a in arts]
    links = [f'<a href="/runs/{name}/play">{escape(t(lang, "playground"))}</a>']
    if RunFolder(run_dir).report_html.is_file():
        links.append(f'<a href="/runs/{name}/files/report.html">{escape(t(lang, "report"))}</a>')
    body = "\n".join([
        f"<h1>{name} {status_badge(lang, summary.status, summary.gate)}</h1>",
        gate_section(lang, summary.status, summary.gate),
        f"<p>{escape(t(lang, 'task'))}: <b>{escape(summary.task)}</b> · {escape(t(lang, 'method'))}: "
        f"<b>{escape(summary.method)}</b> · {escape(t(lang, 'base_model'))}: <b>{escape(summary.base_model)}</b> · "
        f"{' · '.join(links)}</p>",
        _metrics_section(lang, metrics),
        benchmarks_section(lang, metrics, table),
        _training_section(lang, summary.name, metrics, live),
        _data_card_section(lang, run_dir),
        _risk_section(lang, metrics),
        _examples_section(lang, run_dir, metrics),
        _other_sections(lang, metrics),
        f"<h2>{escape(t(lang, 'recipe'))}</h2><pre id=\"recipe\">{escape(recipe_text)}</pre>",
        f"<h2>{escape(t(lang, 'artifacts'))}</h2>"
        + table([t(lang, "artifacts"), "path", t(lang, "commands")], art_rows, "artifacts-table", raw=True),
    ])
    return layout(lang, summary.name, body, "runs", {"run": summary.name, "status": summary.status})


# ---------------------------------------------------------------- compare


def compare_page(lang: str, summaries: list[R.RunSummary], all_names: list[str]) -> str:
    chosen = {s.name for s in summaries}
    picks = "".join(f'<label><input type="checkbox" name="runs" value="{escape(n)}"'
                    f'{" checked" if n in chosen else ""}> {escape(n)}</label> ' for n in all_names)
    form = (f'<form method="get" action="/compare" id="compare-form">{picks}'
            f'<button type="submit">{escape(t(lang, "compare"))}</button></form>')
    if len(summaries) < 2:
        return layout(lang, t(lang, "compare"), f"<h1>{escape(t(lang, 'compare'))}</h1>"
                      f"<p>{escape(t(lang, 'select_compare'))}</p>{form}", "compare")
    all_metrics = [R.read_json(RunFolder(s.path).metrics_file, {}) or {} for s in summaries]
    rows: list[list[Any]] = [[t(lang, "status")] + [t(lang, s.status) for s in summaries],
                             [t(lang, "method")] + [s.method for s in summaries],
                             [t(lang, "base_model")] + [s.base_model for s in summaries]]
    names = list(dict.fromkeys(k for m in all_metrics for b in R.model_blocks(m).values() for k, v in b.items()
                               if isinstance(v, int | float) and not isinstance(v, bool)))
    for metric in names:
        for model in ("base", "tuned"):
            rows.append([f"{metric} ({t(lang, model)})"]
                        + [fmt(R.model_blocks(m).get(model, {}).get(metric)) for m in all_metrics])
        deltas = [s.metrics.get(metric, {}).get("delta") for s in summaries]
        if any(d is not None for d in deltas):
            rows.append([f"Δ {metric}"] + [fmt(d) for d in deltas])
    rows += compare_rows(lang, all_metrics)
    for key in ("final_loss", "steps", "tokens_per_second", "wall_time_s", "trainable_params"):
        rows.append([f"train {key}"] + [fmt((m.get("train") or {}).get(key)) for m in all_metrics])
    query = "&".join(f"runs={escape(s.name)}" for s in summaries)
    run_names, shared = R.shared_examples([s.path for s in summaries])
    shared_html = (table([t(lang, "prompt"), t(lang, "reference"), *[f"{n} ({t(lang, 'tuned')})" for n in run_names]],
                         [[r["prompt"], r["reference"], *r["outputs"]] for r in shared], "shared-table")
                   if shared else f"<p>{escape(t(lang, 'no_shared'))}</p>")
    body = "\n".join([
        f"<h1>{escape(t(lang, 'compare'))}</h1>", form,
        f"<h2>{escape(t(lang, 'metrics'))}</h2>",
        table([t(lang, "metric"), *[s.name for s in summaries]], rows, "compare-table"),
        f"<h2>{escape(t(lang, 'loss_curve'))}</h2>",
        f'<div class="chart" id="compare-chart" data-src="/api/curves?{query}" '
        f'data-live="{"1" if any(s.status == "running" for s in summaries) else "0"}"></div>',
        f"<h2>{escape(t(lang, 'shared_examples'))}</h2>", shared_html,
    ])
    return layout(lang, t(lang, "compare"), body, "compare")


# ---------------------------------------------------------------- playground


def playground_page(lang: str, run: str) -> str:
    name = escape(run)
    columns = "".join(
        f'<section class="side"><h2>{escape(t(lang, side))}</h2><div class="chat" id="chat-{side}" '
        f'data-endpoint="/play/{name}/{side}/v1/chat/completions" data-model="{side}"></div></section>'
        for side in ("base", "tuned"))
    body = (f'<h1><a href="/runs/{name}">{name}</a> · {escape(t(lang, "playground"))}</h1>'
            f"<p>{escape(t(lang, 'play_note'))}</p>"
            f'<p id="play-status" data-src="/api/play/{name}/status">{escape(t(lang, "loading_model"))}</p>'
            f'<div class="columns">{columns}</div>'
            f'<form id="play-form"><textarea id="play-input" rows="3" placeholder="{escape(t(lang, "message"))}">'
            f'</textarea><label>{escape(t(lang, "max_tokens"))} <input id="play-max" value="64" size="4"></label> '
            f'<label>{escape(t(lang, "temperature"))} <input id="play-temp" value="0" size="4"></label> '
            f'<button type="submit" id="play-send" disabled>{escape(t(lang, "send"))}</button> '
            f'<button type="button" id="play-clear">{escape(t(lang, "clear"))}</button></form>')
    return layout(lang, f"{run} · {t(lang, 'playground')}", body, "runs")


# ---------------------------------------------------------------- new run


def _field_html(lang: str, f: FormField, switches: list[str], unused: bool) -> str:
    """One input with its key, default and description; ``switches`` (the section switches it needs on) and
    the method it belongs to let the script hide it while the choices leave it unused."""
    ident = "f-" + f.key.replace(".", "-") + (f"-{f.method}" if f.method else "")
    attrs = (f'id="{escape(ident)}" name="{escape(f.key)}" data-key="{escape(f.key)}" data-initial="'
             f'{escape(f.value)}"')
    if f.kind in ("enum", "bool"):
        options = "".join(f'<option{" selected" if o == f.value else ""}>{escape(o)}</option>' for o in f.options)
        control = f"<select {attrs}>{options}</select>"
    else:
        control = f'<input type="text" {attrs} value="{escape(f.value)}" autocomplete="off">'
    default = f'{escape(t(lang, "default"))}: <code>{escape(text_of(f.default)) or "—"}</code>'
    marks = (f' data-method="{escape(f.method)}"' if f.method else "") + (
        f' data-switches="{escape(" ".join(switches))}"' if switches else "") + (" hidden" if unused else "")
    return (f'<div class="field"{marks}><label for="{escape(ident)}"><code>{escape(f.key)}</code></label>'
            f'{control}<small>{escape(f.description)} ({default})</small>'
            f'<span class="error" data-error-for="{escape(f.key)}"></span></div>')


def _form_sections(lang: str, fields: list[FormField]) -> str:
    """The main fields first, then every other field folded, one closed <details> per recipe section;
    fields (and sections) the current choices leave unused start hidden."""
    values = {f.key: f.value for f in fields if f.method is None}
    main: list[str] = []
    sections: dict[str, list[tuple[str, bool]]] = {}
    for f in fields:
        unused = is_unused(f, values)
        html = _field_html(lang, f, section_switches(f.key, values), unused)
        if f.key in MAIN_KEYS:
            main.append(html)
        else:
            sections.setdefault(f.key.split(".")[0], []).append((html, unused))
    folded = "".join(
        f'<details class="section" id="more-{escape(name)}"{" hidden" if all(u for _, u in items) else ""}>'
        f'<summary>{escape(name)}</summary>{"".join(html for html, _ in items)}</details>'
        for name, items in sections.items())
    return (f'<fieldset id="main-settings"><legend>{escape(t(lang, "main_settings"))}</legend>{"".join(main)}'
            f'</fieldset><h3>{escape(t(lang, "more_settings"))}</h3>{folded}')


def new_run_page(lang: str, examples: list[str], chosen: str | None, fields: list[FormField]) -> str:
    picks = "".join(f'<option{" selected" if e == chosen else ""}>{escape(e)}</option>' for e in examples)
    body = (f"<h1>{escape(t(lang, 'new_run'))}</h1>"
            f'<form method="get" action="/new" id="example-form"><label>{escape(t(lang, "example_recipe"))} '
            f'<select name="example" id="example-select">{picks}</select></label> '
            f'<button type="submit">OK</button></form>'
            f"<p><small>{escape(t(lang, 'output_dir_note'))}</small></p>"
            f'<form id="recipe-form" novalidate data-example="{escape(chosen or "")}">{_form_sections(lang, fields)}'
            f'<p class="actions"><button type="button" id="check-button">{escape(t(lang, "validate"))}</button> '
            f'<button type="submit" id="start-button">{escape(t(lang, "start"))}</button></p></form>'
            f'<div id="form-message" role="status"></div>'
            f"<h2>YAML</h2><p>{escape(t(lang, 'yaml_note'))}</p><pre id=\"recipe-yaml\"></pre>"
            f'<pre id="recipe-cli"></pre>'
            f'<h2>{escape(t(lang, "progress"))}</h2><p id="job-state"></p><a id="job-link" hidden>'
            f'{escape(t(lang, "open_run"))}</a><pre id="job-log"></pre>')
    return layout(lang, t(lang, "new_run"), body, "new")


def login_page(lang: str, error: bool = False) -> str:
    body = (f"<h1>ayar</h1><p>{escape(t(lang, 'login_note'))}</p>"
            + ('<p class="error">401</p>' if error else "")
            + f'<form method="post" action="/login"><label>{escape(t(lang, "login"))} '
            f'<input type="password" name="key" autocomplete="current-password"></label> <button>OK</button></form>')
    return layout(lang, "login", body)
