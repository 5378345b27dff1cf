// The cameras: a grid of live views with state, rates and a score sparkline, and one
// camera's page (live view, threshold, detection, alarm rule, histogram of recent scores).

import { api, enc, isAdmin, withQuery } from "./api.js";
import { histogram, sparkline } from "./charts.js";
import { every, fill, fmtFps, fmtScore, h, stopMedia } from "./dom.js";

const STREAM_FPS = 5;
// A browser opens at most 6 HTTP/1.1 connections to one host and each MJPEG stream holds
// one: past this many cameras the grid refreshes still frames instead.
const MAX_STREAMS = 4;
const STILL_MS = 1000;
const RETRY_MS = 3000;
const LIVE_STATES = new Set(["online", "starting", "offline"]);

const cameraPath = (name) => `/api/cameras/${enc(name)}`;

function stateBadge(state) {
  return h("span", { class: `badge state state-${state}`, "data-state": state }, state);
}

/** A live view of one camera: an MJPEG <img> that reconnects after an error, or a still
 * frame refreshed every second; start()/stop() follow the page's visibility. */
class LiveView {
  constructor(name, stream) {
    this.name = name;
    this.stream = stream;
    this.img = h("img", { class: "live", alt: `live view of ${name}`, decoding: "async" });
    this.tries = 0;
    this.timer = null;
    this.running = false;
    this.img.addEventListener("error", () => {
      if (!this.running || !this.stream) return;
      stopMedia(this.img);
      this.timer = setTimeout(() => this.connect(), RETRY_MS);
    });
  }

  connect() {
    this.timer = null;
    if (!this.running) return;
    this.tries += 1;
    if (this.stream) {
      this.img.src = withQuery(`${cameraPath(this.name)}/stream.mjpeg`, {
        fps: STREAM_FPS,
        n: this.tries > 1 ? this.tries : null,
      });
    } else {
      const next = new Image();
      next.onload = () => {
        if (this.running) this.img.src = next.src;
        this.timer = setTimeout(() => this.connect(), STILL_MS);
      };
      next.onerror = () => {
        this.timer = setTimeout(() => this.connect(), RETRY_MS);
      };
      next.src = withQuery(`${cameraPath(this.name)}/latest.jpg`, { t: Date.now() });
    }
  }

  start() {
    if (this.running) return;
    this.running = true;
    this.connect();
  }

  stop() {
    this.running = false;
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    stopMedia(this.img);
  }
}

/** Stops every view while the tab is hidden and starts them when it shows. */
function followVisibility(views) {
  const onChange = () => {
    for (const view of views()) (document.hidden ? view.stop() : view.start());
  };
  document.addEventListener("visibilitychange", onChange);
  return () => document.removeEventListener("visibilitychange", onChange);
}

function statsLine(camera) {
  return [
    h("span", {}, h("b", {}, fmtFps(camera.input_fps)), " fps in"),
    h("span", {}, h("b", {}, fmtFps(camera.scored_fps)), " fps scored"),
    h("span", { class: "score-now" }, "score ", h("b", {}, fmtScore(camera.latest_score)),
      " / ", fmtScore(camera.threshold)),
    camera.detect ? null : h("span", { class: "badge muted-badge" }, "detect off"),
  ];
}

// --- the grid ------------------------------------------------------------------------------

class CameraCard {
  constructor(camera, stream) {
    this.name = camera.name;
    this.live = new LiveView(camera.name, stream);
    this.badges = h("span", { class: "badges" });
    this.stats = h("div", { class: "stats" });
    this.spark = h("div", { class: "spark-box" });
    this.el = h(
      "article",
      { class: "camera-card", "data-camera": camera.name },
      h("header", {}, h("a", { href: `#/camera/${enc(camera.name)}`, class: "camera-name" },
        camera.name), this.badges),
      h("a", { href: `#/camera/${enc(camera.name)}`, class: "live-box",
        "aria-label": `${camera.name} settings` }, this.live.img),
      this.stats,
      this.spark,
    );
  }

  update(camera) {
    this.camera = camera;
    this.el.classList.toggle("alarm", camera.alarm);
    fill(this.badges, stateBadge(camera.state),
      camera.alarm ? h("span", { class: "badge alarm-badge" }, "ALARM") : null);
    fill(this.stats, statsLine(camera));
    if (LIVE_STATES.has(camera.state) && !document.hidden) this.live.start();
    else if (!LIVE_STATES.has(camera.state)) this.live.stop();
  }

  updateSpark(history) {
    fill(this.spark, sparkline(history.points, this.camera ? this.camera.threshold : history.threshold));
  }
}

