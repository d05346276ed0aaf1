// MovingLayer: many moving objects (20,000 at 1 Hz and more) drawn by a MapLibre custom WebGL layer from binary
// attributes, so an update is one pass over typed arrays and one buffer upload, with no GeoJSON, no trip through
// MapLibre's worker and no re-tiling. Chosen by measurement (docs/benchmarks.md, "Command-centre UI"; bench/ui.py).
//
// API (everything the responders layer needs):
//
//   import { MovingLayer, STATUS_CODES } from "./moving/layer.js";
//   const layer = new MovingLayer({ id: "responders-fast", palette, radius: [[10, 4], [15, 8]], cache: true,
//                                   cacheMargin: 128 });   // radius: [zoom, CSS px] stops; all options optional
//   map.addLayer(layer, beforeId);                     // a MapLibre custom layer (type "custom", 2d)
//   layer.setPositions(ids, lon, lat, heading, status); // N objects, replaces the previous set
//       ids      Array or Uint32Array of length N: what pick() and positionOf() answer (kept by reference)
//       lon, lat Float64Array / Float32Array / Array of degrees (WGS84, the order everywhere in SafeCity)
//       heading  degrees clockwise from north, or NaN (or null for all) when the object is not moving: no arrow
//       status   Uint8Array of status codes, index into the palette (STATUS_CODES maps the responder statuses);
//                HIDDEN (255) skips an object
//   layer.setProjected(ids, data, n, origin, bbox)     // the same, projected off the main thread (moving/project.js)
//   layer.setPalette(palette)     // [[r, g, b], ...] 0-255, up to 16 entries, index = status code (opaque)
//   layer.pick({x, y}, maxPx = 10) -> {id, index} | null   // the nearest object drawn under a screen point
//   layer.positionOf(id) -> [lon, lat] | null
//   layer.count, layer.stats      // {updates, lastUpdateMs, lastUploadMs, drawnVersion, cacheDraws}
//   layer.onDrawn = (version) => {...}  // called after the first frame that drew the positions of update `version`
//   map.setLayoutProperty(layer.id, "visibility", "none" | "visible") hides and shows it like any layer.
//   arraysFrom(items) -> {ids, lon, lat, heading, status}   // from [{id, lon, lat, heading, status}] (the UI's
//       responders: status by name through STATUS_CODES, heading null when still, no position: left out)
//
// Wiring it as the responders layer: keep layers/responders.js for labels, ETA lines and clicks at street zoom if
// wanted, and draw the dots with this layer:
//   const fast = new MovingLayer({ id: "responders-fast" });
//   map.addLayer(fast);
//   update(responders) { const a = arraysFrom(responders.values()); fast.setPositions(a.ids, a.lon, a.lat,
//                        a.heading, a.status); }
//   map.on("click", (e) => { const hit = fast.pick(e.point); if (hit) onClick(hit.id); });
//
// Positions are projected to Web Mercator once per update on the CPU, in float64, and stored relative to a fixed
// origin in float32 (the origin's translation is folded into the matrix in float64), so objects do not jitter at
// street zoom. The upload happens in the next frame (prerender), once per update, whatever the frame rate.
//
// With `cache` (the default) the objects are drawn into a texture covering the view plus `cacheMargin` pixels, and
// each frame lays that texture on the map as one quad: panning costs one textured rectangle a frame instead of
// 20,000 sprites (WebGL here is SwiftShader on the CPU, where pixels drawn are what a frame costs). The objects are
// drawn again on an update, when the view leaves the margin, and when a zoom, rotation or tilt ends (during a zoom
// gesture the texture is scaled until the zoom moved CACHE_ZOOM_SLACK). `cache: false` draws the sprites every frame.

import { FLOATS, MAX_PALETTE, mercatorX, mercatorY, pack } from "./project.js";

