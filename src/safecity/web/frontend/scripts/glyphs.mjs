// Glyph PBFs for MapLibre's symbol layers, generated at build time from a font in Debian's packages (no network).
//
// MapLibre asks for `{fontstack}/{start}-{end}.pbf` (256 code points each): a protobuf `glyphs` message holding, per
// glyph, a signed distance field (SDF) of 24 px glyphs with a 3 px border. CJK ideographs are not generated: the map
// draws them with the browser's own fonts (`localIdeographFontFamily`), so this file covers Latin, Greek, Cyrillic,
// punctuation and symbols. The SDF is computed exactly from the font's outlines (distance to the nearest flattened
// edge, sign from the non-zero winding rule), so no rasterizer is needed.
//
// usage: node scripts/glyphs.mjs OUT_DIR [FONT.ttf]
import fs from "node:fs";
import path from "node:path";
import opentype from "opentype.js";
import Pbf from "pbf";

const SIZE = 24; // MapLibre's glyph size
const BUFFER = 3; // border around every bitmap
const RADIUS = 8; // SDF spread (px), as fontnik and TinySDF
const CUTOFF = 0.25; // share of the 0..255 range inside the outline
export const FONTSTACK = "DejaVu Sans";
const FONT_CANDIDATES = [
  "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
  "/usr/share/fonts/TTF/DejaVuSans.ttf",
];
// Ranges generated with glyphs (0x0000-0x2FFF); CJK blocks are drawn locally, anything else is an empty range.
const LAST_CODE = 0x2fff;

function flatten(commands, scale) {
  // Outline commands -> closed polylines in px (y down from the baseline).
  const rings = [];
  let ring = [];
  let x0 = 0;
  let y0 = 0;
  const pt = (x, y) => [x * scale, y * scale];
  for (const c of commands) {
    if (c.type === "M") {
      if (ring.length) rings.push(ring);
      ring = [pt(c.x, c.y)];
      x0 = c.x;
      y0 = c.y;
    } else if (c.type === "L") {
      ring.push(pt(c.x, c.y));
      x0 = c.x;
      y0 = c.y;
    } else if (c.type === "Q") {
      for (let i = 1; i <= 8; i++) {
        const t = i / 8;
        const a = (1 - t) * (1 - t);
        const b = 2 * (1 - t) * t;
        const d = t * t;
        ring.push(pt(a * x0 + b * c.x1 + d * c.x, a * y0 + b * c.y1 + d * c.y));
      }
      x0 = c.x;
      y0 = c.y;
    } else if (c.type === "C") {
      for (let i = 1; i <= 12; i++) {
        const t = i / 12;
        const a = (1 - t) ** 3;
        const b = 3 * (1 - t) ** 2 * t;
        const e = 3 * (1 - t) * t * t;
        const d = t ** 3;
        ring.push(pt(a * x0 + b * c.x1 + e * c.x2 + d * c.x, a * y0 + b * c.y1 + e * c.y2 + d * c.y));
      }
      x0 = c.x;
      y0 = c.y;
    } else if (c.type === "Z") {
      if (ring.length) rings.push(ring);
      ring = [];
    }
  }
  if (ring.length) rings.push(ring);
  return rings;
}

function segDist2(px, py, ax, ay, bx, by) {
  const dx = bx - ax;
  const dy = by - ay;
  const len = dx * dx + dy * dy;
  let t = len > 0 ? ((px - ax) * dx + (py - ay) * dy) / len : 0;
  t = Math.max(0, Math.min(1, t));
  const ex = ax + t * dx - px;
  const ey = ay + t * dy - py;
  return ex * ex + ey * ey;
}

function winding(px, py, rings) {
  let w = 0;
  for (const r of rings) {
    for (let i = 0, n = r.length; i < n; i++) {
      const [ax, ay] = r[i];
      const [bx, by] = r[(i + 1) % n];
      if (ay <= py) {
        if (by > py && (bx - ax) * (py - ay) - (px - ax) * (by - ay) > 0) w++;
      } else if (by <= py && (bx - ax) * (py - ay) - (px - ax) * (by - ay) < 0) w--;
    }
  }
  return w;
}

