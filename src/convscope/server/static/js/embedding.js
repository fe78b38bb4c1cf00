// embedding.js — the embedding view: a t-SNE map (van der Maaten & Hinton; CS231n, Karpathy's
// cnnembed) of the run's held-out images' codes at the layer before the classifier, drawn on a
// <canvas>: one dot per image in its class colour, a class filter, the image under the pointer as a
// thumbnail. "Embed this checkpoint into the same map" places the same images' codes at another
// checkpoint into the map (openTSNE's transform) — earlier checkpoints show the clusters forming.
// The side that holds the model computes both (control `embed`); this module polls and draws.
// Mounted in #embedding-box.

import { $, awaitAnswer, el, getJSON, postJSON, runPath, url } from "./api.js";
import { checkpointLabel } from "./controls.js";

const POLL_MS = 300;
const GIVE_UP_MS = 180000;
const SIDE = 520; // canvas px
const PAD = 14;
const MIN_N = 4, MAX_N = 1000; // as the server's route (server/routes/embedding.py MIN_N, MAX_N)
// matplotlib's tab10, then tab20's light tones: the colours of render/embedding_report.py
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf",
  "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94", "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5"];
const colour = (c) => (c < 0 ? "#3c3c3c" : PALETTE[c % PALETTE.length]);

