// The metrocast client protocol as the k6 scripts speak it (README, "Client
// protocol"). loadtest/k6_test.go checks this file against a running node:
// keep every message a JSON.stringify of an object literal with quoted keys.

/** The node's WebSocket endpoint: METROCAST_URL, or a local node's default. */
export const DEFAULT_URL = "ws://127.0.0.1:8080/ws";

/** City i of n, named as `loadtest` names them: lt-00, lt-01, … */
export function cityName(prefix: string, i: number, n: number): string {
  const k = i % n;
  return prefix + (k < 10 ? "0" + k : String(k));
}

/** Subscribes on the URL, as SDK-less clients do. */
export function subscribeURL(base: string, city: string): string {
  return base + "?cities=" + encodeURIComponent(city);
}

/** The original dashboards' first message: subscribes to cityId. */
export function authMessage(token: string, city: string): string {
  return JSON.stringify({ "type": "auth", "token": token, "cityId": city });
}

/** A subscribe message for one city. */
export function subscribeMessage(city: string): string {
  return JSON.stringify({ "type": "subscribe", "cities": [city] });
}

/** A server → client message; only the members the scripts read. */
export interface ServerMessage {
  type: string;
  city?: string;
  seq?: number;
  epoch?: number;
  resumed?: boolean;
  timestamp?: number;
  data?: { t?: number };
}

/** What one message meant for a connection's stream. */
export type Event = "ready" | "frame" | "resync" | "other";

/**
 * Stream accounts one connection's city stream by seq: the first
 * initial_data starts it, each city frame must follow the last by one. A
 * gap is loss; a seq already seen is a duplicate; a later initial_data with
 * resumed:false (the node conflated a slow client) restarts it on purpose.
 */
export class Stream {
  begun = false;
  last = 0;
  gaps = 0;
  dups = 0;

  /** Parses and accounts one text message. */
  onMessage(text: string): { event: Event; msg: ServerMessage } {
    const msg = JSON.parse(text) as ServerMessage;
    switch (msg.type) {
      case "initial_data":
        if (msg.resumed === false) {
          const first = !this.begun;
          this.begun = true;
          this.last = msg.seq ?? 0;
          return { event: first ? "ready" : "resync", msg };
        }
        return { event: this.frame(msg.seq ?? 0), msg }; // a snapshot, in stream
      case "data_update":
      case "alerts":
        return { event: this.frame(msg.seq ?? 0), msg };
      default: // subscribed, pong, error
        return { event: "other", msg };
    }
  }

  private frame(seq: number): Event {
    if (!this.begun) {
      return "other";
    }
    if (seq <= this.last) {
      this.dups++;
      return "other";
    }
    this.gaps += seq - this.last - 1;
    this.last = seq;
    return "frame";
  }
}

/**
 * Milliseconds from the frame's send time to now: the publisher's
 * data.t (Unix ns, from `loadtest publish`) when present, else the
 * frame's timestamp (ms: the producer's, or when ingest accepted it). Both
 * clocks must agree: run the publisher on the k6 host or keep them in NTP.
 */
export function latencyMs(msg: ServerMessage, nowMs: number): number | undefined {
  if (msg.data !== undefined && typeof msg.data.t === "number") {
    return nowMs - msg.data.t / 1e6;
  }
  if (typeof msg.timestamp === "number" && msg.timestamp > 0) {
    return nowMs - msg.timestamp;
  }
  return undefined;
}
