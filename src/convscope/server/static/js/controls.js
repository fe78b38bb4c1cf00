// controls.js — the dashboard's side of the control channel: every button sends one control
// row (POST /controls, validated by the server); the trainer's acknowledgement arrives on the
// live channel and is shown next to the button ("in effect from step S" or the trainer's error).
// What the page can tell without the server -- a field left empty, text that is not a number, an
// empty layer spec, no net picked -- is said next to the control too, replacing its last message,
// and nothing is sent.

import { $, el, postJSON, runPath } from "./api.js";

const HYPER = ["lr", "momentum", "batch_size", "weight_decay"];
const NUMBER = /^[+-]?(\d+\.?\d*|\.\d+)(e[+-]?\d+)?$/i; // what a hyperparameter field takes
const LABEL = { lr: "learning rate", momentum: "momentum", batch_size: "batch size", weight_decay: "weight decay",
  pause: "pause", resume: "resume", model: "network", save_checkpoint: "save checkpoint", load_checkpoint: "load checkpoint" };

export class Controls {
  constructor(getState) {
    this.state = getState;
    this.sent = new Map(); // control id -> ack element
    this.rows = new Map(); // control id -> row of the log
    this.early = new Map(); // control id -> its answer that arrived before send() knew the id
    this.latest = () => null;
    this.info = null;
    this.shownModel = null;
    $("#pause-btn").addEventListener("click", () => {
      const paused = this.state().status === "paused";
      this.send(paused ? "resume" : "pause", true, $("#pause-state"));
    });
    for (const key of HYPER) {
      const input = $(`#ctl-${key}`);
      // a text field: what was typed stays visible (a number field drops "abc" as it is typed
      // and reads as empty), so the answer can say what is wrong with it
      input.type = "text";
      input.inputMode = "decimal";
      input.autocomplete = "off";
      const go = () => {
        const typed = input.value.trim();
        const wrong = numberError(typed, LABEL[key]);
        if (wrong) { this.tell($(`#ack-${key}`), wrong); return; }
        this.send(key, Number(typed), $(`#ack-${key}`));
      };
      $(`#apply-${key}`).addEventListener("click", go);
      input.addEventListener("keydown", (e) => { if (e.key === "Enter") { e.preventDefault(); go(); } });
      input.addEventListener("input", () => { // a new value: the last answer no longer applies to it
        input.dataset.typed = "1"; // the user's value, not yet sent: fill() leaves it
        const ack = $(`#ack-${key}`);
        if (!ack.classList.contains("wait")) { ack.textContent = ""; ack.className = "ack"; }
      });
    }
    this.saved = null; // the name of the checkpoint just saved: selected once the list has it
    $("#zoo-select").addEventListener("change", () => this.zooButton());
    $("#zoo-apply").addEventListener("click", () => {
      const name = $("#zoo-select").value;
      if (!name) { this.tell($("#ack-model"), "pick a zoo net first"); return; }
      this.send("model", name, $("#ack-model"));
    });
    $("#spec-apply").addEventListener("click", () => {
      const spec = $("#spec-text").value;
      const layers = spec.split(/[\n;]/).map((l) => l.split("#")[0].trim()).filter(Boolean);
      if (!layers.length) {
        this.tell($("#ack-model"), "the layer spec is empty: write one layer per line, e.g. conv 8 3 relu, pool 2, fc 10");
        return;
      }
      this.send("model", spec, $("#ack-model"));
    });
    $("#ckpt-save").addEventListener("click", () => this.send("save_checkpoint", $("#ckpt-name").value.trim() || null, $("#ack-ckpt")));
    $("#ckpt-load").addEventListener("click", () => {
      const name = $("#ckpt-select").value;
      if (!name) { this.tell($("#ack-ckpt"), this.info?.checkpoints?.length ? "pick a checkpoint first" : "no checkpoint to load yet: save one first"); return; }
      this.send("load_checkpoint", name, $("#ack-ckpt"));
    });
  }

  /** A message of the page's own next to a control, in place of its last one. */
  tell(ack, text) {
    ack.className = "ack bad";
    ack.textContent = text;
    delete ack.dataset.id;
  }

  /** "restart with this net" works only with a net picked in the list. */
  zooButton() {
    const button = $("#zoo-apply");
    if (!button.dataset.off) button.disabled = !$("#zoo-select").value;
  }

