// layers.js — one card per block, in forward order (json `layers`): what the layer is (type,
// output size, filter size and stride, parameter count with its formula), its numbers at the
// shown step, and its pictures: x, a = f(z), dL/da, W, dL/dW, z | a on one scale, dL/dz.

import { $, $$, el, fmt, pct, runPath, setImage, url } from "./api.js";
import { Projections } from "./projections.js";

export const PANELS = [
  { kind: "colour", sym: "x", name: "the input image as a picture", first: true },
  { kind: "x", sym: "x", name: "the block's input, channel by channel", example: true },
  { kind: "a", sym: "a = f(z)", name: "activation maps = feature maps", example: true },
  { kind: "grad_a", sym: "dL/da", name: "activation gradients", example: true },
  { kind: "weight", sym: "W", name: "filters (weights)" },
  { kind: "grad_weight", sym: "dL/dW", name: "weight gradients, summed over the batch" },
  { kind: "za", sym: "z | a", name: "pre-activation z and a = f(z) on one 0-centred scale", example: true },
  { kind: "z", sym: "z", name: "output with no activation after it (for the last layer: the class scores)", example: true },
  { kind: "grad_z", sym: "dL/dz", name: "gradient at the pre-activation", example: true },
];

/** Which image the maps are of (meta snapshot_example): a fixed held-out image, or example 0
 *  of each training batch (a different image at every step). */
export function exampleText(meta) {
  return meta?.snapshot_example === "probe"
    ? " (a held-out image, the same at every step)"
    : " (example 0 of the training batch: a different image at each step)";
}

const dims = (v) => (Array.isArray(v) ? v.join(" × ") : v ?? "–");

function facts(L, index) {
  const parts = [`output ${dims(L.out_shape)}`];
  if (L.kernel) parts.push(`filters ${dims(L.kernel)}, stride ${dims(L.stride)}, padding ${Array.isArray(L.padding) ? L.padding.join(", ") : L.padding ?? 0}`);
  const n = Number(L.params || 0).toLocaleString("en-US");
  const spans = [el("span", { text: parts.join(" · ") + " · " }),
    el("span", { text: `${n} parameters` }),
    L.formula && L.formula !== "0" ? el("span", {}, " = ", el("span.formula", { text: L.formula })) : null];
  if (L.activation) spans.push(el("span", { text: ` · f = ${L.activation}` }));
  if (L.norm) spans.push(el("span", { text: ` · norm ${L.norm}` }));
  if (index === 0) spans.push(el("span", { text: " · first layer: filters in colour when the input is RGB" }));
  return spans;
}

export class Layers {
  /** root: #layer-list; getState(): {run, steps, series, stepA, stepB, compare, stats} */
  constructor(root, getState) {
    this.root = root;
    this.state = getState;
    this.cards = new Map();
    this.visible = new Set();
    this.observer = new IntersectionObserver((entries) => {
      for (const e of entries) {
        const name = e.target.dataset.layer;
        if (e.isIntersecting) { this.visible.add(name); this.refreshOne(name); } else this.visible.delete(name);
      }
    }, { rootMargin: "300px 0px" });
  }

  build(layers) {
    this.observer.disconnect();
    this.root.textContent = "";
    this.cards.clear();
    this.visible.clear();
    if (!layers.length) {
      this.root.append(el("p.note", { text: "the trainer has not described its layers yet" }));
      return;
    }
    layers.forEach((L, i) => {
      const normSel = el("select.norm-select", { "aria-label": `normalisation for ${L.name}`,
        onchange: () => this.refreshOne(L.name) },
      ...["map", "layer", "global"].map((m) => el("option", { value: m, text: m })));
      normSel.value = $("#norm-all").value;
      const card = el("article.layer", { "data-layer": L.name, id: `layer-${i}` },
        el("h3", {}, el("span", { text: L.name }), el("span.type", { text: L.type || L.kind }),
          el("small", { text: L.kind === "activation" ? "activation" : `${L.kind} block` })),
        el("div.facts", {}, ...facts(L, i)),
        el("div.stats", {}),
        el("div.norm", {}, "normalise ", normSel,
          el("small", { text: " map: each map its own scale · layer: one scale per picture · global: one scale for the whole net" })),
        el("div.panels", {}));
      this.root.append(card);
      const proj = new Projections(card, L.name, this.state);
      this.cards.set(L.name, { card, layer: L, index: i, normSel, figures: new Map(), proj });
      this.observer.observe(card);
    });
  }

  setNormAll(norm) {
    for (const c of this.cards.values()) c.normSel.value = norm;
    this.refresh();
  }

  /** Bring every card to the shown step; pictures load only for cards on (or near) the screen. */
  refresh() { for (const name of this.cards.keys()) this.refreshOne(name, this.visible.has(name)); }

