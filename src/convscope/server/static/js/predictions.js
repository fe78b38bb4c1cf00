// predictions.js — predictions on the test images (top-3 probability bars, the true class
// marked), your own uploaded image (its top-3 and every layer's maps once the trainer
// answered), and the findings list.

import { $, awaitAnswer, el, postForm, runPath, say, url } from "./api.js";
import { uploadPanels } from "./layers.js";

const POLL_MS = 400;
const WAIT_S = 60;

function top3(top, truth) {
  return el("div.top3", {}, ...top.map(([k, name, p]) => el(`div.bar${k === truth ? ".truth" : ""}`, { title: `${name}: ${(100 * p).toFixed(1)}%` },
    el("span.fill", { style: `width:${Math.max(0, Math.min(1, p)) * 100}%` }),
    el("span.label", { text: `${k === truth ? "✓ " : ""}${name} ${(100 * p).toFixed(1)}%` }))));
}

export function showPredictions(run, found) {
  const box = $("#predictions");
  box.textContent = "";
  if (!found || !Array.isArray(found.value) || !found.value.length) {
    box.append(el("p.note", { text: "no predictions yet (the trainer writes them at every validation)" }));
    $("#pred-step").textContent = "";
    return;
  }
  $("#pred-step").textContent = `at step ${found.step} · green bar = the true class`;
  for (const p of found.value) {
    box.append(el(`div.pred.${p.correct ? "correct" : "wrong"}`, { "data-index": p.index },
      el("div", {},
        el("img", { src: url(runPath(run, `/test-images/${p.index}.png`)), alt: `test image ${p.index}: ${p.label_name}` }),
        el("div.truth-label", { text: `${p.correct ? "✓" : "✗"} ${p.label_name}` })),
      top3(p.top || [], p.label)));
  }
}

export function showFindings(found) {
  const list = $("#findings");
  list.textContent = "";
  for (const old of document.querySelectorAll("article.layer .flags")) old.remove();
  const items = found && Array.isArray(found.value) ? found.value : [];
  if (!items.length) { list.append(el("li.note", { text: "none yet" })); return; }
  const perLayer = new Map();
  for (const f of items) {
    const step = f && typeof f === "object" && f.step !== undefined ? f.step : found.step;
    const text = typeof f === "string" ? f
      : [f.layer, f.message || f.text || f.kind || JSON.stringify(f)].filter(Boolean).join(": ");
    const item = el("li", {}, el("span.mono", { text: `step ${step} ` }), text);
    if (f && f.advice) item.append(el("div.advice", { text: f.advice }));
    list.append(item);
    if (f && f.layer) {
      if (!perLayer.has(f.layer)) perLayer.set(f.layer, []);
      perLayer.get(f.layer).push(f);
    }
  }
  // flag the layer cards: which filters, what was found (hover for the evidence)
  for (const [layer, fs] of perLayer) {
    const card = document.querySelector(`article.layer[data-layer="${CSS.escape(layer)}"] h3`);
    if (!card) continue;
    const flags = el("span.flags", {});
    for (const f of fs) {
      const which = Array.isArray(f.filters) && f.filters.length
        ? ` ${f.filters.slice(0, 12).join(", ")}${f.filters.length > 12 ? ", …" : ""}` : "";
      flags.append(el(`span.flag.sev-${f.severity || "low"}`, {
        text: `${(f.kind || "finding").replace("_", " ")}${which}`,
        title: [f.message, f.advice].filter(Boolean).join("\n"),
      }));
    }
    card.append(flags);
  }
}

const HELDOUT = 8; // held-out crops offered before "your own file"

/** What the net knows, said plainly above the image picker (and why a whole photo fails). */
function classesNote(info) {
  const classes = Array.isArray(info?.meta?.classes) ? info.meta.classes : [];
  const shape = Array.isArray(info?.meta?.input_shape) ? info.meta.input_shape : null;
  const size = shape ? `${shape[1]}×${shape[2]}` : "small";
  if (!classes.length) return "The network answers with one of the classes it was trained on.";
  if (info?.meta?.dataset === "builtin:photo-crops") {
    return `This network knows ${classes.length} classes only, and they are ${classes.length} photos: ${classes.join(", ")}. `
      + `It says which photo a small crop (${size} px) comes from. The held-out crops below come from parts of those photos `
      + `it never trained on. A whole photo — even one of these ${classes.length}, shrunk to ${size} — or your own picture is `
      + `out of distribution: the net still picks one of the ${classes.length}, and its confidence then means little.`;
  }
  return `This network knows ${classes.length} classes only: ${classes.join(", ")}. It learned them from ${size} `
    + "crops; the held-out crops below are images of the kind it was trained on, which it never saw while training. "
    + `A whole photo (a person, a street, a room) is out of distribution: the net still picks one of these ${classes.length} `
    + "classes, and its confidence then means little.";
}

