// Alert feed: newest first, open ones on top; acknowledge, assign, turn into an incident, resolve with feedback.
import { h, data, persistent, reconcile, replace } from "../dom.js";
import { formatTime, language, pick, t } from "../i18n.js";
import { OPEN_ALERT_STATES } from "../map.js";
import { can } from "../roles.js";

export function renderAlerts(ctx) {
  const { state } = ctx;
  const alerts = [...state.alerts.values()].sort(
    (a, b) => Number(OPEN_ALERT_STATES.has(b.state)) - Number(OPEN_ALERT_STATES.has(a.state)) || (b.last_at > a.last_at ? 1 : -1),
  );
  const open = alerts.filter((a) => OPEN_ALERT_STATES.has(a.state)).length;
  return view(({ root, title, empty, list }) => {
    root.setAttribute("aria-label", t("alerts.title"));
    replace(title, t("alerts.title"), " ", h("span", { class: "count" }, t("alerts.open_count", { n: open })));
    replace(empty, alerts.length === 0 ? t("alerts.none") : null);
    reconcile(list, alerts.slice(0, 150), (a) => a.id, (a) => signature(ctx, a), (a) => alertRow(ctx, a));
  });
}

const view = persistent(() => {
  const title = h("h2");
  const empty = h("p", { class: "empty" });
  const list = h("ul", { class: "list" });
  return { root: h("section", { class: "panel" }, title, empty, list), title, empty, list };
});

function signature(ctx, a) {
  const selected = ctx.state.selectedAlert === a.id;
  return JSON.stringify([language(), a.state, a.last_at, a.count, a.severity, a.assignee, selected, selected && a.steps?.length, ctx.placeName(a.community)]);
}

function alertRow(ctx, a) {
  const selected = ctx.state.selectedAlert === a.id;
  const place = ctx.placeName(a.community) || ctx.placeName(a.town);
  return h(
    "li",
    { class: `item sev-${a.severity.toLowerCase()} ${selected ? "selected" : ""}`, dataset: { alert: a.id, rule: a.rule_id } },
    h(
      "div",
      { class: "row", onclick: () => ctx.selectAlert(selected ? null : a.id) },
      h("span", { class: `badge sev` }, t(`severity.${a.severity}`)),
      data(pick(a.headline.zh, a.headline.en), "span", { class: "title" }),
      h("span", { class: `badge state-${a.state}` }, t(`alert_state.${a.state}`)),
    ),
    h("div", { class: "meta" }, data(place || ""), " · ", h("time", {}, formatTime(a.last_at)), a.count > 1 ? ` · ×${a.count}` : ""),
    selected ? alertDetail(ctx, a) : null,
  );
}

function alertDetail(ctx, a) {
  const open = OPEN_ALERT_STATES.has(a.state);
  const draft = ctx.drafts.get(a.id) || { feedback: "", assignee: "" };
  ctx.drafts.set(a.id, draft);
  const feedback = h("textarea", { class: "feedback", rows: 2, placeholder: t("alerts.feedback_placeholder"), "aria-label": t("alerts.feedback"), oninput: (e) => (draft.feedback = e.target.value) });
  feedback.value = draft.feedback;
  const assignee = h("input", { class: "assignee", placeholder: t("alerts.assignee_placeholder"), "aria-label": t("alerts.assignee"), oninput: (e) => (draft.assignee = e.target.value) });
  assignee.value = draft.assignee;
  const buttons = [];
  if (open && a.state === "new" && can("acknowledge"))
    buttons.push(h("button", { class: "act-ack", onclick: () => ctx.alertAction(a.id, "acknowledge", { feedback: feedback.value || null }) }, t("alerts.acknowledge")));
  if (open && can("toIncident"))
    buttons.push(h("button", { class: "act-incident primary", onclick: () => ctx.alertToIncident(a.id) }, t("alerts.to_incident")));
  if (open && can("assign"))
    buttons.push(
      h("button", { class: "act-assign", onclick: () => ctx.alertAction(a.id, "assign", { assignee: assignee.value, feedback: feedback.value || null }) }, t("alerts.assign")),
    );
  if (open && a.state !== "new" && can("resolve"))
    buttons.push(h("button", { class: "act-resolve", onclick: () => ctx.alertAction(a.id, "resolve", { feedback: feedback.value }) }, t("alerts.resolve")));
  return h(
    "div",
    { class: "detail" },
    data(pick(a.description?.zh, a.description?.en), "p"),
    h(
      "dl",
      {},
      h("dt", {}, t("alerts.rule")),
      data(a.rule_id, "dd"),
      h("dt", {}, t("alerts.first_seen")),
      h("dd", {}, formatTime(a.first_at, true)),
      h("dt", {}, t("alerts.latency")),
      h("dd", {}, a.latency_ms?.occurred_to_fired !== undefined ? t("unit.ms", { n: Math.round(a.latency_ms.occurred_to_fired) }) : "—"),
      a.assignee ? [h("dt", {}, t("alerts.assignee")), data(a.assignee, "dd")] : null,
    ),
    a.steps?.length
      ? h("ol", { class: "steps" }, a.steps.map((s) => h("li", {}, h("time", {}, formatTime(s.at)), " ", t(`alert_state.${s.state}`), " · ", data(s.actor), s.feedback ? [" · ", data(s.feedback)] : null)))
      : null,
    buttons.length ? [can("assign") && open ? assignee : null, open ? feedback : null, h("div", { class: "actions" }, buttons)] : null,
  );
}
