// look_inside.js: draws the numbers inspect_model.py stored in this page (the JSON block "look-inside-data").
// One function per view, named as in the Python that computed the numbers: drawTokens, drawAttention,
// drawLogitLens, drawNextToken, drawGeneration, drawResidualStream. Sizes come from the data, never from GPT-2.
"use strict";

const data = JSON.parse(document.getElementById("look-inside-data").textContent);
const nLayers = data.model.n_layers;
const nHeads = data.model.n_heads;
const tokens = data.sequence; // the prompt's tokens, then the generated ones
const steps = data.generation ? data.generation.steps : [];
const state = { layer: 0, head: 0, query: data.prompt_length - 1, step: steps.length };

// --- small helpers ---------------------------------------------------------------------------------------------

// A token as a label, as the PNGs show it: a space as ␣, a newline as ↵, a tab as ⇥, other control characters escaped.
function visible(token) {
  let shown = token.replaceAll(" ", "␣").replaceAll("\n", "↵").replaceAll("\t", "⇥");
  shown = shown.replace(/[\u0000-\u001f\u007f-\u009f]/g, (ch) => "\\x" + ch.charCodeAt(0).toString(16).padStart(2, "0"));
  return shown === "" ? "∅" : shown;
}

function el(tag, attributes = {}, text = null) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function svg(tag, attributes = {}, text = null) {
  const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [name, value] of Object.entries(attributes)) node.setAttribute(name, value);
  if (text !== null) node.textContent = text;
  return node;
}

function layerName(layer) {
  return layer === 0 ? "embeddings" : `block ${layer - 1}`;
}

function fmt(value) {
  return value >= 0.001 || value === 0 ? value.toFixed(3) : value.toExponential(1);
}

// Matplotlib's viridis at nine stops, interpolated: the colour of an attention weight in [0, 1], as in attention.png.
const VIRIDIS = [
  [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141],
  [39, 173, 129], [92, 200, 99], [170, 220, 50], [253, 231, 37],
];
function viridis(value) {
  const x = Math.min(Math.max(value, 0), 1) * (VIRIDIS.length - 1);
  const i = Math.min(Math.floor(x), VIRIDIS.length - 2);
  const f = x - i;
  return VIRIDIS[i].map((c, j) => Math.round(c + f * (VIRIDIS[i + 1][j] - c)));
}

// The colour of each stored weight (0 to attention_scale thousandths), worked out once: the small maps have many pixels.
const PALETTE = Array.from({ length: data.attention_scale + 1 }, (_, i) => [...viridis(i / data.attention_scale), 255]);

// A probability as a blue from white (1e-5, about a uniform guess over GPT-2's vocabulary) to dark (1), log scale.
function blueShare(prob) {
  return Math.min(Math.max((Math.log10(Math.max(prob, 1e-5)) + 5) / 5, 0), 1);
}
function blue(prob) {
  const t = blueShare(prob);
  return `rgb(${Math.round(247 - t * 239)}, ${Math.round(251 - t * 203)}, ${Math.round(255 - t * 148)})`;
}

// The stored weight of one query over one key: whole thousandths (each row sums to exactly 1000), as a fraction.
function weight(layer, head, query, key) {
  return key <= query ? data.attention_thousandths[layer][head][query][key] / data.attention_scale : 0;
}

// --- 1. the tokens -----------------------------------------------------------------------------------------------

function drawTokens() {
  const list = document.getElementById("token-list");
  list.replaceChildren();
  tokens.forEach((token, position) => {
    const chip = el("button", {
      class: "chip" + (position >= data.prompt_length ? " generated" : "") + (position === state.query ? " chosen" : ""),
      "data-position": position,
      title: `position ${position}, token id ${data.sequence_ids[position]}`,
    }, visible(token));
    chip.addEventListener("click", () => chooseQuery(position));
    list.append(chip);
  });
}

function chooseQuery(position) {
  state.query = position;
  drawTokens();
  drawAttentionLarge();
  drawResidualStream();
}

// --- 2. attention --------------------------------------------------------------------------------------------