export const HIDDEN = 255;
export const STATUS_CODES = { available: 0, dispatched: 1, en_route: 2, on_scene: 3, out_of_service: 4 };
const CACHE_MARGIN_PX = 128; // CSS pixels of objects drawn beyond each edge of the view, so panning reuses them
const ARROW_MIN_PX = 6; // dot radius (CSS px) from which moving objects get a heading arrow
const CACHE_ZOOM_SLACK = 0.5; // during a zoom gesture the cached texture is scaled until the zoom moved this far

// Typed arrays for setPositions from objects {id, lon, lat, heading, status} (status a STATUS_CODES name or code).
export function arraysFrom(items) {
  const list = [];
  for (const it of items) if (it.lon !== null && it.lon !== undefined && it.lat !== null && it.lat !== undefined) list.push(it);
  const n = list.length;
  const out = {
    ids: new Array(n),
    lon: new Float64Array(n),
    lat: new Float64Array(n),
    heading: new Float32Array(n),
    status: new Uint8Array(n),
  };
  list.forEach((it, i) => {
    out.ids[i] = it.id;
    out.lon[i] = it.lon;
    out.lat[i] = it.lat;
    out.heading[i] = it.heading === null || it.heading === undefined ? NaN : it.heading;
    out.status[i] = typeof it.status === "number" ? it.status : (STATUS_CODES[it.status] ?? 4);
  });
  return out;
}

// The responders layer's colours (layers/responders.js), by STATUS_CODES.
export const DEFAULT_PALETTE = [
  [0x3e, 0xcf, 0x8e, 255],
  [0xf5, 0xa6, 0x23, 255],
  [0xf5, 0xa6, 0x23, 255],
  [0xe8, 0x46, 0x5a, 255],
  [0x7a, 0x82, 0x91, 255],
];

const VERTEX = `#version 300 es
precision highp float;
in vec4 a_object;            // x, y relative to the origin (mercator units), heading (rad, < -6 when none), status
uniform mat4 u_matrix;       // the map's model-view-projection, translated to the origin (float64 on the CPU)
uniform float u_size;        // sprite size in device pixels
uniform float u_bearing;     // map bearing (rad)
uniform vec4 u_palette[${MAX_PALETTE}];
out vec4 v_colour;
out vec2 v_dir;              // heading on screen (sin, cos); (0, 0) when there is no arrow
void main() {
  int status = int(a_object.w + 0.5);
  if (status >= ${MAX_PALETTE}) {   // HIDDEN: outside the clip volume
    gl_Position = vec4(2.0, 2.0, 2.0, 1.0);
    gl_PointSize = 0.0;
    return;
  }
  v_colour = u_palette[status];
  float h = a_object.z - u_bearing;
  v_dir = a_object.z < -6.0 ? vec2(0.0) : vec2(sin(h), cos(h));
  gl_Position = u_matrix * vec4(a_object.xy, 0.0, 1.0);
  gl_PointSize = u_size;
}`;

const QUAD_VERTEX = `#version 300 es
precision highp float;
in vec4 a_corner;            // x, y relative to the origin (mercator units), u, v
uniform mat4 u_matrix;
out vec2 v_uv;
void main() {
  v_uv = a_corner.zw;
  gl_Position = u_matrix * vec4(a_corner.xy, 0.0, 1.0);
}`;

const QUAD_FRAGMENT = `#version 300 es
precision mediump float;
uniform sampler2D u_texture;
in vec2 v_uv;
out vec4 fragColor;
void main() {
  // The dots are opaque with hard edges: a texel is an object's colour or empty, so no blending is needed.
  vec4 c = texture(u_texture, v_uv);
  if (c.a < 0.5) discard;
  fragColor = c;
}`;

