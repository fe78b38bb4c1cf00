// main.js — the dashboard page: run picker, header numbers, charts, timeline, and the live
// channel (server-sent events) that keeps them current. Everything is read through the JSON
// API of convscope.server (see server/app.py); nothing here talks to a trainer directly.
// A run may hold several nets (restarts with another net, told by the answered `model` controls):
// the charts show the net now training from its first step, or, ticked, the whole run — each
// net's points their own series, so no line joins two nets. The history is asked for first,
// before any picture, so the charts are whole at once.

import { $, el, events, fmt, getJSON, int, pct, runPath, say } from "./api.js";
import { align, Chart } from "./charts.js";
import { Controls } from "./controls.js";
import { Layers } from "./layers.js";
import { showFindings, showPredictions, Upload } from "./predictions.js";
import { showRecording } from "./recording.js";
import { ema, windowMean, windowRate } from "./smooth.js";

const S = {
  run: null, info: null, status: null, stale: false, lastStep: null,
  scalars: new Map(), // name -> Map(step -> value)
  stats: new Map(), // layer -> [{step, layer, ...}] in step order
  steps: [], series: {}, stepA: null, stepB: null, compare: false, live: true,
  json: {}, snapshotStep: undefined,
  restarts: [], // [{step, model}]: the trainer restarted with another net before `step`
  whole: false, // the charts show the whole run (every net), not only the net now training
};
window.convscope = S; // for the curious (and the browser tests)

const HISTORY_POINTS = 3000; // points per series loaded when a run is opened
const getState = () => S;
const layers = new Layers($("#layer-list"), getState);
const controls = new Controls(getState);
const upload = new Upload(getState);
let source = null;
let charts = {};
let generation = 0; // bumped when another run is opened: late answers for the old one are dropped

// ---- runs ------------------------------------------------------------------------------------
async function loadRuns() {
  const { runs } = await getJSON("/api/runs");
  const sel = $("#run-select");
  sel.textContent = "";
  if (!runs.length) {
    sel.append(el("option", { value: "", text: "no runs yet" }));
    $("#status").textContent = "no runs";
    return null;
  }
  for (const r of runs) sel.append(el("option", { value: r.name, text: runLabel(r.name, r.status, false, r.model) }));
  const fromHash = decodeURIComponent((location.hash.match(/run=([^&]+)/) || [])[1] || "")
    || new URLSearchParams(location.search).get("run") || ""; // #run=NAME or ?run=NAME
  const pick = runs.find((r) => r.name === fromHash) || runs.find((r) => r.status === "running") || runs[0];
  sel.value = pick.name;
  return pick.name;
}

/** The run picker's words for a run: its name, its state (as the status badge says it), its net. */
function runLabel(name, status, stale, model) {
  return `${name} — ${stale ? "trainer not responding" : status ?? "?"}${model ? ` — ${model}` : ""}`;
}

/** Tell the page's other panels (occlusion.js, embedding.js: separate modules) about the run. */
function announce(kind, detail) {
  document.dispatchEvent(new CustomEvent(`convscope:${kind}`, { detail: { run: S.run, ...detail } }));
}

async function openRun(name) {
  const gen = ++generation;
  if (source) source.close();
  source = null;
  Object.assign(S, { run: name, info: null, status: null, stale: false, lastStep: null, scalars: new Map(), stats: new Map(),
    steps: [], series: {}, stepA: null, stepB: null, live: true, json: {}, snapshotStep: undefined, restarts: [], whole: false });
  $("#live").checked = true;
  controls.reset();
  upload.reset();
  showPredictions(name, null);
  showFindings(null);
  showRecording(null);
  spanBoxes();
  if (!name) return;
  // the history first (its requests before the panels' pictures): which net trains since when,
  // then its points — while the run's description comes
  const [info, ctl] = await Promise.all([getJSON(runPath(name)), getJSON(runPath(name, "/controls"))]);
  if (gen !== generation) return;
  noteRestarts(ctl.controls);
  const history = fetchHistory(name);
  applyInfo(info);
  spanBoxes();
  let hello = false; // the first hello finds the history on its way; a later one (a reconnect) asks again
  source = events(name);
  const on = (ev, fn) => source.addEventListener(ev, (e) => {
    if (gen !== generation) return;
    let data;
    try { data = JSON.parse(e.data); } catch { return; }
    Promise.resolve(fn(data)).catch((err) => say(err.message));
  });
  on("hello", () => { if (hello) return loadAll(gen); hello = true; return null; });
  on("step", onStep);
  on("scalars", (p) => { merge(p.scalars); schedule(); });
  on("stats", (p) => { mergeStats(p.stats); schedule(); });
  on("controls", onControls);
  on("problem", (p) => say(`live channel: ${p.error}`));
  useHistory(await history);
  if (gen !== generation) return;
  draw();
  await refreshSnapshots();
}

