// The events: a list (newest first, filters, paging, export links) that takes in new
// events as they happen, and one event's page (evidence, score chart, label, delete).

import { api, enc, isAdmin, withQuery } from "./api.js";
import { scoreChart } from "./charts.js";
import { LABELS, every, fill, fmtDuration, fmtScore, fmtTime, h, labelBadge, stopMedia } from "./dom.js";

const PAGE = 50;
const FILTERS = ["camera", "label", "min_score"];

function filtersOf(query) {
  const filters = {};
  for (const key of FILTERS) {
    const value = (query.get(key) || "").trim();
    if (value) filters[key] = value;
  }
  return filters;
}

function unix(iso) {
  return iso ? new Date(iso).getTime() / 1000 : null;
}

/** The list's order, as the API's: newest start first, then the larger id. */
function newer(a, b) {
  const ta = Date.parse(a.start);
  const tb = Date.parse(b.start);
  return ta !== tb ? ta > tb : a.id > b.id;
}

function durationText(event) {
  return event.end === null ? "in progress" : fmtDuration(event.duration_s);
}

function thumbnail(event) {
  const url = event.urls && event.urls.snapshot;
  if (!url || event.media_pruned) {
    return h("span", { class: "thumb none" }, event.media_pruned ? "pruned" : "no snapshot");
  }
  return h("img", { class: "thumb", src: url, alt: `snapshot of ${event.camera}`, loading: "lazy",
    width: 96, height: 72 });
}

// --- the list ------------------------------------------------------------------------------

class EventRow {
  constructor(event) {
    this.id = event.id;
    this.el = h("li", { class: "event-row", "data-event": event.id });
    this.update(event);
  }

  update(event) {
    const ended = this.event && this.event.end === null && event.end !== null;
    const same = this.event && JSON.stringify(this.event) === JSON.stringify(event);
    if (same) return;
    this.event = event;
    const thumb = ended || !this.thumb ? thumbnail(event) : this.thumb;
    if (ended && thumb.tagName === "IMG") thumb.src = `${event.urls.snapshot}?v=end`;
    this.thumb = thumb;
    this.el.classList.toggle("in-progress", event.end === null);
    fill(
      this.el,
      h("a", { class: "event-link", href: `#/event/${enc(event.id)}` },
        thumb,
        h("span", { class: "event-main" },
          h("span", { class: "event-camera" }, event.camera),
          h("time", { datetime: event.start }, fmtTime(event.start)),
          h("span", { class: "muted" }, durationText(event))),
        h("span", { class: "event-side" },
          h("span", { class: "event-score" }, "peak ", h("b", {}, fmtScore(event.peak_score))),
          labelBadge(event.label))),
    );
  }
}