// A dot with a dark rim and, for a moving object when the dots are big enough to show it, an arrow tip pointing along
// its heading. u_rim: where the fill and the rim end, as fractions of the sprite's half size.
const FRAGMENT = `#version 300 es
precision mediump float;
uniform vec2 u_rim;
in vec4 v_colour;
in vec2 v_dir;
out vec4 fragColor;
void main() {
  vec2 p = gl_PointCoord * 2.0 - 1.0;          // y grows downwards on screen
  float r = length(p);
  if (r > 1.0) discard;
  vec4 colour = v_colour;
  if (r > u_rim.y) {
    if (v_dir == vec2(0.0)) discard;
    // along: distance in the heading direction; across: distance off its axis
    float along = dot(p, vec2(v_dir.x, -v_dir.y));
    float across = abs(dot(p, vec2(v_dir.y, v_dir.x)));
    if (along < 0.6 || across > (1.0 - along) * 0.9) discard;
  } else if (r > u_rim.x) {
    colour = vec4(0.043, 0.071, 0.125, 1.0);
  }
  fragColor = vec4(colour.rgb, 1.0);
}`;

function compile(gl, type, source) {
  const shader = gl.createShader(type);
  gl.shaderSource(shader, source);
  gl.compileShader(shader);
  if (!gl.getShaderParameter(shader, gl.COMPILE_STATUS)) throw new Error(`MovingLayer shader: ${gl.getShaderInfoLog(shader)}`);
  return shader;
}

function interpolate(stops, zoom) {
  if (zoom <= stops[0][0]) return stops[0][1];
  for (let i = 1; i < stops.length; i++) {
    const [z1, v1] = stops[i];
    if (zoom <= z1) {
      const [z0, v0] = stops[i - 1];
      return v0 + ((v1 - v0) * (zoom - z0)) / (z1 - z0);
    }
  }
  return stops[stops.length - 1][1];
}

export class MovingLayer {
  constructor({
    id = "moving",
    palette = DEFAULT_PALETTE,
    radius = [[10, 4], [15, 8]],
    cache = true,
    cacheMargin = CACHE_MARGIN_PX,
  } = {}) {
    this.id = id;
    this.type = "custom";
    this.renderingMode = "2d";
    this.radius = radius;
    this.cache = cache;
    this.cacheMargin = cacheMargin;
    this._cacheMatrix = new Float32Array(16);
    this.count = 0;
    this.ids = [];
    this.stats = { updates: 0, lastUpdateMs: 0, lastUploadMs: 0, drawnVersion: 0, cacheDraws: 0 };
    this.onDrawn = null;
    this._data = new Float32Array(0);
    this._origin = null; // [x, y] mercator, float64, fixed at the first update
    this._bbox = [Infinity, Infinity, -Infinity, -Infinity];
    this._version = 0; // bumped by every setPositions
    this._uploaded = 0; // the version in the GPU buffer
    this._capacity = 0; // objects the GPU buffer holds
    this._index = null; // id -> index, built on demand
    this._matrix = new Float32Array(16);
    this.setPalette(palette);
  }

  setPalette(palette) {
    this._palette = new Float32Array(MAX_PALETTE * 4);
    palette.slice(0, MAX_PALETTE).forEach((c, i) => {
      for (let k = 0; k < 4; k++) this._palette[i * 4 + k] = (c[k] ?? 255) / 255;
    });
    this.map?.triggerRepaint();
  }

  setPositions(ids, lon, lat, heading, status) {
    const t0 = performance.now();
    const n = lon.length;
    if (lat.length !== n || status.length !== n || ids.length !== n || (heading && heading.length !== n)) {
      throw new Error("MovingLayer.setPositions: ids, lon, lat, heading and status must have the same length");
    }
    if (this._data.length < n * FLOATS) this._data = new Float32Array(Math.max(n, 1024) * FLOATS);
    if (this._origin === null && n > 0) this._origin = [mercatorX(lon[0]), mercatorY(lat[0])];
    this._bbox = pack(lon, lat, heading, status, this._origin ?? [0, 0], this._data);
    this.ids = ids;
    this.count = n;
    this._index = null;
    this._version += 1;
    this.stats.updates += 1;
    this.stats.lastUpdateMs = performance.now() - t0;
    this.map?.triggerRepaint();
    return this._version;
  }

