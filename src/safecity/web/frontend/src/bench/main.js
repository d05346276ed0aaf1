// The UI bench page (bench/ui.py drives it): a MapLibre map at the district, panned every frame, fed N moving objects
// at 1 Hz by the server over a binary WebSocket, drawn by one rendering path (?path=custom|geojson). It measures frame
// rate, the main-thread time of each update, and the time from the server's send stamp to the pixel change (the last
// object is a marker that jumps and changes colour on every update; readPixels at its new place confirms the frame).
//
// Frame (little endian): f64 server send time (ms since the epoch), u32 seq, u32 n, then f32 lon[n], f32 lat[n],
// f32 heading[n] (degrees, NaN: not moving), u32 id[n], u8 status[n].
import maplibregl from "maplibre-gl";
import "maplibre-gl/dist/maplibre-gl.css";
import { DEFAULT_PALETTE, MovingLayer } from "../moving/layer.js";
import { pack } from "../moving/project.js";
import { GeoJsonPath } from "./geojson.js";

const params = new URLSearchParams(location.search);
const PATH = params.get("path") || "custom";
const CENTER = [121.25, 31.37];
const ZOOM = Number(params.get("zoom") || 11.2); // the whole district (and every object) in view
const PAN_PX = 40;
// The feed is decoded and projected in a worker (?worker=0: on the main thread, as the first versions did).
const WORKER = params.get("worker") !== "0";
const worker = WORKER ? new Worker(new URL("./feed-worker.js", import.meta.url), { type: "module" }) : null;
// The pixel read-back that confirms an update on screen stalls the main thread until the GPU finished the frame
// (a long task a probe), so bench/ui.py counts frames with it off and measures latency in windows of their own.
let probing = params.get("probe") !== "0"; // radius of the circular pan, screen pixels
export const MARKER_COLOURS = { 14: [255, 0, 255, 255], 15: [0, 255, 255, 255] };

const palette = [...DEFAULT_PALETTE];
while (palette.length < 14) palette.push([200, 200, 200, 255]);
palette[14] = MARKER_COLOURS[14];
palette[15] = MARKER_COLOURS[15];

const map = new maplibregl.Map({
  container: "map",
  style: {
    version: 8,
    sources: {},
    layers: [{ id: "background", type: "background", paint: { "background-color": "#0b1220" } }],
  },
  center: CENTER,
  zoom: ZOOM,
  attributionControl: false,
  fadeDuration: 0,
});

const layer = PATH === "geojson" ? new GeoJsonPath(map, palette) : new MovingLayer({ id: "moving", palette, cache: params.get("cache") !== "0",
  ...(params.has("margin") ? { cacheMargin: Number(params.get("margin")) } : {}),
});
const state = {
  mode: "idle",
  socket: null,
  frames: 0,
  updates: [], // main-thread ms per update (decode + setPositions, + upload for the custom path)
  latencies: [], // server send -> frame with the marker's new pixel presented (ms)
  receive: [], // server send -> message handler (ms)
  longTasks: 0,
  longTaskLog: [], // [ms after the last update arrived, duration ms]
  lastMessageAt: 0,
  pending: [], // updates not yet seen on screen, oldest first
  firstRenderMs: null,
  panning: false,
  panStart: 0,
};
let resolveFirst;
const firstRender = new Promise((resolve) => (resolveFirst = resolve));

new PerformanceObserver((list) => {
  for (const entry of list.getEntries()) {
    state.longTasks += 1;
    state.longTaskLog.push([Math.round(entry.startTime - state.lastMessageAt), Math.round(entry.duration)]);
  }
}).observe({ type: "longtask" });

let layerAdded = false;
let early = null; // the first frame, when it comes before the map is ready

function onMessage(event) {
  if (!layerAdded) {
    early = event;
    return;
  }
  const t0 = performance.now();
  state.lastMessageAt = t0;
  const buf = event.data;
  const head = new DataView(buf, 0, 16);
  const sent = head.getFloat64(0, true);
  const seq = head.getUint32(8, true);
  const n = head.getUint32(12, true);
  let at = 16;
  const lon = new Float32Array(buf, at, n);
  const lat = new Float32Array(buf, (at += 4 * n), n);
  const heading = new Float32Array(buf, (at += 4 * n), n);
  const ids = new Uint32Array(buf, (at += 4 * n), n);
  const status = new Uint8Array(buf, at + 4 * n, n);
  const version = layer.setPositions(ids, lon, lat, heading, status);
  handlers.set(version, performance.now() - t0);
  state.receive.push(Date.now() - sent);
  state.pending.push({ seq, sent, version, lon: lon[n - 1], lat: lat[n - 1], colour: palette[status[n - 1]] });
}

