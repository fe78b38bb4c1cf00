// occlusion.js — what a prediction depends on (Zeiler & Fergus 2013, Fig. 7) for your uploaded
// image or a test image: a grey square slides over it and, per position, the side that holds the
// model (the trainer, or the worker of an ended run) records (b) the total activation of the
// layer's strongest feature map, (d) the probability of the class, (e) the most probable label;
// (c) is that map's deconvnet projection. The server never runs the model: the request is a
// control row (`occlude`), this module polls until the answer is in the run store, then draws
// the panels it stored. Mounted in #occlusion-box.

import { $, awaitAnswer, el, fmt, getJSON, postJSON, runPath, url } from "./api.js";

const POLL_MS = 300;
const GIVE_UP_MS = 120000;
const MAX_SIDE = 64; // window and stride: whole pixels 1..64 (as the server checks)

/** The occluder's window or stride as typed: null for empty (auto), a whole number 1..64, or
 *  undefined when it is neither ("e", "2.5", "0", "99": refused in the page, never sent). */
export function sideValue(input) {
  if (input.validity.badInput) return undefined; // the browser could not read a number ("e")
  const text = input.value.trim();
  if (text === "") return null;
  const n = Number(text);
  return Number.isInteger(n) && n >= 1 && n <= MAX_SIDE ? n : undefined;
}

/** The colour scale of panel (b): the bar its colours come from (0 or the lowest value, dark
 *  purple, to the highest, yellow: the sequential map), where this image's positions lie on it,
 *  and what the numbers are. The picture alone is a flat yellow square when every position gives
 *  nearly the same total. */
function featureScale(r) {
  const values = (r.feature || []).flat().filter(Number.isFinite);
  if (!values.length) return null;
  const lo = Math.min(...values), hi = Math.max(...values);
  const vmin = Math.min(lo, 0), vmax = hi;
  const span = vmax - vmin;
  const at = (v) => (span > 0 ? (100 * (v - vmin)) / span : 0);
  const range = el("span.occ-range", { title: `this image: ${fmt(lo)} … ${fmt(hi)}` });
  range.style.left = `${at(lo)}%`;
  range.style.width = `${Math.max(at(hi) - at(lo), 0.5)}%`;
  const clean = Number.isFinite(r.clean_feature) ? r.clean_feature : null;
  const effect = clean === null ? ""
    : lo < clean && clean !== 0 ? `: covering a part lowers it by at most ${fmt((100 * (clean - lo)) / Math.abs(clean), 3)}% of the unoccluded ${fmt(clean)}`
    : `: no position of the square lowers it below the unoccluded ${fmt(clean)}`;
  return el("div.occ-scale", { "data-min": vmin, "data-max": vmax },
    el("div.occ-bar.seq", {}, range),
    el("div.occ-ticks", {}, el("span", { text: `${fmt(vmin)} (dark)` }), el("span", { text: `${fmt(vmax)} (yellow)` })),
    el("p.note", { text: `colour = total activation of map ${r.channel} with the square at that position, from ${fmt(vmin)} (dark purple) to ${fmt(vmax)} (yellow). `
      + `Here it spans ${fmt(lo)} … ${fmt(hi)} (marked on the bar)${effect}.` }));
}

/** The server's words for a bad window/stride, in the page's words. */
function plain(message) {
  return message.replace(/^(window|stride) must be an integer in (\d+)\.\.(\d+) or null$/,
    "$1 must be a whole number of pixels from $2 to $3, or empty for auto");
}

class OcclusionView {
  constructor(box) {
    this.box = box;
    this.ticket = 0;
    this.image = el("select", { id: "occ-image", "aria-label": "image to occlude" });
    this.layer = el("select", { id: "occ-layer", "aria-label": "layer whose strongest map is panel (b)" });
    this.window = el("input", { id: "occ-window", type: "number", min: 1, max: 64, placeholder: "auto", "aria-label": "occluder side (pixels)" });
    this.stride = el("input", { id: "occ-stride", type: "number", min: 1, max: 64, placeholder: "auto", "aria-label": "occluder stride (pixels)" });
    this.go = el("button", { id: "occ-go", type: "button", onclick: () => this.ask() }, "occlude");
    this.state = el("span.ack", { id: "occ-state" });
    this.out = el("div", { id: "occ-result", "aria-live": "polite" });
    box.append(
      el("h2", {}, "Occlusion ", el("small", { text: "what the prediction depends on — Zeiler & Fergus Fig. 7" })),
      el("div.row", {},
        el("label", {}, "image ", this.image), el("label", {}, "layer ", this.layer),
        el("label", {}, "window ", this.window), el("label", {}, "stride ", this.stride), this.go, this.state),
      el("p.note", { text: "To occlude your own file, send it under \"Try an image\" above: it joins this list once the trainer has answered. Or pick a test image. The trainer (or, for an ended run, a worker from its newest checkpoint) computes the maps; the grey square is 0.5 in pixel space." }),
      this.out);
    for (const ev of ["focus", "pointerdown"]) this.image.addEventListener(ev, () => this.refresh());
    $("#run-select").addEventListener("change", () => { this.ticket++; this.out.textContent = ""; this.state.textContent = ""; this.refresh(); });
    // main.js says when it has opened a run (the picker is empty while this module loads) and
    // predictions.js when the trainer answered an upload: the list is read again at once
    document.addEventListener("convscope:run", (e) => { if (e.detail.run === this.run) this.refresh(); });
    document.addEventListener("convscope:upload", (e) => { if (e.detail.run === this.run) this.refresh(`upload:${e.detail.id}`); });
    this.refresh();
    setInterval(() => { if (!this.image.options.length) this.refresh(); }, 3000);
  }

