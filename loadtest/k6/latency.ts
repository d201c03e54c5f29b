// Fanout latency and exact delivery: VUS connections over CITIES cities,
// each held HOLD seconds, measuring every frame from its send time to its
// arrival and checking its seq follows the last (no gap, no duplicate).
// Something must publish meanwhile: `loadtest publish` sends frames that
// carry their send time in data.t (run it on the k6 host, or keep the
// clocks in NTP), otherwise the frame's timestamp is used.
//
//   loadtest publish -ingest host:7070 -rate 5 -duration 2m &
//   k6 run -e METROCAST_URL=ws://host:8080/ws -e VUS=5000 loadtest/k6/latency.ts
//
// METROCAST_URL (ws://127.0.0.1:8080/ws), VUS (1000), HOLD (60 s), CITIES
// (12), CITY_PREFIX (lt-), TOKEN (from the environment, as in connect.ts).
import exec from "k6/execution";
import { Counter, Trend } from "k6/metrics";
import { Options } from "k6/options";
import { setTimeout } from "k6/timers";
import { WebSocket } from "k6/websockets";

import { DEFAULT_URL, Stream, authMessage, cityName, latencyMs, subscribeURL } from "./lib/protocol.ts";

const URL = __ENV.METROCAST_URL || DEFAULT_URL;
const VUS = Number(__ENV.VUS || 1000);
const HOLD_S = Number(__ENV.HOLD || 60);
const CITIES = Number(__ENV.CITIES || 12);
const PREFIX = __ENV.CITY_PREFIX || "lt-";
const TOKEN = __ENV.TOKEN || "";

const latency = new Trend("metrocast_latency_ms", true);
const deliveries = new Counter("metrocast_deliveries");
const gaps = new Counter("metrocast_gaps");
const dups = new Counter("metrocast_dups");
const resyncs = new Counter("metrocast_resyncs");

export const options: Options = {
  scenarios: {
    hold: {
      executor: "per-vu-iterations",
      vus: VUS,
      iterations: 1,
      maxDuration: `${HOLD_S + 60}s`,
    },
  },
  thresholds: {
    metrocast_latency_ms: ["p(99)<50", "p(99.9)<100"],
    metrocast_gaps: ["count==0"],
    metrocast_dups: ["count==0"],
    metrocast_deliveries: ["count>0"],
  },
};

export default function (): void {
  const city = cityName(PREFIX, exec.vu.idInTest - 1, CITIES);
  const params = TOKEN ? { headers: { Authorization: "Bearer " + TOKEN } } : null;
  const ws = new WebSocket(TOKEN ? URL : subscribeURL(URL, city), null, params);
  const stream = new Stream();

  ws.onopen = () => {
    if (TOKEN) {
      ws.send(authMessage(TOKEN, city));
    }
  };
  ws.onmessage = (e) => {
    if (e === undefined || typeof e.data !== "string") {
      return;
    }
    const now = Date.now();
    const { event, msg } = stream.onMessage(e.data);
    if (event === "frame") {
      deliveries.add(1);
      const ms = latencyMs(msg, now);
      if (ms !== undefined) {
        latency.add(ms);
      }
    } else if (event === "resync") {
      resyncs.add(1);
    }
  };
  setTimeout(() => {
    gaps.add(stream.gaps);
    dups.add(stream.dups);
    ws.close();
  }, HOLD_S * 1000);
}