  // The same from attributes already projected (a worker's `pack` output, moving/project.js): `data` holds FLOATS
  // per object relative to `origin`, and is kept (transfer it, do not reuse it).
  setProjected(ids, data, n, origin, bbox) {
    const t0 = performance.now();
    this._data = data;
    this._origin = origin;
    this._bbox = bbox;
    this.ids = ids;
    this.count = n;
    this._index = null;
    this._version += 1;
    this.stats.updates += 1;
    this.stats.lastUpdateMs = performance.now() - t0;
    this.map?.triggerRepaint();
    return this._version;
  }

  positionOf(id) {
    if (this._index === null) {
      this._index = new Map();
      for (let i = 0; i < this.count; i++) this._index.set(this.ids[i], i);
    }
    const i = this._index.get(id);
    return i === undefined ? null : this._lngLat(i);
  }

  pick(point, maxPx = 10) {
    if (!this.map || this.count === 0 || this._origin === null) return null;
    const { lng, lat } = this.map.unproject([point.x, point.y]);
    const worldPx = 512 * 2 ** this.map.getZoom();
    const x = mercatorX(lng) - this._origin[0];
    const y = mercatorY(lat) - this._origin[1];
    let best = -1;
    let bestD = (maxPx / worldPx) ** 2;
    const data = this._data;
    for (let i = 0, j = 0; i < this.count; i++, j += FLOATS) {
      if (data[j + 3] >= MAX_PALETTE) continue;
      const d = (data[j] - x) ** 2 + (data[j + 1] - y) ** 2;
      if (d <= bestD) {
        bestD = d;
        best = i; // later objects are drawn on top: the last within reach wins ties
      }
    }
    return best < 0 ? null : { id: this.ids[best], index: best };
  }

  _lngLat(i) {
    const x = this._data[i * FLOATS] + this._origin[0];
    const y = this._data[i * FLOATS + 1] + this._origin[1];
    const lon = x * 360 - 180;
    const lat = (360 / Math.PI) * Math.atan(Math.exp(((180 - y * 360) * Math.PI) / 180)) - 90;
    return [lon, lat];
  }

  onAdd(map, gl) {
    this.map = map;
    if (!(typeof WebGL2RenderingContext !== "undefined" && gl instanceof WebGL2RenderingContext)) {
      throw new Error("MovingLayer needs WebGL 2");
    }
    this._program = link(gl, VERTEX, FRAGMENT);
    this._u = uniforms(gl, this._program, ["u_matrix", "u_size", "u_bearing", "u_palette", "u_rim"]);
    this._buffer = gl.createBuffer();
    // Our own vertex array objects: MapLibre's bound one must not be touched.
    this._vao = gl.createVertexArray();
    gl.bindVertexArray(this._vao);
    gl.bindBuffer(gl.ARRAY_BUFFER, this._buffer);
    const at = gl.getAttribLocation(this._program, "a_object");
    gl.enableVertexAttribArray(at);
    gl.vertexAttribPointer(at, 4, gl.FLOAT, false, 0, 0);
    if (this.cache) {
      this._quadProgram = link(gl, QUAD_VERTEX, QUAD_FRAGMENT);
      this._qu = uniforms(gl, this._quadProgram, ["u_matrix", "u_texture"]);
      this._quadBuffer = gl.createBuffer();
      this._quadVao = gl.createVertexArray();
      gl.bindVertexArray(this._quadVao);
      gl.bindBuffer(gl.ARRAY_BUFFER, this._quadBuffer);
      gl.bufferData(gl.ARRAY_BUFFER, 16 * 4, gl.DYNAMIC_DRAW);
      const corner = gl.getAttribLocation(this._quadProgram, "a_corner");
      gl.enableVertexAttribArray(corner);
      gl.vertexAttribPointer(corner, 4, gl.FLOAT, false, 0, 0);
      this._texture = gl.createTexture();
      this._framebuffer = gl.createFramebuffer();
      this._target = [0, 0];
      this._cached = null;
      this._onMoveEnd = () => map.triggerRepaint(); // redraw the cache sharp once a zoom or rotation ends
      map.on("moveend", this._onMoveEnd);
    }
    gl.bindVertexArray(null);
    this._capacity = 0;
    this._uploaded = 0;
  }

