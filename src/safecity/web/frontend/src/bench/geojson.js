// The plain rendering path, for comparison only: one GeoJSON source and `setData` with every object each update
// (the way layers/responders.js draws responders today). Same interface as MovingLayer where the bench needs it.
export class GeoJsonPath {
  constructor(map, palette) {
    this.map = map;
    this.id = "moving";
    this.palette = palette;
    this.stats = { updates: 0, lastUpdateMs: 0, lastUploadMs: 0, drawnVersion: 0 };
    this._version = 0;
  }

  addTo(map) {
    map.addSource("moving", { type: "geojson", data: { type: "FeatureCollection", features: [] } });
    const colour = ["match", ["get", "status"]];
    this.palette.forEach((c, i) => colour.push(i, `rgba(${c[0]},${c[1]},${c[2]},${c[3] / 255})`));
    colour.push("#ccc");
    map.addLayer({
      id: "moving",
      type: "circle",
      source: "moving",
      paint: {
        "circle-radius": ["interpolate", ["linear"], ["zoom"], 10, 4, 15, 8],
        "circle-color": colour,
        "circle-stroke-color": "#0b1220",
        "circle-stroke-width": 1.5,
      },
    });
  }

  setPositions(ids, lon, lat, heading, status) {
    const t0 = performance.now();
    const features = new Array(lon.length);
    for (let i = 0; i < lon.length; i++) {
      features[i] = {
        type: "Feature",
        id: ids[i],
        geometry: { type: "Point", coordinates: [lon[i], lat[i]] },
        properties: { status: status[i], heading: heading[i] },
      };
    }
    this.map.getSource("moving").setData({ type: "FeatureCollection", features });
    this._version += 1;
    // There is no hook for "drawn": the bench reads the marker's pixel every frame from now on.
    this.stats.drawnVersion = this._version;
    this.stats.lastUpdateMs = performance.now() - t0;
    return this._version;
  }
}