function applyInfo(info) {
  S.info = info;
  S.status = info.status;
  S.stale = info.stale;
  S.lastStep = info.last_step;
  S.json.layers = info.layers_step;
  $("#model").textContent = `${info.meta?.model ?? "?"}${info.meta?.trainer === "watch" ? " · recorded by convscope.watch" : ""}`;
  sizeLine(info.size);
  layers.build(info.layers || []);
  buildCharts();
  controls.show(info, latest);
  upload.offer(info);
  header();
  announce("run", { info }); // the occlusion and embedding panels fill their lists from it
}

/** The charts' history of the span shown: the net now training (from its first step) or the
 *  whole run. A long span arrives thinned to HISTORY_POINTS a series; live points come whole. */
function fetchHistory(name) {
  const params = { max_points: HISTORY_POINTS };
  const from = S.whole ? -Infinity : netStart();
  if (Number.isFinite(from)) params.since = from - 1; // (since: steps after it)
  return Promise.all([getJSON(runPath(name, "/scalars"), params), getJSON(runPath(name, "/stats"), params)]);
}

/** The history answered, with the live points that came meanwhile kept on top. */
function useHistory([sc, st]) {
  const liveScalars = S.scalars;
  const liveStats = [...S.stats.values()].flat().sort((a, b) => a.step - b.step);
  S.scalars = new Map();
  S.stats = new Map();
  merge(sc.scalars);
  mergeStats(st.stats);
  for (const [name, m] of liveScalars) merge({ [name]: [...m] });
  mergeStats(liveStats.filter((r) => !(S.stats.get(r.layer) || []).some((x) => x.step === r.step)));
}

/** Everything again (a reconnect may have missed points; the span shown changed). */
async function loadAll(gen) {
  const ctl = await getJSON(runPath(S.run, "/controls"));
  if (gen !== generation) return;
  S.restarts = [];
  noteRestarts(ctl.controls);
  const answer = await fetchHistory(S.run);
  if (gen !== generation) return;
  S.scalars = new Map();
  S.stats = new Map();
  useHistory(answer);
  spanBoxes();
  draw();
  await refreshSnapshots();
}

// ---- live channel ------------------------------------------------------------------------------
/** The run's json rows the page shows (server/events.py JSON_KEYS), each refetched when its step moves. */
const JSON_PANELS = {
  predictions: (found) => { showPredictions(S.run, found); upload.crops(S.run, found); },
  findings: showFindings,
  recording: showRecording,
};

async function onStep(p) {
  const statusChanged = p.status !== S.status || p.stale !== S.stale;
  S.status = p.status;
  S.stale = p.stale;
  if (p.last_step !== null && (S.lastStep === null || p.last_step > S.lastStep)) S.lastStep = p.last_step;
  const gen = generation;
  if (p.json.layers !== S.json.layers && p.json.layers !== null) {
    S.json.layers = p.json.layers; // the trainer restarted with another net: rebuild
    const info = await getJSON(runPath(S.run));
    if (gen !== generation) return;
    applyInfo(info);
    await refreshSnapshots();
  }
  for (const [key, show] of Object.entries(JSON_PANELS)) {
    if (p.json[key] !== S.json[key] && p.json[key] !== null && p.json[key] !== undefined) {
      S.json[key] = p.json[key];
      const found = await getJSON(runPath(S.run, `/json/${key}`));
      if (gen !== generation) return;
      show(found);
    }
  }
  if (p.snapshot_step !== S.snapshotStep) {
    S.snapshotStep = p.snapshot_step;
    await refreshSnapshots();
  }
  if (statusChanged && S.info) controls.enable({ ...S.info, status: S.status, stale: S.stale });
  header();
}

