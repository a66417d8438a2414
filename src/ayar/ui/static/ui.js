// ayar ui: the few interactive parts of server-rendered pages (no framework, no network beyond this server).
"use strict";
(() => {
  const UI = JSON.parse(document.body.dataset.ui || "{}");
  const T = (key) => (UI.text && UI.text[key]) || key;
  const $ = (sel, root = document) => root.querySelector(sel);
  const $$ = (sel, root = document) => Array.from(root.querySelectorAll(sel));

  // ------------------------------------------------------------ sortable tables
  $$("table.sortable").forEach((table) => {
    $$("th", table).forEach((th, col) => {
      th.addEventListener("click", () => {
        const body = table.tBodies[0];
        const down = th.dataset.dir !== "asc";
        $$("th", table).forEach((h) => delete h.dataset.dir);
        th.dataset.dir = down ? "asc" : "desc";
        const key = (row) => {
          const cell = row.cells[col];
          const tagged = cell && cell.querySelector("[data-sort]");
          const text = tagged ? tagged.dataset.sort : (cell ? cell.innerText.trim() : "");
          const number = parseFloat(text);
          return text !== "" && !isNaN(number) && isFinite(text) ? number : text.toLowerCase();
        };
        const rows = Array.from(body.rows).sort((a, b) => {
          const x = key(a), y = key(b);
          const order = typeof x === typeof y ? (x < y ? -1 : x > y ? 1 : 0) : (typeof x === "number" ? -1 : 1);
          return down ? order : -order;
        });
        rows.forEach((r) => body.appendChild(r));
      });
    });
  });

  // ------------------------------------------------------------ loss charts (SVG), polled while a run trains
  const COLORS = ["#3b6ea8", "#d1603d", "#2a9d8f", "#8e5ea2", "#e9c46a", "#6c757d", "#c1121f", "#588157"];
  const SVG = "http://www.w3.org/2000/svg";
  function svg(tag, attrs, parent) {
    const el = document.createElementNS(SVG, tag);
    Object.entries(attrs).forEach(([k, v]) => el.setAttribute(k, v));
    if (parent) parent.appendChild(el);
    return el;
  }
  // data-scatter: points alone (a sweep's trials), joined only for the series named by data-line
  function drawChart(box, series) {
    const scatter = "scatter" in box.dataset;
    const names = Object.keys(series).filter((n) => series[n].length);
    const all = names.flatMap((n) => series[n]);
    box.dataset.points = String(all.length);
    box.dataset.series = names.join("|");
    box.textContent = "";
    if (!all.length) { box.textContent = T("no_curve"); return; }
    const W = 720, H = 300, L = 56, R = 12, TOP = 12, B = 34;
    const xs = all.map((p) => p[0]), ys = all.map((p) => p[1]);
    let [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
    if (x0 === x1) { x1 = x0 + 1; }
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = (y) => TOP + (1 - (y - y0) / (y1 - y0)) * (H - TOP - B);
    const root = svg("svg", { viewBox: `0 0 ${W} ${H}`, width: "100%", role: "img" }, box);
    svg("rect", { x: L, y: TOP, width: W - L - R, height: H - TOP - B, class: "plot" }, root);
    for (let i = 0; i <= 4; i++) {
      const yv = y0 + (y1 - y0) * i / 4, xv = x0 + (x1 - x0) * i / 4;
      svg("line", { x1: L, x2: W - R, y1: sy(yv), y2: sy(yv), class: "grid" }, root);
      svg("text", { x: L - 6, y: sy(yv) + 4, "text-anchor": "end", class: "tick" }, root).textContent = yv.toPrecision(3);
      svg("text", { x: sx(xv), y: H - B + 16, "text-anchor": "middle", class: "tick" }, root).textContent =
        scatter ? xv.toPrecision(3) : Math.round(xv);
    }
    svg("text", { x: (W + L) / 2, y: H - 4, "text-anchor": "middle", class: "tick" }, root).textContent =
      box.dataset.xlabel || "step";
    if (box.dataset.ylabel) {
      svg("text", { x: L + 4, y: TOP + 12, class: "tick" }, root).textContent = box.dataset.ylabel;
    }
    const legend = document.createElement("div");
    legend.className = "legend";
    names.forEach((name, i) => {
      const color = COLORS[i % COLORS.length];
      const points = series[name].map((p) => `${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(" ");
      if (!scatter || name === box.dataset.line) {
        svg("polyline", { points, fill: "none", stroke: color, "stroke-width": 2,
                          "stroke-dasharray": name.endsWith("eval_loss") ? "6 4" : "", "data-name": name }, root);
      }
      if (scatter || series[name].length === 1) {
        series[name].forEach(([x, y]) => svg("circle", { cx: sx(x), cy: sy(y), r: 4, fill: color,
                                                          "data-name": name }, root));
      }
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${color}"></i>`;
      item.appendChild(document.createTextNode(name));
      legend.appendChild(item);
    });
    box.appendChild(legend);
  }
  async function pollChart(box) {
    try {
      const reply = await fetch(box.dataset.src, { cache: "no-store" });
      if (!reply.ok) throw new Error(reply.status);
      const data = await reply.json();
      drawChart(box, data.series || {});
      const badge = $("h1 .status");
      if (badge && box.id === "loss-chart" && badge.dataset.status !== data.status) {
        if (badge.dataset.status === "running") { location.reload(); return; }  // metrics are in now
        badge.dataset.status = data.status; badge.className = `status ${data.status}`;
        badge.textContent = T(data.status);
      }
      if (data.status === "running") setTimeout(() => pollChart(box), 1000);
    } catch (err) {
      setTimeout(() => pollChart(box), 3000);
    }
  }
  $$(".chart[data-src]").forEach(pollChart);

  // ------------------------------------------------------------ runs list: refresh statuses while any run runs
  const runsTable = $("#runs-table");
  if (runsTable && $$(".status.running", runsTable).length) {
    setTimeout(function refresh() {
      fetch("/api/runs", { cache: "no-store" }).then((r) => r.json()).then((runs) => {
        let running = false;
        runs.forEach((run) => {
          const box = runsTable.querySelector(`input[value="${CSS.escape(run.name)}"]`);
          const badge = box && box.closest("tr").querySelector(".status");
          if (badge && badge.dataset.status !== run.status) {
            badge.dataset.status = run.status; badge.className = `status ${run.status}`;
            badge.textContent = T(run.status);
          }
          running = running || run.status === "running";
        });
        if (running) setTimeout(refresh, 3000);
      }).catch(() => setTimeout(refresh, 5000));
    }, 3000);
  }

  // ------------------------------------------------------------ playground: base and tuned, streamed
  const playForm = $("#play-form");
  if (playForm) {
    const status = $("#play-status");
    const chats = $$(".chat").map((box) => ({ box, history: [] }));
    const checkReady = async () => {
      const data = await (await fetch(status.dataset.src, { cache: "no-store" })).json();
      if (data.error) { status.textContent = data.error; status.className = "error"; return; }
      if (!data.ready) { setTimeout(checkReady, 1000); return; }
      status.textContent = T("ready"); status.dataset.ready = "1"; $("#play-send").disabled = false;
    };
    checkReady();
    const bubble = (box, role, text) => {
      const div = document.createElement("div");
      div.className = `msg ${role}`;
      div.textContent = text;
      box.appendChild(div);
      return div;
    };
    async function ask(chat, text) {
      chat.history.push({ role: "user", content: text });
      bubble(chat.box, "user", text);
      const out = bubble(chat.box, "assistant", "");
      out.dataset.state = "streaming";
      const body = { model: chat.box.dataset.model, messages: chat.history, stream: true,
                     max_tokens: parseInt($("#play-max").value, 10) || 64,
                     temperature: parseFloat($("#play-temp").value) || 0 };
      try {
        const reply = await fetch(chat.box.dataset.endpoint, { method: "POST", body: JSON.stringify(body),
                                                               headers: { "Content-Type": "application/json" } });
        if (!reply.ok) {
          const err = await reply.json().catch(() => ({}));
          throw new Error((err.error && err.error.message) || `HTTP ${reply.status}`);
        }
        const reader = reply.body.getReader(), decoder = new TextDecoder();
        let buffer = "", chunks = 0;
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true });
          let cut;
          while ((cut = buffer.indexOf("\n\n")) >= 0) {
            const line = buffer.slice(0, cut).trim();
            buffer = buffer.slice(cut + 2);
            if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
            const event = JSON.parse(line.slice(6));
            if (event.error) throw new Error(event.error.message);
            const delta = event.choices && event.choices[0] && event.choices[0].delta;
            if (delta && delta.content) {
              out.textContent += delta.content;
              chunks += 1;
              out.dataset.chunks = String(chunks);
            }
          }
        }
        chat.history.push({ role: "assistant", content: out.textContent });
        out.dataset.state = "done";
      } catch (err) {
        out.dataset.state = "error";
        out.classList.add("error");
        out.textContent = String(err.message || err);
      }
    }
    playForm.addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("#play-input").value.trim();
      if (!text) return;
      $("#play-input").value = "";
      chats.forEach((chat) => ask(chat, text));
    });
    $("#play-clear").addEventListener("click", () => chats.forEach((chat) => {
      chat.history = []; chat.box.textContent = "";
    }));
  }

  // ------------------------------------------------------------ new run: the schema form
  const recipeForm = $("#recipe-form");
  if (recipeForm) {
    // a field the choices leave unused is hidden (and not sent): another method's parameter, or one in a
    // section whose switch (pretrain.enabled, eval.judge.enabled, ...) is off; so is a section left empty
    const showUsed = () => {
      const values = {};
      $$(".field:not([data-method]) [data-key]", recipeForm).forEach((i) => { values[i.dataset.key] = i.value; });
      $$(".field", recipeForm).forEach((f) => {
        const switchedOff = (f.dataset.switches || "").split(" ").some((key) => key && values[key] === "false");
        f.hidden = Boolean(f.dataset.method && f.dataset.method !== values["method.name"]) || switchedOff;
      });
      $$("details.section", recipeForm).forEach((section) => {
        section.hidden = $$(".field", section).every((f) => f.hidden);
      });
    };
    recipeForm.addEventListener("change", showUsed, true);  // capture: a change that does not bubble counts too
    showUsed();
    const changes = () => {
      const out = {};
      $$("[data-key]", recipeForm).forEach((input) => {
        if (input.closest(".field").hidden) return;
        if (input.value !== input.dataset.initial) out[input.dataset.key] = input.value;
      });
      return out;
    };
    const message = $("#form-message");
    const showError = (data) => {
      $$(".field.invalid", recipeForm).forEach((f) => f.classList.remove("invalid"));
      $$(".error[data-error-for]", recipeForm).forEach((e) => { e.textContent = ""; });
      message.className = "error";
      message.textContent = data.error;
      const spot = data.key && $$(".error[data-error-for]", recipeForm).find(
        (e) => e.dataset.errorFor === data.key && !e.closest(".field").hidden);
      if (spot) {
        const section = spot.closest("details");
        if (section) section.open = true;  // a mistake in a folded section must be seen
        spot.textContent = data.error;
        spot.closest(".field").classList.add("invalid");
        spot.closest(".field").scrollIntoView({ block: "center" });
      }
    };
    const post = async (url) => {
      const reply = await fetch(url, { method: "POST", headers: { "Content-Type": "application/json" },
                                       body: JSON.stringify({ example: recipeForm.dataset.example,
                                                              changes: changes() }) });
      const data = await reply.json();
      if (!data.ok) { showError(data); return null; }
      $$(".field.invalid", recipeForm).forEach((f) => f.classList.remove("invalid"));
      $$(".error[data-error-for]", recipeForm).forEach((e) => { e.textContent = ""; });
      message.className = "ok";
      message.textContent = T("valid");
      $("#recipe-yaml").textContent = data.yaml;
      $("#recipe-cli").textContent = data.cli;
      return data;
    };
    const followJob = (name) => {
      const link = $("#job-link");
      link.href = `/runs/${encodeURIComponent(name)}`;
      link.hidden = false;
      const poll = async () => {
        const reply = await fetch(`/api/jobs/${encodeURIComponent(name)}`, { cache: "no-store" });
        if (!reply.ok) return;
        const job = await reply.json();
        $("#job-state").textContent = `${name}: ${T(job.state)}`;
        $("#job-state").dataset.state = job.state;
        $("#job-log").textContent = job.log_tail;
        if (job.state === "running") setTimeout(poll, 1000);
      };
      poll();
    };
    $("#check-button").addEventListener("click", () => post("/api/recipe/check"));
    recipeForm.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!(await post("/api/recipe/check"))) return;  // a mistake is shown without a failed request
      const data = await post("/api/runs");
      if (data) followJob(data.name);
    });
  }

  // ------------------------------------------------------------ the language switch keeps the page
  const switcher = $("#lang-switch");
  if (switcher) {
    const url = new URL(location.href);
    url.searchParams.set("lang", switcher.getAttribute("href").split("=")[1]);
    switcher.href = url.pathname + url.search;
  }
})();
