// The live channel (/api/v1/live): sequence-numbered messages; on reconnect the server replays what this client
// missed after its last sequence number, or tells it to resync (reload its state over HTTP). A gap in the numbers
// (never expected) also reconnects, so no update is lost.
import { apiKey } from "./api.js";

export class LiveChannel {
  constructor({ onEvent, onResync, onStatus }) {
    this.onEvent = onEvent;
    this.onResync = onResync;
    this.onStatus = onStatus;
    this.epoch = null;
    this.seq = null;
    this.socket = null;
    this.retry = 0;
    this.closed = false;
    this.reloading = null;
    this.buffer = [];
    // Figures a test or an operator can read: how often the state was reloaded, gaps seen, the last numbers applied.
    this.resyncs = 0;
    this.gaps = 0;
    this.applied = [];
  }

  start() {
    this.closed = false;
    this.open();
  }

  stop() {
    this.closed = true;
    if (this.socket) this.socket.close();
  }

  // For tests and operators: drop the connection now (it reconnects and resumes).
  drop() {
    if (this.socket) this.socket.close(4000, "dropped");
  }

  open() {
    const url = new URL("/api/v1/live", location.origin);
    url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
    if (this.seq !== null && this.epoch) {
      url.searchParams.set("after", String(this.seq));
      url.searchParams.set("epoch", this.epoch);
    }
    this.onStatus("connecting");
    const socket = new WebSocket(url, ["safecity", `bearer.${apiKey()}`]);
    this.socket = socket;
    socket.onmessage = (message) => this.receive(JSON.parse(message.data));
    socket.onclose = () => {
      if (this.socket !== socket) return;
      this.socket = null;
      if (this.closed) return;
      this.onStatus("reconnecting");
      const delay = Math.min(10000, 500 * 2 ** this.retry++);
      setTimeout(() => this.open(), delay);
    };
  }

  receive(message) {
    if (message.type === "hello") {
      this.retry = 0;
      this.epoch = message.epoch;
      this.onStatus("live");
      if (message.resync) {
        this.resyncs += 1;
        this.seq = message.seq;
        this.buffer = [];
        // Messages after `seq` arrive while the state reloads: keep them and apply them once it is in.
        this.reloading = Promise.resolve(this.onResync()).finally(() => {
          const pending = this.buffer;
          this.buffer = [];
          this.reloading = null;
          for (const m of pending) this.apply(m);
        });
      }
      return;
    }
    if (message.type === "event") {
      if (this.reloading) this.buffer.push(message);
      else this.apply(message);
    }
  }

  apply(message) {
    if (this.seq !== null && message.seq <= this.seq) return; // already applied (replayed on resume)
    if (this.seq !== null && message.seq !== this.seq + 1) {
      this.gaps += 1;
      this.drop(); // a gap: reconnect and resume from the last applied message
      return;
    }
    this.seq = message.seq;
    this.applied.push(message.seq);
    if (this.applied.length > 5000) this.applied.splice(0, 1000);
    this.onEvent(message);
  }
}
