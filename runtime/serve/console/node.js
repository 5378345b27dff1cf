// The node: readiness, versions, models (with a bundle swap), storage use, config reload.

import { api, enc, request } from "./api.js";
import { every, fill, fmtBytes, fmtDuration, fmtTime, h } from "./dom.js";

function table(headers, rows) {
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, headers.map((text) => h("th", { scope: "col" }, text)))),
    h("tbody", {}, rows.map((cells) => h("tr", {}, cells.map((cell) => h("td", {}, cell)))))));
}

function facts(pairs) {
  return h("dl", { class: "facts" }, pairs.flatMap(([key, value]) => [h("dt", {}, key), h("dd", {}, value)]));
}

function storageBar(storage) {
  const used = storage.max_bytes ? Math.min(1, storage.media_bytes / storage.max_bytes) : 0;
  const fill = h("div", { class: "bar-fill" });
  fill.style.width = `${(used * 100).toFixed(1)}%`;
  fill.classList.toggle("high", used > 0.9);
  const outbox = Object.entries(storage.outbox || {}).map(([channel, count]) => `${channel} ${count}`);
  return [
    h("div", { class: "usage", role: "meter", "aria-label": "evidence storage used",
      "aria-valuemin": 0, "aria-valuemax": storage.max_bytes, "aria-valuenow": storage.media_bytes }, fill),
    facts([
      ["evidence", `${fmtBytes(storage.media_bytes)} of ${fmtBytes(storage.max_bytes)} (${(used * 100).toFixed(1)} %)`],
      ["free on the disk", fmtBytes(storage.free_bytes)],
      ["events stored", String(storage.events)],
      ["messages waiting", outbox.length ? outbox.join(", ") : "none"],
      ["folder", storage.path],
    ]),
  ];
}

function swapForm(model, report) {
  const id = `bundle-${model.name}`;
  const input = h("input", { id, type: "text", class: "admin-edit", placeholder: "/path/to/bundle",
    autocomplete: "off", spellcheck: "false" });
  return h("form", { class: "swap-form admin-only", onsubmit: async (event) => {
    event.preventDefault();
    if (!input.value.trim()) return;
    const button = event.target.querySelector("button");
    button.disabled = true;
    fill(report, "checking the new bundle…");
    try {
      const swap = await api.post(`/api/models/${enc(model.name)}/load`, { bundle: input.value.trim() });
      fill(report, `generation ${swap.generation}: ${swap.frames_checked.length} frames checked, ` +
        `max difference ${swap.max_abs_diff ?? "–"}, ${swap.decisions_changed} decisions changed, ` +
        `threshold ${swap.new_threshold}`);
    } catch (error) {
      fill(report, `refused: ${error.detail}`);
    } finally {
      button.disabled = false;
    }
  } },
  h("label", { for: id }, `Swap ${model.name} to the bundle`), input,
  h("button", { type: "submit", class: "admin-edit" }, "Check and swap"));
}

export async function mountNode(main) {
  const ready = h("div", { id: "readiness" });
  const about = h("div");
  const models = h("div", { id: "models" });
  const swaps = h("div", { class: "admin-only" });
  const storage = h("div", { id: "storage" });
  const reloadReport = h("p", { class: "muted" });
  const reload = h("button", { type: "button", class: "admin-edit", onclick: async () => {
    try {
      const report = await api.post("/api/config/reload", {});
      fill(reloadReport, `applied: ${report.applied.join(", ") || "nothing"}; needs a restart: ` +
        `${report.restart_required.join(", ") || "nothing"}`);
    } catch (error) {
      fill(reloadReport, `refused: ${error.detail}`);
    }
  } }, "Reload the config file");
  const reports = new Map();
  fill(
    main,
    h("h1", {}, "Node"),
    h("section", { class: "panel" }, h("h2", {}, "Health"), ready),
    h("section", { class: "panel" }, h("h2", {}, "Models"), models, swaps),
    h("section", { class: "panel" }, h("h2", {}, "Storage"), storage),
    h("section", { class: "panel" }, h("h2", {}, "Service"), about,
      h("div", { class: "buttons admin-only" }, reload), reloadReport,
      h("p", {}, h("a", { href: "/docs" }, "HTTP API reference (OpenAPI)"), " · ",
        h("a", { href: "/metrics" }, "Prometheus metrics"))),
  );

  let version = null;
  const refresh = async () => {
    const [stats, modelList, health] = await Promise.all([
      api.get("/api/stats"),
      api.get("/api/models"),
      request("GET", "/api/health/ready", { accept: [503] }),
    ]);
    if (!version) version = await api.get("/api/version");
    const reasons = health.reasons || [];
    fill(ready, h("p", {}, h("span", { class: `badge ${reasons.length ? "state-error" : "state-online"}` },
      health.status)), reasons.length ? h("ul", {}, reasons.map((reason) => h("li", {}, reason))) : null);
    fill(models, table(
      ["model", "state", "bundle", "sha256", "generation", "loaded", "cameras", "batches", "mean rows"],
      modelList.map((model) => [
        model.name,
        h("span", { class: `badge state-${model.state === "ready" ? "online" : model.state}` }, model.state),
        model.bundle,
        h("code", { title: model.sha256 || "" }, (model.sha256 || "–").slice(0, 12)),
        String(model.generation),
        model.loaded_at ? fmtTime(model.loaded_at) : "–",
        model.cameras.join(", "),
        String(model.batches),
        model.mean_batch_rows === null ? "–" : model.mean_batch_rows.toFixed(1),
      ]),
    ));
    for (const model of modelList) {
      if (!reports.has(model.name)) {
        const report = h("p", { class: "muted small" });
        reports.set(model.name, report);
        swaps.append(swapForm(model, report), report);
      }
    }
    fill(storage, storageBar(stats.storage));
    fill(about, facts([
      ["node", stats.node],
      ["up", fmtDuration(stats.uptime_s)],
      ["adedge", version.adedge],
      ["API", String(version.api)],
      ["Python", version.python],
      ["onnxruntime", version.onnxruntime || "–"],
      ["NumPy / OpenCV", `${version.numpy} / ${version.opencv || "–"}`],
    ]));
  };
  return every(5000, refresh);
}
