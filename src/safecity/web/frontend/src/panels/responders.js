// Responder list: status, incident, last fix; a click shows the unit's isochrone (what it reaches in 5 / 10 min).
import { h, data, persistent, reconcile, replace } from "../dom.js";
import { formatTime, language, t } from "../i18n.js";
import { STATUS_COLOURS } from "../layers/responders.js";

export function renderResponders(ctx) {
  const list = [...ctx.state.responders.values()].sort((a, b) => a.id.localeCompare(b.id));
  const counts = {};
  for (const r of list) counts[r.status] = (counts[r.status] || 0) + 1;
  const stations = [...new Set(list.map((r) => r.station).filter(Boolean))].sort();
  return view(({ root, title, legend, stationBar, head, body }) => {
    root.setAttribute("aria-label", t("responders.title"));
    replace(title, t("responders.title"), " ", h("span", { class: "count" }, t("responders.total", { n: list.length })));
    replace(legend, Object.entries(counts).map(([s, n]) => h("span", { class: "chip" }, h("i", { style: { background: STATUS_COLOURS[s] } }), t(`responder_status.${s}`), ` ${n}`)));
    // Rebuilt only when the stations or the choice change: positions re-render this panel every 2 s, and a button
    // replaced under the pointer would swallow the click.
    const stationSig = JSON.stringify([language(), stations, ctx.state.selectedStation]);
    if (stationBar.dataset.sig !== stationSig) {
      stationBar.dataset.sig = stationSig;
      replace(
        stationBar,
        stations.length ? [h("span", { class: "label" }, t("responders.station_coverage")), stations.map((st) => h("button", { class: `station ${ctx.state.selectedStation === st ? "on" : ""}`, dataset: { station: st }, onclick: () => ctx.selectStation(st) }, data(st)))] : null,
      );
    }
    replace(head, h("tr", {}, h("th", {}, t("responders.unit")), h("th", {}, t("responders.kind")), h("th", {}, t("responders.status")), h("th", {}, t("responders.incident")), h("th", {}, t("responders.fix"))));
    reconcile(
      body,
      list,
      (r) => r.id,
      (r) => JSON.stringify([language(), r.status, r.incident_id, r.fix_at, ctx.state.selectedResponder === r.id, r.incident_id && ctx.typeOfIncident(r.incident_id)]),
      (r) => row(ctx, r),
    );
  });
}

const view = persistent(() => {
  const title = h("h2");
  const legend = h("p", { class: "legend" });
  const stationBar = h("p", { class: "stations" });
  const head = h("thead");
  const body = h("tbody");
  return { root: h("section", { class: "panel" }, title, legend, stationBar, h("table", { class: "responders" }, head, body)), title, legend, stationBar, head, body };
});

function row(ctx, r) {
  return h(
    "tr",
    { dataset: { responder: r.id, status: r.status }, class: ctx.state.selectedResponder === r.id ? "selected" : "", onclick: () => ctx.selectResponder(r.id) },
    h("td", {}, data(r.id)),
    h("td", {}, t(`responder_kind.${r.kind}`)),
    h("td", {}, h("i", { class: "dot", style: { background: STATUS_COLOURS[r.status] } }), t(`responder_status.${r.status}`)),
    h("td", {}, r.incident_id ? h("a", { href: "#", onclick: (e) => (e.preventDefault(), ctx.selectIncident(r.incident_id)) }, ctx.typeOfIncident(r.incident_id)) : "—"),
    h("td", {}, h("time", {}, formatTime(r.fix_at))),
  );
}
