// projections.js — back to pixels from a layer card: click one feature map of the a = f(z)
// picture, or press "projections: 9 strongest", and the side that holds the model (the trainer,
// or watch() between two steps of your loop) projects it with the deconvnet (Zeiler & Fergus)
// and guided backprop for the example the card shows. The server never runs the model: the
// request is a control row; this module polls until the answer is in the run store.

import { el, fmt, getJSON, postJSON, runPath, url } from "./api.js";

const POLL_MS = 250;
const GIVE_UP_MS = 60000;
const cellCache = new Map(); // picture URL → {width, height, cells}

/** The channel under a click on a grid picture (cells from the server: the picture's own layout). */
async function channelAt(img, ev) {
  const src = img.getAttribute("src");
  if (!src) return null;
  let layout = cellCache.get(src);
  if (!layout) {
    const u = new URL(src, location.href);
    const params = Object.fromEntries(u.searchParams.entries());
    const run = decodeURIComponent(u.pathname.split("/")[3]);
    layout = await getJSON(runPath(run, "/cells"), params);
    cellCache.set(src, layout);
    if (cellCache.size > 200) cellCache.delete(cellCache.keys().next().value);
  }
  const r = img.getBoundingClientRect(); // the content box: inside the border
  const x = ((ev.clientX - r.left - img.clientLeft) * layout.width) / img.clientWidth;
  const y = ((ev.clientY - r.top - img.clientTop) * layout.height) / img.clientHeight;
  const i = layout.cells.findIndex(([cx, cy, cw, ch]) => x >= cx && x < cx + cw && y >= cy && y < cy + ch);
  return i < 0 ? null : i;
}

export class Projections {
  /** card: the layer card element; layer: block name; getState(): {run, stepA} */
  constructor(card, layer, getState) {
    this.card = card;
    this.layer = layer;
    this.state = getState;
    this.ticket = 0;
    this.box = el("div.projection", { "aria-live": "polite" });
    this.button = el("button.project-top", { type: "button", onclick: () => this.ask(null),
      title: "the 9 feature maps that fire most on this example, each projected back to pixels" },
    "projections: 9 strongest");
    card.append(el("div.project-bar", {}, this.button,
      el("small", { text: " or click one map in a = f(z) to project it (deconvnet and guided backprop)" })), this.box);
  }

  /** Make the a = f(z) picture clickable (called whenever the card builds its panels). */
  bind(img) {
    if (img.dataset.projectBound) return;
    img.dataset.projectBound = "1";
    img.classList.add("clickable");
    img.title = "click a map to project it back to pixels";
    img.addEventListener("click", async (ev) => {
      let k = null;
      try { k = await channelAt(img, ev); } catch (err) { this.status(err.message, "bad"); return; }
      if (k === null) return;
      this.ask(k, Number(img.dataset.step));
    });
  }

  status(text, kind = "") {
    this.box.textContent = "";
    this.box.append(el(`p.ack${kind ? "." + kind : ""}`, { text }));
  }

  async ask(channel, step) {
    const st = this.state();
    if (!st.run) return;
    const ticket = ++this.ticket;
    const what = channel === null ? "the 9 strongest maps" : `map ${channel}`;
    this.status(`projecting ${what} of ${this.layer}…`);
    let id;
    try {
      ({ id } = await postJSON(runPath(st.run, "/projections"), {
        layer: this.layer, channel, step: Number.isFinite(step) ? step : (st.stepA ?? null),
      }));
    } catch (err) { this.status(err.message, "bad"); return; }
    const t0 = performance.now();
    while (ticket === this.ticket) {
      let r;
      try { r = await getJSON(runPath(st.run, `/projections/${id}`)); } catch (err) { this.status(err.message, "bad"); return; }
      if (r.status === "done") { if (ticket === this.ticket) this.show(st.run, r); return; }
      if (r.status === "failed") { this.status(r.error, "bad"); return; }
      if (performance.now() - t0 > GIVE_UP_MS) { this.status("no answer from the trainer after 60 s (paused or not responding?)", "bad"); return; }
      await new Promise((ok) => setTimeout(ok, POLL_MS));
    }
  }

  show(run, r) {
    this.box.textContent = "";
    const partial = r.units.length < r.asked ? ` — stopped after ${r.units.length} of ${r.asked} within its ${r.budget_s} s budget` : "";
    this.box.append(el("p.note", { text:
      `${r.tensor}: example 0 of step ${r.input_step}, weights of ${r.weights || `step ${r.step}`}; ${r.seconds} s${partial}.`
      + " Projections: grey = 0, colour = which input channel the signal favours." }));
    const pic = (k, kind, alt) => el("img", { alt, src: url(runPath(run, `/projections/${r.id}/${k}/${kind}.png`)) });
    for (const u of r.units) {
      const where = u.position ? ` at (i, j) = (${u.position.join(", ")})` : "";
      this.box.append(el("div.unit", { "data-channel": u.channel },
        el("h4", { text: `map ${u.channel}: max a = ${fmt(u.value)}${where}` }),
        el("div.figs", {},
          u.position ? el("figure", {}, pic(u.channel, "a", `a[${u.channel}]`), el("figcaption", { text: `a[${u.channel}]` })) : null,
          el("figure", {}, pic(u.channel, "deconvnet", "deconvnet projection"), el("figcaption", { text: "deconvnet (ZF)" })),
          el("figure", {}, pic(u.channel, "guided", "guided backprop projection"), el("figcaption", { text: "guided backprop" })))));
    }
  }
}