export class Upload {
  constructor(getState) {
    this.state = getState;
    this.ticket = 0;
    $("#upload-form").addEventListener("submit", (e) => { e.preventDefault(); const f = $("#upload-file").files[0]; this.go(f, f?.name); });
  }

  reset() {
    this.ticket++;
    for (const id of ["#upload-result", "#upload-maps", "#upload-state", "#heldout"]) $(id).textContent = "";
    $("#heldout").dataset.key = "";
  }

  /** What the net knows, said above the picker. */
  offer(info) {
    $("#classes-note").textContent = classesNote(info);
  }

  /** The run's held-out crops (the test images of its predictions) as buttons: a click sends
   *  that crop, as an upload would. */
  crops(run, found) {
    const box = $("#heldout");
    const list = found && Array.isArray(found.value) ? found.value.slice(0, HELDOUT) : [];
    const key = `${run}:${list.map((p) => p.index).join(",")}`;
    if (box.dataset.key === key) return; // the same crops: keep the buttons
    box.dataset.key = key;
    box.textContent = "";
    if (!list.length) return;
    box.append(el("span.note", { text: "held-out crops:" }));
    for (const p of list) {
      const src = url(runPath(run, `/test-images/${p.index}.png`));
      const btn = el("button.crop", { type: "button", title: `predict this held-out crop (a ${p.label_name})`, "data-index": p.index },
        el("img", { src, alt: `held-out crop ${p.index}: ${p.label_name}`, width: 48, height: 48 }));
      btn.addEventListener("click", async () => {
        try {
          const blob = await (await fetch(src)).blob();
          // the crop is what is answered now: the file picker no longer names the last file
          $("#upload-file").value = "";
          await this.go(new File([blob], `heldout-${p.index}.png`, { type: "image/png" }), `held-out crop ${p.index}`);
        } catch (err) { say(err.message); }
      });
      box.append(btn);
    }
  }

  /** Send `file`; `what` names it in the answer line ("tiny.png", "held-out crop 3"). */
  async go(file, what = file?.name) {
    const st = this.state();
    const state = $("#upload-state");
    // said beside the upload, replacing its last line (not a toast that outlives the next answer)
    const refuse = (text) => { state.className = "ack bad"; state.textContent = text; };
    if (!st.run) { refuse("the page is still loading the run: try again in a moment"); return; }
    if (!file) { refuse("choose an image file first (or click a held-out crop)"); return; }
    const ticket = ++this.ticket;
    const form = new FormData();
    form.append("image", file, file.name);
    state.className = "ack wait";
    state.textContent = "uploading…";
    $("#upload-result").textContent = "";
    $("#upload-maps").textContent = "";
    let id;
    try {
      ({ id } = await postForm(runPath(st.run, "/uploads"), form));
    } catch (err) {
      state.className = "ack bad";
      state.textContent = err.message;
      return;
    }
    state.textContent = `sent (#${id}), waiting for the trainer…`;
    let r;
    try {
      r = await awaitAnswer(runPath(st.run, `/uploads/${id}`), { everyMs: POLL_MS, giveUpMs: WAIT_S * 1000,
        late: "no answer from the trainer in 60 s (paused? not responding?)", current: () => ticket === this.ticket });
    } catch (err) { state.className = "ack bad"; state.textContent = err.message; return; }
    if (r === null) return;
    if (r.status === "done") {
      this.show(st.run, id, r);
      state.className = "ack ok";
      state.textContent = `✓ answered at step ${r.step}${what ? `: ${what}` : ""}`;
      // the occlusion panel (occlusion.js) lists answered uploads: it reads its list again now
      document.dispatchEvent(new CustomEvent("convscope:upload", { detail: { run: st.run, id } }));
      return;
    }
    state.className = "ack bad"; state.textContent = `the trainer could not: ${r.error}`;
  }

  show(run, id, r) {
    $("#upload-result").append(
      el("figure.panel", {}, el("figcaption", {}, el("span.sym", { text: "x" }), "as the network sees it (its centre, resized)"),
        el("img", { src: url(runPath(run, `/uploads/${id}/image.png`)), alt: "your image, resized for the network" })),
      el("div", { style: "flex:1 1 420px" }, el("h3", { text: "top-3 of the classes it knows" }), top3(r.top || [], null)));
    $("#upload-maps").append(...uploadPanels(run, id, r.layers || []));
  }
}
