// marks.js — vertical lines on a uPlot chart at given steps: where the trainer restarted with
// another net (grey, dashed, labelled with the net) and the step the timeline shows (A, and B
// when comparing). Drawn on the canvas after the series; nothing else changes.
// Labels stay inside the plot, beside their line; one that would overlap another is shortened
// (the net's name alone) or left out (its line stays), newest first. Hovering a line says it whole.

const STYLE = {
  restart: { color: "#6b7280", dash: [4, 3], width: 1.5 },
  a: { color: "#2456a6", dash: [], width: 1.5 },
  b: { color: "#b35900", dash: [2, 2], width: 1.5 },
};
const GAP = 3; // px between a line and its label, and between two labels
const HOVER = 4; // px from a line within which the pointer is on it

/** The labels' places in one row, in CSS px: each mark {x, texts: [full, shorter, ...]} gets
 *  the first text that fits inside [left, right] beside its line (right of it, else left of it)
 *  without overlapping a label placed before it — marks are taken from the right (the newest
 *  first) — or none. Returns [{text, x0, x1}] in the marks' order (text null: left out). */
export function layoutLabels(marks, left, right, measure) {
  const placed = marks.map(() => ({ text: null, x0: null, x1: null }));
  const boxes = [];
  const order = marks.map((m, i) => i).sort((i, j) => marks[j].x - marks[i].x);
  for (const i of order) {
    const m = marks[i];
    for (const text of m.texts) {
      const w = measure(text);
      const spots = [m.x + GAP, m.x - GAP - w].filter((x0) => x0 >= left && x0 + w <= right);
      const x0 = spots.find((a) => boxes.every(([b0, b1]) => a + w + GAP <= b0 || a >= b1 + GAP));
      if (x0 === undefined) continue;
      boxes.push([x0, x0 + w]);
      placed[i] = { text, x0, x1: x0 + w };
      break;
    }
  }
  return placed;
}

/** A restart mark's label and its shorter forms ("restart: tiny-vgg", "tiny-vgg"). */
const texts = (m) => (m.kind === "restart" && m.label.startsWith("restart: ") ? [m.label, m.label.slice(9)] : [m.label]);

/** A uPlot plugin drawing `getMarks()` ([{step, label, kind}]) after each draw. `onLayout`
 *  receives the drawn labels [{step, kind, text, x0, x1, line}] (CSS px in the plot area). */
export function marksPlugin(getMarks, onLayout = () => {}) {
  let shown = []; // [{x, title}] of the drawn lines, CSS px: what the pointer can hover
  return {
    hooks: {
      draw: [(u) => {
        const marks = getMarks() || [];
        shown = [];
        const out = [];
        const { ctx } = u;
        const { left, top, width, height } = u.bbox; // canvas px
        const dpr = window.devicePixelRatio || 1;
        ctx.save();
        ctx.font = `${11 * dpr}px system-ui, sans-serif`;
        ctx.textBaseline = "top";
        ctx.textAlign = "left"; // (uPlot leaves its last axis's alignment behind)
        const visible = marks.map((m) => ({ m, x: u.valToPos(m.step, "x", true) }))
          .filter(({ x }) => Number.isFinite(x) && x >= left - 1 && x <= left + width + 1);
        for (const { m, x } of visible) {
          const s = STYLE[m.kind] || STYLE.restart;
          ctx.strokeStyle = s.color;
          ctx.lineWidth = s.width * dpr;
          ctx.setLineDash(s.dash.map((d) => d * dpr));
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          shown.push({ m, x: x / dpr - left / dpr, title: m.kind === "restart" ? `${m.label} (step ${m.step})` : `${m.label}: step ${m.step}` });
        }
        for (const row of [visible.filter(({ m }) => m.kind === "restart"), visible.filter(({ m }) => m.kind !== "restart")]) {
          const labelled = row.filter(({ m }) => m.label);
          const places = layoutLabels(labelled.map(({ m, x }) => ({ x: x / dpr, texts: texts(m) })), left / dpr,
            (left + width) / dpr, (t) => ctx.measureText(t).width / dpr);
          labelled.forEach(({ m, x }, i) => {
            const p = places[i];
            out.push({ step: m.step, kind: m.kind, text: p.text, x0: p.x0 === null ? null : p.x0 - left / dpr,
              x1: p.x1 === null ? null : p.x1 - left / dpr, line: x / dpr - left / dpr });
            if (p.text === null) return;
            const line = shown.find((h) => h.m === m);
            if (line) Object.assign(line, { x0: p.x0 - left / dpr, x1: p.x1 - left / dpr, y1: (m.kind === "restart" ? 16 : 28) });
            ctx.fillStyle = (STYLE[m.kind] || STYLE.restart).color;
            ctx.fillText(p.text, p.x0 * dpr, top + (m.kind === "restart" ? 2 : 14) * dpr);
          });
        }
        ctx.restore();
        onLayout(out);
      }],
      setCursor: [(u) => {
        const { left: x, top: y } = u.cursor;
        const on = (s) => Math.abs(s.x - x) <= HOVER || (s.x0 !== undefined && x >= s.x0 && x <= s.x1 && y <= s.y1);
        const near = x === undefined || x === null || x < 0 ? [] : shown.filter(on);
        const title = near.map((s) => s.title).join("\n");
        if (u.over.title !== title) u.over.title = title;
      }],
    },
  };
}
