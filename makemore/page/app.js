// The makemore page: every panel is drawn here from the JSON API of the server that sent it (no other host).
"use strict";

const $ = (id) => document.getElementById(id);
const SVG = "http://www.w3.org/2000/svg";
let model = null;  // the server's /api/model answer for the checkpoint held
let picture = null;  // the picture tab shown

class ApiError extends Error {}

async function api(path, body) {
  const options = body === undefined ? {} :
    {method: "POST", headers: {"Content-Type": "application/json"}, body: JSON.stringify(body)};
  const response = await fetch(path, options);
  let data;
  try {
    data = await response.json();
  } catch (e) {
    throw new ApiError(`${path}: the server answered ${response.status} without JSON`);
  }
  if (!response.ok) throw new ApiError(data.error || `${path}: ${response.status}`);
  return data;
}

function el(tag, attrs = {}, ...children) {
  const node = tag.startsWith("svg:") ? document.createElementNS(SVG, tag.slice(4)) : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "text") node.textContent = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

function showError(id, error) {
  const box = $(id);
  if (error === null) { box.hidden = true; box.textContent = ""; return; }
  if (!(error instanceof ApiError)) console.warn(error);  // a failed connection: say it on the page too
  box.textContent = error instanceof ApiError ? error.message : `no answer from the server (${error.message})`;
  box.hidden = false;
}

// Runs one task at a time per panel and drops answers that a newer request has overtaken.
function latest() {
  let counter = 0;
  return async (task, show) => {
    const mine = ++counter;
    const value = await task();
    if (mine === counter) show(value);
  };
}

const fmt = (p) => p === null ? "0" : p >= 0.01 ? p.toFixed(3) : p.toExponential(1);
const nats = (x) => x === null ? "infinite" : x.toFixed(4);

// ---- settings shared by Sample and Next character

function numberOf(id) {
  const text = $(id).value.trim();
  return text === "" ? null : Number(text);
}

function samplingSettings() {
  return {temperature: numberOf("temperature"), top_k: numberOf("top_k"), top_p: numberOf("top_p")};
}

// the label every panel uses (null: any, for a labelled model; always null for an unlabelled one)
const chosenLabel = () => model.labels && $("label").value ? $("label").value : null;

// how a score or an attention answer says which label it used, as makemore score says it
const underLabel = (answer) => answer.label === null ? "" :
  `under label ${answer.label}${answer.label_source === "most likely" ? " (the likeliest)" : ""}`;

// ---- the model

async function loadModel(summary) {
  model = summary;
  const select = $("checkpoint");
  select.replaceChildren(...model.checkpoints.map((name) => el("option", {value: name, text: name})));
  select.value = model.checkpoint;
  const loss = model.best_dev_loss === null ? "" : `, best dev loss ${model.best_dev_loss.toFixed(4)}`;
  const steps = model.steps ? `${model.steps.toLocaleString("en")} steps` : "counted";
  $("about").textContent = `${model.model}: ${model.vocab.length} characters, context ${model.block_size}, ` +
    `${steps}${loss}`;
  $("new").disabled = !model.items_kept;
  $("label-control").hidden = !model.labels;
  $("label").replaceChildren(el("option", {value: "", text: "any"}),
    ...(model.labels || []).map((label) => el("option", {value: label, text: label})));
  $("next-under").textContent = "";
  $("samples").replaceChildren();
  $("sample-report").textContent = "";
  showError("sample-error", null);
  buildTabs();
  await Promise.all([nextChars(), $("score-item").value ? score() : null, drawPicture(), inspect()]);
}

async function switchCheckpoint() {
  const select = $("checkpoint");
  select.disabled = true;
  try {
    showError("banner", null);
    await loadModel(await api("/api/switch", {checkpoint: select.value}));
  } catch (e) {
    showError("banner", e);
    select.value = model.checkpoint;
  } finally {
    select.disabled = false;
  }
}

// ---- Sample

