// marks.js — vertical lines on a uPlot chart at given steps: where the trainer restarted with
// another net (grey, dashed, labelled with the net) and the step the timeline shows (A, and B
// when comparing). Drawn on the canvas after the series; nothing else changes.

const STYLE = {
  restart: { color: "#6b7280", dash: [4, 3], width: 1.5 },
  a: { color: "#2456a6", dash: [], width: 1.5 },
  b: { color: "#b35900", dash: [2, 2], width: 1.5 },
};

/** A uPlot plugin drawing `getMarks()` ([{step, label, kind}]) after each draw. */
export function marksPlugin(getMarks) {
  return {
    hooks: {
      draw: [(u) => {
        const marks = getMarks() || [];
        if (!marks.length) return;
        const { ctx } = u;
        const { left, top, width, height } = u.bbox;
        const dpr = window.devicePixelRatio || 1;
        ctx.save();
        ctx.font = `${11 * dpr}px system-ui, sans-serif`;
        ctx.textBaseline = "top";
        for (const m of marks) {
          const s = STYLE[m.kind] || STYLE.restart;
          const x = u.valToPos(m.step, "x", true);
          if (!Number.isFinite(x) || x < left - 1 || x > left + width + 1) continue;
          ctx.strokeStyle = s.color;
          ctx.fillStyle = s.color;
          ctx.lineWidth = s.width * dpr;
          ctx.setLineDash(s.dash.map((d) => d * dpr));
          ctx.beginPath();
          ctx.moveTo(x, top);
          ctx.lineTo(x, top + height);
          ctx.stroke();
          if (m.label) {
            const w = ctx.measureText(m.label).width;
            const tx = x + 3 * dpr + w > left + width ? x - 3 * dpr - w : x + 3 * dpr;
            ctx.fillText(m.label, tx, top + (m.kind === "restart" ? 2 : 14) * dpr);
          }
        }
        ctx.restore();
      }],
    },
  };
}
