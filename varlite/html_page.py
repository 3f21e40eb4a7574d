"""The step-through page's text (``html_export.step_through_html`` fills it in): one HTML document with its styles and
script inline, a ``string.Template`` (``PAGE``), and the text that differs between a generation's page and an
encoding's (``PARTS``). The script reads the page's JSON document (``html_export.page_data``) and draws one scale at
a time; nothing here is computed in Python.
"""
from __future__ import annotations

from string import Template

# The text that differs between a generation's page and an encoding's: the default title, the number of picture
# columns, the lead paragraph, the rest panel (an encoding's only) and the cards under the pictures (a generation's
# candidates and mask row, an encoding's nearest codebook entries).
_CANDIDATES_CARD = """<section class="card wide">
    <h3>$heading</h3>
    <p id="hint">$hint</p>
    <div id="candidates"></div>
  </section>"""
_MASK_CARD = """<section class="card wide">
    <h3>Attention mask row of this scale</h3>
    <div id="mask" role="img"></div>
    <div class="mask-ends"><span>position 0</span><span id="mask-end"></span></div>
    <p id="mask-text"></p>
    <p><span class="key" style="background: var(--seen)"></span>may attend
      <span class="key" style="background: var(--masked)"></span>masked
      <span class="key" style="box-shadow: inset 0 0 0 3px var(--accent)"></span>this scale's own tokens</p>
  </section>"""
PARTS = {
    "generation": {
        "default_title": "A generation, scale by scale", "columns": "3",
        "lead": "VAR generates an image coarse to fine: at each scale the transformer predicts a whole token map at "
                "once, given every coarser scale. Step through the scales; tap a token to see what else the model "
                "considered.",
        "rest_panel": "",
        "cards": Template(_CANDIDATES_CARD).substitute(
            heading="Candidates", hint="Tap (or click) a token to see the model's 5 most likely tokens at that "
                                       "position and their probabilities.") + "\n  " + _MASK_CARD},
    "encoding": {
        "default_title": "An encoding, scale by scale", "columns": "4",
        "lead": "VAR's tokenizer turns an image into a pyramid of token maps, coarse to fine: at each scale it "
                "shrinks what is still unexplained (the rest, f &minus; <span class=\"hat\">f</span>) to the "
                "scale's side, snaps every vector to its nearest codebook entry (the tokens), and adds what those "
                "entries explain to <span class=\"hat\">f</span>. Step through the scales; tap a token to see the "
                "codebook entries nearest to the vector it replaced.",
        "rest_panel": """<div class="card">
      <h3>Rest after this scale</h3>
      <img id="rest" class="square" alt="">
      <div class="legend"></div>
      <div class="legend-labels"><span>0</span><span>largest of f</span></div>
      <p>What is left to explain for the finer scales: the size of f &minus; <span class="hat">f</span> at each
        position.</p>
    </div>
    """,
        "cards": Template(_CANDIDATES_CARD).substitute(
            heading="Nearest codebook entries", hint="Tap (or click) a token to see the 5 codebook entries nearest "
                                                     "to the vector it replaced, and their distances.")},
}

