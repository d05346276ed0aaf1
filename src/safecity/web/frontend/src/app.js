// The command centre: login, layout, state, live updates and actions. Every action waits for the server's answer;
// a refusal (403, 409, 422…) is shown with the server's own problem text, never swallowed.
import { api, ApiError, apiKey, setApiKey, takeKeyFromFragment } from "./api.js";
import { h, replace } from "./dom.js";
import { CATALOGUES, formatDuration, formatTime, language, LANGUAGES, onLanguage, pick, setLanguage, startOfToday, t, timeZone } from "./i18n.js";
import { LiveChannel } from "./live.js";
import { CityMap, OPEN_STAGES, TOGGLES } from "./map.js";
import { renderAlerts } from "./panels/alerts.js";
import { renderDetail, renderQueue } from "./panels/incidents.js";
import { renderKpis } from "./panels/kpis.js";
import { renderResponders } from "./panels/responders.js";
import { can, setRole } from "./roles.js";

const TABS = ["alerts", "incidents", "responders", "kpis"];
const LANGUAGE_NAMES = { "zh-CN": "中文", en: "English" };

export function start(root) {
  takeKeyFromFragment();
  document.documentElement.lang = language();
  if (!apiKey()) return login(root);
  return boot(root).catch((err) => {
    if (err instanceof ApiError && err.status === 401) {
      setApiKey(null);
      return login(root, t("login.rejected"));
    }
    throw err;
  });
}

function login(root, error) {
  const input = h("input", { type: "password", id: "login-key", autocomplete: "off", placeholder: "sc_…", "aria-label": t("login.key") });
  const form = h(
    "form",
    {
      class: "login",
      onsubmit: (e) => {
        e.preventDefault();
        setApiKey(input.value.trim());
        start(root);
      },
    },
    h("h1", {}, t("app.title")),
    h("p", {}, t("login.hint")),
    h("label", { for: "login-key" }, t("login.key")),
    input,
    error ? h("p", { class: "error", role: "alert" }, error) : null,
    h("button", { type: "submit", class: "primary" }, t("login.submit")),
    languageSwitch(() => login(root, error)),
  );
  replace(root, form);
}

function languageSwitch(after) {
  return h(
    "div",
    { class: "lang-switch", role: "group", "aria-label": t("header.language") },
    LANGUAGES.map((l) =>
      h("button", { type: "button", lang: l, class: l === language() ? "on" : "", "aria-pressed": String(l === language()), dataset: { lang: l }, onclick: () => (setLanguage(l), after && after()) }, LANGUAGE_NAMES[l]),
    ),
  );
}

