// The map: our own base map (places GeoJSON and road vector tiles from this node), offline glyphs, and the
// operational layers (incidents, alerts, devices, road conditions, event heat, isochrones). Responders live in
// layers/responders.js.
import maplibregl from "maplibre-gl";
import { api, transformRequest } from "./api.js";
import { language } from "./i18n.js";
import { createRespondersLayer } from "./layers/responders.js";

const EMPTY = { type: "FeatureCollection", features: [] };
const FONT = ["DejaVu Sans"];
export const DEVICE_COLOURS = { active: "#3ecf8e", offline: "#ff3b30", maintenance: "#f5a623", retired: "#7a8291" };
export const TOGGLES = ["incidents", "alerts", "responders", "devices", "conditions", "heat", "isochrone"];

function style() {
  return {
    version: 8,
    // Glyphs generated at build time from DejaVu Sans (scripts/glyphs.mjs); CJK is drawn with local fonts.
    glyphs: `${location.origin}/ui/glyphs/{fontstack}/{range}.pbf`,
    sources: {
      places: { type: "geojson", data: EMPTY },
      heat: { type: "geojson", data: EMPTY },
      conditions: { type: "geojson", data: EMPTY },
      isochrone: { type: "geojson", data: EMPTY },
      devices: { type: "geojson", data: EMPTY },
      incidents: { type: "geojson", data: EMPTY },
      alerts: { type: "geojson", data: EMPTY },
    },
    layers: [
      { id: "background", type: "background", paint: { "background-color": "#0b1220" } },
      {
        id: "town-fill",
        type: "fill",
        source: "places",
        filter: ["==", ["get", "level"], "town"],
        paint: { "fill-color": "#121c2e", "fill-opacity": 0.9 },
      },
      {
        id: "building-fill",
        type: "fill",
        source: "places",
        minzoom: 12,
        filter: ["==", ["get", "level"], "building"],
        paint: { "fill-color": "#23324d", "fill-opacity": 0.8 },
      },
      {
        id: "community-line",
        type: "line",
        source: "places",
        minzoom: 11,
        filter: ["==", ["get", "level"], "community"],
        paint: { "line-color": "#2a3a57", "line-width": 0.6 },
      },
      {
        id: "town-line",
        type: "line",
        source: "places",
        filter: ["==", ["get", "level"], "town"],
        paint: { "line-color": "#4d6a99", "line-width": 1.4 },
      },
      {
        id: "heat",
        type: "heatmap",
        source: "heat",
        paint: {
          "heatmap-weight": ["interpolate", ["linear"], ["get", "count"], 0, 0, 50, 1],
          "heatmap-radius": ["interpolate", ["linear"], ["zoom"], 10, 12, 15, 40],
          "heatmap-opacity": 0.55,
        },
      },
      {
        id: "isochrone",
        type: "fill",
        source: "isochrone",
        paint: {
          "fill-color": ["interpolate", ["linear"], ["get", "minutes"], 5, "#3ecf8e", 10, "#f5a623", 15, "#e8465a"],
          "fill-opacity": 0.18,
        },
      },
      {
        id: "isochrone-line",
        type: "line",
        source: "isochrone",
        paint: { "line-color": "#9fe2bf", "line-width": 1 },
      },
      {
        id: "conditions",
        type: "line",
        source: "conditions",
        paint: {
          "line-color": ["case", ["get", "closed"], "#ff3b30", "#f5a623"],
          "line-width": 4,
        },
      },
      {
        id: "devices",
        type: "circle",
        source: "devices",
        minzoom: 12,
        paint: {
          "circle-radius": 2.5,
          "circle-color": ["match", ["get", "status"], ...Object.entries(DEVICE_COLOURS).flat(), "#ccc"],
        },
      },
      {
        id: "devices-offline",
        type: "circle",
        source: "devices",
        filter: ["==", ["get", "status"], "offline"],
        paint: { "circle-radius": 4, "circle-color": DEVICE_COLOURS.offline, "circle-stroke-color": "#fff", "circle-stroke-width": 1 },
      },
      {
        id: "alerts",
        type: "circle",
        source: "alerts",
        paint: {
          "circle-radius": 10,
          "circle-color": "rgba(255,59,48,0.25)",
          "circle-stroke-color": "#ff3b30",
          "circle-stroke-width": 2,
        },
      },
      {
        id: "incidents",
        type: "circle",
        source: "incidents",
        paint: {
          "circle-radius": ["interpolate", ["linear"], ["get", "priority"], 1, 9, 9, 5],
          "circle-color": ["match", ["get", "priority"], 1, "#ff3b30", 2, "#ff9500", 3, "#ffcc00", 4, "#a0d911", "#8e9aaf"],
          "circle-stroke-color": ["match", ["get", "stage"], "on_scene", "#e8465a", ["dispatched", "en_route"], "#f5a623", "#ffffff"],
          "circle-stroke-width": 2,
        },
      },
      {
        id: "incident-labels",
        type: "symbol",
        source: "incidents",
        minzoom: 11,
        layout: { "text-field": ["get", "label"], "text-font": FONT, "text-size": 11, "text-offset": [0, 1.4] },
        paint: { "text-color": "#ffffff", "text-halo-color": "#0b1220", "text-halo-width": 1.5 },
      },
      {
        id: "town-labels",
        type: "symbol",
        source: "places",
        maxzoom: 13,
        filter: ["==", ["get", "level"], "town"],
        layout: { "text-field": ["get", "label"], "text-font": FONT, "text-size": 14 },
        paint: { "text-color": "#9fb3d1", "text-halo-color": "#0b1220", "text-halo-width": 1.5 },
      },
      {
        id: "community-labels",
        type: "symbol",
        source: "places",
        minzoom: 13,
        filter: ["==", ["get", "level"], "community"],
        layout: { "text-field": ["get", "label"], "text-font": FONT, "text-size": 11 },
        paint: { "text-color": "#7f93b3", "text-halo-color": "#0b1220", "text-halo-width": 1.2 },
      },
    ],
  };
}

