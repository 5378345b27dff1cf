// The console's charts as inline SVG (no library): a camera's score sparkline, an event's
// score chart and the histogram of recent scores, each with the threshold drawn on it.

import { s } from "./dom.js";

function extent(values, threshold) {
  const all = values.filter(Number.isFinite);
  if (Number.isFinite(threshold)) all.push(threshold);
  if (!all.length) return [0, 1];
  let low = Math.min(...all);
  let high = Math.max(...all);
  if (low >= 0 && low < high * 0.5) low = 0; // scores near zero: keep zero as the floor
  const pad = (high - low) * 0.08 || Math.abs(high) * 0.1 || 1;
  return [low === 0 ? 0 : low - pad, high + pad];
}

function scale(domain, range) {
  const [d0, d1] = domain;
  const [r0, r1] = range;
  const span = d1 - d0 || 1;
  return (value) => r0 + ((value - d0) / span) * (r1 - r0);
}

/** Paths of the score line: the whole line, and the stretches while an event was open. */
function scorePaths(points, x, y) {
  let line = "";
  let alarm = "";
  let prev = null;
  for (const point of points) {
    const px = x(point.t).toFixed(1);
    const py = y(point.score).toFixed(1);
    line += `${line ? "L" : "M"}${px},${py}`;
    if (point.alarm) alarm += `${prev && prev.alarm ? "L" : "M"}${px},${py}`;
    prev = point;
  }
  return { line, alarm };
}

/** A camera's last `seconds` of scores (ScoreHistory points) against its threshold. */
export function sparkline(points, threshold, { seconds = 120, width = 300, height = 56 } = {}) {
  const right = points.length ? points[points.length - 1].t : Date.now() / 1000;
  const shown = points.filter((p) => p.t >= right - seconds);
  // a camera that started less than `seconds` ago fills the width with what it has
  const left = shown.length ? Math.min(shown[0].t, right - 10) : right - seconds;
  const x = scale([left, right], [0, width]);
  const y = scale(extent(shown.map((p) => p.score), threshold), [height - 2, 2]);
  const { line, alarm } = scorePaths(shown, x, y);
  const above = shown.filter((p) => Number.isFinite(threshold) && p.score > threshold).length;
  const svg = s(
    "svg",
    {
      class: "spark",
      viewBox: `0 0 ${width} ${height}`,
      preserveAspectRatio: "none",
      role: "img",
      "aria-label": `scores of the last ${seconds} s: ${shown.length} frames, ${above} above the threshold`,
    },
    s("title", {}, `last ${seconds} s of scores; dashed: threshold`),
  );
  if (Number.isFinite(threshold)) {
    const ty = y(threshold).toFixed(1);
    svg.append(s("line", { class: "threshold", x1: 0, x2: width, y1: ty, y2: ty }));
  }
  if (line) svg.append(s("path", { class: "score", d: line }));
  if (alarm) svg.append(s("path", { class: "score alarm", d: alarm }));
  return svg;
}

function yTicks(domain, count = 4) {
  const [low, high] = domain;
  const step = (high - low) / count;
  return Array.from({ length: count + 1 }, (_, i) => low + i * step);
}

// Wide charts are drawn at their box's width in CSS pixels, so their text keeps its size.
const chartWidth = (width) => Math.max(300, Math.round(width || 640));

/** An event's scores over time (its trace) with the threshold and the peak marked;
 * `start`/`end` (Unix seconds) shade the event's extent. */