async function sample(event) {
  event.preventDefault();
  const button = $("sample-button");
  button.disabled = true;
  const body = {n: numberOf("n"), seed: numberOf("seed"), ...samplingSettings(), prefix: $("prefix").value,
    suffix: $("suffix").value, min_len: numberOf("min_len"), max_len: numberOf("max_len"),
    regex: $("regex").value || null, new: $("new").checked, unique: $("unique").checked};
  if (chosenLabel()) body.label = chosenLabel();
  try {
    const answer = await api("/api/sample", body);
    showError("sample-error", null);
    $("samples").replaceChildren(...answer.items.map((record) => el("li", {},
      el("span", {class: "item", text: record.item}),
      record.label === undefined ? "" : el("span", {class: "tag", text: record.label, title: "its label"}),
      record.split === null ? "" : el("span", {class: `mark ${record.split}`, text: record.split,
        title: record.split === "new" ? "in no split of the training data" : `in the ${record.split} split`}),
      el("span", {class: "note", text: `${(-record.log_prob_per_char).toFixed(2)} nats/char`}))));
    const notes = answer.notes.concat(answer.report ? [answer.report] : []);
    $("sample-report").textContent = `${answer.items.length} in ${answer.seconds.toFixed(2)} s` +
      (notes.length ? `: ${notes.join("; ")}` : "");
  } catch (e) {
    showError("sample-error", e);
  } finally {
    button.disabled = false;
  }
}

// ---- Next character

const nextQueue = latest();

async function nextChars() {
  const prefix = $("next-prefix").value;
  try {
    await nextQueue(() => api("/api/next", {prefix, ...samplingSettings(), label: chosenLabel()}), drawBars);
    showError("next-error", null);
  } catch (e) {
    showError("next-error", e);
  }
}

const BARS = 12;  // the likeliest characters drawn as bars; the rest are summed

function drawBars(answer) {
  const top = answer.next.length ? answer.next[0].prob : 1;
  const shown = answer.next.filter((choice, i) => i < BARS || choice.char === null);  // the end always
  const rest = answer.rest + answer.next.filter((choice) => !shown.includes(choice))
    .reduce((sum, choice) => sum + choice.prob, 0);
  $("next-bars").replaceChildren(...shown.map((choice) => {
    const bar = el("span", {class: "bar"});
    bar.style.width = `${(100 * choice.prob / top).toFixed(1)}%`;
    return el("button", {type: "button", class: choice.char === null ? "choice end" : "choice",
      title: choice.char === null ? "end the item here" : `add ${choice.shown}`,
      "data-char": choice.char === null ? "" : choice.char, onclick: () => choose(answer.prefix, choice)},
    el("span", {class: "char", text: choice.shown}), el("span", {class: "track"}, bar),
    el("span", {class: "prob", text: fmt(choice.prob)}));
  }));
  if (rest > 0.0005) {
    $("next-bars").append(el("p", {class: "note", text: `the other characters together: ${fmt(rest)}`}));
  }
  $("next-bars").dataset.prefix = answer.prefix;  // which prefix the bars are for (a newer answer may follow)
  $("next-under").textContent = !model.labels ? "" : answer.label !== null ? `Under label ${answer.label}.` :
    "Any label: the labels' distributions averaged by their training counts, as Sample draws the next character.";
}

function choose(prefix, choice) {
  const done = $("next-done");
  if (choice.char === null) {
    done.textContent = `“${prefix}” ends here (p = ${fmt(choice.prob)}).`;
    done.hidden = false;
    $("score-item").value = prefix;
    if (prefix) score();
    return;
  }
  done.hidden = true;
  $("next-prefix").value = prefix + choice.char;
  nextChars();
}

function editPrefix(change) {
  const input = $("next-prefix");
  input.value = change(input.value);
  $("next-done").hidden = true;
  nextChars();
}

// ---- Score

const scoreQueue = latest();

async function score(event) {
  if (event) event.preventDefault();
  try {
    await scoreQueue(() => api("/api/score", {item: $("score-item").value, label: chosenLabel()}), drawScore);
    showError("score-error", null);
  } catch (e) {
    showError("score-error", e);
    $("score-chars").replaceChildren();
    $("score-summary").textContent = "";
  }
}

function surpriseColour(logprob) {
  // 0 nats: green; log(V) nats (a uniform guess) or more: red
  const worst = Math.log(model.vocab.length + 1);
  const t = logprob === null ? 1 : Math.min(1, -logprob / worst);
  return `hsl(${(120 * (1 - t)).toFixed(0)}, 75%, ${(85 - 10 * t).toFixed(0)}%)`;
}

