// Connect storm: new connections at RATE per second, each subscribing to a
// city and counting as connected when its initial_data arrives (TCP +
// upgrade + subscribe + first message), held HOLD seconds. The thresholds
// are the targets metrocast is held to (README, Performance).
//
//   k6 run -e METROCAST_URL=ws://host:8080/ws -e RATE=1000 loadtest/k6/connect.ts
//
// METROCAST_URL (ws://127.0.0.1:8080/ws), RATE (1000/s), RAMP (10s: from 0
// to RATE), STEADY (20s at RATE), HOLD (5 s per connection), CITIES (12),
// CITY_PREFIX (lt-), TOKEN (when set: subscribe with the auth message and
// send it as a bearer token too, instead of ?cities= on the URL). A node
// with keys needs TOKEN: set it in the environment, which k6 run passes to
// __ENV and ps does not show, e.g. for the node of make run:
//
//   export TOKEN=$(./bin/metrocast token -auth-hmac-secret-file bin/demo-hmac-secret -sub k6 -cities '*' -ttl 1h)
import exec from "k6/execution";
import { Counter, Trend } from "k6/metrics";
import { Options } from "k6/options";
import { setTimeout } from "k6/timers";
import { WebSocket } from "k6/websockets";

import { DEFAULT_URL, Stream, authMessage, cityName, subscribeURL } from "./lib/protocol.ts";

const URL = __ENV.METROCAST_URL || DEFAULT_URL;
const RATE = Number(__ENV.RATE || 1000);
const HOLD_S = Number(__ENV.HOLD || 5);
const CITIES = Number(__ENV.CITIES || 12);
const PREFIX = __ENV.CITY_PREFIX || "lt-";
const TOKEN = __ENV.TOKEN || "";
const CONNECT_TIMEOUT_MS = 10_000;

const connectMs = new Trend("metrocast_connect_ms", true);
const connectFailed = new Counter("metrocast_connect_failed");

export const options: Options = {
  scenarios: {
    storm: {
      executor: "ramping-arrival-rate",
      startRate: 0,
      timeUnit: "1s",
      preAllocatedVUs: Math.ceil(RATE * (HOLD_S + 1)),
      maxVUs: Math.ceil(RATE * (HOLD_S + CONNECT_TIMEOUT_MS / 1000 + 1)),
      stages: [
        { target: RATE, duration: __ENV.RAMP || "10s" },
        { target: RATE, duration: __ENV.STEADY || "20s" },
      ],
    },
  },
  thresholds: {
    metrocast_connect_ms: ["p(99)<100"],
    metrocast_connect_failed: ["count==0"],
  },
};

export default function (): void {
  const city = cityName(PREFIX, exec.scenario.iterationInTest, CITIES);
  const params = TOKEN ? { headers: { Authorization: "Bearer " + TOKEN } } : null;
  const start = Date.now();
  const ws = new WebSocket(TOKEN ? URL : subscribeURL(URL, city), null, params);
  const stream = new Stream();
  let ready = false;

  ws.onopen = () => {
    if (TOKEN) {
      ws.send(authMessage(TOKEN, city));
    }
  };
  ws.onmessage = (e) => {
    if (e === undefined || typeof e.data !== "string") {
      return;
    }
    if (stream.onMessage(e.data).event === "ready" && !ready) {
      ready = true;
      connectMs.add(Date.now() - start);
      setTimeout(() => ws.close(), HOLD_S * 1000);
    }
  };
  ws.onerror = () => {
    if (!ready) {
      ready = true; // counted once
      connectFailed.add(1);
      ws.close();
    }
  };
  setTimeout(() => {
    if (!ready) {
      ready = true;
      connectFailed.add(1);
      ws.close();
    }
  }, CONNECT_TIMEOUT_MS);
}