export async function mountGrid(main) {
  const grid = h("div", { class: "grid", id: "camera-grid" });
  const empty = h("p", { class: "muted", hidden: true }, "No cameras are configured.");
  fill(main, h("h1", { class: "visually-hidden" }, "Cameras"), empty, grid);
  const cards = new Map();

  const refresh = async () => {
    const list = await api.get("/api/cameras");
    empty.hidden = list.length > 0;
    const names = new Set(list.map((camera) => camera.name));
    for (const [name, card] of cards) {
      if (!names.has(name)) {
        card.live.stop();
        card.el.remove();
        cards.delete(name);
      }
    }
    list.forEach((camera, index) => {
      let card = cards.get(camera.name);
      if (!card) {
        card = new CameraCard(camera, index < MAX_STREAMS);
        cards.set(camera.name, card);
      }
      if (grid.children[index] !== card.el) grid.insertBefore(card.el, grid.children[index] || null);
      card.update(camera);
    });
    await Promise.all(
      list.map(async (camera) => {
        const history = await api.get(withQuery(`${cameraPath(camera.name)}/scores`, { seconds: 120 }),
          { quiet: true }).catch(() => null);
        const card = cards.get(camera.name);
        if (history && card) card.updateSpark(history);
      }),
    );
  };

  const stopRefresh = every(2000, refresh);
  const stopFollowing = followVisibility(() => [...cards.values()].map((card) => card.live));
  return () => {
    stopRefresh();
    stopFollowing();
    for (const card of cards.values()) card.live.stop();
  };
}

// --- one camera ----------------------------------------------------------------------------

function numberField(id, label, attrs = {}) {
  const input = h("input", { id, name: id, type: "number", step: "any", inputmode: "decimal",
    class: "admin-edit", ...attrs });
  return { input, el: h("div", { class: "field" }, h("label", { for: id }, label), input) };
}

/** Set an input from the service unless the person is editing it. */
function setValue(input, value) {
  if (document.activeElement === input || input.dataset.dirty === "1") return;
  input.value = value === null || value === undefined ? "" : String(value);
}

function markDirty(...inputs) {
  for (const input of inputs) {
    input.addEventListener("input", () => {
      input.dataset.dirty = "1";
    });
  }
}

function clean(...inputs) {
  for (const input of inputs) delete input.dataset.dirty;
}

/** "n of m recent normal frames (p %) score above t". */
function shareText(points, threshold) {
  const normal = points.filter((point) => !point.alarm);
  if (!Number.isFinite(threshold) || !normal.length) return "no normal frames scored recently";
  const above = normal.filter((point) => point.score > threshold).length;
  const percent = ((100 * above) / normal.length).toFixed(above && above < normal.length / 100 ? 2 : 1);
  return `${above} of ${normal.length} recent normal frames (${percent} %) score above ${threshold.toFixed(3)}`;
}

