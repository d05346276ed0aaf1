// The bench feed off the main thread: this worker holds the WebSocket, decodes each binary frame and projects it
// (moving/project.js), and hands the page packed attributes it transfers, not copies. The page's share of an update
// is then MovingLayer.setProjected and the buffer upload.
import { FLOATS, mercatorX, mercatorY, pack } from "../moving/project.js";

let socket = null;
let origin = null;

self.onmessage = (event) => {
  const { connect, close } = event.data;
  if (close) {
    socket?.close();
    socket = null;
  }
  if (connect) {
    socket = new WebSocket(connect);
    socket.binaryType = "arraybuffer";
    socket.onopen = () => self.postMessage({ open: true });
    socket.onmessage = (message) => self.postMessage(...decode(message.data));
  }
};

function decode(buf) {
  const head = new DataView(buf, 0, 16);
  const sent = head.getFloat64(0, true);
  const seq = head.getUint32(8, true);
  const n = head.getUint32(12, true);
  let at = 16;
  const lon = new Float32Array(buf, at, n);
  const lat = new Float32Array(buf, (at += 4 * n), n);
  const heading = new Float32Array(buf, (at += 4 * n), n);
  const ids = new Uint32Array(buf, (at += 4 * n), n).slice();
  const status = new Uint8Array(buf, at + 4 * n, n);
  if (origin === null && n > 0) origin = [mercatorX(lon[0]), mercatorY(lat[0])];
  const data = new Float32Array(n * FLOATS);
  const bbox = pack(lon, lat, heading, status, origin, data);
  const marker = { lon: lon[n - 1], lat: lat[n - 1], status: status[n - 1] };
  return [{ sent, seq, n, ids, data, origin, bbox, marker }, [ids.buffer, data.buffer]];
}
