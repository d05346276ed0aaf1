// Incident queue (open incidents by priority) and the selected incident's detail: stage timeline with times and
// evidence, SLA timers, the ranked responders with ETAs and one-click dispatch, lifecycle actions, Open311 status.
import { h, data, persistent, reconcile, replace } from "../dom.js";
import { formatDuration, formatTime, language, t } from "../i18n.js";
import { OPEN_STAGES } from "../map.js";
import { can } from "../roles.js";

export const TIMELINE = ["perceived_at", "warned_at", "opened_at", "triaged_at", "dispatched_at", "en_route_at", "on_scene_at", "disposed_at", "closed_at"];
// Actions offered as buttons (dispatch has its own list; merge and divert need more input than a click).
const BUTTON_ACTIONS = ["triage", "recall", "depart", "arrive", "dispose", "close", "cancel", "reopen"];

export function renderQueue(ctx) {
  const incidents = [...ctx.state.incidents.values()]
    .filter((i) => OPEN_STAGES.has(i.stage))
    .sort((a, b) => a.priority - b.priority || (b.opened_at > a.opened_at ? 1 : -1));
  return queueView(({ root, title, empty, list }) => {
    root.setAttribute("aria-label", t("incidents.title"));
    replace(title, t("incidents.title"), " ", h("span", { class: "count" }, t("incidents.open_count", { n: incidents.length })));
    replace(empty, incidents.length === 0 ? t("incidents.none") : null);
    reconcile(
      list,
      incidents.slice(0, 200),
      (i) => i.id,
      (i) => JSON.stringify([language(), i.stage, i.priority, i.unit_id, i.town, ctx.state.selectedIncident === i.id, Boolean(ctx.placeName(i.town))]),
      (i) => queueRow(ctx, i),
    );
  });
}

const queueView = persistent(() => {
  const title = h("h2");
  const empty = h("p", { class: "empty" });
  const list = h("ul", { class: "list" });
  return { root: h("section", { class: "panel" }, title, empty, list), title, empty, list };
});

function queueRow(ctx, i) {
  return h(
    "li",
    {
      class: `item prio-${i.priority} ${ctx.state.selectedIncident === i.id ? "selected" : ""}`,
      dataset: { incident: i.id, stage: i.stage },
      onclick: () => ctx.selectIncident(i.id),
    },
    h(
      "div",
      { class: "row" },
      h("span", { class: "badge prio" }, t("incidents.priority", { n: i.priority })),
      h("span", { class: "title" }, ctx.typeName(i.type)),
      h("span", { class: `badge stage-${i.stage}` }, t(`stage.${i.stage}`)),
    ),
    h("div", { class: "meta" }, data(ctx.placeName(i.town) || ""), " · ", h("time", {}, formatTime(i.opened_at)), i.unit_id ? [" · ", data(i.unit_id)] : null),
  );
}

export function renderDetail(ctx) {
  const { detail, recommendation, open311 } = ctx.state;
  if (!detail) return null;
  const i = detail.incident;
  return h(
    "section",
    { class: "detail-panel", "aria-label": t("incident.title"), dataset: { incident: i.id, stage: i.stage } },
    h(
      "header",
      {},
      h("h2", {}, ctx.typeName(i.type), " ", h("span", { class: `badge stage-${i.stage}`, id: "incident-stage" }, t(`stage.${i.stage}`))),
      h("button", { class: "close", "aria-label": t("common.close"), title: t("common.close"), onclick: () => ctx.selectIncident(null) }, "×"),
    ),
    h(
      "dl",
      { class: "facts" },
      h("dt", {}, t("incident.priority")),
      h("dd", {}, t("incidents.priority", { n: i.priority })),
      h("dt", {}, t("incident.place")),
      h("dd", {}, data([ctx.placeName(i.town), ctx.placeName(i.community), i.address].filter(Boolean).join(" · "))),
      h("dt", {}, t("incident.summary")),
      h("dd", {}, data(i.summary)),
      h("dt", {}, t("incident.origin")),
      h("dd", {}, t(`origin.${i.origin}`)),
      h("dt", {}, t("incident.unit")),
      h("dd", { id: "incident-unit" }, data(i.unit_id || "—")),
    ),
    h("h3", {}, t("incident.timeline")),
    h(
      "ol",
      { class: "timeline" },
      TIMELINE.map((field) =>
        h(
          "li",
          { class: i[field] ? "done" : "pending", dataset: { step: field } },
          h("span", { class: "dot" }),
          h("span", { class: "label" }, t(`timeline.${field}`)),
          h("time", {}, i[field] ? formatTime(i[field]) : "—"),
        ),
      ),
    ),
    detail.timers.length
      ? [
          h("h3", {}, t("incident.sla")),
          h(
            "ul",
            { class: "timers" },
            detail.timers.map((tm) =>
              h(
                "li",
                { class: tm.breached ? "breached" : "" },
                t(`interval.${tm.interval}`),
                ": ",
                formatDuration(tm.elapsed_s),
                " / ",
                formatDuration(tm.limit_s),
                tm.breached ? [" ", h("span", { class: "badge breach" }, t("incident.breached"))] : null,
              ),
            ),
          ),
        ]
      : null,
    i.route === "department" || i.stage === "diverted" ? diversion(i, open311) : null,
    OPEN_STAGES.has(i.stage) ? responders(ctx, i, recommendation) : null,
    actions(ctx, i),
    h("h3", {}, t("incident.history")),
    h(
      "ol",
      { class: "history" },
      detail.history.map((s) =>
        h(
          "li",
          {},
          h("time", {}, formatTime(s.at)),
          " ",
          h("strong", {}, t(`action.${s.action}`)),
          " → ",
          t(`stage.${s.to_stage}`),
          " · ",
          data(s.actor),
          s.unit_id ? [" · ", data(s.unit_id)] : null,
          s.evidence?.length ? h("div", { class: "evidence" }, t("incident.evidence"), ": ", s.evidence.map((e) => data(`${e.kind}:${e.ref.slice(0, 12)}`, "code"))) : null,
        ),
      ),
    ),
  );
}

