// The command centre (skeleton): a map on our own road tiles.
import maplibregl from "maplibre-gl";

export function start(root) {
  root.innerHTML = '<div id="map" style="position:absolute;inset:0"></div>';
  return new maplibregl.Map({ container: "map", style: { version: 8, sources: {}, layers: [] } });
}