async function onControls(p) {
  controls.update(p.controls);
  if (noteRestarts(p.controls)) { spanBoxes(); schedule(); }
  if (p.controls.some((c) => c.result && ["save_checkpoint", "load_checkpoint"].includes(c.key))) {
    const gen = generation;
    const info = await getJSON(runPath(S.run));
    if (gen !== generation) return;
    controls.checkpoints(info.checkpoints || []);
    announce("checkpoints", { checkpoints: info.checkpoints || [] });
  }
}

/** Restarts with another net, from the answered `model` controls; true when one was new. */
function noteRestarts(rows) {
  let added = false;
  for (const c of rows || []) {
    if (c.key !== "model" || !c.result || c.result.ok === false || c.applied_step === null) continue;
    if (S.restarts.some((r) => r.id === c.id)) continue;
    const model = String(c.result.model ?? c.value);
    S.restarts.push({ id: c.id, step: c.applied_step, model: model.includes("\n") ? "layer spec" : model.replace(/^zoo:/, "") });
    added = true;
  }
  S.restarts.sort((a, b) => a.step - b.step);
  return added;
}

/** The step the current net started at (-Infinity without a restart): per-net numbers count from it. */
function netStart() { return S.restarts.length ? S.restarts[S.restarts.length - 1].step : -Infinity; }

/** The run's nets in step order: [{n, start, end, model}] (steps start <= s < end). */
function segments() {
  const name = (m) => String(m ?? "").replace(/^zoo:/, "");
  // the first net: as launched (config.model; a recorder's run may not say it), the only one: meta.model
  const first = S.restarts.length ? name(S.info?.config?.model) || "first net" : name(S.info?.meta?.model ?? S.info?.config?.model);
  const nets = [{ start: -Infinity, model: first }];
  for (const r of S.restarts) nets.push({ start: r.step, model: r.model });
  return nets.map((s, i) => ({ ...s, n: i + 1, end: i + 1 < nets.length ? nets[i + 1].start : Infinity }));
}

// ---- which span the charts show -----------------------------------------------------------------
// one line above the training charts and one above the health charts (both say the same, either
// switches all four): shown only once the run has more than one net
function spanBoxes() {
  for (const id of ["training", "health"]) {
    const card = $(`#${id}`);
    let box = $(".chart-span", card);
    if (!box) {
      const input = el("input", { type: "checkbox", "aria-label": "charts: the whole run, every net" });
      input.addEventListener("change", (e) => setWhole(e.target.checked));
      box = el("div.row.note.chart-span", {}, el("label", {}, input, el("span.span-whole")), el("span.span-now"));
      card.insertBefore(box, $(".charts", card));
    }
    box.style.display = S.restarts.length ? "" : "none"; // (.row's display would win over `hidden`)
    if (!S.restarts.length) continue;
    const nets = segments();
    const now = nets[nets.length - 1];
    $("input", box).checked = S.whole;
    $(".span-whole", box).textContent = ` whole run (${nets.length} nets)`;
    $(".span-now", box).textContent = S.whole
      ? `— charts show every net; a line never joins two nets (restarts dashed)`
      : `— charts show the net now training, ${now.model}, from its first step ${int(now.start)}`;
  }
}

function setWhole(on) {
  if (S.whole === on) return;
  S.whole = on;
  spanBoxes();
  drawCharts(); // at once with what is loaded; then with the span's own history
  loadAll(generation).catch((err) => say(err.message));
}

function merge(scalars) {
  for (const [name, pts] of Object.entries(scalars || {})) {
    let m = S.scalars.get(name);
    if (!m) S.scalars.set(name, (m = new Map()));
    for (const [step, v] of pts) m.set(step, v);
  }
}

function mergeStats(rows) {
  for (const r of rows || []) {
    let list = S.stats.get(r.layer);
    if (!list) S.stats.set(r.layer, (list = []));
    if (list.length && list[list.length - 1].step >= r.step) {
      const i = list.findIndex((x) => x.step === r.step);
      if (i >= 0) { list[i] = r; continue; }
    }
    list.push(r);
  }
}

function latest(name, since = -Infinity) {
  return latestPoint(name, since)?.[1] ?? null;
}

/** [step, value] of a scalar's newest point at or after `since`, or null. */
function latestPoint(name, since = -Infinity) {
  const m = S.scalars.get(name);
  if (!m || !m.size) return null;
  let best = -Infinity, v = null;
  for (const [s, x] of m) if (s > best && s >= since) { best = s; v = x; }
  return best === -Infinity ? null : [best, v];
}

