// KPI board: today's counts, stage-interval medians and 90th percentiles per town (table and SVG bars), SLA breaches
// and device health. Figures come from the server (/api/v1/kpis, /incidents, /alerts, /devices totals).
import { h, data } from "../dom.js";
import { formatDuration, formatDurationShort, t } from "../i18n.js";

const INTERVALS = ["warn", "dispatch", "response"];
const SVG = "http://www.w3.org/2000/svg";

export function renderKpis(ctx) {
  const k = ctx.state.kpis;
  if (!k) return h("section", { class: "panel" }, h("h2", {}, t("kpi.title")), h("p", { class: "empty" }, t("common.loading")));
  const tiles = [
    ["kpi.incidents_today", k.incidentsToday],
    ["kpi.open_now", k.openNow],
    ["kpi.alerts_today", k.alertsToday],
    ["kpi.sla_breaches", k.slaBreaches],
    ["kpi.devices_active", k.devices.active],
    ["kpi.devices_offline", k.devices.offline],
  ];
  return h(
    "section",
    { class: "panel kpis", "aria-label": t("kpi.title") },
    h("h2", {}, t("kpi.title")),
    h("div", { class: "tiles" }, tiles.map(([key, n]) => h("div", { class: "tile", dataset: { kpi: key } }, h("b", {}, String(n ?? "—")), h("span", {}, t(key))))),
    h("h3", {}, t("kpi.per_town")),
    h(
      "div",
      { class: "kpi-wrap" },
      h(
      "table",
      { class: "kpi-table" },
      h(
        "thead",
        {},
        h("tr", {}, h("th", {}, t("kpi.town")), h("th", {}, t("kpi.count")), INTERVALS.map((n) => [h("th", {}, t(`interval.${n}`), " ", t("kpi.median")), h("th", {}, t("kpi.p90"))])),
      ),
      h(
        "tbody",
        {},
        k.groups.map((g) =>
          h(
            "tr",
            {},
            h("td", {}, data(ctx.placeName(g.group) || g.group || t("kpi.unknown_town"))),
            h("td", {}, String(Math.max(0, ...Object.values(g.intervals).map((x) => x.count)))),
            INTERVALS.map((n) => [h("td", {}, formatDurationShort(g.intervals[n]?.median_s)), h("td", {}, formatDurationShort(g.intervals[n]?.p90_s))]),
          ),
        ),
      ),
    ),
    ),
    k.groups.length === 0
      ? h("p", { class: "empty" }, t("kpi.no_incidents"))
      : k.groups.some((g) => g.intervals.response)
        ? h("figure", {}, chart(ctx, k.groups), h("figcaption", {}, t("kpi.chart_caption")))
        : h("p", { class: "empty" }, t("kpi.no_arrivals")),
  );
}

// Horizontal bars per town: response median (solid) and 90th percentile (outline).
function chart(ctx, groups) {
  const rows = groups.filter((g) => g.intervals.response);
  const max = Math.max(60, ...rows.map((g) => g.intervals.response.p90_s));
  const width = 320;
  const bar = 16;
  const label = 90;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${rows.length * (bar + 6) + 4}`);
  svg.setAttribute("class", "chart");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", t("kpi.chart_caption"));
  rows.forEach((g, n) => {
    const y = 2 + n * (bar + 6);
    const scale = (v) => ((width - label - 70) * v) / max;
    const name = document.createElementNS(SVG, "text");
    name.setAttribute("x", "0");
    name.setAttribute("y", String(y + bar - 4));
    name.setAttribute("class", "data");
    name.textContent = ctx.placeName(g.group) || g.group || t("kpi.unknown_town");
    const p90 = document.createElementNS(SVG, "rect");
    Object.entries({ x: label, y, width: scale(g.intervals.response.p90_s), height: bar, class: "p90" }).forEach(([a, v]) => p90.setAttribute(a, String(v)));
    const median = document.createElementNS(SVG, "rect");
    Object.entries({ x: label, y: y + 3, width: scale(g.intervals.response.median_s), height: bar - 6, class: "median" }).forEach(([a, v]) => median.setAttribute(a, String(v)));
    const value = document.createElementNS(SVG, "text");
    value.setAttribute("x", String(label + scale(g.intervals.response.p90_s) + 4));
    value.setAttribute("y", String(y + bar - 4));
    value.textContent = formatDuration(g.intervals.response.median_s);
    svg.append(name, p90, median, value);
  });
  return svg;
}
