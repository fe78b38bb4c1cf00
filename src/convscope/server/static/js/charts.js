// charts.js — the four time-series charts (uPlot, vendored in /static/vendor/uplot/): loss,
// accuracy, update-to-weight ratio per layer (log axis, reference line at 1e-3) and dead fraction.
// Every chart draws vertical marks (marks.js): restarts with another net, the scrubbed step.
// A line never joins two nets: main.js gives each net's points their own series (segment), and
// the four charts share one x range (setRange).

import { marksPlugin } from "./marks.js";

const COLORS = ["#2456a6", "#d1495b", "#2a9d55", "#e09f3e", "#7b4fb0", "#1f9bb5", "#8c564b", "#c44fa0", "#6b7b2a", "#555"];
const STEP_INCRS = [1, 2, 5, 10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, 2e6, 5e6]; // whole steps only
const MAX_POINTS = 4000; // drawn points per series; longer histories are strided (the last point kept)

/** Labels for a linear axis's ticks `splits` that are `incr` apart: as many decimals as the
 *  increment needs (uPlot's default keeps 3, so 0.02712, 0.02714, 0.02716 all read "0.027"),
 *  more while two labels still read alike; very small or large values in exponent notation. */
export function tickLabels(splits, incr) {
  const vals = splits.filter((v) => v !== null && v !== undefined && Number.isFinite(v));
  if (!vals.length) return splits.map(() => "");
  const gaps = vals.slice(1).map((v, i) => Math.abs(v - vals[i])).filter((g) => g > 0);
  const step = incr > 0 ? incr : gaps.length ? Math.min(...gaps) : Math.abs(vals[0]) || 1;
  const big = Math.max(...vals.map(Math.abs));
  const clean = (v) => (Math.abs(v) < step * 1e-6 ? 0 : v); // no "-0.000" for a zero made by float sums
  const exp = big >= 1e5 || big < 1e-3;
  const say = (d) => (v) => (exp ? clean(v).toExponential(d)
    : clean(v).toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d }));
  // decimals (or mantissa digits) that write the increment exactly: 0.5 -> 1, 0.25 -> 2, 2e-5 -> 5, 100 -> 0
  const decimals = (x) => {
    for (let k = 0; k < 15; k++) { const m = x * 10 ** k; if (Math.abs(m - Math.round(m)) < 1e-6 * Math.max(1, m)) return k; }
    return 15;
  };
  let d = decimals(exp ? step / 10 ** Math.floor(Math.log10(big) + 1e-9) : step);
  let labels = vals.map(say(d));
  while (new Set(labels).size < labels.length && d < 15) labels = vals.map(say(++d));
  const f = say(d);
  return splits.map((v) => (v === null || v === undefined || !Number.isFinite(v) ? "" : f(v)));
}

/** An axis's `values`: tickLabels, also kept on the chart's element (data-ticks-y, data-ticks-y2:
 *  what the browser tests read; uPlot draws the labels on a canvas). */
function linearTicks(el, name) {
  return (u, splits, axisIdx, space, incr) => {
    const labels = tickLabels(splits, incr);
    el.dataset[`ticks${name}`] = JSON.stringify(labels);
    return labels;
  };
}

/** An axis's width: room for its longest label (uPlot keeps a fixed size otherwise and cuts it). */
const axisSize = (u, values) => Math.max(56, 18 + 8 * Math.max(0, ...(values || []).map((v) => String(v ?? "").length)));

export class Chart {
  /** el: container; series: [{label, color?, dash?, width?, points?, y2?, legend?}] (y2: on the
   *  second, right-hand axis; legend: false leaves it out of the legend, as an earlier net's part
   *  of a series already named); opts: {log, y: [min, max] | null, ylabel, y2label} */
  constructor(el, series, opts = {}) {
    this.el = el;
    this.opts = opts;
    this.plot = null;
    this.marks = []; // [{step, label, kind: "restart" | "a" | "b"}]
    this.xRange = null; // [min, max] of the x axis, shared by the charts (null: the data's)
    this.setSeries(series);
    el.chart = this; // (what the browser tests read)
  }

  /** Other series (another net, another view): the plot is built anew with the next `set`. */
  setSeries(series) {
    const key = JSON.stringify(series);
    if (key === this._seriesKey) return false;
    this._seriesKey = key;
    this.series = series;
    this.data = [[], ...series.map(() => [])];
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.el.dataset.series = JSON.stringify(series.map((x) => x.label)); // what the browser tests read
    return true;
  }