// Every block x head as a small map: one canvas pixel per (query, key), scaled up without smoothing.
function drawAttention() {
  const grid = document.getElementById("attention-grid");
  grid.replaceChildren();
  const n = tokens.length;
  const size = Math.max(24, Math.min(96, Math.floor(560 / Math.max(nHeads, 4))));
  const header = el("div", { class: "grid-row" });
  header.append(el("span", { class: "grid-label" }, ""));
  for (let head = 0; head < nHeads; head++) {
    const name = el("span", { class: "grid-head" }, `head ${head}`);
    name.style.width = `${size + 4}px`; // the map and its border
    header.append(name);
  }
  grid.append(header);
  for (let layer = 0; layer < nLayers; layer++) {
    const row = el("div", { class: "grid-row" });
    row.append(el("span", { class: "grid-label" }, `block ${layer}`));
    for (let head = 0; head < nHeads; head++) {
      const canvas = el("canvas", { width: n, height: n, class: "thumb", "data-layer": layer, "data-head": head,
        title: `block ${layer}, head ${head}` });
      canvas.style.width = canvas.style.height = `${size}px`;
      const image = canvas.getContext("2d").createImageData(n, n);
      image.data.fill(255); // white: the future keys, hidden by the causal mask
      data.attention_thousandths[layer][head].forEach((row, q) => {
        row.forEach((thousandths, k) => image.data.set(PALETTE[thousandths], 4 * (q * n + k)));
      });
      canvas.getContext("2d").putImageData(image, 0, 0);
      canvas.addEventListener("click", () => chooseHead(layer, head));
      row.append(canvas);
    }
    grid.append(row);
  }
}

function chooseHead(layer, head) {
  state.layer = layer;
  state.head = head;
  document.querySelectorAll("#attention-grid .thumb").forEach((thumb) => {
    thumb.classList.toggle("chosen", +thumb.dataset.layer === layer && +thumb.dataset.head === head);
  });
  drawAttentionLarge();
  drawGeneration();
}

// The chosen head at full size, with the tokens on both axes; each cell carries its weight (data-weight).
function drawAttentionLarge() {
  const { layer, head, query } = state;
  const n = tokens.length;
  const label = 86;
  const room = document.getElementById("attention-large-box").clientWidth || 620; // the width left beside the grid
  const cell = Math.max(4, Math.min(28, Math.floor((Math.min(room, 900) - label - 8) / n)));
  const fontSize = Math.min(12, Math.max(9, cell - 2));
  const every = Math.ceil((fontSize + 1) / cell); // label every token, or every second... where the rows are thin
  const box = document.getElementById("attention-large");
  document.getElementById("attention-large-title").textContent =
    `block ${layer}, head ${head}: rows = queries (attending), columns = keys (attended to)`;
  const map = svg("svg", { width: label + n * cell + 4, height: label + n * cell + 10, id: "attention-map" });
  const plot = svg("g", { transform: "translate(0, 6)" }); // room above the first row's label
  map.append(plot);
  for (let q = 0; q < n; q++) {
    if (q % every === 0 || q === query) {
      const rowLabel = svg("text", { x: label - 4, y: q * cell + cell / 2, "text-anchor": "end",
        class: "axis" + (q === query ? " chosen" : ""), "dominant-baseline": "middle", "data-query": q },
      visible(tokens[q]));
      const keyLabel = svg("text", { class: "axis", "text-anchor": "end", "dominant-baseline": "middle",
        transform: `translate(${label + q * cell + cell / 2}, ${n * cell + 4}) rotate(-90)` }, visible(tokens[q]));
      rowLabel.style.fontSize = keyLabel.style.fontSize = `${fontSize}px`;
      rowLabel.addEventListener("click", () => chooseQuery(q));
      plot.append(rowLabel, keyLabel);
    }
    for (let k = 0; k <= q; k++) {
      const w = weight(layer, head, q, k);
      const rect = svg("rect", { x: label + k * cell, y: q * cell, width: cell, height: cell,
        fill: `rgb(${viridis(w).join(",")})`, "data-query": q, "data-key": k, "data-weight": w });
      plot.append(rect);
    }
  }
  plot.append(svg("rect", { x: label - 1, y: query * cell, width: (query + 1) * cell + 1, height: cell,
    class: "row-outline" }));
  map.addEventListener("mousemove", (event) => {
    const target = event.target;
    if (target.dataset.key === undefined) return;
    const q = +target.dataset.query;
    const k = +target.dataset.key;
    document.getElementById("attention-readout").textContent =
      `query ${q} “${visible(tokens[q])}” → key ${k} “${visible(tokens[k])}”: weight ${fmt(+target.dataset.weight)}`;
  });
  map.addEventListener("click", (event) => {
    if (event.target.dataset.query !== undefined) chooseQuery(+event.target.dataset.query);
  });
  box.replaceChildren(map);
  document.getElementById("looks-title").textContent =
    `where “${visible(tokens[query])}” (position ${query}) looks, in block ${layer}, head ${head}:`;
  drawLooks(document.getElementById("looks"), layer, head, query);
}

