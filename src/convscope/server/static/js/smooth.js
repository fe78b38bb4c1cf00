// smooth.js — steadier numbers from the per-step scalars: rates over a window of recent steps
// (one step's examples/s jumps with whatever else the machine does) and an exponential moving
// average of the loss (ConvNetJS's demo smooths its loss the same way), drawn beside the raw one.

export const WINDOW_STEPS = 50; // steps in the windowed rates
export const EMA_ALPHA = 0.05; // weight of the newest loss in its moving average (≈ the last 20 steps)

/** [[step, value]] of a Map(step -> value), in step order, from `since` on (null values dropped). */
export function points(m, since = -Infinity) {
  if (!m) return [];
  return [...m].filter(([s, v]) => s >= since && v !== null && v !== undefined && Number.isFinite(v))
    .sort((a, b) => a[0] - b[0]);
}

/** Examples per second over the last `n` steps: the examples they processed over the time they
 *  took, Σ bᵢ / Σ (bᵢ / rateᵢ) — not the mean of the per-step rates. `examples` is the cumulative
 *  count (bᵢ is its increase), `rate` the per-step examples/s. null with under 2 steps. */
export function windowRate(examples, rate, n = WINDOW_STEPS, since = -Infinity) {
  const ex = new Map(points(examples, since));
  const r = points(rate, since).filter(([s]) => ex.has(s)).slice(-(n + 1));
  if (r.length < 2) return null;
  let done = 0, seconds = 0;
  for (let i = 1; i < r.length; i++) {
    const b = ex.get(r[i][0]) - ex.get(r[i - 1][0]);
    if (!(b > 0) || !(r[i][1] > 0)) continue;
    done += b;
    seconds += b / r[i][1];
  }
  return seconds > 0 ? done / seconds : null;
}

/** The mean of the last `n` values (per-example times are already per example). */
export function windowMean(m, n = WINDOW_STEPS, since = -Infinity) {
  const p = points(m, since).slice(-n);
  return p.length ? p.reduce((t, [, v]) => t + v, 0) / p.length : null;
}

/** Exponential moving average of a Map(step -> value), bias-corrected (the first value is itself):
 *  a Map(step -> smoothed). It starts afresh at each step in `restarts` (another net). */
export function ema(m, alpha = EMA_ALPHA, restarts = []) {
  const out = new Map();
  const starts = [...restarts].sort((a, b) => a - b);
  let acc = 0, weight = 0, next = 0;
  for (const [s, v] of points(m)) {
    while (next < starts.length && s >= starts[next]) { acc = 0; weight = 0; next++; }
    acc = (1 - alpha) * acc + alpha * v;
    weight = (1 - alpha) * weight + alpha;
    out.set(s, acc / weight);
  }
  return out;
}