async function boot(root) {
  const me = await api("/api/v1/me");
  setRole(me.role);
  const state = {
    me,
    alerts: new Map(),
    incidents: new Map(),
    responders: new Map(),
    devices: new Map(),
    etas: new Map(),
    selectedAlert: null,
    selectedIncident: null,
    selectedResponder: null,
    selectedStation: null,
    detail: null,
    recommendation: null,
    open311: null,
    kpis: null,
    tab: "alerts",
    live: "connecting",
    toggles: Object.fromEntries(TOGGLES.map((k) => [k, k !== "devices"])),
  };
  const els = {
    header: h("header", { class: "top" }),
    tabs: h("nav", { class: "tabs", role: "tablist" }),
    side: h("div", { class: "side-body" }),
    detail: h("div", { class: "detail-host" }),
    layers: h("div", { class: "layers" }),
    toasts: h("div", { class: "toasts", "aria-live": "polite" }),
    mapEl: h("div", { id: "map" }),
  };
  replace(root, els.header, h("main", {}, h("aside", { class: "side" }, els.tabs, els.side), els.mapEl, els.detail, els.layers), els.toasts);

  const placeNames = new Map();
  const ctx = {
    state,
    placeName: (id) => {
      const p = id && placeNames.get(id);
      return p ? pick(p.name, p.name_en) : null;
    },
    typeName: (type) => t(`type.${type}`) === `type.${type}` ? type : t(`type.${type}`),
    typeOfIncident: (id) => {
      const i = state.incidents.get(id);
      return i ? ctx.typeName(i.type) : id.slice(-6);
    },
    selectAlert: (id) => {
      state.selectedAlert = id;
      if (id) refreshAlert(id);
      render("side");
    },
    // What the operator typed into an alert's form survives re-renders.
    drafts: new Map(),
    selectIncident: (id) => selectIncident(id),
    selectResponder: (id) => selectResponder(id),
    selectStation: (id) => selectStation(id),
    alertAction,
    alertToIncident,
    dispatchBest,
    act,
  };

  // --- rendering: batched to one frame, and only the parts whose data changed (a live map moves every second;
  // re-rendering a panel would detach what the operator is clicking or typing into) ---
  const dirty = new Set();
  let queued = false;
  function render(...parts) {
    for (const p of parts.length ? parts : ["tabs", "side", "detail", "layers", "map"]) dirty.add(p);
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      renderNow();
    });
  }
  // What a change of one kind of data makes stale: the map, and the side panel when it shows that data.
  let responderListAt = 0;
  function changed(tab) {
    let side = state.tab === tab || (tab === "incidents" && state.tab === "kpis");
    // Positions arrive every second per unit: the list follows at most once every 2 s (the map at once).
    if (side && tab === "responders") {
      side = performance.now() - responderListAt > 2000;
      if (side) responderListAt = performance.now();
    }
    render("map", ...(side ? ["side"] : []));
  }
  function typing() {
    const el = document.activeElement;
    return el && els.side.contains(el) && (el.tagName === "INPUT" || el.tagName === "TEXTAREA");
  }
  els.side.addEventListener("focusout", () => setTimeout(() => dirty.has("side") && render("side"), 0));
  function renderNow(all = false) {
    const parts = all ? new Set(["tabs", "side", "detail", "layers", "map"]) : new Set(dirty);
    dirty.clear();
    if (parts.has("side") && typing() && !all) dirty.add("side"); // after the operator leaves the field
    if (parts.has("tabs"))
      replace(
        els.tabs,
        TABS.map((tab) =>
          h("button", { role: "tab", class: tab === state.tab ? "on" : "", "aria-selected": String(tab === state.tab), dataset: { tab }, onclick: () => switchTab(tab) }, t(`tab.${tab}`)),
        ),
      );
    if (parts.has("side") && !dirty.has("side")) {
      const panel = { alerts: renderAlerts, incidents: renderQueue, responders: renderResponders, kpis: renderKpis }[state.tab](ctx);
      // List panels are the same node updated in place: only swap when the tab changed.
      if (els.side.firstChild !== panel) replace(els.side, panel);
    }
    if (parts.has("detail")) {
      // Rebuilt only when what it shows changed (ETAs to the next 10 s), so its buttons stay put between updates.
      const { detail, recommendation, open311 } = state;
      const sig = JSON.stringify([language(), detail, open311, recommendation?.map((r) => [r.id, r.status, r.eligible, Math.round((r.eta_s ?? -1) / 10), r.reasons])]);
      if (sig !== els.detail.dataset.sig) {
        els.detail.dataset.sig = sig;
        replace(els.detail, renderDetail(ctx));
      }
    }
    if (parts.has("layers"))
      replace(
        els.layers,
        h("h3", {}, t("layers.title")),
        TOGGLES.map((k) =>
          h("label", {}, h("input", { type: "checkbox", checked: state.toggles[k], dataset: { layer: k }, onchange: (e) => ((state.toggles[k] = e.target.checked), cityMap.setVisible(k, e.target.checked)) }), t(`layers.${k}`)),
        ),
        state.selectedResponder && can("route") ? h("p", { class: "iso-note" }, t("layers.isochrone_of", { unit: state.selectedResponder })) : null,
        state.selectedStation && can("route") ? h("p", { class: "iso-note" }, t("layers.coverage_of", { station: state.selectedStation })) : null,
      );
    if (parts.has("map")) updateMap();
  }
  function switchTab(tab) {
    state.tab = tab;
    if (tab === "kpis") loadKpis().catch(refused);
    render("tabs", "side");
  }
  // The header is rebuilt on a language change only; the clock and the live badge update in place every second.
  const clock = h("span", { class: "clock" });
  const liveBadge = h("span", { id: "live-status" });
  function renderHeader() {
    replace(
      els.header,
      h("h1", {}, t("app.title")),
      liveBadge,
      clock,
      h("span", { class: "who" }, t(`role.${me.role}`), " · ", h("span", { class: "data" }, me.name)),
      languageSwitch(),
      h("button", { class: "logout", onclick: () => (setApiKey(null), live.stop(), location.reload()) }, t("header.logout")),
    );
    tick();
  }
  function tick() {
    const zone = t(`zone.${timeZone()}`) === `zone.${timeZone()}` ? timeZone() : t(`zone.${timeZone()}`);
    replace(clock, formatTime(new Date().toISOString()), " ", h("small", {}, zone));
    liveBadge.className = `live live-${state.live}`;
    liveBadge.dataset.status = state.live;
    liveBadge.textContent = t(`live.${state.live}`);
  }
  function updateMap() {
    if (!cityMap.responders) return;
    cityMap.setIncidents(state.incidents, (i) => ctx.typeName(i.type));
    cityMap.setAlerts(state.alerts);
    cityMap.setDevices(state.devices);
    cityMap.responders.update(state.responders);
    const lines = [];
    for (const r of state.responders.values()) {
      if (!r.incident_id || !["dispatched", "en_route"].includes(r.status) || r.lon === null) continue;
      const i = state.incidents.get(r.incident_id);
      if (!i || i.lon === null) continue;
      const eta = state.etas.get(r.id);
      const left = eta && eta.incident_id === i.id && eta.eta_s !== null ? eta.eta_s - (Date.now() - eta.at) / 1000 : null;
      lines.push({ from: [r.lon, r.lat], to: [i.lon, i.lat], label: left === null ? r.id : `${r.id} ${t("map.eta", { eta: formatDuration(left) })}` });
    }
    cityMap.responders.setEtaLines(lines);
  }
  setInterval(tick, 1000);
  onLanguage(() => {
    cityMap.relabel();
    renderHeader();
    renderNow(true);
  });

  // --- toasts: every confirmation and every refusal is shown ---
  function toast(kind, text) {
    const el = h("div", { class: `toast ${kind}`, role: kind === "error" ? "alert" : "status" }, text);
    els.toasts.append(el);
    setTimeout(() => el.remove(), kind === "error" ? 10000 : 4000);
  }
  function refused(err) {
    if (!(err instanceof ApiError)) throw err;
    const what = t(`error.${err.status}`) === `error.${err.status}` ? t("error.other", { status: err.status }) : t(`error.${err.status}`);
    toast("error", `${what}: ${err.problem.detail || err.problem.title || ""}`);
  }

  // --- state loading ---
  function putIncident(i) {
    const known = state.incidents.get(i.id);
    if (known && known.version > i.version) return;
    state.incidents.set(i.id, { ...known, ...i });
  }
  async function loadAll() {
    const [alerts, open, recent, responders] = await Promise.all([
      api("/api/v1/alerts", { params: { limit: 200 } }),
      api("/api/v1/incidents", { params: { open: true, limit: 500 } }),
      api("/api/v1/incidents", { params: { since: startOfToday(), limit: 200 } }),
      api("/api/v1/responders"),
    ]);
    state.alerts = new Map(alerts.items.map((a) => [a.id, a]));
    state.incidents = new Map();
    for (const i of [...recent.items, ...open.items]) putIncident(i);
    state.responders = new Map(responders.map((r) => [r.id, r]));
    if (state.selectedIncident) await refreshDetail();
    render("side", "map");
  }
  async function loadDevices() {
    const devices = new Map();
    for (let offset = 0; ; offset += 1000) {
      const page = await api("/api/v1/devices", { params: { limit: 1000, offset } });
      for (const d of page.items) devices.set(d.id, d);
      if (offset + 1000 >= page.total) break;
    }
    state.devices = devices;
    render("map");
  }
  async function loadKpis() {
    const since = startOfToday();
    const [kpis, today, alertsToday, breaches, active, offline] = await Promise.all([
      api("/api/v1/kpis", { params: { group: "town", since } }),
      api("/api/v1/incidents", { params: { since, limit: 1 } }),
      api("/api/v1/alerts", { params: { since, limit: 1 } }),
      api("/api/v1/alerts", { params: { since, limit: 1000, category: "Safety" } }).catch(() => ({ items: [] })),
      api("/api/v1/devices", { params: { status: "active", limit: 1 } }),
      api("/api/v1/devices", { params: { status: "offline", limit: 1 } }),
    ]);
    state.kpis = {
      groups: kpis.groups,
      incidentsToday: today.total,
      openNow: [...state.incidents.values()].filter((i) => OPEN_STAGES.has(i.stage)).length,
      alertsToday: alertsToday.total,
      slaBreaches: breaches.items.filter((a) => a.rule_id === "dispatch.sla_breach").length,
      devices: { active: active.total, offline: offline.total },
    };
    if (state.tab === "kpis") render("side");
  }
  async function loadHeat() {
    cityMap.setHeat(await api("/api/v1/events/heat", { params: { cell_deg: 0.004 } }));
  }
  let roadsAdded = false;
  async function loadRoads(first = null) {
    if (!can("route")) {
      // Tiles are open to every role; the road network's state is not: draw the roads, skip the conditions.
      if (!roadsAdded) await cityMap.addRoads();
      roadsAdded = true;
      return;
    }
    const info = await (first || api("/api/v1/routing/info"));
    if (info.tiles && !roadsAdded) {
      roadsAdded = true;
      await cityMap.addRoads();
    }
    if (info.loaded && (info.closed_edges > 0 || info.slowed_edges > 0) && cityMap.map.getZoom() >= 12) {
      const b = cityMap.map.getBounds();
      cityMap.setConditions(await api("/api/v1/routing/edges.geojson", { params: { bbox: [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map((v) => v.toFixed(5)).join(","), limit: 20000 } }));
    } else cityMap.setConditions({ features: [] });
  }

  // --- selection ---
  async function selectIncident(id) {
    state.selectedIncident = id;
    state.detail = null;
    state.recommendation = null;
    state.open311 = null;
    if (id) {
      await refreshDetail();
      const i = state.detail?.incident;
      if (i && i.lon !== null) cityMap.flyTo(i.lon, i.lat);
    }
    render("tabs", "side", "detail", "map");
  }
  async function refreshDetail() {
    const id = state.selectedIncident;
    if (!id) return;
    const detail = await api(`/api/v1/incidents/${id}`);
    if (state.selectedIncident !== id) return;
    state.detail = detail;
    putIncident(detail.incident);
    const i = detail.incident;
    state.recommendation = OPEN_STAGES.has(i.stage) ? await api(`/api/v1/incidents/${id}/recommendation`, { params: { routes: 0 } }) : null;
    if (i.route === "department" || i.stage === "diverted") {
      state.open311 = await api(`/open311/v2/requests/${id}.json`).then((r) => (Array.isArray(r) ? r[0] : r)).catch(() => null);
    }
    render("detail", "map");
  }
  let detailTimer = null;
  function refreshDetailSoon() {
    clearTimeout(detailTimer);
    detailTimer = setTimeout(() => refreshDetail().catch(refused), 150);
  }
  // A station's coverage: what its units (where they are now) reach within 5 minutes, one area per unit.
  async function selectStation(id) {
    state.selectedStation = id;
    state.selectedResponder = null;
    render("layers", "side");
    if (!can("route")) return;
    const units = [...state.responders.values()].filter((r) => r.station === id && r.lon !== null && r.status !== "out_of_service");
    try {
      const areas = await Promise.all(units.map((r) => api("/api/v1/routing/isochrone", { params: { lon: r.lon, lat: r.lat, minutes: [5] } })));
      if (state.selectedStation !== id) return;
      const features = areas.flatMap((a, n) => a.features.map((f) => ({ ...f, properties: { ...f.properties, unit: units[n].id } })));
      state.isochroneAreas = features.length;
      cityMap.setIsochrone({ type: "FeatureCollection", features });
      cityMap.setVisible("isochrone", (state.toggles.isochrone = true));
    } catch (err) {
      refused(err);
    }
  }
  async function selectResponder(id) {
    state.selectedResponder = id;
    state.selectedStation = null;
    const r = state.responders.get(id);
    render("layers", ...(state.tab === "responders" ? ["side"] : []));
    if (r && r.lon !== null) cityMap.flyTo(r.lon, r.lat);
    if (!r || r.lon === null || !can("route")) return;
    try {
      const areas = await api("/api/v1/routing/isochrone", { params: { lon: r.lon, lat: r.lat, minutes: [5, 10] } });
      state.isochroneAreas = areas.features.length;
      cityMap.setIsochrone(areas);
      cityMap.setVisible("isochrone", (state.toggles.isochrone = true));
    } catch (err) {
      refused(err);
    }
  }
  const alertFetches = new Map();
  function refreshAlert(id) {
    if (alertFetches.has(id)) return;
    alertFetches.set(
      id,
      setTimeout(async () => {
        alertFetches.delete(id);
        try {
          state.alerts.set(id, await api(`/api/v1/alerts/${id}`));
          changed("alerts");
        } catch (err) {
          refused(err);
        }
      }, 50),
    );
  }

  // --- actions (each confirmed by the server's answer) ---
  async function alertAction(id, action, body) {
    try {
      const alert = await api(`/api/v1/alerts/${id}/${action}`, { method: "POST", body });
      state.alerts.set(id, alert);
      ctx.drafts.delete(id);
      toast("ok", t("toast.alert_done", { action: t(`alerts.${action}`), state: t(`alert_state.${alert.state}`) }));
      render("side", "map");
    } catch (err) {
      refused(err);
    }
  }
  async function alertToIncident(id) {
    try {
      const opened = await api(`/api/v1/alerts/${id}/incident`, { method: "POST" });
      putIncident(opened.incident);
      toast("ok", t("toast.incident_opened", { type: ctx.typeName(opened.incident.type) }));
      state.tab = "incidents";
      await selectIncident(opened.incident.id);
    } catch (err) {
      refused(err);
    }
  }
  async function dispatchBest(id) {
    try {
      const incident = await api(`/api/v1/incidents/${id}/dispatch`, { method: "POST" });
      putIncident(incident);
      toast("ok", t("toast.dispatched", { unit: incident.unit_id }));
      await refreshDetail();
    } catch (err) {
      refused(err);
    }
  }
  async function act(incident, step) {
    try {
      const updated = await api(`/api/v1/incidents/${incident.id}/actions`, { method: "POST", body: { ...step, expected_version: incident.version } });
      putIncident(updated);
      toast("ok", t("toast.action_done", { action: t(`action.${step.action}`), stage: t(`stage.${updated.stage}`) }));
      await refreshDetail();
    } catch (err) {
      refused(err);
      await refreshDetail().catch(() => {});
    }
  }

  // --- live ---
  function onEvent({ key, data }) {
    if (key === "incident.changed") {
      const a = data.after;
      putIncident({ id: a.id, type: a.type, priority: a.priority, stage: a.stage, lon: a.lon, lat: a.lat, unit_id: a.unit_id, version: a.version, opened_at: a.opened_at, updated_at: a.updated_at, town: a.tags?.town, community: a.tags?.community });
      if (a.id === state.selectedIncident) refreshDetailSoon();
      changed("incidents");
    } else if (key === "incident.unit_assigned") {
      state.etas.set(data.unit_id, { incident_id: data.incident_id, eta_s: data.eta_s, at: Date.parse(data.at) });
    } else if (key === "incident.recommendation_changed") {
      if (data.incident_id === state.selectedIncident) refreshDetailSoon();
    } else if (key === "responder.moved" || key === "responder.status_changed") {
      const r = state.responders.get(data.responder_id);
      if (!r) return;
      r.status = data.status;
      r.incident_id = data.incident_id;
      if (key === "responder.moved") Object.assign(r, { lon: data.lon, lat: data.lat, heading: data.heading, fix_at: data.fix_at });
      changed("responders");
    } else if (key.startsWith("alert.")) {
      refreshAlert(data.alert_id);
    } else if (key === "device.offline") {
      const d = state.devices.get(data.device_id);
      if (d) d.status = "offline";
      render("map");
    }
  }
  const live = new LiveChannel({
    onEvent,
    onResync: () => loadAll().catch(refused),
    onStatus: (s) => {
      state.live = s;
      tick();
    },
  });
  const cityMap = new CityMap(els.mapEl, {
    onIncident: (id) => ((state.tab = "incidents"), selectIncident(id)),
    onResponder: (id) => selectResponder(id),
    onAlert: (id) => ((state.tab = "alerts"), ctx.selectAlert(id)),
  });
  // Tests and operators may drop the connection to check the resume (window.safecity.live.drop()).
  window.safecity = { live, state, catalogues: CATALOGUES, map: cityMap };
  renderHeader();
  renderNow(true);
  live.start();
  const info = can("route") ? api("/api/v1/routing/info") : null;
  await cityMap.loadBase();
  for (const f of cityMap.places.features) placeNames.set(f.properties.id, f.properties);
  render("side");
  await loadRoads(info);
  for (const k of TOGGLES) cityMap.setVisible(k, state.toggles[k]);
  render("map");
  loadDevices().catch(refused);
  loadHeat().catch(refused);
  setInterval(() => loadHeat().catch(refused), 60000);
  setInterval(() => loadRoads().catch(refused), 15000);
  setInterval(() => state.tab === "kpis" && loadKpis().catch(refused), 30000);
  setInterval(() => loadDevices().catch(refused), 300000);
  cityMap.firstRender().then((ms) => (window.safecity.firstRenderMs = ms));
  document.body.dataset.ready = "true";
}