export async function mountList(main, { query }) {
  const filters = filtersOf(query);
  const cameraSelect = h("select", { id: "filter-camera", name: "camera" },
    h("option", { value: "" }, "every camera"));
  const labelSelect = h("select", { id: "filter-label", name: "label" },
    h("option", { value: "" }, "any label"),
    ...Object.entries(LABELS).map(([value, text]) => h("option", { value }, text)),
    h("option", { value: "none" }, "unlabelled"));
  const minScore = h("input", { id: "filter-min-score", name: "min_score", type: "number",
    step: "any", inputmode: "decimal", placeholder: "any" });
  labelSelect.value = filters.label || "";
  minScore.value = filters.min_score || "";
  const form = h(
    "form",
    { class: "filters", id: "event-filters", onsubmit: (event) => {
      event.preventDefault();
      location.hash = withQuery("#/events", {
        camera: cameraSelect.value, label: labelSelect.value, min_score: minScore.value.trim(),
      });
    } },
    h("div", { class: "field" }, h("label", { for: "filter-camera" }, "Camera"), cameraSelect),
    h("div", { class: "field" }, h("label", { for: "filter-label" }, "Label"), labelSelect),
    h("div", { class: "field" }, h("label", { for: "filter-min-score" }, "Min. peak score"), minScore),
    h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary" }, "Filter")),
  );
  const list = h("ol", { class: "event-list", id: "event-list" });
  const empty = h("p", { class: "muted", hidden: true }, "No events match.");
  const more = h("button", { type: "button", id: "more-events", hidden: true }, "Older events");
  const exports = h("p", { class: "exports" }, "Export these events: ",
    h("a", { id: "export-csv", href: withQuery("/api/events/export", { format: "csv", ...filters }),
      download: "" }, "CSV"),
    " · ",
    h("a", { id: "export-zip", href: withQuery("/api/events/export", { format: "zip", ...filters }),
      download: "" }, "zip of labelled snapshots and frames"));
  fill(main, h("h1", {}, "Events"), form, exports, list, empty, more);

  api.get("/api/cameras", { quiet: true }).then((cameras) => {
    for (const camera of cameras) cameraSelect.append(h("option", { value: camera.name }, camera.name));
    cameraSelect.value = filters.camera || "";
  }).catch(() => {});

  const rows = new Map();
  let cursor = null;
  let pagedFurther = false;

  const place = (event, appendAtEnd) => {
    let row = rows.get(event.id);
    if (row) {
      row.update(event);
      return;
    }
    row = new EventRow(event);
    rows.set(event.id, row);
    if (appendAtEnd) {
      list.append(row.el);
      return;
    }
    const older = [...list.children].find((el) => {
      const other = rows.get(el.dataset.event);
      return other && other !== row && newer(event, other.event);
    });
    list.insertBefore(row.el, older || null);
  };

  const refreshFirst = async () => {
    const page = await api.get(withQuery("/api/events", { ...filters, limit: PAGE }));
    const ids = new Set(page.events.map((event) => event.id));
    const oldest = page.events.length ? page.events[page.events.length - 1] : null;
    for (const [id, row] of rows) {
      // gone from the range this page covers: deleted, or no longer matching the filter
      if (!ids.has(id) && (!page.next_cursor || !oldest || !newer(oldest, row.event))) {
        row.el.remove();
        rows.delete(id);
      }
    }
    for (const event of page.events) place(event, false);
    if (!pagedFurther) cursor = page.next_cursor;
    more.hidden = !cursor;
    empty.hidden = rows.size > 0;
  };

  more.addEventListener("click", async () => {
    if (!cursor) return;
    const page = await api.get(withQuery("/api/events", { ...filters, limit: PAGE, cursor }));
    pagedFurther = true;
    for (const event of page.events) place(event, true);
    cursor = page.next_cursor;
    more.hidden = !cursor;
  });

  return every(3000, refreshFirst);
}

// --- one event -----------------------------------------------------------------------------

function figure(media, caption) {
  return h("figure", {}, media, h("figcaption", {}, caption));
}

function clipFigure(url) {
  const video = h("video", { controls: true, preload: "metadata", src: url, playsinline: true });
  const note = h("span", { class: "muted small", hidden: true },
    " This browser cannot play the clip's codec: download it to watch it.");
  video.addEventListener("error", () => {
    // an MPEG-4 Part 2 clip, which browsers do not decode: offer the file instead
    video.hidden = true;
    note.hidden = false;
  });
  return figure(video, [h("a", { href: url, download: "" }, "Clip (MP4)"), note]);
}