function drawScore(answer) {
  $("score-chars").replaceChildren(...answer.transitions.map((t, i) => {
    const last = i === answer.transitions.length - 1;
    const span = el("span", {class: last ? "ch end" : "ch", text: last ? "end" : t.next,
      title: `p = ${fmt(t.prob)}, -log p = ${t.logprob === null ? "infinite" : (-t.logprob).toFixed(3)}`});
    span.style.backgroundColor = surpriseColour(t.logprob);
    return span;
  }));
  const where = answer.split === null ? "" : answer.split === "new" ? "; in no split of the training data" :
    `; in the ${answer.split} split`;
  const under = underLabel(answer);
  $("score-summary").textContent = `loss ${nats(answer.mean_nll)} nats per character (total ${nats(answer.nll)} ` +
    `over ${answer.n} transitions, the end included)${where}${under ? `; ${under}` : ""}`;
  $("score-legend").hidden = false;
}

// ---- Pictures

const TABS = {counts: "counts", embeddings: "embedding plane", curve: "training curve", attention: "attention",
  labels: "labels"};

function buildTabs() {
  const available = model.pictures;
  if (!available.includes(picture)) picture = available[0] || null;
  $("picture-tabs").replaceChildren(...available.map((name) => el("button", {type: "button", "data-picture": name,
    "aria-pressed": String(name === picture), text: TABS[name],
    onclick: () => { picture = name; buildTabs(); drawPicture(); }})));
  $("picture-form").hidden = !["attention", "labels"].includes(picture);
  if (!available.length) $("picture").replaceChildren(el("p", {class: "note", text: "no pictures for this model"}));
}

const pictureQueue = latest();

async function drawPicture(event) {
  if (event) event.preventDefault();
  if (picture === null) return;
  const item = $("picture-item").value;
  const tasks = {
    counts: () => api("/api/counts"), embeddings: () => api("/api/embeddings"), curve: () => api("/api/curve"),
    attention: () => item ? api("/api/attention", {item, label: chosenLabel()}) : null,
    labels: () => item ? api("/api/classify", {item}) : null,
  };
  const shown = picture;
  try {
    await pictureQueue(tasks[shown], (data) => {
      showError("picture-error", null);
      const box = $("picture");
      if (data === null) {
        box.replaceChildren(el("p", {class: "note", text: "type an item and press Draw"}));
        return;
      }
      const draw = {counts: drawCounts, embeddings: drawEmbeddings, curve: drawCurve, attention: drawAttention,
        labels: drawPosterior}[shown];
      box.replaceChildren(...[].concat(draw(data)));
    });
  } catch (e) {
    showError("picture-error", e);
    $("picture").replaceChildren();
  }
}

function heat(value, top) {
  const t = top > 0 ? Math.min(1, value / top) : 0;
  return `hsl(215, 80%, ${(97 - 55 * t).toFixed(1)}%)`;
}

function drawCounts(data) {
  if (data.kind === "contexts") return drawContexts(data);
  const V = data.labels.length, cell = 34, pad = 18;
  const top = Math.max(...data.table.flat());
  const svg = el("svg:svg", {viewBox: `0 0 ${pad + V * cell} ${pad + V * cell}`, class: "counts",
    role: "img", "aria-label": data.counts ? "bigram counts" : "bigram probabilities"});
  data.labels.forEach((label, i) => {
    svg.append(el("svg:text", {x: pad + i * cell + cell / 2, y: 12, class: "axis", text: label}));
    svg.append(el("svg:text", {x: 9, y: pad + i * cell + cell / 2 + 4, class: "axis", text: label}));
  });
  data.table.forEach((row, i) => row.forEach((value, j) => {
    const x = pad + j * cell, y = pad + i * cell;
    const shown = data.counts ? String(value) : value.toFixed(2);
    svg.append(el("svg:rect", {x, y, width: cell - 1, height: cell - 1, fill: heat(value, top)},
      el("svg:title", {text: `${data.labels[i]}${data.labels[j]}: ${shown}`})));
    const dark = value > 0.6 * top;
    svg.append(el("svg:text", {x: x + cell / 2, y: y + 13, class: dark ? "cell light" : "cell",
      text: data.labels[i] + data.labels[j]}));
    svg.append(el("svg:text", {x: x + cell / 2, y: y + 26, class: dark ? "cell light" : "cell", text: shown}));
  }));
  const caption = data.counts ? "N[previous, next]: how often each character followed each in the training split" :
    "P[previous, next]: the probabilities the network predicts" +
    (data.averaged ? ", its labels' averaged by their training counts" : "");
  return [el("p", {class: "note", text: caption}), el("div", {class: "scroll"}, svg)];
}

