// Web Mercator projection of many objects into the layout MovingLayer draws from, shared by the layer and by
// workers that decode a feed off the main thread.

export const MAX_PALETTE = 16;
export const FLOATS = 4; // per object: x, y (mercator, relative to the origin), heading (rad, or -10 when none), status

export function mercatorX(lon) {
  return (180 + lon) / 360;
}

export function mercatorY(lat) {
  return (180 - (180 / Math.PI) * Math.log(Math.tan(Math.PI / 4 + (lat * Math.PI) / 360))) / 360;
}

// Fill `out` (FLOATS per object) from degrees; return the bounding box [x0, y0, x1, y1] of the drawn objects
// (status < MAX_PALETTE), relative to `origin` ([x, y] mercator); empty: x0 > x1.
export function pack(lon, lat, heading, status, origin, out) {
  const [ox, oy] = origin;
  const radians = Math.PI / 180;
  let x0 = Infinity;
  let y0 = Infinity;
  let x1 = -Infinity;
  let y1 = -Infinity;
  for (let i = 0, j = 0; i < lon.length; i++, j += FLOATS) {
    const x = mercatorX(lon[i]) - ox;
    const y = mercatorY(lat[i]) - oy;
    out[j] = x;
    out[j + 1] = y;
    const h = heading ? heading[i] : NaN;
    out[j + 2] = Number.isFinite(h) ? h * radians : -10;
    out[j + 3] = status[i];
    if (status[i] < MAX_PALETTE) {
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  }
  return [x0, y0, x1, y1];
}