  get run() { return $("#run-select").value; }

  /** Read the images that can be occluded (and the layers) again; `choose`: select that one. */
  async refresh(choose = null) {
    const run = this.run;
    if (choose) this.choose = choose;
    if (!run) return;
    if (this.busy) { this.again = true; return; } // read once more when this one is done
    this.busy = true;
    this.again = false;
    try {
      const [src, info] = await Promise.all([getJSON(runPath(run, "/occlusion-images")), getJSON(runPath(run))]);
      if (run !== this.run) return;
      const keep = this.image.value;
      const opts = [...src.uploads.map((u) => el("option", { value: `upload:${u.id}`, text: `upload #${u.id}: ${u.name}` })),
        ...Array.from({ length: src.tests }, (_, k) => el("option", { value: `test:${k}`, text: `test image ${k}` }))];
      const key = JSON.stringify(opts.map((o) => [o.value, o.textContent]));
      if (key !== this.image.dataset.key) { this.image.dataset.key = key; this.image.replaceChildren(...opts); } // (an open dropdown stays)
      if (this.choose && opts.some((o) => o.value === this.choose)) { this.image.value = this.choose; this.choose = null; }
      else if (keep && opts.some((o) => o.value === keep)) this.image.value = keep;
      const names = (info.layers || []).map((l) => l.name);
      const layer = this.layer.value;
      this.layer.replaceChildren(el("option", { value: "", text: "last conv (default)" }), ...names.map((n) => el("option", { value: n, text: n })));
      if (names.includes(layer)) this.layer.value = layer;
    } catch { /* the next focus tries again */ } finally {
      this.busy = false;
      if (this.again) this.refresh();
    }
  }

  status(text, kind) { this.state.className = `ack ${kind}`; this.state.textContent = text; }

  async ask() {
    const run = this.run;
    const [kind, id] = (this.image.value || "").split(":");
    if (!run || !kind) { this.status("no image to occlude yet: upload one or wait for the test images", "bad"); return; }
    const body = { [kind]: Number(id), layer: this.layer.value || null };
    for (const [k, input] of [["window", this.window], ["stride", this.stride]]) {
      const v = sideValue(input);
      if (v === undefined) {
        input.setAttribute("aria-invalid", "true");
        const typed = input.validity.badInput ? "what is typed is not a number" : `${input.value} is not one`;
        this.status(`${k}: type a whole number of pixels from 1 to ${MAX_SIDE} (${typed}), or leave it empty for auto`, "bad");
        input.focus();
        return;
      }
      input.removeAttribute("aria-invalid");
      if (v !== null) body[k] = v;
    }
    const ticket = ++this.ticket;
    this.status("sent, waiting for the side that holds the model…", "wait");
    let r;
    try {
      const { id: ident } = await postJSON(runPath(run, "/occlusions"), body);
      r = await awaitAnswer(runPath(run, `/occlusions/${ident}`), { everyMs: POLL_MS, giveUpMs: GIVE_UP_MS,
        late: "no answer in 120 s (paused? not responding?)", current: () => ticket === this.ticket });
      if (r === null) return;
      if (r.status !== "done") { this.status(`could not: ${r.error}`, "bad"); return; }
      this.show(run, r);
      this.status(`✓ ${r.positions} positions in ${r.seconds} s (${r.method}) · ${r.weights}`, "ok");
    } catch (err) { this.status(plain(err.message), "bad"); }
  }

  show(run, r) {
    const figs = r.panels.map((p) => el("figure.panel.occ-panel", { "data-kind": p.kind },
      el("img", { src: url(runPath(run, `/occlusions/${r.id}/${p.kind}.png`)), alt: p.caption, width: 224 }),
      el("figcaption", { text: p.caption }),
      p.kind === "b-feature" ? featureScale(r) : null));
    const legend = el("ul.occ-legend", {}, ...r.legend.map((c) => el("li", {},
      el("span.swatch", { style: `background:${c.colour}` }),
      `${c.name}${c.class === r.target ? " (the class in (d))" : ""} — ${c.positions} of ${r.positions} positions`)));
    const top = r.top.map(([, name, p]) => `${name} ${(100 * p).toFixed(1)}%`).join("; ");
    const worst = Math.min(...r.probability.flat());
    this.out.replaceChildren(
      el("p", { text: `${r.image} → unoccluded: ${top}. p(${r.target_name}) falls from ${r.clean_probability.toFixed(3)} to ${worst.toFixed(3)} where the square hurts most; layer ${r.layer}, map ${r.channel}, window ${r.window}, stride ${r.stride}.` }),
      el("div.occ-figs", {}, ...figs), legend,
      el("p.note", { text: "Each cell of (b), (d), (e) is one position of the grey square (top-left corner at rows × cols of the stride). Dark in (d): covering that part lowers the class probability — the model depends on it." }));
  }
}

const box = $("#occlusion-box");
if (box) new OcclusionView(box);