// After every frame: when the pending update's positions went to the GPU, look for the marker at its new place.
const pixel = new Uint8Array(4);
const handlers = new Map(); // version -> main-thread ms of its message handler
let lastDrawn = 0;
let probe = null; // a pixel read in flight: {sync, update, shown}
map.on("render", () => {
  state.frames += 1;
  if (layer.stats.drawnVersion !== lastDrawn) {
    // one update's main-thread cost: its handler (decode, project) and, on the custom path, the buffer upload
    lastDrawn = layer.stats.drawnVersion;
    const handler = handlers.get(lastDrawn);
    if (handler !== undefined) state.updates.push(handler + layer.stats.lastUploadMs);
    handlers.clear();
  }
  const gl = map.painter.context.gl;
  if (probe !== null) {
    // Read back without stalling: the pixel was copied into a buffer behind a fence; look once the fence passed.
    if (gl.clientWaitSync(probe.sync, 0, 0) === gl.TIMEOUT_EXPIRED) return;
    gl.deleteSync(probe.sync);
    gl.bindBuffer(gl.PIXEL_PACK_BUFFER, probe.pbo);
    gl.getBufferSubData(gl.PIXEL_PACK_BUFFER, 0, pixel);
    gl.bindBuffer(gl.PIXEL_PACK_BUFFER, null);
    gl.deleteBuffer(probe.pbo);
    const { update, shown } = probe;
    probe = null;
    const c = update.colour;
    if (Math.abs(pixel[0] - c[0]) < 8 && Math.abs(pixel[1] - c[1]) < 8 && Math.abs(pixel[2] - c[2]) < 8) {
      const now = Date.now();
      for (const u of shown) state.latencies.push(now - u.sent);
      state.pending = state.pending.filter((u) => u.version > update.version);
      if (state.firstRenderMs === null) {
        state.firstRenderMs = performance.now();
        resolveFirst(state.firstRenderMs);
      }
    }
  }
  const p = state.pending[state.pending.length - 1];
  if (p === undefined || layer.stats.drawnVersion < p.version || !probing) return;
  // this frame drew the latest update: copy the marker's pixel (earlier updates reach the screen with it)
  const at = map.project([p.lon, p.lat]);
  const dpr = window.devicePixelRatio || 1;
  const pbo = gl.createBuffer();
  gl.bindBuffer(gl.PIXEL_PACK_BUFFER, pbo);
  gl.bufferData(gl.PIXEL_PACK_BUFFER, 4, gl.STREAM_READ);
  gl.readPixels(Math.round(at.x * dpr), Math.round(gl.drawingBufferHeight - at.y * dpr), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, 0);
  gl.bindBuffer(gl.PIXEL_PACK_BUFFER, null);
  probe = { pbo, sync: gl.fenceSync(gl.SYNC_GPU_COMMANDS_COMPLETE, 0), update: p, shown: state.pending.slice() };
  gl.flush();
});

const base = maplibregl.MercatorCoordinate.fromLngLat(CENTER);
function pan(now) {
  if (state.panning) {
    // a circle of PAN_PX pixels around the district's centre, a new centre every frame
    const a = ((now - state.panStart) / 1000) * 2; // 2 rad/s
    const r = PAN_PX / (512 * 2 ** ZOOM);
    const c = new maplibregl.MercatorCoordinate(base.x + r * Math.cos(a), base.y + r * Math.sin(a)).toLngLat();
    map.jumpTo({ center: c });
  }
  requestAnimationFrame(pan);
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = `${scheme}://${location.host}/bench/moving?n=${params.get("n") || 20000}`;
  if (WORKER) {
    // the worker holds the socket, decodes and projects; the page gets packed attributes
    return new Promise((resolve) => {
      worker.onmessage = (event) => {
        if (event.data.open) resolve();
        else onProjected(event.data);
      };
      worker.postMessage({ connect: url });
      state.socket = { close: () => worker.postMessage({ close: true }) };
    });
  }
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url);
    socket.binaryType = "arraybuffer";
    socket.onmessage = onMessage;
    socket.onopen = () => resolve(socket);
    socket.onerror = reject;
    state.socket = socket;
  });
}

function onProjected(update) {
  if (!layerAdded) {
    early = update;
    return;
  }
  const t0 = performance.now();
  state.lastMessageAt = t0;
  const { sent, seq, n, ids, data, origin, bbox, marker } = update;
  const version = layer.setProjected
    ? layer.setProjected(ids, data, n, origin, bbox)
    : layer.setPositions(ids, ...unpack(data, n, origin));
  handlers.set(version, performance.now() - t0);
  state.receive.push(Date.now() - sent);
  state.pending.push({ seq, sent, version, lon: marker.lon, lat: marker.lat, colour: palette[marker.status] });
}