export async function mountCamera(main, { args }) {
  const [name] = args;
  const path = cameraPath(name);
  const title = h("h1", {}, name);
  const badges = h("span", { class: "badges" });
  const subtitle = h("p", { class: "muted" });
  const live = new LiveView(name, true);
  const stats = h("dl", { class: "facts" });

  const threshold = numberField("threshold-input", "Threshold");
  const thresholdNote = h("p", { class: "muted small", id: "threshold-note" });
  const detect = h("input", { id: "detect-input", type: "checkbox", class: "admin-edit" });
  const k = numberField("alarm-k", "k (frames above)", { min: 1, step: 1 });
  const n = numberField("alarm-n", "of n frames", { min: 1, step: 1 });
  const cooldown = numberField("alarm-cooldown", "cooldown (s)", { min: 0 });
  const hysteresis = numberField("alarm-hysteresis", "hysteresis", { min: 0 });
  markDirty(threshold.input, k.input, n.input, cooldown.input, hysteresis.input);

  const chart = h("div", { class: "chart-box", id: "histogram" });
  const share = h("p", { id: "threshold-share" });
  const proposedShare = h("p", { id: "proposed-share", class: "muted" });
  let camera = null;
  let recent = { points: [] };
  let hist = null;

  const patch = async (body) => {
    camera = await api.patch(path, body);
    render();
    await refreshScores();
  };

  const thresholdForm = h(
    "form",
    { class: "settings-form", id: "threshold-form", onsubmit: async (event) => {
      event.preventDefault();
      const value = Number.parseFloat(threshold.input.value);
      if (!Number.isFinite(value)) return;
      await patch({ threshold: value }).catch(() => {});
      clean(threshold.input);
      setValue(threshold.input, camera && camera.threshold);
    } },
    h("h2", {}, "Threshold"),
    threshold.el,
    h("div", { class: "buttons" },
      h("button", { type: "submit", class: "primary admin-edit", id: "threshold-apply" }, "Apply threshold"),
      h("button", { type: "button", class: "admin-edit", id: "threshold-reset", onclick: async () => {
        await patch({ clear_threshold: true }).catch(() => {});
        clean(threshold.input);
        setValue(threshold.input, camera && camera.threshold);
      } }, "Back to the card/config value")),
    thresholdNote,
  );
  threshold.input.addEventListener("input", () => drawHistogram());

  const detectForm = h("form", { class: "settings-form", onsubmit: (event) => event.preventDefault() },
    h("h2", {}, "Detection"),
    h("div", { class: "check" }, detect, h("label", { for: "detect-input" }, "Score frames and raise events")));
  detect.addEventListener("change", () => patch({ detect: detect.checked }).catch(() => {
    detect.checked = camera ? camera.detect : detect.checked;
  }));

  const alarmForm = h(
    "form",
    { class: "settings-form", id: "alarm-form", onsubmit: async (event) => {
      event.preventDefault();
      const rule = {
        k: Number.parseInt(k.input.value, 10),
        n: Number.parseInt(n.input.value, 10),
        cooldown_s: Number.parseFloat(cooldown.input.value),
        hysteresis: Number.parseFloat(hysteresis.input.value),
      };
      await patch({ alarm: rule }).catch(() => {});
      clean(k.input, n.input, cooldown.input, hysteresis.input);
      render();
    } },
    h("h2", {}, "Alarm rule"),
    h("p", { class: "muted small" }, "An event opens when k of the last n scored frames are above " +
      "the threshold, and ends once the score stayed under threshold − hysteresis for the cooldown."),
    h("div", { class: "field-row" }, k.el, n.el, cooldown.el, hysteresis.el),
    h("div", { class: "buttons" },
      h("button", { type: "submit", class: "primary admin-edit", id: "alarm-apply" }, "Apply alarm rule")),
  );
  const viewerNote = h("p", { class: "viewer-only muted" }, "Viewer access: settings are read-only.");

  fill(
    main,
    h("div", { class: "title-row" }, title, badges),
    subtitle,
    h("div", { class: "camera-layout" },
      h("section", { class: "live-big", "aria-label": "live view" }, live.img),
      h("section", { class: "settings", "aria-label": "settings" }, viewerNote, thresholdForm,
        detectForm, alarmForm)),
    h("section", { class: "panel" }, h("h2", {}, "Recent scores"),
      h("p", { class: "muted small" }, "Last 10 minutes; grey: frames outside events, red: " +
        "frames while an event was open; the line is the threshold (dashed: the value typed above, " +
        "not applied yet)."), chart, share, proposedShare),
    h("section", { class: "panel" }, h("h2", {}, "Counters"), stats),
  );

  function render() {
    if (!camera) return;
    const admin = isAdmin();
    for (const input of main.querySelectorAll(".admin-edit")) input.disabled = !admin;
    fill(badges, stateBadge(camera.state),
      camera.alarm ? h("span", { class: "badge alarm-badge" }, "ALARM") : null,
      camera.detect ? null : h("span", { class: "badge muted-badge" }, "detect off"));
    subtitle.textContent = `model ${camera.model} · ${camera.source}`;
    setValue(threshold.input, camera.threshold);
    thresholdNote.textContent = `from the ${camera.threshold_source}` +
      (camera.card_threshold === null ? "" : ` · card: ${fmtScore(camera.card_threshold)}`);
    if (document.activeElement !== detect) detect.checked = camera.detect;
    setValue(k.input, camera.alarm_rule.k);
    setValue(n.input, camera.alarm_rule.n);
    setValue(cooldown.input, camera.alarm_rule.cooldown_s);
    setValue(hysteresis.input, camera.alarm_rule.hysteresis);
    const drops = Object.entries(camera.drops || {}).map(([why, count]) => `${why} ${count}`).join(", ");
    const facts = [
      ["input / scored", `${fmtFps(camera.input_fps)} / ${fmtFps(camera.scored_fps)} fps`],
      ["frames read / scored", `${camera.frames_read} / ${camera.frames_scored}`],
      ["dropped", drops || "none"],
      ["latency p50 / p99", `${fmtScore(camera.latency_p50_ms)} / ${fmtScore(camera.latency_p99_ms)} ms`],
      ["latest score", fmtScore(camera.latest_score)],
      ["events", String(camera.events_total)],
      ["fps cap", camera.fps_cap === null ? "none" : String(camera.fps_cap)],
      ["error", camera.error || "none"],
    ];
    fill(stats, facts.flatMap(([key, value]) => [h("dt", {}, key), h("dd", {}, value)]));
    if (LIVE_STATES.has(camera.state) && !document.hidden) live.start();
  }

  function drawHistogram() {
    const typed = Number.parseFloat(threshold.input.value);
    const proposed = Number.isFinite(typed) && camera && typed !== camera.threshold ? typed : null;
    if (hist) fill(chart, histogram(hist, { proposed, width: chart.clientWidth }));
    const current = camera ? camera.threshold : null;
    share.textContent = shareText(recent.points, current);
    proposedShare.textContent = proposed === null ? "" : `With ${proposed}: ${shareText(recent.points, proposed)}`;
  }

  async function refreshScores() {
    [hist, recent] = await Promise.all([
      api.get(withQuery(`${path}/histogram`, { bins: 30, seconds: 600 }), { quiet: true }),
      api.get(withQuery(`${path}/scores`, { seconds: 600 }), { quiet: true }),
    ]);
    drawHistogram();
  }

  let ticks = 0;
  const stopRefresh = every(2000, async () => {
    camera = await api.get(path);
    render();
    if (ticks % 3 === 0) await refreshScores();
    ticks += 1;
  });
  const stopFollowing = followVisibility(() => [live]);
  return () => {
    stopRefresh();
    stopFollowing();
    live.stop();
  };
}
