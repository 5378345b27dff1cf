// Small DOM helpers: every text from the API goes in through textContent, never as HTML.

const SVG_NS = "http://www.w3.org/2000/svg";

/** An element: h("a", {href: "#/", class: "x"}, "text", child, ...). Attributes whose value
 * is null/undefined/false are left out; "on<event>" attributes become listeners. */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

/** An SVG element, as h(). */
export function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  append(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === null || value === undefined || value === false) continue;
    if (key.startsWith("on") && typeof value === "function") {
      el.addEventListener(key.slice(2), value);
    } else if (key === "dataset") {
      Object.assign(el.dataset, value);
    } else {
      el.setAttribute(key, value === true ? "" : String(value));
    }
  }
}

function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(child instanceof Node ? child : String(child));
  }
}

/** Replace every child of el. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** Stop an <img>'s or <video>'s download (an MJPEG stream stays open otherwise). */
export function stopMedia(el) {
  if (el && el.getAttribute("src")) {
    el.removeAttribute("src");
    if (el.load) el.load();
  }
}

export function fmtScore(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(3);
}

export function fmtFps(value) {
  return value === null || value === undefined ? "–" : Number(value).toFixed(1);
}

/** An ISO-8601 time or Unix seconds as local date and time. */
export function fmtTime(value) {
  if (value === null || value === undefined) return "–";
  const date = typeof value === "number" ? new Date(value * 1000) : new Date(value);
  return Number.isNaN(date.getTime()) ? String(value) : date.toLocaleString();
}

export function fmtBytes(bytes) {
  if (bytes === null || bytes === undefined) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = Number(bytes);
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

export function fmtDuration(seconds) {
  if (seconds === null || seconds === undefined) return "–";
  if (seconds < 10) return `${Number(seconds).toFixed(1)} s`;
  const s = Math.round(seconds);
  const d = Math.floor(s / 86400);
  const hh = Math.floor((s % 86400) / 3600);
  const mm = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${mm} min`;
  if (mm) return `${mm} min ${s % 60} s`;
  return `${s} s`;
}

export const LABELS = {
  true_anomaly: "true anomaly",
  false_positive: "false positive",
  unsure: "unsure",
};

/** The badge of an event's label ("unlabelled" when none). */
export function labelBadge(label) {
  return h(
    "span",
    { class: `badge label-${label || "none"}`, "data-label": label || "none" },
    label ? LABELS[label] || label : "unlabelled",
  );
}

/** Calls fn now and every ms while the tab is visible (paused while hidden, run again when
 * it shows); a slow fn is never run twice at once. Returns a function that stops it. */
export function every(ms, fn) {
  let timer = null;
  let running = false;
  let stopped = false;
  const tick = async () => {
    timer = null;
    if (stopped || document.hidden) return;
    if (!running) {
      running = true;
      try {
        await fn();
      } catch (error) {
        console.warn(error);
      } finally {
        running = false;
      }
    }
    if (!stopped && !document.hidden) timer = setTimeout(tick, ms);
  };
  const onVisibility = () => {
    if (!document.hidden && timer === null && !running) tick();
  };
  document.addEventListener("visibilitychange", onVisibility);
  tick();
  return () => {
    stopped = true;
    if (timer !== null) clearTimeout(timer);
    document.removeEventListener("visibilitychange", onVisibility);
  };
}
