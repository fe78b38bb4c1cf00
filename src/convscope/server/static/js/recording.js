// recording.js — what the recorder (convscope.watch's, and the built-in trainer's) kept and
// skipped to stay within its budget
// (json "recording", written every ~2 s: train/recorder_budget.py report()), under the Training
// card's numbers: the last window's sentence (over its `window_s` seconds; a row written before
// those were added: "~2 s") and the whole run's (a run written before the whole run's was added
// has the window's only). A run with no such row (written by hand with
// RunWriter) keeps the line hidden.

import { $, el } from "./api.js";

export function showRecording(found) {
  const box = $("#recording");
  box.textContent = "";
  const v = found && found.value && typeof found.value === "object" ? found.value : null;
  const note = v && typeof v.note === "string" ? v.note : "";
  const total = v && typeof v.total_note === "string" ? v.total_note : "";
  box.hidden = !note && !total;
  if (box.hidden) return;
  const budget = typeof v.budget === "number" ? `budget ${+(100 * v.budget).toPrecision(3)}% of the step time` : "no budget";
  box.append(el("span.what", { text: "recorded " }), el("small", { text: `(${budget})` }));
  const secs = typeof v.window_s === "number" && Number.isFinite(v.window_s) ? v.window_s : null;
  const span = secs === null ? "~2 s" : `${secs < 10 ? secs.toFixed(1) : Math.round(secs)} s`; // (older rows: ~2 s)
  if (note && note !== total) box.append(el("div", {}, el("span.when", { text: `last ${span}, to step ${found.step}: ` }), el("span.said", { text: note })));
  if (total) box.append(el("div", {}, el("span.when", { text: `whole run, to step ${found.step}: ` }), el("span.said", { text: total })));
}