  /** The x axis's range [min, max] (steps), or null for the data's own. */
  setRange(range) {
    this.xRange = range && Number.isFinite(range[0]) && Number.isFinite(range[1])
      ? [range[0], Math.max(range[1], range[0] + 1)] : null;
    this.el.dataset.xrange = JSON.stringify(this.xRange);
  }

  width() { return Math.max(160, this.el.clientWidth || 300); } // never wider than its card

  _build() {
    const { log = false, y = null, ylabel = "", y2label = "" } = this.opts;
    const yScale = log ? { distr: 3, log: 10 } : {};
    if (y) yScale.range = () => y;
    const scales = { x: { time: false }, y: yScale };
    const axes = [
      { label: "step", size: 36, labelSize: 14, incrs: STEP_INCRS },
      { label: ylabel, size: log ? 56 : axisSize, labelSize: 14, values: log ? (u, vals) => vals.map((v) => (v === null || v === undefined ? "" : v.toExponential(0))) : linearTicks(this.el, "Y") },
    ];
    if (this.series.some((s) => s.y2)) {
      // a range also while the series has no point yet (uPlot's axis code fails on an empty scale)
      scales.y2 = { range: (u, min, max) => (min === null || max === null ? [0, 1] : window.uPlot.rangeNum(min, max, 0.1, true)) };
      axes.push({ scale: "y2", side: 1, label: y2label, size: axisSize, labelSize: 14, grid: { show: false }, values: linearTicks(this.el, "Y2") });
    }
    const opts = {
      width: this.width(), height: 200,
      legend: { live: true },
      cursor: { drag: { x: true, y: false } },
      scales, axes,
      // the labels as drawn (text, x0..x1 in px from the plot's left; text null: left out): for the tests
      plugins: [marksPlugin(() => this.marks, (labels) => { this.el.dataset.markLabels = JSON.stringify(labels); })],
      series: [
        { label: "step" },
        ...this.series.map((s, i) => ({
          label: s.label, stroke: s.color || COLORS[i % COLORS.length], width: s.width || 1.5, scale: s.y2 ? "y2" : "y",
          dash: s.dash, spanGaps: true, points: { show: s.points ?? false, size: 5 },
          value: (u, v) => (v === null || v === undefined ? "–" : (log ? v.toExponential(2) : Number(v.toPrecision(4)))),
        })),
      ],
    };
    this.el.textContent = "";
    this.plot = new window.uPlot(opts, this.data, this.el);
    const rows = this.plot.root.querySelectorAll(".u-legend .u-series"); // [0] is the step
    this.series.forEach((s, i) => { if (s.legend === false && rows[i + 1]) rows[i + 1].style.display = "none"; });
    this._applyRange();
  }

  _applyRange() {
    if (this.plot && this.xRange && this.data[0].length) this.plot.setScale("x", { min: this.xRange[0], max: this.xRange[1] });
  }

  /** xs: steps; ys: one array per series (null for a gap). */
  set(xs, ys) {
    let data = [xs, ...ys];
    if (xs.length > MAX_POINTS) {
      const k = Math.ceil(xs.length / MAX_POINTS);
      const keep = xs.map((_, i) => i).filter((i) => i % k === 0 || i === xs.length - 1);
      data = data.map((arr) => keep.map((i) => arr[i]));
    }
    if (this.opts.log) data = [data[0], ...data.slice(1).map((arr) => arr.map((v) => (v > 0 ? v : null)))];
    this.data = data;
    if (!this.plot) this._build();
    else this.plot.batch(() => { this.plot.setData(data); this._applyRange(); });
  }

  resize() {
    if (this.plot) this.plot.setSize({ width: this.width(), height: 200 });
  }

  /** Vertical marks: [{step, label, kind}] (redrawn at once). */
  setMarks(marks) {
    const key = JSON.stringify(marks);
    if (key === this._marksKey) return;
    this._marksKey = key;
    this.marks = marks;
    this.el.dataset.marks = key; // what the browser tests read
    if (this.plot && this.data[0].length) this.plot.redraw(false, true); // (an empty plot has no axes to draw yet)
  }

  destroy() {
    if (this.plot) this.plot.destroy();
    this.plot = null;
    this.el.textContent = "";
  }
}

/** Align {name: Map(step -> value)} on the union of their steps: [xs, [ys per name]]. */
export function align(maps) {
  const steps = new Set();
  for (const m of maps) if (m) for (const s of m.keys()) steps.add(s);
  const xs = [...steps].sort((a, b) => a - b);
  const ys = maps.map((m) => xs.map((s) => (m && m.has(s) ? m.get(s) : null)));
  return [xs, ys];
}
