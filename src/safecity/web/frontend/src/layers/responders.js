// Responders on the map: one GeoJSON source of points (status colour, heading arrow, id label) and one of ETA lines
// to their incidents. Kept in its own module so a faster rendering path (binary attributes, feature-state, deck.gl)
// can replace it without touching the rest of the UI: the interface is create(map) -> {update, setEtaLines, ...}.

export const STATUS_COLOURS = {
  available: "#3ecf8e",
  dispatched: "#f5a623",
  en_route: "#f5a623",
  on_scene: "#e8465a",
  out_of_service: "#7a8291",
};

function point(r) {
  return {
    type: "Feature",
    id: r.id,
    geometry: { type: "Point", coordinates: [r.lon, r.lat] },
    properties: { id: r.id, status: r.status, kind: r.kind, heading: r.heading ?? 0, moving: r.heading !== null },
  };
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
  const colour = ["match", ["get", "status"], ...Object.entries(STATUS_COLOURS).flat(), "#ccc"];
  map.addLayer({
    id: "responders",
    type: "circle",
    source: "responders",
    paint: {
      "circle-radius": ["interpolate", ["linear"], ["zoom"], 10, 4, 15, 8],
      "circle-color": colour,
      "circle-stroke-color": "#0b1220",
      "circle-stroke-width": 1.5,
    },
  });
  map.addLayer({
    id: "responder-labels",
    type: "symbol",
    source: "responders",
    minzoom: 11,
    layout: {
      "text-field": ["get", "id"],
      "text-font": ["DejaVu Sans"],
      "text-size": 11,
      "text-offset": [0, 1.2],
      "text-allow-overlap": false,
    },
    paint: { "text-color": "#e6edf6", "text-halo-color": "#0b1220", "text-halo-width": 1.5 },
  });
  map.addLayer({
    id: "responder-heading",
    type: "symbol",
    source: "responders",
    filter: ["==", ["get", "moving"], true],
    layout: {
      "text-field": "▲",
      "text-font": ["DejaVu Sans"],
      "text-size": 10,
      "text-rotate": ["get", "heading"],
      "text-rotation-alignment": "map",
      "text-allow-overlap": true,
      "text-ignore-placement": true,
      "text-offset": [0, -1.1],
    },
    paint: { "text-color": colour },
  });
  if (onClick) {
    map.on("click", "responders", (e) => onClick(e.features[0].properties.id));
    map.on("mouseenter", "responders", () => (map.getCanvas().style.cursor = "pointer"));
    map.on("mouseleave", "responders", () => (map.getCanvas().style.cursor = ""));
  }
  let lastVisible = true;
  return {
    layerIds: ["responders", "responder-labels", "responder-heading", "eta-lines", "eta-labels"],
    // All responders with a position, as the UI's state holds them (Map id -> responder).
    update(responders) {
      const features = [];
      for (const r of responders.values()) if (r.lon !== null && r.lat !== null) features.push(point(r));
      map.getSource("responders").setData({ type: "FeatureCollection", features });
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