let drawTimer = null;
function schedule() {
  if (drawTimer) return;
  drawTimer = setTimeout(() => { drawTimer = null; draw(); }, 400);
}

function draw() {
  header();
  controls.fill(); // the fields show the values in effect once the history is in (not the launch settings)
  drawCharts();
  for (const c of layers.cards.values()) layers.stats(c, S);
}

// ---- header ------------------------------------------------------------------------------------
// the run's size against its byte budget (RunReader.storage): what was thinned is said, not hidden
function sizeLine(size) {
  const el = $("#size");
  if (!size) return;
  const mb = (b) => `${(b / 1e6).toFixed(b < 1e7 ? 1 : 0)} MB`;
  const cut = size.thinned.filter((t) => t.by_budget > 0);
  const note = size.over_budget ? " · over budget: one snapshot per series kept"
    : cut.length ? ` · ${cut.length} snapshot series thinned to fit` : "";
  el.textContent = `run ${mb(size.bytes)}${size.budget_bytes ? ` of ${mb(size.budget_bytes)} budget` : ""}${note}`;
  el.title = size.thinned.map((t) => `${t.layer} ${t.kind}: ${t.dropped} older snapshots dropped`
    + ` (${t.by_budget} for the budget, ${t.by_retention} past the per-series cap)`).join("\n");
}

function header() {
  const pill = $("#status");
  const status = S.stale ? "trainer not responding" : S.status || "?";
  pill.textContent = status;
  pill.className = `pill ${S.stale ? "stale" : S.status || ""}`;
  pill.title = S.stale ? "the trainer has not committed a step or polled controls for a while" : "";
  controls.setPaused(S.status);
  const option = [...$("#run-select").options].find((o) => o.value === S.run);
  if (option && S.info) option.textContent = runLabel(S.run, S.status, S.stale, S.info.meta?.model); // as the badge says
  $("#step").textContent = S.lastStep ?? "–";
  $("#examples").textContent = int(latest("examples"));
  const ms = (v) => (v === null ? "–" : `${fmt(v, 3)} ms`);
  const since = netStart(); // numbers of the net now training only (a restart starts them afresh)
  $("#fwd").textContent = ms(windowMean(S.scalars.get("fwd_ms_per_example"), undefined, since));
  $("#bwd").textContent = ms(windowMean(S.scalars.get("bwd_ms_per_example"), undefined, since));
  // while no examples flow (paused, trainer silent) the rate of the last steps would be a stale number
  $("#eps").textContent = S.stale ? "–" : S.status === "paused" ? "paused" : int(windowRate(S.scalars.get("examples"), S.scalars.get("examples_per_s"), undefined, since));
  $("#loss").textContent = fmt(latest("loss", since));
  $("#loss-ema").textContent = fmt(latest("loss", since) === null ? null : [...ema(S.scalars.get("loss"), undefined, S.restarts.map((r) => r.step))].at(-1)?.[1]);
  $("#wd-loss").textContent = fmt(latest("wd_loss", since));
  $("#train-acc").textContent = pct(latest("train_acc", since));
  const val = latestPoint("val_acc", since); // validation runs every N steps: say which step it is of
  $("#val-acc").textContent = pct(val ? val[1] : null);
  $("#val-at").textContent = val ? `(step ${val[0]})` : "";
  $("#cur-lr").textContent = fmt(latest("lr"));
  $("#cur-momentum").textContent = fmt(latest("momentum") ?? S.info?.config?.momentum ?? null);
  $("#cur-batch").textContent = int(latest("batch_size") ?? S.info?.config?.batch_size ?? null);
  $("#cur-wd").textContent = fmt(latest("weight_decay") ?? S.info?.config?.weight_decay ?? null);
}

// ---- charts ------------------------------------------------------------------------------------
const LOSS_SERIES = [{ label: "loss L", color: "#9fb6d9", width: 1 }, { label: "loss L, smoothed", color: "#2456a6", width: 2 },
  { label: "weight-decay loss (right axis)", color: "#d1495b", y2: true }];