  onRemove(map, gl) {
    gl.deleteBuffer(this._buffer);
    gl.deleteVertexArray(this._vao);
    gl.deleteProgram(this._program);
    if (this.cache) {
      map.off("moveend", this._onMoveEnd);
      gl.deleteBuffer(this._quadBuffer);
      gl.deleteVertexArray(this._quadVao);
      gl.deleteProgram(this._quadProgram);
      gl.deleteTexture(this._texture);
      gl.deleteFramebuffer(this._framebuffer);
    }
    this.map = null;
  }

  prerender(gl, options) {
    if (this._uploaded !== this._version) {
      const t0 = performance.now();
      gl.bindBuffer(gl.ARRAY_BUFFER, this._buffer);
      if (this._capacity < this.count) {
        gl.bufferData(gl.ARRAY_BUFFER, this._data.byteLength, gl.DYNAMIC_DRAW);
        this._capacity = this._data.length / FLOATS;
      }
      gl.bufferSubData(gl.ARRAY_BUFFER, 0, this._data.subarray(0, this.count * FLOATS));
      this._uploaded = this._version;
      this.stats.lastUploadMs = performance.now() - t0;
    }
    if (this.cache && this.count > 0 && this._origin !== null && this._cacheStale(gl)) this._drawCache(gl, options);
  }

  render(gl, options) {
    if (this.count === 0 || this._origin === null) return;
    const matrix = this._originMatrix(options.modelViewProjectionMatrix);
    // Opaque dots with hard edges (the palette's alpha is ignored): no blending, a pixel is drawn or discarded,
    // which saves reading back the frame under every pixel of the quad.
    gl.disable(gl.BLEND);
    if (this.cache && this._cached !== null) {
      if (this._cached.empty) return this._drawn();
      gl.useProgram(this._quadProgram);
      gl.uniformMatrix4fv(this._qu.u_matrix, false, matrix);
      gl.activeTexture(gl.TEXTURE0);
      gl.bindTexture(gl.TEXTURE_2D, this._texture);
      gl.uniform1i(this._qu.u_texture, 0);
      gl.bindVertexArray(this._quadVao);
      gl.drawArrays(gl.TRIANGLE_STRIP, 0, 4);
    } else {
      this._drawPoints(gl, matrix);
    }
    gl.bindVertexArray(null);
    this._drawn();
  }

  _drawn() {
    if (this.stats.drawnVersion !== this._uploaded) {
      this.stats.drawnVersion = this._uploaded;
      this.onDrawn?.(this._uploaded);
    }
  }

  // MapLibre's matrix takes world pixels (mercator × worldSize): matrix × scale(worldSize) × translate(origin), in
  // float64 before the float32 upload.
  _originMatrix(m, out = this._matrix) {
    const [ox, oy] = this._origin;
    const ws = 512 * 2 ** this.map.getZoom();
    for (let k = 0; k < 8; k++) out[k] = m[k] * ws;
    for (let k = 8; k < 12; k++) out[k] = m[k];
    for (let r = 0; r < 4; r++) out[12 + r] = ws * (m[r] * ox + m[4 + r] * oy) + m[12 + r];
    return out;
  }