// One query's weights over the keys up to it, as shaded tokens with their weight below.
function drawLooks(container, layer, head, query) {
  container.replaceChildren();
  for (let k = 0; k <= query; k++) {
    const w = weight(layer, head, query, k);
    const chip = el("span", { class: "chip weighted", "data-key": k, "data-weight": w });
    chip.style.background = `rgba(33, 144, 141, ${Math.min(1, w * 1.5).toFixed(3)})`;
    chip.style.color = w > 0.45 ? "white" : "";
    chip.append(el("span", {}, visible(tokens[k])), el("small", {}, fmt(w)));
    container.append(chip);
  }
}

// --- 3. the logit lens -----------------------------------------------------------------------------------------

function drawLogitLens() {
  const table = document.getElementById("lens-table");
  table.replaceChildren();
  const n = tokens.length;
  const follows = el("tr");
  follows.append(el("th", { class: "row-name" }, "next in the text"));
  for (let p = 0; p < n; p++) follows.append(el("th", { class: "follows" }, p + 1 < n ? visible(tokens[p + 1]) : "?"));
  table.append(follows);
  for (let layer = nLayers; layer >= 0; layer--) {
    const row = el("tr");
    row.append(el("th", { class: "row-name" }, layerName(layer)));
    for (let p = 0; p < n; p++) {
      const best = data.logit_lens_top[layer][p][0];
      const cell = el("td", { "data-layer": layer, "data-position": p, "data-token-id": best.token_id,
        "data-prob": best.prob, class: p >= data.prompt_length ? "generated" : "" }, visible(best.token));
      cell.style.background = blue(best.prob);
      cell.style.color = blueShare(best.prob) > 0.6 ? "white" : "";
      cell.addEventListener("mouseenter", () => showLens(layer, p));
      row.append(cell);
    }
    table.append(row);
  }
  const input = el("tr");
  input.append(el("th", { class: "row-name" }, "input token"));
  for (let p = 0; p < n; p++) {
    input.append(el("th", { class: "input" + (p >= data.prompt_length ? " generated" : "") }, visible(tokens[p])));
  }
  table.append(input);
}

function showLens(layer, position) {
  const top = data.logit_lens_top[layer][position];
  document.getElementById("lens-readout").textContent =
    `${layerName(layer)}, after “${visible(tokens[position])}” (position ${position}): ` +
    top.map((item, i) => `${i + 1}. “${visible(item.token)}” ${fmt(item.prob)}`).join("   ");
}

// --- 4. the next token: transformers' logits processors, in the order generate() applies them --------------------

function softmax(scores) {
  let max = -Infinity;
  for (const s of scores) if (s > max) max = s;
  const exps = scores.map((s) => Math.exp(s - max));
  const sum = exps.reduce((a, b) => a + b, 0);
  return exps.map((e) => e / sum);
}

// TemperatureLogitsWarper: scores / temperature.
function temperatureWarper(scores, temperature) {
  return scores.map((s) => s / temperature);
}