const ACC_SERIES = [{ label: "training", color: "#2456a6" }, { label: "validation", color: "#d1495b", points: true }];
const HEALTHY = { label: "1e-3 (healthy)", color: "#888", dash: [6, 4], width: 1 };
const LAYER_COLORS = ["#2456a6", "#d1495b", "#2a9d55", "#e09f3e", "#7b4fb0", "#1f9bb5", "#8c564b", "#c44fa0", "#6b7b2a", "#555"];

function buildCharts() {
  for (const c of Object.values(charts)) c.destroy();
  charts = {
    loss: new Chart($("#chart-loss"), LOSS_SERIES, { ylabel: "loss L", y2label: "weight-decay loss" }),
    acc: new Chart($("#chart-acc"), ACC_SERIES, { y: [0, 1], ylabel: "accuracy" }),
    ratio: new Chart($("#chart-ratio"), [HEALTHY], { log: true, ylabel: "‖ΔW‖ / ‖W‖" }),
    dead: new Chart($("#chart-dead"), [], { y: [0, 1], ylabel: "dead fraction" }),
  };
}

/** The points of Map(step -> v) with start <= step < end. */
function within(m, start, end) {
  const out = new Map();
  if (m) for (const [s, v] of m) if (s >= start && s < end) out.set(s, v);
  return out;
}

/** Layer names of a net's stats rows (in the order first seen), or the current net's layers. */
function layersOf(seg, current, keep) {
  if (current) return (S.info?.layers || []).filter(keep).map((L) => L.name);
  const names = [];
  for (const [layer, rows] of S.stats) if (rows.some((r) => r.step >= seg.start && r.step < seg.end)) names.push(layer);
  return names;
}

/** Per-layer series of a stat over the nets shown: [specs, maps]. */
function statSeries(nets, key, keep) {
  const specs = [], maps = [];
  const last = nets[nets.length - 1];
  for (const seg of nets) {
    const current = seg === last && !Number.isFinite(seg.end);
    layersOf(seg, current, keep).forEach((name, i) => {
      const m = new Map();
      for (const r of S.stats.get(name) || []) {
        if (r.step >= seg.start && r.step < seg.end && r[key] !== undefined && r[key] !== null) m.set(r.step, r[key]);
      }
      if (!current && !m.size) return;
      const tag = nets.length > 1 ? ` (net ${seg.n}: ${seg.model})` : "";
      specs.push({ label: `${name}${tag}`, color: LAYER_COLORS[i % LAYER_COLORS.length], width: current ? 1.5 : 1 });
      maps.push(m);
    });
  }
  return [specs, maps];
}

/** The same series once per net shown (only the newest in the legend): [specs, maps]. */
function perNet(nets, base, maps) {
  const specs = [], out = [];
  nets.forEach((seg, k) => base.forEach((b, i) => {
    specs.push(k === nets.length - 1 ? b : { ...b, label: `${b.label} (net ${seg.n})`, legend: false });
    out.push(within(maps[i], seg.start, seg.end));
  }));
  return [specs, out];
}

function drawCharts() {
  if (!charts.loss) return;
  const all = segments();
  const nets = S.whole ? all : all.slice(-1); // the span shown: every net, or the one now training
  const restarts = S.restarts.map((r) => r.step);
  const plan = {
    loss: perNet(nets, LOSS_SERIES, [S.scalars.get("loss"), ema(S.scalars.get("loss"), undefined, restarts), S.scalars.get("wd_loss")]),
    acc: perNet(nets, ACC_SERIES, [S.scalars.get("train_acc"), S.scalars.get("val_acc")]),
    ratio: statSeries(nets, "update_ratio", (L) => L.kind !== "activation"),
    dead: statSeries(nets, "dead_fraction", () => true),
  };
  // one x range for the four charts: from the first step shown (the net's first step) to the newest point
  let lo = Infinity, hi = -Infinity;
  for (const [, maps] of Object.values(plan)) for (const m of maps) for (const st of m.keys()) { if (st < lo) lo = st; if (st > hi) hi = st; }
  if (Number.isFinite(nets[0].start)) lo = nets[0].start;
  const range = Number.isFinite(lo) && Number.isFinite(hi) ? [lo, Math.max(hi, lo)] : null;
  const healthy = new Map(range ? [[range[0], 1e-3], [range[1], 1e-3]] : []);
  plan.ratio = [[...plan.ratio[0], HEALTHY], [...plan.ratio[1], healthy]];
  for (const [key, [specs, maps]] of Object.entries(plan)) {
    const c = charts[key];
    c.setSeries(specs);
    c.setRange(range);
    const [xs, ys] = align(maps);
    c.set(xs, ys);
  }
  const marks = S.restarts.map((r) => ({ step: r.step, label: `restart: ${r.model}`, kind: "restart" }));
  if (S.stepA !== null && S.steps.length && (!S.live || S.compare)) marks.push({ step: S.stepA, label: S.compare ? "A" : "shown", kind: "a" });
  if (S.compare && S.stepB !== null && S.steps.length) marks.push({ step: S.stepB, label: "B", kind: "b" });
  for (const c of Object.values(charts)) c.setMarks(marks);
}