function renderGlyph(font, glyph, code) {
  const scale = SIZE / font.unitsPerEm;
  const advance = Math.round(glyph.advanceWidth * scale);
  // getPath at SIZE: px, y down, baseline at y = 0.
  const rings = flatten(glyph.getPath(0, 0, SIZE).commands, 1);
  if (!rings.length) return { id: code, bitmap: new Uint8Array(0), width: 0, height: 0, left: 0, top: -26, advance };
  let minX = Infinity;
  let minY = Infinity;
  let maxX = -Infinity;
  let maxY = -Infinity;
  for (const r of rings)
    for (const [x, y] of r) {
      minX = Math.min(minX, x);
      maxX = Math.max(maxX, x);
      minY = Math.min(minY, y);
      maxY = Math.max(maxY, y);
    }
  const left = Math.floor(minX);
  const topPx = Math.floor(minY); // y down: most negative is the highest point
  const width = Math.max(1, Math.ceil(maxX) - left);
  const height = Math.max(1, Math.ceil(maxY) - topPx);
  const w = width + 2 * BUFFER;
  const h = height + 2 * BUFFER;
  const bitmap = new Uint8Array(w * h);
  for (let j = 0; j < h; j++) {
    const py = topPx - BUFFER + j + 0.5;
    for (let i = 0; i < w; i++) {
      const px = left - BUFFER + i + 0.5;
      let best = Infinity;
      for (const r of rings)
        for (let k = 0, n = r.length; k < n; k++) {
          const a = r[k];
          const b = r[(k + 1) % n];
          const d = segDist2(px, py, a[0], a[1], b[0], b[1]);
          if (d < best) best = d;
        }
      const inside = winding(px, py, rings) !== 0;
      const signed = inside ? -Math.sqrt(best) : Math.sqrt(best);
      bitmap[j * w + i] = Math.max(0, Math.min(255, Math.round(255 - 255 * (signed / RADIUS + CUTOFF))));
    }
  }
  // MapLibre's metric: `top` is the glyph's top above the baseline, minus its fixed 26 px ascent offset
  // (the same convention as its TinySDF path for local glyphs, at 24 px).
  return { id: code, bitmap, width, height, left, top: -topPx - 26, advance };
}

function encodeRange(name, start, end, glyphs) {
  const pbf = new Pbf();
  pbf.writeMessage(1, (_, p) => {
    p.writeStringField(1, name);
    p.writeStringField(2, `${start}-${end}`);
    for (const g of glyphs) {
      p.writeMessage(3, (gg, q) => {
        q.writeVarintField(1, gg.id);
        if (gg.bitmap.length) q.writeBytesField(2, gg.bitmap);
        q.writeVarintField(3, gg.width);
        q.writeVarintField(4, gg.height);
        q.writeSVarintField(5, gg.left);
        q.writeSVarintField(6, gg.top);
        q.writeVarintField(7, gg.advance);
      }, g);
    }
  }, null);
  return pbf.finish();
}

function main() {
  const out = process.argv[2];
  if (!out) throw new Error("usage: node scripts/glyphs.mjs OUT_DIR [FONT.ttf]");
  const fontPath = process.argv[3] || FONT_CANDIDATES.find((p) => fs.existsSync(p));
  if (!fontPath) {
    console.error("No DejaVu Sans font found: install Debian's fonts-dejavu-core (apt-get install fonts-dejavu-core).");
    process.exit(2);
  }
  const data = fs.readFileSync(fontPath);
  const font = opentype.parse(data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength));
  const dir = path.join(out, FONTSTACK);
  fs.mkdirSync(dir, { recursive: true });
  let count = 0;
  for (let start = 0; start < 65536; start += 256) {
    const end = start + 255;
    const glyphs = [];
    if (start <= LAST_CODE) {
      for (let code = start; code <= end; code++) {
        const index = font.charToGlyphIndex(String.fromCodePoint(code));
        if (index > 0) glyphs.push(renderGlyph(font, font.glyphs.get(index), code));
      }
    }
    count += glyphs.length;
    fs.writeFileSync(path.join(dir, `${start}-${end}.pbf`), encodeRange(FONTSTACK, start, end, glyphs));
  }
  console.log(`glyphs: ${count} SDF glyphs of ${FONTSTACK} from ${fontPath} -> ${dir}`);
}

main();