// TopKLogitsWarper(top_k, min_tokens_to_keep=1): remove every score below the k-th largest (ties with it stay).
function topKWarper(scores, topK, minTokensToKeep = 1) {
  const k = Math.min(Math.max(topK, minTokensToKeep), scores.length);
  const kth = Float64Array.from(scores).sort()[scores.length - k];
  return scores.map((s) => (s < kth ? -Infinity : s));
}

// TopPLogitsWarper(top_p, min_tokens_to_keep=1): sort ascending, remove the tokens whose cumulative probability is
// at most 1 - top_p, always keeping the min_tokens_to_keep likeliest.
function topPWarper(scores, topP, minTokensToKeep = 1) {
  const order = scores.map((_, i) => i).sort((a, b) => scores[a] - scores[b]);
  const probs = softmax(order.map((i) => scores[i]));
  const kept = scores.slice();
  let cumulative = 0;
  order.forEach((index, rank) => {
    cumulative += probs[rank];
    if (cumulative <= 1 - topP && rank < order.length - minTokensToKeep) kept[index] = -Infinity;
  });
  return kept;
}

// generate(do_sample=True)'s warpers: temperature (unless 1), top-k (unless 0), top-p (unless 1), then softmax.
function samplingProbs(logits, temperature, topK, topP) {
  let scores = logits;
  if (temperature !== 1) scores = temperatureWarper(scores, temperature);
  if (topK !== 0) scores = topKWarper(scores, topK);
  if (topP < 1) scores = topPWarper(scores, topP);
  return softmax(scores);
}

function drawNextToken() {
  const temperature = +document.getElementById("temperature").value;
  const topK = Math.max(0, Math.floor(+document.getElementById("top-k").value || 0));
  const topP = +document.getElementById("top-p").value;
  document.getElementById("temperature-value").textContent = temperature;
  document.getElementById("top-p-value").textContent = topP;
  const probs = samplingProbs(data.next_logits, temperature, topK, topP);
  const plain = softmax(data.next_logits);
  const kept = probs.filter((p) => p > 0).length;
  document.getElementById("next-summary").textContent =
    `after “${visible(tokens[data.prompt_length - 1])}”: ${kept} of ${probs.length} tokens can be drawn ` +
    `(temperature ${temperature}, top-k ${topK || "off"}, top-p ${topP < 1 ? topP : "off"}); the ` +
    `${data.next_token.length} likeliest:`;
  const table = document.getElementById("next-table");
  table.replaceChildren();
  const head = el("tr");
  ["token", "model's probability", "with these settings", ""].forEach((name) => head.append(el("th", {}, name)));
  table.append(head);
  for (const item of data.next_token) {
    const p = probs[item.token_id];
    const row = el("tr", { "data-token-id": item.token_id, "data-prob": p, class: "next-row" });
    const bar = el("span", { class: "bar" });
    bar.style.width = `${(100 * p).toFixed(1)}%`;
    const barCell = el("td", { class: "bar-cell" });
    barCell.append(bar);
    row.append(el("td", { class: "tok" }, visible(item.token)), el("td", {}, fmt(plain[item.token_id])),
      el("td", { class: "prob" }, fmt(p)), barCell);
    table.append(row);
  }
}

// --- 5. generation, step by step ------------------------------------------------------------------------------

