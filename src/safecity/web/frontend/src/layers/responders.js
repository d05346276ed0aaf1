// Responders on the map: the dots (status colour, heading arrow) drawn by the MovingLayer from binary attributes, which
// keeps a map of 20,000 units moving every second interactive (docs/benchmarks.md, "Command-centre UI"); id labels at
// street zoom for the units in view, and ETA lines to their incidents, as small GeoJSON sources. The interface is
// create(map) -> {update, setEtaLines, setVisible, positionOf}.

import { MovingLayer, arraysFrom } from "../moving/layer.js";

export const STATUS_COLOURS = {
  available: "#3ecf8e",
  dispatched: "#f5a623",
  en_route: "#f5a623",
  on_scene: "#e8465a",
  out_of_service: "#7a8291",
};

// The palette in STATUS_CODES order (moving/layer.js): available, dispatched, en route, on scene, out of service.
const PALETTE = ["available", "dispatched", "en_route", "on_scene", "out_of_service"].map((status) => {
  const hex = STATUS_COLOURS[status];
  return [1, 3, 5].map((i) => parseInt(hex.slice(i, i + 2), 16));
});
const LABEL_MIN_ZOOM = 11;
const MAX_LABELS = 400; // labels are for the units in view at street zoom, not for a whole district

function label(r) {
  return { type: "Feature", geometry: { type: "Point", coordinates: [r.lon, r.lat] }, properties: { id: r.id } };
}

export function createRespondersLayer(map, { onClick } = {}) {
  map.addSource("responders", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
  map.addSource("eta", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
  map.addLayer({
    id: "eta-lines",
    type: "line",
    source: "eta",
    paint: { "line-color": "#f5a623", "line-width": 2, "line-dasharray": [2, 2] },
  });
  map.addLayer({
    id: "eta-labels",
    type: "symbol",
    source: "eta",
    layout: {
      "symbol-placement": "line-center",
      "text-field": ["get", "label"],
      "text-font": ["DejaVu Sans"],
      "text-size": 12,
    },
    paint: { "text-color": "#ffd28a", "text-halo-color": "#111", "text-halo-width": 1.5 },
  });
  const dots = new MovingLayer({ id: "responders", palette: PALETTE, radius: [[10, 4], [15, 8]] });
  map.addLayer(dots);
  map.addLayer({
    id: "responder-labels",
    type: "symbol",
    source: "responders",
    minzoom: LABEL_MIN_ZOOM,
    layout: {
      "text-field": ["get", "id"],
      "text-font": ["DejaVu Sans"],
      "text-size": 11,
      "text-offset": [0, 1.2],
      "text-allow-overlap": false,
    },
    paint: { "text-color": "#e6edf6", "text-halo-color": "#0b1220", "text-halo-width": 1.5 },
  });
  if (onClick) {
    map.on("click", (e) => {
      const hit = dots.pick(e.point);
      if (hit) onClick(hit.id);
    });
  }
  map.on("mousemove", (e) => {
    if (lastVisible) map.getCanvas().style.cursor = dots.pick(e.point) ? "pointer" : "";
  });
  let latest = new Map();
  // Labels only at street zoom, for the units in view: a district's units never go through GeoJSON every second.
  function updateLabels() {
    const features = [];
    if (map.getZoom() >= LABEL_MIN_ZOOM) {
      const bounds = map.getBounds();
      for (const r of latest.values()) {
        if (r.lon === null || r.lat === null || !bounds.contains([r.lon, r.lat])) continue;
        features.push(label(r));
        if (features.length >= MAX_LABELS) break;
      }
    }
    map.getSource("responders").setData({ type: "FeatureCollection", features });
  }
  map.on("moveend", updateLabels);
  let lastVisible = true;
  return {
    layerIds: ["responders", "responder-labels", "eta-lines", "eta-labels"],
    // All responders, as the UI's state holds them (Map id -> responder); those without a position are left out.
    update(responders) {
      latest = responders;
      const a = arraysFrom(responders.values());
      dots.setPositions(a.ids, a.lon, a.lat, a.heading, a.status);
      updateLabels();
    },
    // Where the map draws a responder now ([lon, lat] or null).
    positionOf(id) {
      return dots.positionOf(id);
    },
    // [{from: [lon, lat], to: [lon, lat], label}] for every responder on its way.
    setEtaLines(lines) {
      map.getSource("eta").setData({
        type: "FeatureCollection",
        features: lines.map((l) => ({
          type: "Feature",
          geometry: { type: "LineString", coordinates: [l.from, l.to] },
          properties: { label: l.label },
        })),
      });
    },
    setVisible(visible) {
      if (visible === lastVisible) return;
      lastVisible = visible;
      for (const id of this.layerIds) map.setLayoutProperty(id, "visibility", visible ? "visible" : "none");
    },
  };
}