  /** Show the run: fill inputs with the current values, the zoo, the spec, the checkpoints. */
  show(info, latest) {
    const meta = info.meta || {};
    this.latest = latest;
    this.info = info;
    this.fill();
    const zoo = Array.isArray(meta.zoo) ? meta.zoo : [];
    const sel = $("#zoo-select");
    const current = String(meta.model || "").replace(/^zoo:/, "");
    const chosen = sel.value; // the user's choice stays while the net it was shown for trains
    sel.textContent = "";
    if (!zoo.includes(current)) { // a layer spec trains (or no net is listed): no zoo net is chosen yet
      const text = !zoo.length ? "(the trainer lists no zoo nets)" : current ? "(a layer spec trains: pick a zoo net)" : "(pick a zoo net)";
      sel.append(el("option", { value: "", text }));
    }
    for (const name of zoo) sel.append(el("option", { value: name, text: name }));
    sel.value = current !== this.shownModel || !zoo.includes(chosen) ? (zoo.includes(current) ? current : "") : chosen;
    this.shownModel = current;
    const spec = $("#spec-text");
    if (document.activeElement !== spec) spec.value = meta.spec || "";
    this.checkpoints(info.checkpoints || []);
    this.enable(info);
  }

  /** Fill the fields with the values in effect (the last logged scalars once the history is in;
   *  the run's config before), except a field the user is typing in or has typed a value into
   *  that is not in effect yet (one applied is left alone until the trainer logs it). */
  fill() {
    for (const key of HYPER) {
      const input = $(`#ctl-${key}`);
      const v = this.effective(key);
      if (v === null) continue;
      if (input.dataset.typed && input.value.trim() !== "" && Number(input.value) === Number(v)) delete input.dataset.typed;
      if (document.activeElement === input || input.dataset.typed) continue;
      if (input.value !== String(v)) input.value = String(v);
    }
  }

  /** The value of a setting the trainer uses now (its last logged scalar, else the run's config). */
  effective(key) {
    const v = this.latest(key) ?? this.info?.config?.[key];
    return v === undefined || v === null ? null : v;
  }

  /** A refused value leaves its field: the field shows the value still in effect again. */
  revert(key) {
    if (!HYPER.includes(key)) return "";
    const v = this.effective(key);
    if (v === null) return "";
    const input = $(`#ctl-${key}`);
    input.value = String(v);
    delete input.dataset.typed;
    return ` — still ${v}`;
  }

  /** The run's checkpoints (GET /api/runs/{run}: name, step, net, fits), each with its net; one
   *  whose weights do not fit the net training now is listed but cannot be chosen. The one just
   *  saved is selected when it appears; else the choice stays. */
  checkpoints(list) {
    const sel = $("#ckpt-select");
    const keep = this.saved && list.some((c) => c.name === this.saved) ? this.saved : sel.value;
    if (keep === this.saved) this.saved = null;
    sel.textContent = "";
    if (!list.length) sel.append(el("option", { value: "", text: "no checkpoints yet" }));
    for (const c of list) sel.append(el("option", { value: c.name, text: checkpointLabel(c), disabled: c.fits === false }));
    const fits = list.filter((c) => c.fits !== false);
    if (keep && fits.some((c) => c.name === keep)) sel.value = keep;
    else if (fits.length) sel.value = fits[fits.length - 1].name; // the newest that fits
    else if (list.length) {
      sel.prepend(el("option", { value: "", text: "(none fits the net training now)" }));
      sel.value = "";
    }
  }

  /** Which controls can work: all for the built-in trainer; pause/resume only for a
   *  convscope.watch run; none for a run that has ended, and none while its trainer is not
   *  responding (a control sent then would only wait in the store for a trainer that may be
   *  gone; a restarted trainer refuses controls older than itself). */
  enable(info) {
    const ended = ["finished", "stopped", "crashed"].includes(info.status);
    const stale = !ended && Boolean(info.stale);
    const watch = info.meta?.trainer !== "builtin";
    const note = $("#controls-note");
    let text = "";
    if (ended) text = `This run is ${info.status}: no trainer is listening, so the controls are off.`;
    else if (stale) text = "The trainer is not responding: it has not committed a step or read the controls for a while (it may have been stopped or killed). The controls are off until it answers again; a trainer restarted with --resume does not apply controls sent before it started.";
    else if (watch) text = "This run is recorded by convscope.watch inside your own training loop: only pause/resume reach it (the loop waits in run.step() while paused). Learning rate, momentum, batch size, weight decay, the network and checkpoints belong to your code.";
    note.hidden = !text;
    note.textContent = text;
    note.dataset.reason = ended ? "ended" : stale ? "stale" : watch ? "watch" : "";
    $("#pause-btn").disabled = ended || stale;
    for (const e of document.querySelectorAll("[data-builtin]")) {
      e.disabled = ended || stale || watch;
    }
    const zoo = $("#zoo-apply");
    if (ended || stale || watch) zoo.dataset.off = "1"; else delete zoo.dataset.off;
    this.zooButton();
  }

  setPaused(status) {
    $("#pause-btn").textContent = status === "paused" ? "Resume" : "Pause";
  }