function drawGeneration() {
  const body = document.getElementById("generation-body");
  body.replaceChildren();
  if (!steps.length) {
    body.append(el("p", { class: "readout" }, "No generation in this page: run inspect_model.py with --generate N " +
      "to see the model continue the prompt N tokens, one step at a time."));
    return;
  }
  const g = data.generation;
  const stopped = steps.length < g.asked ? ` (it stopped at the end-of-text token, ${g.asked} asked)` : "";
  body.append(el("p", { class: "readout" }, `${steps.length} tokens generated, ${g.sampling}` +
    (g.do_sample ? (g.seed === null ? ", no seed" : `, seed ${g.seed}`) : "") + stopped + "."));
  const controls = el("div", { class: "controls" });
  const slider = el("input", { id: "step", type: "range", min: 1, max: steps.length, step: 1, value: state.step });
  slider.addEventListener("input", () => { state.step = +slider.value; drawGeneration(); });
  const sliderLabel = el("label", {}, "step ");
  sliderLabel.append(slider, el("output", { id: "step-value" }, `${state.step} of ${steps.length}`));
  controls.append(sliderLabel);
  body.append(controls);

  const step = steps[state.step - 1];
  const text = el("p", { class: "text" });
  for (let p = 0; p <= step.position; p++) {
    const span = el("span", { class: p === step.position ? "new" : p >= data.prompt_length ? "generated" : "" },
      visible(tokens[p]));
    text.append(span);
  }
  body.append(text);
  body.append(el("p", { id: "step-token", "data-token-id": step.token_id, "data-position": step.position },
    `step ${state.step}: the model wrote “${visible(step.token)}” (token id ${step.token_id}, probability ` +
    `${fmt(step.prob)}), after reading ${step.position} tokens.`));

  const columns = el("div", { class: "step-views" });
  const drawn = el("div");
  drawn.append(el("h4", {}, "the distribution it was drawn from (the likeliest tokens)"));
  const table = el("table", { class: "bars", id: "step-table" });
  for (const item of step.drawn_from) {
    const row = el("tr", { class: item.token_id === step.token_id ? "chosen" : "", "data-token-id": item.token_id,
      "data-prob": item.prob });
    const bar = el("span", { class: "bar" });
    bar.style.width = `${(100 * item.prob).toFixed(1)}%`;
    const barCell = el("td", { class: "bar-cell" });
    barCell.append(bar);
    row.append(el("td", { class: "tok" }, visible(item.token)), el("td", { class: "prob" }, fmt(item.prob)), barCell);
    table.append(row);
  }
  drawn.append(table);

  const looks = el("div");
  looks.append(el("h4", {}, `where the new token looks: block ${state.layer}, head ${state.head} ` +
    "(choose another head in view 2)"));
  const chips = el("div", { class: "chips", id: "step-looks" });
  drawLooks(chips, state.layer, state.head, step.position);
  looks.append(chips);

  const lens = el("div");
  lens.append(el("h4", {}, "the logit lens at the new token: what each layer would write next"));
  const lensTable = el("table", { class: "bars", id: "step-lens" });
  for (let layer = nLayers; layer >= 0; layer--) {
    const best = data.logit_lens_top[layer][step.position][0];
    const row = el("tr", { "data-layer": layer, "data-token-id": best.token_id });
    const cell = el("td", { class: "tok" }, visible(best.token));
    cell.style.background = blue(best.prob);
    cell.style.color = blueShare(best.prob) > 0.6 ? "white" : "";
    row.append(el("th", {}, layerName(layer)), cell, el("td", { class: "prob" }, fmt(best.prob)));
    lensTable.append(row);
  }
  lens.append(lensTable);
  columns.append(drawn, lens, looks);
  body.append(columns);
}

// --- 6. the residual stream ----------------------------------------------------------------------------------