function diversion(i, open311) {
  return h(
    "div",
    { class: "diversion" },
    h("h3", {}, t("incident.diversion")),
    h(
      "dl",
      {},
      h("dt", {}, t("incident.department")),
      h("dd", {}, data(i.department || "—")),
      h("dt", {}, t("incident.service_code")),
      h("dd", {}, data(i.service_code || "—")),
      h("dt", {}, t("incident.open311_status")),
      h("dd", {}, open311 ? t(`open311.${open311.status}`) : "—", open311?.status_notes ? [" · ", data(open311.status_notes)] : null),
    ),
  );
}

function responders(ctx, i, ranked) {
  const dispatchable = can("dispatch") && i.allowed.includes("dispatch");
  return [
    h(
      "h3",
      {},
      t("incident.recommended"),
      " ",
      dispatchable ? h("button", { class: "primary act-dispatch-best", onclick: () => ctx.dispatchBest(i.id) }, t("incident.dispatch_best")) : null,
    ),
    ranked === null
      ? h("p", { class: "empty" }, t("common.loading"))
      : h(
          "table",
          { class: "ranked" },
          h("thead", {}, h("tr", {}, h("th", {}, t("responders.unit")), h("th", {}, t("responders.status")), h("th", {}, t("incident.eta")), h("th", {}, ""))),
          h(
            "tbody",
            {},
            ranked.slice(0, 8).map((r) =>
              h(
                "tr",
                { class: r.eligible ? "eligible" : "ineligible", dataset: { responder: r.id } },
                h("td", {}, data(r.id)),
                h("td", {}, t(`responder_status.${r.status}`)),
                h("td", {}, r.eligible ? formatDuration(r.eta_s) : h("span", { class: "reasons" }, r.reasons.map(reasonText).join(", "))),
                h(
                  "td",
                  {},
                  dispatchable && r.eligible
                    ? h("button", { class: "act-dispatch", onclick: () => ctx.act(i, { action: "dispatch", unit_id: r.id, preempt: Boolean(r.preempts) }) }, t("incident.dispatch"))
                    : null,
                ),
              ),
            ),
          ),
        ),
  ];
}

function actions(ctx, i) {
  if (!can("act")) return null;
  const offered = BUTTON_ACTIONS.filter((a) => i.allowed.includes(a));
  if (!offered.length) return null;
  return h(
    "div",
    { class: "actions" },
    offered.map((a) => h("button", { class: `act-${a}`, onclick: () => ctx.act(i, { action: a, ...(a === "dispose" ? { disposition: t("incident.disposed_default") } : {}) }) }, t(`action.${a}`))),
  );
}

// Why a responder is not eligible: server codes (off_duty, status_<s>, lacks_<caps>, unroutable_<why>) in words.
function reasonText(code) {
  if (code === "off_duty") return t("reason.off_duty");
  if (code.startsWith("status_")) return t(`responder_status.${code.slice(7)}`);
  if (code.startsWith("lacks_")) return t("reason.lacks", { what: code.slice(6) });
  if (code.startsWith("unroutable_")) return t("reason.unroutable");
  return code;
}