  async send(key, value, ack) {
    const st = this.state();
    if (!st.run) return;
    ack.className = "ack wait";
    ack.textContent = "sending…";
    try {
      const { id } = await postJSON(runPath(st.run, "/controls"), { key, value });
      ack.textContent = `sent (#${id}), waiting for the trainer…`;
      ack.dataset.id = String(id);
      this.sent.set(id, ack);
      const early = this.early.get(id); // answered on the live channel before this POST returned
      if (early) this.update([early]); else this.log({ id, key, value, applied_step: null, result: null });
    } catch (err) {
      ack.className = "ack bad";
      ack.textContent = `refused: ${err.message}${this.revert(key)}`;
    }
  }

  /** Control rows from the live channel (sent or answered). */
  update(controls) {
    for (const c of controls) {
      this.log(c);
      const ack = this.sent.get(c.id);
      if (c.result === null || c.result === undefined) continue;
      if (!ack) { // maybe ours, with its POST still on the way: kept for send() (the last few)
        this.early.set(c.id, c);
        for (const old of [...this.early.keys()].slice(0, -20)) this.early.delete(old);
        continue;
      }
      if (c.result.ok === false) {
        ack.className = "ack bad";
        ack.textContent = `refused by the trainer: ${c.result.error || "?"}${this.revert(c.key)}`;
      } else if (c.key === "model") {
        const got = String(c.result.model ?? c.value);
        ack.className = "ack ok";
        ack.textContent = `✓ restarted with ${got.includes("\n") ? "the edited layer spec" : got.replace(/^zoo:/, "")}: its first step is ${c.applied_step}`;
      } else if (c.key === "save_checkpoint" && c.result.name) {
        this.saved = c.result.name; // main.js refreshes the list next: selected there
        const taken = c.result.asked ? ` ("${c.result.asked}" was taken: both are kept)` : "";
        ack.className = "ack ok";
        ack.textContent = `✓ saved as ${c.result.name}, the weights of step ${c.result.step ?? "?"}${taken}`;
      } else if (c.key === "load_checkpoint" && c.result.name) {
        ack.className = "ack ok";
        ack.textContent = `✓ loaded ${c.result.name}: the weights of step ${c.result.step ?? "?"}, training goes on from them`;
      } else {
        ack.className = "ack ok";
        // applied_step is the next step the trainer runs (the page still shows the one before it)
        ack.textContent = `✓ in effect from step ${c.applied_step}`;
        if (HYPER.includes(c.key)) $(`#ctl-${c.key}`).value = String(c.value); // typed until the new value is logged
      }
      this.sent.delete(c.id);
    }
  }

  log(c) {
    const list = $("#ctl-log");
    $("#ctl-log-box").hidden = false;  // the heading shows once something was sent
    let li = this.rows.get(c.id);
    if (!li) {
      li = el("li", { "data-id": c.id });
      this.rows.set(c.id, li);
      list.prepend(li);
      while (list.children.length > 12) { const last = list.lastElementChild; this.rows.delete(Number(last.dataset.id)); last.remove(); }
    }
    const v = c.key === "predict" ? "an uploaded image" : c.key === "model" && String(c.value).includes("\n") ? "edited layer spec" : JSON.stringify(c.value);
    const state = c.result === null || c.result === undefined ? "waiting"
      : c.result.ok === false ? `refused: ${c.result.error || "?"}` : `✓ step ${c.applied_step}`;
    li.className = c.result ? (c.result.ok === false ? "bad" : "ok") : "wait";
    li.textContent = `#${c.id} ${LABEL[c.key] || c.key} ${c.key === "pause" || c.key === "resume" ? "" : `= ${v} `}— ${state}`;
  }

  reset() {
    this.sent.clear();
    this.early.clear();
    this.rows.clear();
    $("#ctl-log").textContent = "";
    $("#ctl-log-box").hidden = true;
    for (const a of document.querySelectorAll("#controls .ack")) { a.textContent = ""; a.className = "ack"; }
    for (const key of HYPER) delete $(`#ctl-${key}`).dataset.typed; // another run: its own values
  }
}

/** Why `text` cannot be sent as a number for the field `label`, or "" when it can. */
export function numberError(text, label) {
  if (text === "") return `type a ${label} first`;
  if (NUMBER.test(text)) return "";
  const shown = text.length > 24 ? `${text.slice(0, 24)}…` : text;
  if (/^[+-]?\d*,\d+$/.test(text)) return `not a number: ${shown} (write a point: ${text.replace(",", ".")})`;
  return `not a number: ${shown}`;
}

/** A checkpoint as the lists show it: "NAME (step S, NET)", and why it cannot be chosen. */
export function checkpointLabel(c) {
  const net = c.net ? `, ${c.net}` : "";
  const misfit = c.fits === false ? " — does not fit the net training now" : "";
  return `${c.name} (step ${c.step ?? "?"}${net})${misfit}`;
}