export async function mountDetail(main, { args, alive }) {
  const [id] = args;
  const path = `/api/events/${enc(id)}`;
  const heading = h("h1", {}, "Event");
  const badges = h("span", { class: "badges" });
  const media = h("div", { class: "event-media" });
  const chart = h("div", { class: "chart-box", id: "event-chart" });
  const facts = h("dl", { class: "facts" });
  const labelButtons = Object.entries(LABELS).map(([value, text]) =>
    h("button", { type: "button", class: `label-button label-${value} admin-edit`,
      "data-label": value, "aria-pressed": "false", onclick: () => setLabel(value) }, text));
  const clearButton = h("button", { type: "button", class: "admin-edit", "data-label": "clear",
    onclick: () => setLabel(null) }, "Clear label");
  const deleteButton = h("button", { type: "button", class: "danger admin-edit", id: "delete-event",
    onclick: () => remove() }, "Delete event");
  let event = null;
  let mediaKey = "";
  const videos = () => [...media.querySelectorAll("video, img")];

  fill(
    main,
    h("p", {}, h("a", { href: "#/events" }, "← Events")),
    h("div", { class: "title-row" }, heading, badges),
    media,
    h("section", { class: "panel" }, h("h2", {}, "Review"),
      h("div", { class: "buttons", role: "group", "aria-label": "Label this event" },
        labelButtons, clearButton),
      h("p", { class: "viewer-only muted" }, "Viewer access: labels are read-only.")),
    h("section", { class: "panel" }, h("h2", {}, "Score over the event"), chart),
    h("section", { class: "panel" }, h("h2", {}, "Details"), facts,
      h("div", { class: "buttons" }, deleteButton)),
  );

  async function setLabel(label) {
    event = await api.post(`${path}/label`, { label }).catch(() => event);
    render();
  }

  async function remove() {
    if (!window.confirm(`Delete event ${id} and its evidence? This cannot be undone.`)) return;
    try {
      await api.del(path);
    } catch {
      return;
    }
    location.hash = "#/events";
  }

  function renderMedia() {
    const urls = event.urls || {};
    const key = `${Object.keys(urls).join()}|${event.end}|${event.media_pruned}`;
    if (key === mediaKey) return;
    mediaKey = key;
    for (const el of videos()) stopMedia(el);
    const version = event.end === null ? "" : "?v=end";
    const parts = [];
    if (event.media_pruned) parts.push(h("p", { class: "muted" }, "The evidence was pruned to keep the storage cap."));
    if (urls.snapshot) parts.push(figure(h("img", { id: "event-snapshot", src: urls.snapshot + version,
      alt: "snapshot with the heatmap overlay" }), "Snapshot: heatmap overlay, hottest region outlined"));
    if (urls.heatmap) parts.push(figure(h("img", { id: "event-heatmap", src: urls.heatmap + version,
      alt: "heatmap of the peak frame" }), "Heatmap of the peak frame"));
    if (urls.frame) parts.push(figure(h("img", { src: urls.frame + version, alt: "raw peak frame" }),
      "Raw peak frame"));
    if (urls.clip && event.end !== null) parts.push(clipFigure(urls.clip));
    if (!parts.length) parts.push(h("p", { class: "muted" }, "No evidence stored for this event."));
    fill(media, parts);
  }

  function render() {
    if (!event) return;
    heading.textContent = `Event on ${event.camera}`;
    fill(badges, event.end === null ? h("span", { class: "badge alarm-badge" }, "in progress") : null,
      labelBadge(event.label));
    const admin = isAdmin();
    for (const button of [...labelButtons, clearButton, deleteButton]) button.disabled = !admin;
    for (const button of labelButtons) {
      button.setAttribute("aria-pressed", String(button.dataset.label === event.label));
    }
    deleteButton.disabled = !admin || event.end === null;
    renderMedia();
    const box = event.box ? `${event.box.width}×${event.box.height} at (${event.box.x}, ${event.box.y})` : "none";
    const rows = [
      ["id", event.id],
      ["camera", event.camera],
      ["start", fmtTime(event.start)],
      ["end", event.end === null ? "in progress" : `${fmtTime(event.end)} (${event.end_reason})`],
      ["duration", durationText(event)],
      ["peak score", `${fmtScore(event.peak_score)} at ${fmtTime(event.peak_time)}`],
      ["threshold", `${fmtScore(event.threshold)} (${event.threshold_source})`],
      ["frames", String(event.frames)],
      ["model", `${event.model.name} · ${event.model.backend} · ${event.model.sha256.slice(0, 12)}`],
      ["region", box],
      ["label", event.label ? `${LABELS[event.label]} (${fmtTime(event.labelled_at)})` : "none"],
    ];
    fill(facts, rows.flatMap(([key, value]) => [h("dt", {}, key), h("dd", {}, value)]));
  }

  async function refresh() {
    const [fresh, trace] = await Promise.all([
      api.get(path),
      api.get(`${path}/trace.json`, { quiet: true }).catch(() => null),
    ]);
    if (!alive()) return;
    event = fresh;
    render();
    if (trace) {
      fill(chart, scoreChart(trace.points, event.threshold, {
        start: unix(event.start), end: unix(event.end),
        peak: { t: unix(event.peak_time), score: event.peak_score }, width: chart.clientWidth,
      }));
    }
    if (event.end !== null) stopRefresh();
  }

  let stopRefresh = () => {};
  try {
    await refresh();
  } catch (error) {
    if (error.status === 404) fill(main, h("h1", {}, "No such event"),
      h("p", {}, h("a", { href: "#/events" }, "Back to the events")));
    return () => {};
  }
  if (event.end === null) stopRefresh = every(2000, refresh);
  return () => {
    stopRefresh();
    for (const el of videos()) stopMedia(el);
  };
}