const LAYER_GROUPS = {
  incidents: ["incidents", "incident-labels"],
  alerts: ["alerts"],
  devices: ["devices", "devices-offline"],
  conditions: ["conditions"],
  heat: ["heat"],
  isochrone: ["isochrone", "isochrone-line"],
};

export class CityMap {
  constructor(container, { onIncident, onResponder, onAlert }) {
    this.map = new maplibregl.Map({
      container,
      style: style(),
      center: [121.25, 31.38],
      zoom: 10.5,
      attributionControl: false,
      transformRequest,
      // CJK labels are drawn with the browser's own fonts, not glyph files.
      localIdeographFontFamily: "'Noto Sans CJK SC', 'Noto Sans SC', 'WenQuanYi Micro Hei', 'Microsoft YaHei', sans-serif",
    });
    this.map.addControl(new maplibregl.NavigationControl({ showCompass: false }), "bottom-right");
    this.places = null;
    this.ready = new Promise((resolve) => this.map.on("load", resolve)).then(() => {
      this.responders = createRespondersLayer(this.map, { onClick: onResponder });
      for (const [layer, handler] of [["incidents", onIncident], ["alerts", onAlert]]) {
        this.map.on("click", layer, (e) => handler(e.features[0].properties.id));
        this.map.on("mouseenter", layer, () => (this.map.getCanvas().style.cursor = "pointer"));
        this.map.on("mouseleave", layer, () => (this.map.getCanvas().style.cursor = ""));
      }
    });
  }

  async loadBase() {
    // Fetched while the map starts (style, workers), not after.
    const places = api("/api/v1/places/map.geojson", { params: { level: ["town", "community", "building"] } });
    await this.ready;
    this.places = await places;
    this.relabel();
    const towns = this.places.features.filter((f) => f.properties.level === "town");
    if (towns.length) {
      const bounds = new maplibregl.LngLatBounds();
      for (const f of towns) for (const ring of f.geometry.coordinates.flat(f.geometry.type === "MultiPolygon" ? 1 : 0)) for (const p of ring) bounds.extend(p);
      this.map.fitBounds(bounds, { padding: 20, duration: 0 });
    }
  }

  // Road tiles come once the node has baked them (the demo bakes them in the background at start).
  async addRoads() {
    await this.ready;
    if (this.map.getSource("roads")) return;
    this.map.addSource("roads", { type: "vector", url: `${location.origin}/tiles/roads.json` });
    const before = "heat";
    this.map.addLayer(
      {
        id: "roads-minor",
        type: "line",
        source: "roads",
        "source-layer": "roads",
        filter: ["!", ["in", ["get", "highway"], ["literal", ["motorway", "trunk", "primary", "secondary"]]]],
        paint: { "line-color": "#34445f", "line-width": ["interpolate", ["linear"], ["zoom"], 10, 0.4, 15, 2] },
      },
      before,
    );
    this.map.addLayer(
      {
        id: "roads-major",
        type: "line",
        source: "roads",
        "source-layer": "roads",
        filter: ["in", ["get", "highway"], ["literal", ["motorway", "trunk", "primary", "secondary"]]],
        paint: { "line-color": "#5b7bb0", "line-width": ["interpolate", ["linear"], ["zoom"], 10, 1, 15, 4] },
      },
      before,
    );
  }