class EmbeddingView {
  constructor(box) {
    this.box = box;
    this.ticket = 0;
    this.map = null; // the base map's answer
    this.placed = null; // a placement's answer
    this.hidden = new Set();
    this.n = el("input", { id: "emb-n", type: "number", min: MIN_N, max: MAX_N, step: 1, value: 500,
      "aria-label": `held-out images in the map (${MIN_N} to ${MAX_N})` });
    this.make = el("button", { id: "emb-go", type: "button", onclick: () => this.mapImages() }, "map the held-out images");
    this.ckpt = el("select", { id: "emb-ckpt", "aria-label": "checkpoint to place into the map" });
    this.place = el("button", { id: "emb-place", type: "button", disabled: true, onclick: () => this.placeCheckpoint() }, "embed this checkpoint into the same map");
    this.state = el("span.ack", { id: "emb-state" });
    this.canvas = el("canvas", { id: "emb-canvas", width: SIDE, height: SIDE, style: `border:1px solid #ddd;background:#fff;max-width:100%` });
    this.legend = el("div", { id: "emb-legend", style: "display:flex;flex-wrap:wrap;gap:4px 14px;font-size:12px;margin:6px 0" });
    this.info = el("p.note", { id: "emb-info" });
    this.tip = el("div", { id: "emb-tip", hidden: true, style: "position:absolute;pointer-events:none;background:#fff;border:1px solid #999;padding:4px;font-size:12px;z-index:5" });
    this.thumb = el("canvas", { width: 64, height: 64, style: "display:block;image-rendering:pixelated" });
    this.tipText = el("div");
    this.tip.append(this.thumb, this.tipText);
    this.sheet = new Image();
    this.sheet.onload = () => { this.draw(); if (!this.tip.hidden) this.drawThumb(Number(this.tip.dataset.index)); };
    box.append(
      el("h2", {}, "Embedding ", el("small", { text: "t-SNE of the held-out images' codes at the layer before the classifier" })),
      el("div.row", {}, el("label", {}, "images ", this.n), this.make, this.state),
      el("div.row", {}, el("label", {}, "checkpoint ", this.ckpt), this.place),
      el("div", { style: "position:relative" }, this.canvas, this.tip), this.legend, this.info);
    this.n.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); this.mapImages(); } });
    this.canvas.addEventListener("mousemove", (e) => this.hover(e));
    this.canvas.addEventListener("mouseleave", () => { this.tip.hidden = true; });
    for (const ev of ["focus", "pointerdown"]) this.ckpt.addEventListener(ev, () => this.checkpoints());
    $("#run-select").addEventListener("change", () => this.reset());
    // main.js opens the run (the picker is still empty while this module loads) and tells when it
    // has the run's info or a checkpoint was saved: the list is filled from what it read
    document.addEventListener("convscope:run", (e) => { if (e.detail.run === this.run) this.fillCheckpoints(e.detail.info.checkpoints); });
    document.addEventListener("convscope:checkpoints", (e) => { if (e.detail.run === this.run) this.fillCheckpoints(e.detail.checkpoints); });
    this.checkpoints();
  }

  get run() { return $("#run-select").value; }

  reset() {
    this.ticket++;
    this.map = this.placed = null;
    this.place.disabled = true;
    this.legend.textContent = this.info.textContent = this.state.textContent = "";
    this.canvas.getContext("2d").clearRect(0, 0, SIDE, SIDE);
    this.checkpoints();
  }

  async checkpoints() {
    const run = this.run;
    if (!run) return;
    try {
      const info = await getJSON(runPath(run));
      if (run === this.run) this.fillCheckpoints(info.checkpoints);
    } catch { /* tried again on focus */ }
  }

  /** The checkpoints of the run (GET /api/runs/{run}: [{name, step, ...}]), oldest first. */
  fillCheckpoints(list) {
    const keep = this.ckpt.value;
    const rows = [...(Array.isArray(list) ? list : [])].sort((a, b) => (a.step ?? 0) - (b.step ?? 0));
    const key = JSON.stringify(rows.map((c) => [c.name, c.step, c.net, c.fits]));
    if (key === this.ckpt.dataset.key) return; // the same list: an open dropdown stays as it is
    this.ckpt.dataset.key = key;
    this.ckpt.replaceChildren(el("option", { value: "", text: "the weights of now" }),
      ...rows.map((c) => el("option", { value: c.name, text: checkpointLabel(c), disabled: c.fits === false })));
    if ([...this.ckpt.options].some((o) => o.value === keep && !o.disabled)) this.ckpt.value = keep;
  }

  /** Map as many held-out images as the field says: a whole number in MIN_N..MAX_N, else said here. */
  mapImages() {
    const typed = this.n.value.trim(); // "" for text a number field cannot read (validity.badInput)
    const n = /^\d+$/.test(typed) ? Number(typed) : NaN;
    if (!(n >= MIN_N && n <= MAX_N)) {
      const was = typed === "" || this.n.validity.badInput ? "" : ` (not ${typed.length > 24 ? `${typed.slice(0, 24)}…` : typed})`;
      this.status(`images: type a whole number from ${MIN_N} to ${MAX_N}${was}`, "bad");
      return;
    }
    this.ask({ n });
  }

  status(text, kind) { this.state.className = `ack ${kind}`; this.state.textContent = text; }

  async ask(body) {
    const run = this.run;
    if (!run) return;
    const ticket = ++this.ticket;
    this.status("sent, waiting for the side that holds the model…", "wait");
    try {
      const { id } = await postJSON(runPath(run, "/embeddings"), body);
      const r = await awaitAnswer(runPath(run, `/embeddings/${id}`), { everyMs: POLL_MS, giveUpMs: GIVE_UP_MS,
        late: "no answer in 180 s (paused? not responding?)", current: () => ticket === this.ticket });
      if (r === null) return null;
      if (r.status !== "done") { this.status(`could not: ${r.error}`, "bad"); return null; }
      if (r.base === null) {
        this.map = r;
        this.placed = null;
        this.place.disabled = false;
        this.sheet.src = url(runPath(run, `/embeddings/${r.id}/thumbs.png`));
        this.legendFor(r);
      } else this.placed = r;
      this.status(`✓ ${r.n} images in ${r.seconds} s · ${r.weights}`, "ok");
      this.describe();
      this.draw();
      return r;
    } catch (err) { this.status(err.message, "bad"); return null; }
  }

  placeCheckpoint() {
    if (!this.map) return;
    this.ask({ base: this.map.id, checkpoint: this.ckpt.value || null });
  }

  legendFor(r) {
    const counts = new Map();
    for (const c of r.labels) counts.set(c, (counts.get(c) || 0) + 1);
    this.legend.replaceChildren(...[...counts.keys()].sort((a, b) => a - b).map((c) => {
      const box = el("input", { type: "checkbox", checked: !this.hidden.has(c), "data-class": c,
        onchange: (e) => { if (e.target.checked) this.hidden.delete(c); else this.hidden.add(c); this.draw(); } });
      return el("label", {}, box, el("span", { style: `display:inline-block;width:10px;height:10px;border-radius:5px;margin:0 4px;background:${colour(c)}` }),
        `${c < 0 ? "no label" : r.classes[c] ?? `class ${c}`} (${counts.get(c)})`);
    }));
  }

  describe() {
    const m = this.map;
    const show = this.placed || m;
    const agree = (r) => (r.agreement === null ? "" : ` · ${(100 * r.agreement).toFixed(0)}% of each image's 10 nearest map neighbours share its class (chance ${(100 * r.chance).toFixed(0)}%)`);
    this.info.textContent = `layer ${m.layer} · ${m.n} held-out images · ${m.method}, perplexity ${m.perplexity.toFixed(1)} · map: ${m.weights}`
      + (this.placed ? ` · coloured dots: ${show.weights} placed into the map (grey: the map)` : "") + agree(show);
  }

  /** xy → canvas px over the base map's range (placed points share it). */
  scale() { return mapScale(this.map.xy); }

  draw() {
    const g = this.canvas.getContext("2d");
    g.clearRect(0, 0, SIDE, SIDE);
    if (!this.map) return;
    const at = this.scale();
    const dots = (r, fill) => r.xy.forEach((p, i) => {
      const c = r.labels[i];
      if (this.hidden.has(c)) return;
      const [x, y] = at(p);
      g.fillStyle = fill ?? colour(c);
      g.beginPath(); g.arc(x, y, 3.2, 0, 2 * Math.PI); g.fill();
    });
    if (this.placed) { dots(this.map, "#d8d8d8"); dots(this.placed); } else dots(this.map);
  }

  hover(e) {
    const r = this.placed || this.map;
    if (!r) return;
    const box = this.canvas.getBoundingClientRect();
    const mx = ((e.clientX - box.left) * SIDE) / box.width;
    const my = ((e.clientY - box.top) * SIDE) / box.height;
    const at = this.scale();
    let best = -1, bestD = 64;
    r.xy.forEach((p, i) => {
      if (this.hidden.has(r.labels[i])) return;
      const [x, y] = at(p);
      const d = (x - mx) ** 2 + (y - my) ** 2;
      if (d < bestD) { bestD = d; best = i; }
    });
    if (best < 0) { this.tip.hidden = true; return; }
    this.drawThumb(best);
    const c = r.labels[best];
    this.tipText.textContent = `#${best} · ${c < 0 ? "no label" : r.classes[c] ?? `class ${c}`}`;
    this.tip.style.left = `${(e.clientX - box.left) + 12}px`;
    this.tip.style.top = `${(e.clientY - box.top) + 12}px`;
    this.tip.hidden = false;
    this.tip.dataset.index = String(best);
  }

  // image `i`'s thumbnail from the sheet; a hover before the sheet has loaded is drawn when it loads
  drawThumb(i) {
    const g = this.thumb.getContext("2d");
    g.imageSmoothingEnabled = false;
    g.clearRect(0, 0, 64, 64);
    if (!this.map || !(i >= 0) || !this.sheet.complete || !this.sheet.naturalWidth) return;
    const t = this.map.thumb, cols = Math.ceil(Math.sqrt(this.map.n));
    g.drawImage(this.sheet, (i % cols) * t, Math.floor(i / cols) * t, t, t, 0, 0, 64, 64);
  }
}

/** xy → canvas px for a map whose points are `xy`: one scale for both axes (the map keeps its
 *  shape), the map centred in the canvas within PAD of its edges, y pointing up. */
export function mapScale(xy) {
  const xs = xy.map((p) => p[0]);
  const ys = xy.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const room = SIDE - 2 * PAD;
  const s = room / Math.max(x1 - x0, y1 - y0, 1e-9);
  const left = PAD + (room - (x1 - x0) * s) / 2; // the spare room on the short side, half each way
  const bottom = SIDE - PAD - (room - (y1 - y0) * s) / 2;
  return ([x, y]) => [left + (x - x0) * s, bottom - (y - y0) * s];
}

const box = $("#embedding-box");
if (box) new EmbeddingView(box);