// ---- timeline ----------------------------------------------------------------------------------
let snapshotsBusy = null;
async function refreshSnapshots() {
  if (snapshotsBusy) { snapshotsBusy.again = true; return; }
  snapshotsBusy = { again: false };
  const gen = generation;
  try {
    const snap = await getJSON(runPath(S.run, "/snapshots"));
    if (gen !== generation) return;
    S.steps = snap.steps;
    S.series = snap.series;
    timeline();
  } finally {
    const again = snapshotsBusy.again;
    snapshotsBusy = null;
    if (again && gen === generation) await refreshSnapshots();
  }
}

function timeline() {
  const n = S.steps.length;
  const a = $("#timeline"), b = $("#timeline-b");
  a.max = b.max = String(Math.max(0, n - 1));
  a.disabled = b.disabled = n === 0;
  if (!n) { $("#timeline-step").textContent = "no snapshots yet"; layers.refresh(); return; }
  if (S.live || S.stepA === null || !S.steps.includes(S.stepA)) S.stepA = S.steps[n - 1];
  if (S.lastStep === null || S.steps[n - 1] > S.lastStep) { S.lastStep = S.steps[n - 1]; header(); }
  if (S.stepB === null || !S.steps.includes(S.stepB)) S.stepB = S.steps[0];
  a.value = String(S.steps.indexOf(S.stepA));
  b.value = String(S.steps.indexOf(S.stepB));
  labels();
  layers.refresh();
  drawCharts();
}

function labels() {
  const n = S.steps.length;
  $("#timeline-step").textContent = n ? `step ${S.stepA} (${S.steps.indexOf(S.stepA) + 1} of ${n} snapshots)${S.live ? " · live" : ""}` : "no snapshots yet";
  $("#timeline-step-b").textContent = n ? `B: step ${S.stepB}` : "";
}

let frame = 0;
function scrubbed() {
  labels();
  if (frame) return;
  frame = requestAnimationFrame(() => { frame = 0; layers.refresh(); draw(); });
}

$("#timeline").addEventListener("input", (e) => {
  S.live = false;
  $("#live").checked = false;
  S.stepA = S.steps[Number(e.target.value)] ?? S.stepA;
  scrubbed();
});
$("#timeline-b").addEventListener("input", (e) => { S.stepB = S.steps[Number(e.target.value)] ?? S.stepB; scrubbed(); });
$("#live").addEventListener("change", (e) => { S.live = e.target.checked; if (S.live) timeline(); else labels(); });
$("#compare").addEventListener("change", (e) => {
  S.compare = e.target.checked;
  $("#timeline-b").hidden = $("#timeline-step-b").hidden = !S.compare;
  labels();
  layers.refresh();
  drawCharts();
});
$("#norm-all").addEventListener("change", (e) => layers.setNormAll(e.target.value));
$("#run-select").addEventListener("change", (e) => {
  location.hash = `run=${encodeURIComponent(e.target.value)}`;
  openRun(e.target.value).catch((err) => say(err.message));
});
window.addEventListener("resize", () => { for (const c of Object.values(charts)) c.resize(); });
// the sticky timeline sits right under the header, however tall the header is
new ResizeObserver(() => {
  document.documentElement.style.setProperty("--header-h", `${Math.ceil($("#top").getBoundingClientRect().height)}px`);
}).observe($("#top"));
// a chart follows its card's width (a column can change without the window resizing)
new ResizeObserver(() => { for (const c of Object.values(charts)) c.resize(); }).observe($("#training"));

loadRuns().then(openRun).catch((err) => say(err.message));
