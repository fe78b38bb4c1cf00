// projections.js — back to pixels from a layer card: click one feature map of the a = f(z)
// picture, or press "projections: 9 strongest", and the side that holds the model (the trainer,
// or watch() between two steps of your loop) projects it with the deconvnet (Zeiler & Fergus)
// and guided backprop for the example the card shows; "what excites it?" on a projected map
// opens the unit explorer: its 9 strongest held-out images, their projections, its optimal stimulus. The server never runs the model: the
// request is a control row; this module polls until the answer is in the run store.

import { $, awaitAnswer, el, fmt, getJSON, postJSON, runPath, url } from "./api.js";

const POLL_MS = 250;
const GIVE_UP_MS = 60000;
const LIVE_MS = 3000; // the unit explorer's live refresh
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
    // the hint only on a card with an a = f(z) picture to click (bind() shows it)
    this.hint = el("small.project-hint", { text: " or click one map in a = f(z) to project it (deconvnet and guided backprop)", hidden: true });
    card.append(el("div.project-bar", {}, this.button, this.hint), this.box);
  }

  /** Make the a = f(z) picture clickable (called whenever the card builds its panels). */
  bind(img) {
    if (img.dataset.projectBound) return;
    img.dataset.projectBound = "1";
    this.hint.hidden = false;
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
    let r;
    try {
      r = await awaitAnswer(runPath(st.run, `/projections/${id}`), { everyMs: POLL_MS, giveUpMs: GIVE_UP_MS,
        late: "no answer from the trainer after 60 s (paused or not responding?)", current: () => ticket === this.ticket });
    } catch (err) { this.status(err.message, "bad"); return; }
    if (r === null) return;
    if (r.status === "failed") { this.status(r.error, "bad"); return; }
    if (ticket === this.ticket) this.show(st.run, r);
  }

  show(run, r) {
    this.box.textContent = "";
    const partial = r.units.length < r.asked ? ` — stopped after ${r.units.length} of ${r.asked} within its ${r.budget_s} s budget` : "";
    this.box.append(el("p.note", { text:
      `${r.tensor}: the image the maps showed at step ${r.input_step}, weights of ${r.weights || `step ${r.step}`}; ${r.seconds} s${partial}.`
      + " Projections: grey = 0, colour = which input channel the signal favours." }));
    const pic = (k, kind, alt) => el("img", { alt, src: url(runPath(run, `/projections/${r.id}/${k}/${kind}.png`)) });
    for (const u of r.units) {
      const where = u.position ? ` at (i, j) = (${u.position.join(", ")})` : "";
      // which tensor the value is of: a = f(z) (>= 0 after a ReLU), or z for a block without an
      // activation (fc: the class scores, any sign); "max" only for a map with positions
      const sym = r.symbol || "value";
      const what = u.position ? `map ${u.channel}: max ${sym} = ${fmt(u.value)}`
        : u.name ? `class ${u.channel} (${u.name}): ${sym} = ${fmt(u.value)}`
        : `unit ${u.channel}: ${sym} = ${fmt(u.value)}`;
      const explore = el("button.explore", { type: "button", title: "its 9 strongest probe images, their projections and its optimal stimulus",
        onclick: () => this.explore(run, u.channel, row) }, "what excites it?");
      const row = el("div.unit", { "data-channel": u.channel },
        el("h4", {}, `${what}${where} `, explore),
        el("div.figs", {},
          u.position ? el("figure", {}, pic(u.channel, "a", `a[${u.channel}]`), el("figcaption", { text: `a[${u.channel}]` })) : null,
          el("figure", {}, pic(u.channel, "deconvnet", "deconvnet projection"), el("figcaption", { text: "deconvnet (ZF)" })),
          el("figure", {}, pic(u.channel, "guided", "guided backprop projection"), el("figcaption", { text: "guided backprop" }))),
        el("div.explored"));
      this.box.append(row);
    }
  }

  /** The unit explorer for one map: top-9 probe patches, their projections, its filter and optimal
   *  stimulus. "live" asks again every few seconds (without the stimulus): the top-9 change as the
   *  net learns; each answer costs the trainer about one pass over its probe images. */
  async explore(run, channel, row, refresh = false) {
    const out = $(".explored", row);
    const say = (text, kind = "") => { out.textContent = ""; out.append(el(`p.ack${kind ? "." + kind : ""}`, { text })); };
    const ticket = (row.dataset.exploreTicket = String(Number(row.dataset.exploreTicket || 0) + (refresh ? 0 : 1)));
    if (!refresh) say(`finding what excites map ${channel} of ${this.layer}…`);
    let id;
    try { ({ id } = await postJSON(runPath(run, "/units"), { layer: this.layer, channel, stimulus: !refresh })); } catch (err) { say(err.message, "bad"); return; }
    let r;
    try {
      r = await awaitAnswer(runPath(run, `/units/${id}`), { everyMs: POLL_MS, giveUpMs: GIVE_UP_MS, late: "no answer from the trainer after 60 s" });
    } catch (err) { say(err.message, "bad"); return; }
    if (r.status === "failed") { say(r.error, "bad"); return; }
    if (row.dataset.exploreTicket !== ticket) return; // a newer request took over
    const stim = $("img.stimulus", out);
    const live = $("input.live", out)?.checked ?? false;
    out.textContent = "";
    out.append(el("label.live-toggle", {}, el("input.live", { type: "checkbox", checked: live,
      onchange: (e) => { if (e.target.checked) setTimeout(() => this.explore(run, channel, row, true), LIVE_MS); } }),
    " live: ask again every few seconds as the net learns"));
    const size = r.field ? `${r.field.size[0]}×${r.field.size[1]} px` : "";
    out.append(el("p.note", { text: `over ${r.probe_images} held-out images, weights of ${r.weights}; ${r.seconds} s. `
      + `Top-${r.hits.length} activations: ${r.hits.map((h) => fmt(h.value)).join(", ")}; patches under the ${size} receptive field.` }));
    const fig = (kind, alt, cap) => el("figure", {}, el("img", { alt, src: url(runPath(run, `/units/${id}/${kind}.png`)) }), el("figcaption", { text: cap }));
    const stimFig = r.stimulus_activation === null
      ? (stim ? el("figure", {}, stim, el("figcaption", { text: "optimal stimulus (from the first answer)" })) : null)
      : fig("stimulus", "optimal stimulus", `optimal stimulus (mean a = ${fmt(r.stimulus_activation)})`);
    if (stimFig) $("img", stimFig).classList.add("stimulus");
    out.append(el("div.figs", {},
      fig("patches", "top-9 patches", "top-9 patches"),
      fig("projections", "their deconvnet projections", "their deconvnet projections"),
      r.has_filter ? fig("filter", "its filter W", "its filter W") : null,
      fig("activations", "its map on the first probe images", "its map now, on the first 8 probe images"),
      stimFig));
    const evo = r.evolution_steps.length ? r.evolution_steps : (row.dataset.evoSteps ? JSON.parse(row.dataset.evoSteps) : []);
    if (r.evolution_steps.length) { row.dataset.evoSteps = JSON.stringify(r.evolution_steps); row.dataset.evoId = String(id); }
    if (r.evolution_note) row.dataset.evoNote = r.evolution_note;
    if (evo.length) {
      out.append(el("figure.evolution", {},
        el("img", { alt: "evolution strip", src: url(runPath(run, `/units/${row.dataset.evoId}/evolution.png`)) }),
        el("figcaption", { text: `its strongest probe image over training (Zeiler & Fergus Fig. 4): after ${evo.join(", ")} steps — patches above, deconvnet projections below` })));
    } else if (row.dataset.evoNote) {
      out.append(el("p.note.evolution-note", { text: row.dataset.evoNote })); // why there is no strip
    }
    if (live) setTimeout(() => { if ($("input.live", out)?.checked) this.explore(run, channel, row, true); }, LIVE_MS);
  }
}