export function scoreChart(points, threshold, options = {}) {
  const { start = null, end = null, peak = null } = options;
  const width = chartWidth(options.width);
  const height = 220;
  const m = { left: 52, right: 12, top: 12, bottom: 28 };
  const svg = s("svg", {
    class: "chart",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": `score over the event: ${points.length} frames`,
  });
  if (!points.length) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no scores"));
    return svg;
  }
  const t0 = points[0].t;
  const t1 = Math.max(points[points.length - 1].t, t0 + 1e-3);
  const x = scale([t0, t1], [m.left, width - m.right]);
  const domain = extent(
    points.map((p) => p.score),
    threshold,
  );
  const y = scale(domain, [height - m.bottom, m.top]);
  if (start !== null) {
    const x0 = Math.max(x(start), m.left);
    const x1 = Math.min(end === null ? width - m.right : x(end), width - m.right);
    if (x1 > x0) {
      svg.append(
        s("rect", {
          class: "event-span",
          x: x0,
          y: m.top,
          width: x1 - x0,
          height: height - m.top - m.bottom,
        }),
      );
    }
  }
  for (const tick of yTicks(domain)) {
    const ty = y(tick).toFixed(1);
    svg.append(s("line", { class: "grid", x1: m.left, x2: width - m.right, y1: ty, y2: ty }));
    svg.append(
      s("text", { class: "tick", x: m.left - 6, y: ty, "text-anchor": "end", dy: "0.35em" },
        tick.toFixed(3)),
    );
  }
  svg.append(
    s("text", { class: "tick", x: m.left, y: height - 8 }, "0 s"),
    s("text", { class: "tick", x: width - m.right, y: height - 8, "text-anchor": "end" },
      `+${(t1 - t0).toFixed(1)} s`),
  );
  if (Number.isFinite(threshold)) {
    const ty = y(threshold).toFixed(1);
    svg.append(
      s("line", { class: "threshold", x1: m.left, x2: width - m.right, y1: ty, y2: ty }),
      s("text", { class: "tick threshold-label", x: width - m.right, y: ty, dy: "-0.4em",
        "text-anchor": "end" }, `threshold ${threshold.toFixed(3)}`),
    );
  }
  const { line, alarm } = scorePaths(points, x, y);
  svg.append(s("path", { class: "score", d: line }));
  if (alarm) svg.append(s("path", { class: "score alarm", d: alarm }));
  if (peak && Number.isFinite(peak.t) && peak.t >= t0 && peak.t <= t1) {
    svg.append(
      s("circle", { class: "peak", cx: x(peak.t), cy: y(peak.score), r: 4 },
        s("title", {}, `peak ${peak.score.toFixed(3)}`)),
    );
  }
  return svg;
}

/** Bars of the recent scores per bin (normal frames, and frames inside events stacked on
 * top), the threshold as a solid line and a proposed one (not applied yet) dashed. */
export function histogram(data, { proposed = null, width: boxWidth } = {}) {
  const width = chartWidth(boxWidth);
  const height = 200;
  const m = { left: 12, right: 12, top: 16, bottom: 28 };
  const edges = data.edges || [];
  const normal = data.normal || [];
  const alarm = data.alarm || [];
  const svg = s("svg", {
    class: "chart histogram",
    viewBox: `0 0 ${width} ${height}`,
    role: "img",
    "aria-label": "histogram of recent scores with the threshold",
  });
  if (edges.length < 2) {
    svg.append(s("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, "no scores yet"));
    return svg;
  }
  const lows = [edges[0], edges[edges.length - 1]];
  for (const value of [data.threshold, proposed]) {
    if (Number.isFinite(value)) {
      lows[0] = Math.min(lows[0], value);
      lows[1] = Math.max(lows[1], value);
    }
  }
  const x = scale(lows, [m.left, width - m.right]);
  const most = Math.max(1, ...normal.map((n, i) => n + (alarm[i] || 0)));
  const y = scale([0, most], [height - m.bottom, m.top]);
  for (let i = 0; i < normal.length; i += 1) {
    const x0 = x(edges[i]);
    const w = Math.max(1, x(edges[i + 1]) - x0 - 1);
    const tip = `${edges[i].toFixed(3)}–${edges[i + 1].toFixed(3)}: ${normal[i]} normal, ${alarm[i] || 0} in events`;
    const bar = s("g", {}, s("title", {}, tip));
    if (normal[i]) {
      bar.append(s("rect", { class: "bar normal", x: x0, width: w, y: y(normal[i]),
        height: y(0) - y(normal[i]) }));
    }
    if (alarm[i]) {
      const top = normal[i] + alarm[i];
      bar.append(s("rect", { class: "bar alarm", x: x0, width: w, y: y(top),
        height: y(normal[i]) - y(top) }));
    }
    svg.append(bar);
  }
  svg.append(
    s("line", { class: "axis", x1: m.left, x2: width - m.right, y1: y(0), y2: y(0) }),
    s("text", { class: "tick", x: m.left, y: height - 8 }, lows[0].toFixed(3)),
    s("text", { class: "tick", x: width - m.right, y: height - 8, "text-anchor": "end" },
      lows[1].toFixed(3)),
  );
  const mark = (value, cls, text) => {
    const tx = x(value).toFixed(1);
    svg.append(
      s("line", { class: cls, x1: tx, x2: tx, y1: m.top - 4, y2: y(0) }),
      s("text", { class: `tick ${cls}-label`, x: tx, y: m.top - 6, "text-anchor": "middle" }, text),
    );
  };
  if (Number.isFinite(proposed) && proposed !== data.threshold) {
    mark(proposed, "proposed", `new ${proposed.toFixed(3)}`);
  }
  if (Number.isFinite(data.threshold)) mark(data.threshold, "threshold", data.threshold.toFixed(3));
  return svg;
}