// GeoJSON path with the worker: back to degrees (comparison only)
function unpack(data, n, origin) {
  const lon = new Float64Array(n);
  const lat = new Float64Array(n);
  const heading = new Float32Array(n);
  const status = new Uint8Array(n);
  for (let i = 0; i < n; i++) {
    const x = data[i * 4] + origin[0];
    const y = data[i * 4 + 1] + origin[1];
    lon[i] = x * 360 - 180;
    lat[i] = (360 / Math.PI) * Math.atan(Math.exp(((180 - y * 360) * Math.PI) / 180)) - 90;
    heading[i] = data[i * 4 + 2] < -6 ? NaN : (data[i * 4 + 2] * 180) / Math.PI;
    status[i] = data[i * 4 + 3];
  }
  return [lon, lat, heading, status];
}

function disconnect() {
  state.socket?.close();
  state.socket = null;
  state.pending = [];
  if (probe !== null) {
    map.painter.context.gl.deleteSync(probe.sync);
    map.painter.context.gl.deleteBuffer(probe.pbo);
    probe = null;
  }
}

function setMode(mode) {
  state.mode = mode;
  const visible = mode === "moving";
  map.setLayoutProperty(layer.id, "visibility", visible ? "visible" : "none");
  map.triggerRepaint();
  return visible ? connect() : Promise.resolve(disconnect());
}

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// One measurement: switch to `mode`, let it settle, then count frames and collect updates for `windowMs`.
async function measure(mode, warmupMs, windowMs) {
  if (state.mode !== mode) await setMode(mode);
  await sleep(warmupMs);
  state.frames = 0;
  state.updates = [];
  state.latencies = [];
  state.receive = [];
  state.longTasks = 0;
  state.longTaskLog = [];
  const t0 = performance.now();
  await sleep(windowMs);
  const seconds = (performance.now() - t0) / 1000;
  return {
    mode,
    path: PATH,
    fps: state.frames / seconds,
    frames: state.frames,
    seconds,
    updates: state.updates.slice(),
    latencies: state.latencies.slice(),
    receive: state.receive.slice(),
    longTasks: state.longTasks,
    longTaskLog: state.longTaskLog.slice(),
  };
}

window.bench = {
  path: PATH,
  state,
  pack, // tests: what a feed worker does before MovingLayer.setProjected
  layer,
  map,
  firstRender,
  measure,
  setMode,
  loaded: new Promise((resolve) => map.once("load", resolve)),
  startPan() {
    state.panStart = performance.now();
    state.panning = true;
  },
  stopPan() {
    state.panning = false;
  },
  setProbe(on) {
    probing = on;
    state.pending = [];
  },
  // What one frame costs the GPU, case by case, feed closed and panning stopped: `map.redraw()` then a 1-pixel
  // readPixels that waits for the frame; the cases alternate `reps` times, the fastest of each is kept (the least
  // disturbed by other work on the machine). Custom path only: empty (layer hidden), cached (the texture quad),
  // redraw (the objects drawn into the texture, as after an update, and the quad), direct (sprites to the screen).
  async frameCosts(reps = 12) {
    disconnect();
    state.panning = false;
    const gl = map.painter.context.gl;
    const px = new Uint8Array(4);
    const show = (visible) => map.setLayoutProperty(layer.id, "visibility", visible ? "visible" : "none");
    const cases = {
      empty: () => show(false),
      cached: () => {
        show(true);
        layer.cache = true;
      },
      redraw: () => {
        show(true);
        layer.cache = true;
        layer._cached = null;
      },
      direct: () => {
        show(true);
        layer.cache = false;
      },
    };
    const times = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
    for (let r = 0; r < reps; r++) {
      for (const [name, setUp] of Object.entries(cases)) {
        setUp();
        map.redraw();
        gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
        setUp();
        const t0 = performance.now();
        map.redraw();
        gl.readPixels(0, 0, 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, px);
        times[name].push(performance.now() - t0);
      }
      await sleep(50);
    }
    layer.cache = true;
    return Object.fromEntries(Object.entries(times).map(([k, v]) => [k, Math.min(...v)]));
  },
  // RGBA at a place after the next frame (tests): [r, g, b, a]
  probe(lon, lat) {
    return new Promise((resolve) => {
      map.once("render", () => {
        const gl = map.painter.context.gl;
        const at = map.project([lon, lat]);
        const dpr = window.devicePixelRatio || 1;
        const out = new Uint8Array(4);
        gl.readPixels(Math.round(at.x * dpr), Math.round(gl.drawingBufferHeight - at.y * dpr), 1, 1, gl.RGBA, gl.UNSIGNED_BYTE, out);
        resolve(Array.from(out));
      });
      map.triggerRepaint();
    });
  },
};

// The feed connects at once, while the map loads: the first frame is drawn as soon as the layer is there.
if (params.get("feed") !== "none") {
  state.mode = "moving";
  connect();
}
map.once("load", () => {
  if (layer.addTo) layer.addTo(map);
  else map.addLayer(layer);
  layerAdded = true;
  requestAnimationFrame(pan);
  if (early !== null) (WORKER ? onProjected : onMessage)(early);
  early = null;
});
