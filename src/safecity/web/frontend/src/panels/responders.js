// Responder list: status, incident, last fix; a click shows the unit's isochrone (what it reaches in 5 / 10 min).
import { h, data } from "../dom.js";
import { formatTime, t } from "../i18n.js";
import { STATUS_COLOURS } from "../layers/responders.js";

export function renderResponders(ctx) {
  const list = [...ctx.state.responders.values()].sort((a, b) => a.id.localeCompare(b.id));
  const counts = {};
  for (const r of list) counts[r.status] = (counts[r.status] || 0) + 1;
  return h(
    "section",
    { class: "panel", "aria-label": t("responders.title") },
    h("h2", {}, t("responders.title"), " ", h("span", { class: "count" }, t("responders.total", { n: list.length }))),
    h("p", { class: "legend" }, Object.entries(counts).map(([s, n]) => h("span", { class: "chip" }, h("i", { style: { background: STATUS_COLOURS[s] } }), t(`responder_status.${s}`), ` ${n}`))),
    h(
      "table",
      { class: "responders" },
      h("thead", {}, h("tr", {}, h("th", {}, t("responders.unit")), h("th", {}, t("responders.kind")), h("th", {}, t("responders.status")), h("th", {}, t("responders.incident")), h("th", {}, t("responders.fix")))),
      h(
        "tbody",
        {},
        list.map((r) =>
          h(
            "tr",
            { dataset: { responder: r.id, status: r.status }, class: ctx.state.selectedResponder === r.id ? "selected" : "", onclick: () => ctx.selectResponder(r.id) },
            h("td", {}, data(r.id)),
            h("td", {}, t(`responder_kind.${r.kind}`)),
            h("td", {}, h("i", { class: "dot", style: { background: STATUS_COLOURS[r.status] } }), t(`responder_status.${r.status}`)),
            h("td", {}, r.incident_id ? h("a", { href: "#", onclick: (e) => (e.preventDefault(), ctx.selectIncident(r.incident_id)) }, ctx.typeOfIncident(r.incident_id)) : "—"),
            h("td", {}, h("time", {}, formatTime(r.fix_at))),
          ),
        ),
      ),
    ),
  );
}