function drawContexts(data) {
  const table = el("table", {class: "contexts"},
    el("tr", {}, el("th", {text: "context"}), el("th", {text: "count"}), el("th", {text: "what followed, most often first"})));
  for (const row of data.rows) {
    const next = el("td", {class: "followers"});
    for (const [char, count] of row.next) {
      const chip = el("span", {class: "chip", text: `${char} ${count}`});
      chip.style.backgroundColor = heat(count, row.total);
      next.append(chip);
    }
    table.append(el("tr", {}, el("td", {class: "context", text: row.context}),
      el("td", {class: "num", text: row.total.toLocaleString("en")}), next));
  }
  return [el("p", {class: "note", text: "The contexts that occur most in the training split, and the counts of " +
    "the characters after each (. stands for the boundary)."}), el("div", {class: "scroll"}, table)];
}

function scale(values, lo, hi) {
  let min = Math.min(...values), max = Math.max(...values);
  if (!(max > min)) { min -= 1; max += 1; }
  return (v) => lo + (hi - lo) * (v - min) / (max - min);
}

function drawEmbeddings(data) {
  const W = 420, H = 420, m = 24;
  const xs = data.points.map((p) => p[0]), ys = data.points.map((p) => p[1]);
  const sx = scale(xs, m, W - m), sy = scale(ys, H - m, m);
  const svg = el("svg:svg", {viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": "embedding plane"});
  svg.append(el("svg:rect", {x: 1, y: 1, width: W - 2, height: H - 2, class: "frame"}));
  data.points.forEach((p, i) => {
    svg.append(el("svg:circle", {cx: sx(p[0]), cy: sy(p[1]), r: 11, class: "dot"}));
    svg.append(el("svg:text", {x: sx(p[0]), y: sy(p[1]) + 4, class: "dot-label", text: data.labels[i]}));
  });
  return [el("p", {class: "note", text: `Each character's row of the embedding table C: ${data.note} ` +
    `(${data.axes.filter(Boolean).join(" across, ")} up).`}), svg];
}

function drawCurve(data) {
  const W = 560, H = 300, left = 48, bottom = 28, m = 10;
  const points = data.points;
  const losses = points.flatMap((p) => [p.train_loss, p.dev_loss]).filter((v) => v !== undefined && v !== null);
  const sx = scale(points.map((p) => p.step), left, W - m), sy = scale(losses, H - bottom, m);
  const svg = el("svg:svg", {viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "aria-label": "training curve"});
  svg.append(el("svg:line", {x1: left, y1: H - bottom, x2: W - m, y2: H - bottom, class: "axis-line"}));
  svg.append(el("svg:line", {x1: left, y1: m, x2: left, y2: H - bottom, class: "axis-line"}));
  const lo = Math.min(...losses), hi = Math.max(...losses);
  for (const v of [lo, (lo + hi) / 2, hi]) {
    svg.append(el("svg:text", {x: left - 4, y: sy(v) + 4, class: "tick end-anchor", text: v.toFixed(2)}));
  }
  const first = points[0].step, last = points[points.length - 1].step;
  svg.append(el("svg:text", {x: left, y: H - 8, class: "tick", text: `step ${first}`}));
  svg.append(el("svg:text", {x: W - m, y: H - 8, class: "tick end-anchor", text: `step ${last.toLocaleString("en")}`}));
  const line = (key, cls) => {
    const kept = points.filter((p) => p[key] !== undefined && p[key] !== null);
    if (kept.length) {
      svg.append(el("svg:polyline", {class: cls, points: kept.map((p) => `${sx(p.step).toFixed(1)},${sy(p[key]).toFixed(1)}`).join(" ")}));
    }
    return kept.length;
  };
  line("train_loss", "train");
  const dev = line("dev_loss", "dev");
  return [el("p", {class: "note", text: "Loss (nats per character) during training: minibatch loss" +
    (dev ? " (blue) and dev loss (orange)" : "")}), svg];
}

function drawAttention(data) {
  const T = data.tokens.length, cell = 22, pad = 16;
  const size = pad + T * cell;
  const blocks = [];
  data.blocks.forEach((heads, b) => {
    const row = el("div", {class: "heads"});
    heads.forEach((rows, h) => {
      const svg = el("svg:svg", {viewBox: `0 0 ${size} ${size}`, class: "head", role: "img",
        "aria-label": `block ${b + 1} head ${h + 1}`});
      data.tokens.forEach((token, i) => {
        svg.append(el("svg:text", {x: pad + i * cell + cell / 2, y: 11, class: "axis", text: token}));
        svg.append(el("svg:text", {x: 7, y: pad + i * cell + cell / 2 + 4, class: "axis", text: token}));
      });
      rows.forEach((weights, i) => weights.forEach((w, j) => {
        svg.append(el("svg:rect", {x: pad + j * cell, y: pad + i * cell, width: cell - 1, height: cell - 1,
          fill: heat(w, 1)}, el("svg:title", {text: `${data.tokens[i]} (position ${i}) looks at ` +
          `${data.tokens[j]} (position ${j}): ${w.toFixed(3)}`})));
      }));
      row.append(el("figure", {}, svg, el("figcaption", {text: `head ${h + 1}`})));
    });
    blocks.push(el("h3", {text: `block ${b + 1}`}), row);
  });
  const under = underLabel(data);
  return [el("p", {class: "note", text: "Each row is a position reading the item (the boundary first); its " +
    `cells are how much it took from each earlier position${under ? `, ${under}` : ""}.`}), ...blocks];
}

function drawPosterior(answer) {
  const box = el("div", {class: "bars posterior"}, el("p", {class: "note", text: `P(label | “${answer.item}”), ` +
    "proportional to P(item | label) times the label's share of the training items, as makemore classify gives it"}));
  for (const {label, probability: p} of answer.labels) {  // the likeliest first
    const bar = el("span", {class: "bar"});
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    box.append(el("div", {class: "choice static"}, el("span", {class: "char", text: label, title: label}),
      el("span", {class: "track"}, bar), el("span", {class: "prob", text: fmt(p)})));
  }
  return box;
}

// ---- Inspect

async function inspect() {
  try {
    const info = await api("/api/inspect");
    showError("inspect-error", null);
    const shown = (value) => typeof value === "object" && value !== null ? JSON.stringify(value) : String(value);
    $("inspect").replaceChildren(...Object.entries(info).map(([key, value]) =>
      el("tr", {}, el("th", {text: key}), el("td", {text: shown(value)}))));
  } catch (e) {
    showError("inspect-error", e);
  }
}

// ---- start

function start() {
  $("checkpoint").addEventListener("change", switchCheckpoint);
  $("label").addEventListener("change", () => {
    nextChars();
    if ($("score-item").value) score();
    if (picture === "attention") drawPicture();
  });
  $("sample-form").addEventListener("submit", sample);
  $("score-form").addEventListener("submit", score);
  $("picture-form").addEventListener("submit", drawPicture);
  $("next-prefix").addEventListener("input", () => editPrefix((text) => text));
  $("next-back").addEventListener("click", () => editPrefix((text) => Array.from(text).slice(0, -1).join("")));
  $("next-clear").addEventListener("click", () => editPrefix(() => ""));
  $("temperature-range").addEventListener("input", () => {
    $("temperature").value = $("temperature-range").value;
    nextChars();
  });
  for (const id of ["temperature", "top_k", "top_p"]) {
    $(id).addEventListener("change", () => {
      if (id === "temperature") $("temperature-range").value = $("temperature").value;
      nextChars();
    });
  }
  api("/api/model").then(loadModel).then(() => { document.body.dataset.ready = "true"; })
    .catch((e) => showError("banner", e));
}

start();