function drawResidualStream() {
  const { stream, attention, mlp } = data.residual;
  const p = state.query;
  const series = [
    { name: "stream", cls: "stream", points: stream.map((row, layer) => [layer, row[p]]) },
    { name: "attention adds", cls: "attn", points: attention.map((row, block) => [block + 0.5, row[p]]) },
    { name: "MLP adds", cls: "mlp", points: mlp.map((row, block) => [block + 1, row[p]]) },
  ];
  const width = 560, height = 280, left = 56, bottom = 40, top = 48;
  const max = Math.max(...series.flatMap((s) => s.points.map(([, y]) => y))) * 1.08 || 1;
  const x = (layer) => left + (layer / Math.max(nLayers, 1)) * (width - left - 16);
  const y = (value) => top + (1 - value / max) * (height - top - bottom);
  const chart = svg("svg", { width, height });
  chart.append(svg("text", { x: left, y: 16, class: "chart-title" },
    `norms at “${visible(tokens[p])}” (position ${p})`));
  for (let i = 0; i <= 4; i++) {
    const value = (max * i) / 4;
    chart.append(svg("line", { x1: left, x2: width - 16, y1: y(value), y2: y(value), class: "gridline" }));
    chart.append(svg("text", { x: left - 6, y: y(value), class: "axis", "text-anchor": "end",
      "dominant-baseline": "middle" }, value.toPrecision(3)));
  }
  for (let layer = 0; layer <= nLayers; layer++) {
    chart.append(svg("text", { x: x(layer), y: height - bottom + 16, class: "axis", "text-anchor": "middle" },
      layer === 0 ? "emb" : `${layer - 1}`));
  }
  chart.append(svg("text", { x: (left + width) / 2, y: height - 6, class: "axis", "text-anchor": "middle" },
    "after block (emb = the embeddings)"));
  series.forEach((s, i) => {
    chart.append(svg("polyline", { class: `line ${s.cls}`,
      points: s.points.map(([a, b]) => `${x(a)},${y(b)}`).join(" ") }));
    s.points.forEach(([a, b]) => chart.append(svg("circle", { cx: x(a), cy: y(b), r: 3, class: `dot ${s.cls}` })));
    chart.append(svg("text", { x: left + 130 * i, y: 36, class: `legend ${s.cls}` }, `● ${s.name}`));
  });
  document.getElementById("residual-chart").replaceChildren(chart);

  const table = document.getElementById("residual-table");
  table.replaceChildren();
  const head = el("tr");
  ["", "attention adds", "MLP adds", "stream after"].forEach((name) => head.append(el("th", {}, name)));
  table.append(head);
  const first = el("tr", { "data-layer": 0 });
  first.append(el("th", {}, "embeddings"), el("td"), el("td"), el("td", { class: "stream" }, stream[0][p].toFixed(3)));
  table.append(first);
  for (let block = 0; block < nLayers; block++) {
    const row = el("tr", { "data-layer": block + 1 });
    row.append(el("th", {}, `block ${block}`), el("td", { class: "attn" }, attention[block][p].toFixed(3)),
      el("td", { class: "mlp" }, mlp[block][p].toFixed(3)), el("td", { class: "stream" }, stream[block + 1][p].toFixed(3)));
    table.append(row);
  }

  const map = document.getElementById("residual-map");
  if (map.childElementCount) return; // the map covers every position: drawn once
  const n = tokens.length;
  const largest = Math.max(...stream.flat());
  for (let layer = nLayers; layer >= 0; layer--) {
    const row = el("tr");
    row.append(el("th", { class: "row-name" }, layerName(layer)));
    for (let q = 0; q < n; q++) {
      const share = stream[layer][q] / largest;
      const cell = el("td", { title: `${layerName(layer)}, “${visible(tokens[q])}”: norm ${stream[layer][q].toFixed(3)}` });
      cell.style.background = `rgb(${viridis(share).join(",")})`;
      cell.addEventListener("click", () => chooseQuery(q));
      row.append(cell);
    }
    map.append(row);
  }
  const labels = el("tr");
  labels.append(el("th", { class: "row-name" }, "token"));
  for (let q = 0; q < n; q++) labels.append(el("th", { class: "input" }, visible(tokens[q])));
  map.append(labels);
}

// --- the page ------------------------------------------------------------------------------------------------

function drawPage() {
  const m = data.model;
  document.title = `Look inside ${m.name}`;
  document.getElementById("model-name").textContent = m.label;
  document.getElementById("model-name").title = m.name;
  const generated = steps.length ? ` + ${steps.length} generated` : "";
  document.getElementById("model-summary").textContent =
    `${m.model_type}: ${m.n_layers} blocks × ${m.n_heads} heads, width ${m.emb_dim}, context ${m.context_length}, ` +
    `${(m.n_params / 1e6).toFixed(1)}M parameters. Text: ${data.prompt_length} prompt tokens${generated}.`;
  drawTokens();
  drawAttention();
  chooseHead(0, 0);
  drawLogitLens();
  for (const id of ["temperature", "top-k", "top-p"]) {
    document.getElementById(id).addEventListener("input", drawNextToken);
  }
  document.getElementById("top-k").max = data.next_logits.length;
  drawNextToken();
  drawResidualStream();
  document.body.dataset.drawnMs = performance.now().toFixed(1); // since the page began to load
}

drawPage();