  // When the base map (places, and the roads when added) is first on screen: performance.now() of that frame. The
  // map never goes "idle" on a live floor (positions arrive every second), so this waits for a rendered frame with
  // its base sources loaded instead.
  firstRender() {
    return new Promise((resolve) => {
      const check = () => {
        const roads = this.map.getSource("roads");
        if (!this.map.isSourceLoaded("places") || (roads && !this.map.isSourceLoaded("roads"))) return;
        this.map.off("render", check);
        resolve(performance.now());
      };
      this.map.on("render", check);
      this.map.triggerRepaint();
    });
  }

  relabel() {
    if (!this.places) return;
    const en = language() === "en";
    for (const f of this.places.features) f.properties.label = en ? f.properties.name_en || f.properties.name : f.properties.name;
    this.map.getSource("places").setData(this.places);
  }

  setIncidents(incidents, labelOf) {
    const features = [];
    for (const i of incidents.values()) {
      if (i.lon === null || i.lat === null || !OPEN_STAGES.has(i.stage)) continue;
      features.push({
        type: "Feature",
        geometry: { type: "Point", coordinates: [i.lon, i.lat] },
        properties: { id: i.id, priority: i.priority, stage: i.stage, label: labelOf(i) },
      });
    }
    this.map.getSource("incidents")?.setData({ type: "FeatureCollection", features });
  }

  setAlerts(alerts) {
    const features = [];
    for (const a of alerts.values()) {
      const at = alertPoint(a);
      if (!at || !OPEN_ALERT_STATES.has(a.state)) continue;
      features.push({ type: "Feature", geometry: { type: "Point", coordinates: at }, properties: { id: a.id, severity: a.severity } });
    }
    this.map.getSource("alerts")?.setData({ type: "FeatureCollection", features });
  }

  setDevices(devices) {
    const features = [];
    for (const d of devices.values()) {
      if (d.lon === null || d.lat === null || d.lon === undefined) continue;
      features.push({ type: "Feature", geometry: { type: "Point", coordinates: [d.lon, d.lat] }, properties: { id: d.id, status: d.status } });
    }
    this.map.getSource("devices")?.setData({ type: "FeatureCollection", features });
  }

  setHeat(heat) {
    const half = heat.cell_deg / 2;
    const features = heat.cells.map((c) => ({
      type: "Feature",
      geometry: { type: "Point", coordinates: [c.west + half, c.south + half] },
      properties: { count: c.count },
    }));
    this.map.getSource("heat")?.setData({ type: "FeatureCollection", features });
  }

  setConditions(edges) {
    this.map.getSource("conditions")?.setData({
      type: "FeatureCollection",
      features: edges.features.filter((f) => f.properties.closed || f.properties.speed_factor !== 1),
    });
  }

  setIsochrone(collection) {
    this.map.getSource("isochrone")?.setData(collection || EMPTY);
  }

  setVisible(group, visible) {
    if (group === "responders") {
      this.responders?.setVisible(visible);
      return;
    }
    for (const id of LAYER_GROUPS[group] || []) if (this.map.getLayer(id)) this.map.setLayoutProperty(id, "visibility", visible ? "visible" : "none");
  }

  flyTo(lon, lat) {
    this.map.easeTo({ center: [lon, lat], zoom: Math.max(this.map.getZoom(), 13), duration: 600 });
  }
}

export const OPEN_STAGES = new Set(["new", "triaged", "dispatched", "en_route", "on_scene", "reopened", "diverted"]);
export const OPEN_ALERT_STATES = new Set(["new", "acknowledged", "assigned"]);

export function alertPoint(a) {
  const area = a.area;
  if (!area) return null;
  if (area.circle) return [area.circle.lon, area.circle.lat];
  const ring = area.polygon || [];
  if (!ring.length) return null;
  const pts = ring.length > 1 ? ring.slice(0, -1) : ring;
  return [pts.reduce((s, p) => s + p[0], 0) / pts.length, pts.reduce((s, p) => s + p[1], 0) / pts.length];
}