# The page: $title, $data (the JSON), the kind's $columns, $lead, $rest_panel and $cards (``PARTS``), colours
# $viridis (the heat maps' legend), $seen / $masked (the mask's may-attend / masked, cividis as in
# viz.attention_mask_figure) and $accent (the current scale, the chosen token).
PAGE = Template("""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>$title</title>
<style>
  :root { --accent: $accent; --seen: $seen; --masked: $masked; --ink: #1b1f24; --soft: #5a6270; --line: #d5d9e0; }
  * { box-sizing: border-box; }
  body { margin: 0; background: #f4f5f7; color: var(--ink); font: 16px/1.45 system-ui, -apple-system, "Segoe UI",
         Roboto, "Helvetica Neue", Arial, sans-serif; -webkit-text-size-adjust: 100%; }
  main { max-width: 1120px; margin: 0 auto; padding: 12px; }
  h1 { font-size: 1.2rem; margin: 4px 0 2px; }
  .lead { margin: 0 0 10px; color: var(--soft); font-size: .95rem; }
  .controls { position: sticky; top: 0; z-index: 2; display: flex; flex-wrap: wrap; gap: 6px; align-items: center;
              padding: 8px 0; background: #f4f5f7; }
  button { font: inherit; color: inherit; }
  .controls button { min-height: 44px; min-width: 44px; padding: 0 12px; border: 1px solid var(--line);
                     border-radius: 8px; background: #fff; cursor: pointer; }
  .controls button:disabled { opacity: .35; cursor: default; }
  .chips { display: flex; gap: 4px; flex-wrap: wrap; }
  .chips button { padding: 0 8px; line-height: 1.1; font-size: .85rem; }
  .chips button small { display: block; color: var(--soft); font-size: .72rem; }
  .chips button[aria-current="step"] { border: 2px solid var(--accent); background: #fff4e0; font-weight: 600; }
  h2 { display: flex; flex-wrap: wrap; align-items: baseline; column-gap: .6em; font-size: 1.1rem;
       margin: 6px 0 10px; }
  h2 span { color: var(--soft); font-weight: 400; font-size: .95rem; }
  .panels { display: grid; grid-template-columns: repeat($columns, minmax(0, 1fr)); gap: 12px; touch-action: pan-y; }
  .card { background: #fff; border: 1px solid var(--line); border-radius: 10px; padding: 10px; }
  .card h3 { margin: 0 0 6px; font-size: 1rem; }
  .card p { margin: 6px 0 0; color: var(--soft); font-size: .85rem; }
  .square { width: 100%; aspect-ratio: 1 / 1; display: block; }
  img.square { image-rendering: pixelated; border-radius: 4px; }
  #grid { display: grid; gap: 1px; background: #fff; }
  #grid button { border: 0; padding: 0; margin: 0; cursor: pointer; min-width: 0; min-height: 0;
                 -webkit-tap-highlight-color: transparent; }
  #grid button[aria-pressed="true"] { outline: 3px solid var(--ink); outline-offset: -3px;
                                      box-shadow: inset 0 0 0 5px #fff; }
  .legend { height: 10px; border-radius: 3px; margin-top: 8px; background: linear-gradient(to right, $viridis); }
  .legend-labels { display: flex; justify-content: space-between; color: var(--soft); font-size: .75rem; }
  .wide { margin-top: 12px; }
  #mask { display: flex; height: 28px; border-radius: 4px; overflow: hidden; border: 1px solid var(--line); }
  #mask div { min-width: 3px; border-right: 1px solid #fff; }
  #mask div:last-child { border-right: 0; }
  #mask .seen { background: var(--seen); }
  #mask .masked { background: var(--masked); }
  #mask .own { box-shadow: inset 0 0 0 3px var(--accent); }
  .mask-ends { display: flex; justify-content: space-between; color: var(--soft); font-size: .75rem; }
  .key { display: inline-block; width: .9em; height: .9em; vertical-align: -1px; border-radius: 2px;
         margin: 0 3px 0 8px; }
  table { border-collapse: collapse; width: 100%; max-width: 40rem; margin-top: 4px; }
  td, th { padding: 6px 6px; border-bottom: 1px solid var(--line); text-align: left; font-size: .92rem; }
  th { color: var(--soft); font-weight: 500; font-size: .8rem; }
  td.num { font-variant-numeric: tabular-nums; white-space: nowrap; width: 7em; }
  td:first-child { width: 2.2em; }
  .swatch { display: inline-block; width: 1.3em; height: 1.3em; border-radius: 3px; vertical-align: middle;
            border: 1px solid rgba(0, 0, 0, .25); }
  .bar { height: .8em; background: #0072b2; border-radius: 2px; min-width: 1px; }
  tr.chosen td { font-weight: 600; background: #fff4e0; }
  .tag { font-size: .75rem; color: #8a4b00; }
  #hint { color: var(--soft); }
  .hat { position: relative; font-style: italic; }
  .hat::after { content: "^"; position: absolute; left: .05em; top: -.6em; font-style: normal; }
  footer { margin: 16px 0 8px; color: var(--soft); font-size: .8rem; }
  kbd { border: 1px solid var(--line); border-radius: 3px; padding: 0 4px; background: #fff; }
  @media (max-width: 640px) {
    main { padding: 8px; }
    .panels { grid-template-columns: repeat(2, minmax(0, 1fr)); gap: 8px; }
    .panels .tokens { grid-column: 1 / -1; }
    .chips { order: 1; flex: 1 0 100%; }
    .chips button { flex: 1 1 0; min-width: 0; padding: 0 2px; }
    .card { padding: 8px; }
    .card p { font-size: .8rem; }
  }
</style>
</head>
<body>
<main>
  <h1>$title</h1>
  <p class="lead">$lead</p>
  <nav class="controls" aria-label="scales">
    <button id="prev" aria-label="previous scale">&#9664;</button>
    <div class="chips" id="chips"></div>
    <button id="next" aria-label="next scale">&#9654;</button>
    <button id="play">Play</button>
  </nav>
  <h2 id="scale-title"></h2>
  <section class="panels" id="panels">
    <div class="card tokens">
      <h3>Tokens r<sub>k</sub></h3>
      <div id="grid" class="square" role="group" aria-label="token map"></div>
      <p>Each cell is one codebook entry, in its codebook colour (the same colour is the same entry at every scale).
        Tap a cell.</p>
    </div>
    <div class="card">
      <h3>Contribution</h3>
      <img id="contribution" class="square" alt="">
      <div class="legend"></div>
      <div class="legend-labels"><span>0</span><span>largest of any scale</span></div>
      <p>What this scale adds to the latent <span class="hat">f</span>: the size of &phi;<sub>k</sub>(up(e[r<sub>k</sub>])) at each
        position.</p>
    </div>
    $rest_panel<div class="card">
      <h3>Image so far</h3>
      <img id="image" class="square" alt="">
      <p>Decoded from <span class="hat">f</span> = the sum of the contributions of scales 1&hellip;k.</p>
    </div>
  </section>
  $cards
  <footer>Keys: <kbd>&larr;</kbd> <kbd>&rarr;</kbd> step the scales; on a phone, swipe the pictures. Made with
    varlite; this page is one file and needs no network.</footer>
</main>
<script type="application/json" id="step-data">$data</script>
<script>
"use strict";
const data = JSON.parse(document.getElementById("step-data").textContent);
const scales = data.scales;
const K = scales.length;
let current = 0;        // the scale shown, 0-based (the page says k = current + 1)
let selected = null;    // [row, column] of the clicked token at this scale, or null
let timer = null;       // the Play button's interval

function byId(id) { return document.getElementById(id); }
function percent(p) { return p < 0.001 ? "<0.1%" : (100 * p).toFixed(1) + "%"; }
function tokenCount(n) { return n + (n === 1 ? " token" : " tokens"); }
function make(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function buildChips() {
  scales.forEach(function (s, i) {
    const chip = make("button");
    chip.innerHTML = (i + 1) + "<small>" + s.pn + "&times;" + s.pn + "</small>";
    chip.setAttribute("aria-label", "scale " + (i + 1) + ", " + s.pn + " by " + s.pn);
    chip.addEventListener("click", function () { stop(); show(i); });
    byId("chips").appendChild(chip);
  });
}

function drawGrid(s) {
  const grid = byId("grid");
  grid.replaceChildren();
  grid.style.gridTemplateColumns = "repeat(" + s.pn + ", 1fr)";
  for (let r = 0; r < s.pn; r++) {
    for (let c = 0; c < s.pn; c++) {
      const cell = make("button");
      const token = s.tokens[r][c];
      cell.style.background = data.palette[token];
      cell.dataset.row = r;
      cell.dataset.col = c;
      cell.setAttribute("aria-label", "row " + r + ", column " + c + ": token " + token);
      cell.setAttribute("aria-pressed", "false");
      cell.title = "token " + token;
      cell.addEventListener("click", function () { select(r, c); });
      grid.appendChild(cell);
    }
  }
}

function drawMask(s) {
  const mask = byId("mask");
  mask.replaceChildren();
  scales.forEach(function (other, j) {
    const block = make("div", j <= current ? "seen" : "masked");
    if (j === current) block.classList.add("own");
    block.style.flexGrow = other.end - other.begin;
    block.dataset.begin = other.begin;
    block.dataset.end = other.end;
    block.title = "scale " + (j + 1) + ": positions " + other.begin + "\\u2013" + (other.end - 1);
    mask.appendChild(block);
  });
  const L = data.total_tokens;
  byId("mask-end").textContent = "position " + (L - 1);
  let text = "The " + tokenCount(s.end - s.begin) + " of scale " + (current + 1) + " (positions " + s.begin +
    "\\u2013" + (s.end - 1) + " of the " + L + "-token sequence) may attend to positions 0\\u2013" + (s.end - 1) +
    ": " + (current === 0 ? "their own scale" : "scales 1\\u2013" + (current + 1)) + ", " + s.end + " of " + L +
    " tokens.";
  text += s.end < L ? " The " + (L - s.end) + " tokens of the finer scales are masked: they are not generated yet."
                    : " Nothing is masked: this is the last scale.";
  byId("mask-text").textContent = text;
  mask.setAttribute("aria-label", text);
}

// A generation lists the model's most likely tokens at the position (bar: probability); an encoding lists the
// codebook entries nearest to the vector the position quantized (bar: distance, relative to the farthest listed).
function drawCandidates() {
  const box = byId("candidates");
  box.replaceChildren();
  byId("hint").hidden = selected !== null;
  if (selected === null) return;
  const s = scales[current], r = selected[0], c = selected[1];
  const chosen = s.tokens[r][c];
  const tokens = s.candidates.tokens[r][c];
  const encoding = data.kind === "encoding";
  const values = encoding ? s.candidates.distances[r][c] : s.candidates.probs[r][c];
  const farthest = Math.max.apply(null, values) || 1;
  const where = "Scale " + (current + 1) + ", row " + r + ", column " + c + ": ";
  box.appendChild(make("p", null, encoding
    ? where + "the quantizer chose token " + chosen + ", the codebook entry nearest to this vector" +
      (tokens.indexOf(chosen) < 0 ? " (not among the 5 listed: a near tie)." : ".")
    : where + "the sampler chose token " + chosen + " (probability " + percent(s.chosen_prob[r][c]) + ")" +
      (tokens.indexOf(chosen) < 0 ? ", which is not among the 5 most likely." : ".")));
  const table = make("table");
  table.id = "candidate-table";
  const head = make("tr");
  ["", "token", encoding ? "distance" : "probability", ""].forEach(function (name) {
    head.appendChild(make("th", null, name));
  });
  table.appendChild(head);
  tokens.forEach(function (token, i) {
    const row = make("tr", token === chosen ? "chosen" : null);
    row.dataset.token = token;
    row.dataset[encoding ? "distance" : "prob"] = values[i];
    const swatch = make("span", "swatch");
    swatch.style.background = data.palette[token];
    const cellSwatch = make("td");
    cellSwatch.appendChild(swatch);
    const cellToken = make("td", "num token", String(token));
    if (token === chosen) cellToken.append(" ", make("span", "tag", "chosen"));
    const bar = make("div", "bar");
    bar.style.width = (100 * (encoding ? values[i] / farthest : values[i])).toFixed(2) + "%";
    const cellBar = make("td");
    cellBar.style.width = "45%";
    cellBar.appendChild(bar);
    const number = encoding ? make("td", "num distance", Number(values[i].toPrecision(3)).toString())
                            : make("td", "num prob", percent(values[i]));
    row.append(cellSwatch, cellToken, number, cellBar);
    table.appendChild(row);
  });
  box.appendChild(table);
}

function select(r, c) {
  selected = [r, c];
  byId("grid").querySelectorAll("button").forEach(function (cell) {
    const on = Number(cell.dataset.row) === r && Number(cell.dataset.col) === c;
    cell.setAttribute("aria-pressed", on ? "true" : "false");
  });
  drawCandidates();
}

function show(i) {
  current = Math.max(0, Math.min(K - 1, i));
  selected = null;
  const s = scales[current];
  const l = s.pn * s.pn;
  const note = data.kind === "encoding"
    ? "rest left " + (100 * s.rest_share).toFixed(1) + "% of \\u2016f\\u2016" +
      (s.psnr === null ? "" : ", PSNR " + s.psnr.toFixed(1) + " dB")
    : "guidance t\\u2096 = " + Number(s.cfg.toFixed(2));
  byId("scale-title").replaceChildren("Scale " + (current + 1) + " of " + K + ": " + s.pn + "\\u00d7" + s.pn + " = " +
    tokenCount(l), make("span", null, note));
  byId("chips").querySelectorAll("button").forEach(function (chip, j) {
    if (j === current) chip.setAttribute("aria-current", "step"); else chip.removeAttribute("aria-current");
  });
  byId("prev").disabled = current === 0;
  byId("next").disabled = current === K - 1;
  byId("contribution").src = s.contribution;
  byId("contribution").alt = "contribution of scale " + (current + 1);
  byId("image").src = s.image;
  byId("image").alt = "image decoded after scale " + (current + 1);
  if (data.kind === "encoding") {
    byId("rest").src = s.rest;
    byId("rest").alt = "rest after scale " + (current + 1);
  }
  drawGrid(s);
  if (data.kind === "generation") drawMask(s);
  drawCandidates();
}

function stop() {
  if (timer !== null) clearInterval(timer);
  timer = null;
  byId("play").textContent = "Play";
}

function play() {
  if (timer !== null) { stop(); return; }
  if (current === K - 1) show(0);
  byId("play").textContent = "Pause";
  timer = setInterval(function () {
    show(current + 1);
    if (current === K - 1) stop();
  }, data.frame_ms);
}

byId("prev").addEventListener("click", function () { stop(); show(current - 1); });
byId("next").addEventListener("click", function () { stop(); show(current + 1); });
byId("play").addEventListener("click", play);
document.addEventListener("keydown", function (event) {
  if (event.altKey || event.ctrlKey || event.metaKey) return;
  const to = {ArrowLeft: current - 1, ArrowRight: current + 1, Home: 0, End: K - 1}[event.key];
  if (to === undefined) return;
  event.preventDefault();
  stop();
  show(to);
});
let touchStart = null;
byId("panels").addEventListener("touchstart", function (event) {
  touchStart = [event.changedTouches[0].clientX, event.changedTouches[0].clientY];
}, {passive: true});
byId("panels").addEventListener("touchend", function (event) {
  if (touchStart === null) return;
  const dx = event.changedTouches[0].clientX - touchStart[0], dy = event.changedTouches[0].clientY - touchStart[1];
  touchStart = null;
  if (Math.abs(dx) > 50 && Math.abs(dx) > 2 * Math.abs(dy)) { stop(); show(current + (dx < 0 ? 1 : -1)); }
}, {passive: true});
buildChips();
show(0);
</script>
</body>
</html>
""")