  _drawPoints(gl, matrix) {
    const dpr = window.devicePixelRatio || 1;
    const radius = interpolate(this.radius, this.map.getZoom()) * dpr;
    // Arrows only on dots of ARROW_MIN_PX and more: below, they are unreadable and would double the pixels drawn.
    const arrows = radius >= ARROW_MIN_PX * dpr;
    const size = arrows ? (2 * radius) / 0.62 : 2 * radius;
    gl.useProgram(this._program);
    gl.uniformMatrix4fv(this._u.u_matrix, false, matrix);
    gl.uniform1f(this._u.u_size, size);
    gl.uniform1f(this._u.u_bearing, (this.map.getBearing() * Math.PI) / 180);
    gl.uniform4fv(this._u.u_palette, this._palette);
    if (arrows) gl.uniform2f(this._u.u_rim, 0.5, 0.62);
    else gl.uniform2f(this._u.u_rim, 1 - 1.2 / radius, 1.0);
    gl.bindVertexArray(this._vao);
    gl.drawArrays(gl.POINTS, 0, this.count);
  }

  // The cache is a texture of the objects over the view and a margin around it, laid on the map as a quad: panning
  // moves the quad (one textured rectangle a frame) and the objects are drawn again only when they move, when the
  // view leaves the margin, or when a zoom, rotation or tilt changed (during a gesture only past CACHE_ZOOM_SLACK).
  _cacheStale(gl) {
    const c = this._cached;
    const map = this.map;
    if (c === null || c.version !== this._uploaded) return true;
    if (c.width !== gl.drawingBufferWidth || c.height !== gl.drawingBufferHeight) return true;
    const moving = map.isMoving();
    const zoom = map.getZoom();
    if (Math.abs(zoom - c.zoom) > (moving ? CACHE_ZOOM_SLACK : 1e-9)) return true;
    if (!moving && (map.getBearing() !== c.bearing || map.getPitch() !== c.pitch)) return true;
    // every corner of the view inside the cached quad (convex, in mercator relative to the origin)
    const canvas = map.getCanvas();
    const w = canvas.clientWidth;
    const h = canvas.clientHeight;
    for (const [x, y] of [[0, 0], [w, 0], [w, h], [0, h]]) {
      if (!insideQuad(this._relative(map.unproject([x, y])), c.ring)) return true;
    }
    return false;
  }

  _relative(lngLat) {
    return [mercatorX(lngLat.lng) - this._origin[0], mercatorY(lngLat.lat) - this._origin[1]];
  }