  refreshOne(name, load = true) {
    const c = this.cards.get(name);
    const st = this.state();
    if (!c || !st.run) return;
    const kinds = st.series[name] || {};
    const panels = $(".panels", c.card);
    const wanted = PANELS.filter((p) =>
      p.kind === "za" ? kinds.z && kinds.a : p.kind === "z" ? kinds.z && !kinds.a
        : p.kind === "colour" ? kinds.x && c.index === 0 : kinds[p.kind],
    );
    const which = exampleText(st.info?.meta);
    if (!wanted.length) {
      if (!panels.textContent) panels.append(el("p.note", { text: "no pictures recorded for this layer (yet)" }));
      this.stats(c, st);
      return;
    }
    if (panels.querySelector("p.note")) panels.textContent = "";
    const steps = st.compare ? [st.stepA, st.stepB] : [st.stepA];
    for (const p of wanted) {
      let fig = c.figures.get(p.kind);
      if (!fig || fig.dataset.pairs !== String(steps.length) || (p.example && fig.dataset.which !== which)) {
        const nfig = el("figure.panel", { "data-kind": p.kind, "data-pairs": steps.length, "data-which": p.example ? which : null },
          el("figcaption", {}, el("span.sym", { text: p.sym }), p.name, p.example ? el("span.example", { text: which }) : null),
          el("div.pair", {}, ...steps.map((_, j) => el("div", {},
            steps.length > 1 ? el("span.which", { text: "" }) : null,
            el(`img.kind-${p.kind}`, { alt: `${p.sym} of ${name}`, "data-slot": j })))));
        if (fig) fig.replaceWith(nfig); else panels.append(nfig);
        fig = nfig;
        c.figures.set(p.kind, fig);
      }
      const series = p.kind === "za" ? kinds.z : p.kind === "colour" ? kinds.x : kinds[p.kind];
      steps.forEach((step, j) => {
        const img = fig.querySelector(`img[data-slot="${j}"]`);
        const which = img.previousElementSibling;
        if (step === null || step === undefined) return;
        const at = step < series[0] ? null : step;
        if (which && which.classList.contains("which")) which.textContent = `${j ? "B" : "A"}: step ${step}`;
        if (at === null) { img.removeAttribute("src"); img.alt = `not recorded before step ${series[0]}`; img.dataset.want = ""; return; }
        if (!load) return;
        const src = p.kind === "za"
          ? url(runPath(st.run, "/za.png"), { layer: name, step: at })
          : p.kind === "colour" ? url(runPath(st.run, "/colour.png"), { layer: name, step: at })
          : url(runPath(st.run, "/image.png"), { layer: name, kind: p.kind, step: at, norm: c.normSel.value });
        img.dataset.step = String(at);
        if (p.kind === "a") c.proj.bind(img);
        setImage(img, src);
      });
    }
    this.stats(c, st);
  }

  stats(c, st) {
    const rows = st.stats.get(c.layer.name) || [];
    const step = st.stepA ?? Infinity;
    let row = null;
    for (let i = rows.length - 1; i >= 0; i--) if (rows[i].step <= step) { row = rows[i]; break; }
    if (!row && rows.length) row = rows[0];
    const box = $(".stats", c.card);
    box.textContent = "";
    if (!row) { box.append("no statistics yet"); return; }
    const items = [
      ["a", row.a_min, row.a_max], ["z", row.z_min, row.z_max], ["dL/da", row.grad_a_min, row.grad_a_max],
    ].filter(([, lo, hi]) => lo !== undefined || hi !== undefined)
      .map(([n, lo, hi]) => el("span", {}, `${n}: min `, el("b", { text: fmt(lo) }), " max ", el("b", { text: fmt(hi) }), " · "));
    // the weights' side may come on fewer steps than the maps' (a long step's budget): its last values, with their step
    const weights = (key) => {
      if (row[key] !== undefined) return [row[key], null];
      for (let i = rows.indexOf(row) - 1; i >= 0; i--) if (rows[i][key] !== undefined) return [rows[i][key], rows[i].step];
      return [undefined, null];
    };
    const more = [
      ["dead", [row.dead_fraction, null], pct], ["mean a", [row.a_mean, null], fmt], ["‖W‖", weights("weight_norm"), fmt],
      ["‖dL/dW‖", weights("grad_weight_norm"), fmt], ["‖dL/da‖", [row.grad_a_norm, null], fmt],
      ["update ratio ‖ΔW‖/‖W‖", weights("update_ratio"), fmt],
    ].filter(([, [v]]) => v !== undefined)
      .map(([n, [v, at], f]) => el("span", {}, `${n} `, el("b", { text: f(v) }), at === null ? " · " : ` (step ${at}) · `));
    box.append(`at step ${row.step}: `, ...items, ...more);
  }
}

/** The maps of an uploaded image: a and z of every layer the trainer recorded ([{name, kinds}]). */
export function uploadPanels(run, ident, layers) {
  const what = { a: ["a = f(z)", "activation maps = feature maps"], z: ["z", "pre-activation"] };
  return layers.map((L) => el("div.layer", { "data-layer": L.name },
    el("h3", {}, el("span", { text: L.name })),
    el("div.panels", {}, ...L.kinds.filter((k) => what[k]).map((kind) =>
      el("figure.panel", { "data-kind": kind },
        el("figcaption", {}, el("span.sym", { text: what[kind][0] }), what[kind][1]),
        el(`img.kind-${kind}`, { alt: `${what[kind][0]} of ${L.name} for your image`,
          src: url(runPath(run, "/image.png"), { layer: `upload:${ident}/${L.name}`, kind, norm: "map" }) }))))));
}

export { $$ };