  _drawCache(gl, options) {
    const map = this.map;
    const dpr = window.devicePixelRatio || 1;
    const width = gl.drawingBufferWidth;
    const height = gl.drawingBufferHeight;
    const margin = Math.round(this.cacheMargin * dpr);
    const tw = width + 2 * margin;
    const th = height + 2 * margin;
    gl.bindTexture(gl.TEXTURE_2D, this._texture);
    if (this._target[0] !== tw || this._target[1] !== th) {
      gl.texImage2D(gl.TEXTURE_2D, 0, gl.RGBA, tw, th, 0, gl.RGBA, gl.UNSIGNED_BYTE, null);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MIN_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_MAG_FILTER, gl.NEAREST);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_S, gl.CLAMP_TO_EDGE);
      gl.texParameteri(gl.TEXTURE_2D, gl.TEXTURE_WRAP_T, gl.CLAMP_TO_EDGE);
      gl.bindFramebuffer(gl.FRAMEBUFFER, this._framebuffer);
      gl.framebufferTexture2D(gl.FRAMEBUFFER, gl.COLOR_ATTACHMENT0, gl.TEXTURE_2D, this._texture, 0);
      this._target = [tw, th];
    }
    gl.bindTexture(gl.TEXTURE_2D, null);
    gl.bindFramebuffer(gl.FRAMEBUFFER, this._framebuffer);
    gl.viewport(0, 0, tw, th);
    gl.disable(gl.SCISSOR_TEST);
    gl.disable(gl.DEPTH_TEST);
    gl.disable(gl.STENCIL_TEST);
    gl.colorMask(true, true, true, true);
    gl.clearColor(0, 0, 0, 0);
    gl.clear(gl.COLOR_BUFFER_BIT);
    gl.disable(gl.BLEND);
    // the view's matrix, its clip space shrunk so the view plus the margin fills the texture
    const matrix = this._originMatrix(options.modelViewProjectionMatrix, this._cacheMatrix);
    for (let col = 0; col < 4; col++) {
      matrix[col * 4] *= width / tw;
      matrix[col * 4 + 1] *= height / th;
    }
    this._drawPoints(gl, matrix);
    gl.bindVertexArray(null);
    gl.bindFramebuffer(gl.FRAMEBUFFER, null);
    // the texture's corners on the map: texture (0, 0) is the bottom left of the enlarged view
    const m = margin / dpr;
    const cw = width / dpr;
    const ch = height / dpr;
    const bl = this._relative(map.unproject([-m, ch + m]));
    const br = this._relative(map.unproject([cw + m, ch + m]));
    const tl = this._relative(map.unproject([-m, -m]));
    const tr = this._relative(map.unproject([cw + m, -m]));
    // The quad covers only the part of the texture where objects are (their bounding box and a sprite around it):
    // the pixels of a frame are what it costs here. A rotated or tilted view keeps the whole quad.
    let quad = [...bl, 0, 0, ...br, 1, 0, ...tl, 0, 1, ...tr, 1, 1];
    let empty = false;
    if (map.getBearing() === 0 && map.getPitch() === 0) {
      const pad = (interpolate(this.radius, map.getZoom()) / 0.62 + 2) / (512 * 2 ** map.getZoom());
      const [left, top] = tl;
      const [right, bottom] = br; // mercator y grows southwards
      const x0 = Math.max(left, this._bbox[0] - pad);
      const x1 = Math.min(right, this._bbox[2] + pad);
      const y0 = Math.max(top, this._bbox[1] - pad);
      const y1 = Math.min(bottom, this._bbox[3] + pad);
      empty = !(x0 < x1 && y0 < y1);
      if (!empty) {
        const u = (x) => (x - left) / (right - left);
        const v = (y) => (bottom - y) / (bottom - top);
        quad = [x0, y1, u(x0), v(y1), x1, y1, u(x1), v(y1), x0, y0, u(x0), v(y0), x1, y0, u(x1), v(y0)];
      }
    }
    gl.bindBuffer(gl.ARRAY_BUFFER, this._quadBuffer);
    gl.bufferSubData(gl.ARRAY_BUFFER, 0, new Float32Array(quad));
    this._cached = {
      empty,
      version: this._uploaded,
      width,
      height,
      zoom: map.getZoom(),
      bearing: map.getBearing(),
      pitch: map.getPitch(),
      ring: [bl, br, tr, tl],
    };
    this.stats.cacheDraws += 1;
  }
}

function link(gl, vertex, fragment) {
  const program = gl.createProgram();
  gl.attachShader(program, compile(gl, gl.VERTEX_SHADER, vertex));
  gl.attachShader(program, compile(gl, gl.FRAGMENT_SHADER, fragment));
  gl.linkProgram(program);
  if (!gl.getProgramParameter(program, gl.LINK_STATUS)) throw new Error(`MovingLayer: ${gl.getProgramInfoLog(program)}`);
  return program;
}

function uniforms(gl, program, names) {
  return Object.fromEntries(names.map((name) => [name, gl.getUniformLocation(program, name)]));
}

function insideQuad([x, y], ring) {
  let sign = 0;
  for (let i = 0; i < 4; i++) {
    const [ax, ay] = ring[i];
    const [bx, by] = ring[(i + 1) % 4];
    const side = Math.sign((bx - ax) * (y - ay) - (by - ay) * (x - ax));
    if (side === 0) continue;
    if (sign === 0) sign = side;
    else if (side !== sign) return false;
  }
  return true;
}
