// Unit tests of metrocast.js: a fake WebSocket and a fake clock, no network.
import { test } from "node:test";
import assert from "node:assert/strict";
import { EventStreamParser, Metrocast, backoffDelay, mergeState, sseUrlOf, tokenExpiry } from "../metrocast.js";

// FakeClock runs timers when the test advances time.
class FakeClock {
  constructor() {
    this.t = 1_000_000;
    this.timers = new Map();
    this.next = 1;
  }
  now() {
    return this.t;
  }
  setTimeout(fn, ms) {
    const id = this.next++;
    this.timers.set(id, { at: this.t + ms, fn });
    return id;
  }
  clearTimeout(id) {
    this.timers.delete(id);
  }
  pending() {
    return [...this.timers.values()].map((t) => t.at - this.t).sort((a, b) => a - b);
  }
  advance(ms) {
    const end = this.t + ms;
    for (;;) {
      let first;
      for (const [id, t] of this.timers) if (t.at <= end && (!first || t.at < first[1].at)) first = [id, t];
      if (!first) break;
      this.timers.delete(first[0]);
      this.t = first[1].at;
      first[1].fn();
    }
    this.t = end;
  }
}

// fakeSockets returns a WebSocket constructor whose instances the test drives.
function fakeSockets() {
  const made = [];
  class FakeWS {
    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.readyState = 0;
      this.sent = [];
      this.closed = undefined;
      made.push(this);
    }
    send(s) {
      this.sent.push(JSON.parse(s));
    }
    close(code) {
      this.closed = code;
      this.readyState = 3;
    }
    // helpers for the test
    serverOpen() {
      this.readyState = 1;
      this.onopen?.({});
    }
    serverSend(m) {
      this.onmessage?.({ data: JSON.stringify(m) });
    }
    serverClose(code = 1006) {
      this.readyState = 3;
      this.onclose?.({ code, reason: "" });
    }
  }
  return { FakeWS, made };
}

const flush = () => new Promise((r) => setImmediate(r));

function client(extra = {}) {
  const { FakeWS, made } = fakeSockets();
  const clock = new FakeClock();
  const mc = new Metrocast({
    url: "ws://gw/ws",
    token: "t0",
    cities: ["nairobi"],
    WebSocket: FakeWS,
    clock,
    random: () => 0.5,
    ...extra,
  });
  return { mc, made, clock };
}

function jwt(expSec) {
  const b = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  return `${b({ alg: "HS256" })}.${b({ sub: "u", exp: expSec })}.sig`;
}

test("backoffDelay grows exponentially, is capped, and jitters within [d/2, d)", () => {
  const f = (attempt, r, want) => assert.equal(backoffDelay(attempt, {}, () => r), want, `attempt ${attempt} r ${r}`);
  f(0, 0, 250);
  f(0, 0.999999, 499);
  f(1, 0, 500);
  f(3, 0, 2000);
  f(10, 0, 15000); // capped at 30000
  f(100, 0.5, 22500);
  const opts = { backoffInitialMs: 100, backoffMaxMs: 1000, backoffFactor: 3 };
  assert.equal(backoffDelay(2, opts, () => 0), 450);
  assert.equal(backoffDelay(5, opts, () => 0), 500);
  // Jitter spreads clients: 1000 draws fill the interval.
  const seen = new Set();
  for (let i = 0; i < 1000; i++) {
    const d = backoffDelay(4, {});
    assert.ok(d >= 4000 && d < 8000, `delay ${d}`);
    seen.add(Math.floor(d / 400));
  }
  assert.ok(seen.size >= 9, `jitter too narrow: ${seen.size} buckets`);
});

test("mergeState shallow-merges top-level keys", () => {
  assert.deepEqual(mergeState({ a: 1, b: { x: 1 } }, { b: { y: 2 }, c: 3 }), { a: 1, b: { y: 2 }, c: 3 });
  assert.deepEqual(mergeState(undefined, { a: 1 }), { a: 1 });
  const prev = { a: 1 };
  mergeState(prev, { a: 2 });
  assert.deepEqual(prev, { a: 1 }, "prev is not mutated");
});

test("token in an auth message, then subscribe, on open; state from initial_data and updates", () => {
  const { mc, made } = client();
  const states = [];
  mc.on("state", (e) => states.push(e));
  mc.connect();
  return flush().then(() => {
    const ws = made[0];
    assert.equal(ws.url, "ws://gw/ws");
    assert.equal(ws.protocols, undefined, "the token is not in the upgrade request");
    ws.serverOpen();
    assert.deepEqual(ws.sent, [
      { type: "auth", token: "t0" },
      { type: "subscribe", cities: ["nairobi"] },
    ]);
    ws.serverSend({ type: "subscribed", epoch: 7, cities: [{ city: "nairobi", seq: 4, resumed: false }] });
    ws.serverSend({
      type: "initial_data",
      city: "nairobi",
      seq: 4,
      epoch: 7,
      resumed: false,
      data: { pm25: 10, no2: 3 },
      recent_alerts: [{ seq: 2, timestamp: 1, alerts: [{ severity: "warning", message: "w" }] }],
    });
    ws.serverSend({ type: "data_update", city: "nairobi", seq: 5, timestamp: 2, data: { pm25: 12 } });
    ws.serverSend({ type: "data_update", city: "nairobi", seq: 5, timestamp: 2, data: { pm25: 99 } }); // duplicate
    assert.equal(mc.status, "open");
    assert.deepEqual(mc.state("nairobi"), { pm25: 12, no2: 3 });
    assert.equal(mc.lastSeq("nairobi"), 5);
    assert.equal(states.length, 2);
    assert.equal(mc.alerts("nairobi")[0].alerts[0].message, "w");
    ws.serverSend({ type: "alerts", city: "nairobi", seq: 6, timestamp: 3, alerts: [{ severity: "critical", message: "c" }] });
    assert.equal(mc.alerts("nairobi")[0].alerts[0].severity, "critical");
    assert.equal(mc.lastSeq("nairobi"), 6);
    mc.close();
  });
});

test("query and subprotocol token transports", async () => {
  const q = client({ tokenTransport: "query" });
  q.mc.connect();
  await flush();
  assert.equal(q.made[0].url, "ws://gw/ws?token=t0");
  assert.equal(q.made[0].protocols, undefined);
  q.made[0].serverOpen();
  assert.deepEqual(q.made[0].sent, [{ type: "subscribe", cities: ["nairobi"] }]);
  const sp = client({ tokenTransport: "subprotocol" });
  sp.mc.connect();
  await flush();
  assert.deepEqual(sp.made[0].protocols, ["metrocast", "bearer.t0"]);
  sp.made[0].serverOpen();
  assert.deepEqual(sp.made[0].sent, [{ type: "subscribe", cities: ["nairobi"] }]);
});

test("reconnect resumes with since and epoch; the backoff resets only once subscribed", async () => {
  const { mc, made, clock } = client();
  const recon = [];
  mc.on("reconnect", (e) => recon.push(e));
  mc.connect();
  await flush();
  made[0].serverOpen();
  made[0].serverSend({ type: "subscribed", epoch: 7, cities: [{ city: "nairobi", seq: 0, resumed: false }] });
  made[0].serverSend({ type: "initial_data", city: "nairobi", seq: 0, epoch: 7, resumed: false, data: {} });
  made[0].serverSend({ type: "data_update", city: "nairobi", seq: 1, timestamp: 1, data: { a: 1 } });
  made[0].serverClose(1006);
  assert.equal(mc.status, "reconnecting");
  assert.deepEqual(recon.map((r) => r.delayMs), [375]); // attempt 0: [250, 500), r=0.5

  // Two failed attempts in a row: the wait grows (the original hook reset
  // its counter on every open, so a node that accepts and drops at once
  // was hammered).
  clock.advance(375);
  await flush();
  made[1].serverOpen();
  made[1].serverClose(1006);
  clock.advance(750);
  await flush();
  assert.deepEqual(recon.map((r) => r.delayMs), [375, 750]);
  made[2].serverOpen();
  assert.deepEqual(made[2].sent, [
    { type: "auth", token: "t0" },
    { type: "subscribe", cities: ["nairobi"], since: { nairobi: 1 }, epoch: 7 },
  ]);
  made[2].serverSend({ type: "subscribed", epoch: 7, cities: [{ city: "nairobi", seq: 1, resumed: true }] });
  made[2].serverSend({ type: "data_update", city: "nairobi", seq: 2, timestamp: 1, data: { b: 2 } });
  assert.deepEqual(mc.state("nairobi"), { a: 1, b: 2 });
  made[2].serverClose(1006);
  assert.equal(recon[2].delayMs, 375, "backoff starts over after a good connection");
  assert.equal(recon[2].attempt, 1);
  mc.close();
  assert.deepEqual(clock.pending(), [], "close clears every timer");
});

test("a restarted node (new epoch) resets seqs and its initial_data replaces the state", async () => {
  const { mc, made, clock } = client();
  mc.connect();
  await flush();
  made[0].serverOpen();
  made[0].serverSend({ type: "subscribed", epoch: 7, cities: [] });
  made[0].serverSend({ type: "initial_data", city: "nairobi", seq: 50, epoch: 7, resumed: false, data: { a: 1, old: true } });
  made[0].serverClose(1006);
  clock.advance(1000);
  await flush();
  made[1].serverOpen();
  made[1].serverSend({ type: "subscribed", epoch: 8, cities: [{ city: "nairobi", seq: 3, resumed: false }] });
  made[1].serverSend({ type: "initial_data", city: "nairobi", seq: 3, epoch: 8, resumed: false, data: { a: 2 } });
  made[1].serverSend({ type: "data_update", city: "nairobi", seq: 4, timestamp: 1, data: { b: 1 } });
  assert.deepEqual(mc.state("nairobi"), { a: 2, b: 1 });
  assert.equal(mc.lastSeq("nairobi"), 4);
  assert.equal(mc.epoch, 8);
  mc.close();
});

test("the server's reconnect hint sets the wait and does not grow the backoff", async () => {
  const { mc, made, clock } = client();
  const recon = [];
  mc.on("reconnect", (e) => recon.push(e));
  mc.connect();
  await flush();
  made[0].serverOpen();
  made[0].serverSend({ type: "subscribed", epoch: 1, cities: [] });
  made[0].serverSend({ type: "reconnect", after_ms: 123 });
  made[0].serverClose(1001);
  assert.deepEqual(recon[0], { attempt: 0, delayMs: 123, hinted: true, reason: "closed 1001", code: 1001 });
  clock.advance(122);
  await flush();
  assert.equal(made.length, 1);
  clock.advance(1);
  await flush();
  assert.equal(made.length, 2);
  made[1].serverClose(1006);
  assert.equal(recon[1].hinted, false);
  assert.equal(recon[1].delayMs, 375);
  mc.close();
});

test("heartbeat: silence brings a ping, then a dead connection is dropped and reconnected", async () => {
  const { mc, made, clock } = client({ pingIntervalMs: 1000, heartbeatTimeoutMs: 500 });
  mc.connect();
  await flush();
  made[0].serverOpen();
  made[0].serverSend({ type: "subscribed", epoch: 1, cities: [] });
  clock.advance(999);
  assert.equal(made[0].sent.length, 2); // auth, subscribe
  made[0].serverSend({ type: "pong" }); // traffic restarts the window
  clock.advance(999);
  assert.equal(made[0].sent.length, 2); // auth, subscribe
  clock.advance(1);
  assert.deepEqual(made[0].sent.at(-1), { type: "ping" });
  made[0].serverSend({ type: "pong" });
  clock.advance(1000);
  assert.deepEqual(made[0].sent.at(-1), { type: "ping" });
  clock.advance(499);
  assert.equal(made[0].closed, undefined);
  clock.advance(1);
  assert.equal(made[0].closed, 4000, "silent connection closed");
  assert.equal(mc.status, "reconnecting");
  clock.advance(375);
  await flush();
  assert.equal(made.length, 2);
  mc.close();
});

test("token refresh: getToken before connecting without a token, before exp, and on token_expiring", async () => {
  const clock0 = 1_000_000; // FakeClock's start, ms
  let n = 0;
  const tokens = [jwt(clock0 / 1000 + 120), jwt(clock0 / 1000 + 3600), jwt(clock0 / 1000 + 7200)];
  const { mc, made, clock } = client({ token: undefined, getToken: async () => tokens[n++], refreshBeforeMs: 60_000, pingIntervalMs: 1e9 });
  mc.connect();
  await flush();
  assert.equal(n, 1, "no token: fetched before connecting");
  made[0].serverOpen();
  assert.deepEqual(made[0].sent[0], { type: "auth", token: tokens[0] });
  made[0].serverSend({ type: "subscribed", epoch: 1, cities: [] });
  clock.advance(59_999);
  await flush();
  assert.equal(n, 1);
  made[0].serverSend({ type: "pong" });
  clock.advance(1);
  await flush();
  assert.equal(n, 2, "refreshed 60 s before exp");
  assert.deepEqual(made[0].sent.at(-1), { type: "refresh", token: tokens[1] });
  made[0].serverSend({ type: "refreshed", exp: 0, closeAt: 0 });
  made[0].serverSend({ type: "token_expiring", exp: 0, closeAt: 0 });
  await flush();
  assert.equal(n, 3, "token_expiring asks for a token too");
  assert.deepEqual(made[0].sent.at(-1), { type: "refresh", token: tokens[2] });
  mc.close();
  assert.equal(tokenExpiry(tokens[0]), clock0 + 120_000);
  assert.equal(tokenExpiry("not-a-jwt"), undefined);
});

test("any refusal drops the token: the reconnect asks getToken for a new one", async () => {
  // Revoked, expired, signed with a key the node no longer has, wrong aud
  // or iss: a refused token is never offered again.
  for (const code of ["token_revoked", "token_expired", "invalid_token", "invalid_claims", "sub_mismatch"]) {
    let n = 0;
    const { mc, made, clock } = client({ token: undefined, getToken: async () => "t" + n++, pingIntervalMs: 1e9 });
    const refusals = [];
    mc.on("auth_error", (m) => refusals.push(m.code));
    mc.connect();
    await flush();
    made[0].serverOpen();
    made[0].serverSend({ type: "auth_error", code, message: "refused" });
    made[0].serverClose(4001);
    assert.equal(mc.status, "reconnecting", code);
    clock.advance(60_000);
    await flush();
    assert.equal(n, 2, `${code}: a second token fetched`);
    made[1].serverOpen();
    assert.deepEqual(made[1].sent[0], { type: "auth", token: "t1" }, code);
    assert.deepEqual(refusals, [code]);
    mc.close();
  }
});

test("a token is refreshed once the node took it, not on open: a refused one uses no second token", async () => {
  const now = 1_000_000 / 1000;
  let n = 0;
  const tokens = [jwt(now - 3600), jwt(now + 3600)];
  const { mc, made, clock } = client({ token: undefined, getToken: async () => tokens[n++], pingIntervalMs: 1e9 });
  mc.connect();
  await flush();
  made[0].serverOpen();
  clock.advance(0);
  await flush();
  assert.equal(n, 1, "no refresh before the node answers");
  made[0].serverSend({ type: "auth_error", code: "token_expired", message: "expired" });
  made[0].serverClose(4001);
  clock.advance(60_000);
  await flush();
  assert.equal(n, 2);
  made[1].serverOpen();
  assert.deepEqual(made[1].sent[0], { type: "auth", token: tokens[1] });
  made[1].serverSend({ type: "subscribed", epoch: 1, cities: [] });
  clock.advance(3600_000 - 60_000 - 60_000 - 1);
  await flush();
  assert.equal(n, 2);
  clock.advance(1);
  await flush();
  assert.equal(n, 3, "refreshed refreshBeforeMs before exp");
  mc.close();
});

test("without getToken a refusal stops the client: the same token would be refused again", async () => {
  const { mc, made, clock } = client();
  const refusals = [];
  mc.on("auth_error", (m) => refusals.push(m.code));
  mc.connect();
  await flush();
  made[0].serverOpen();
  made[0].serverSend({ type: "auth_error", code: "token_expired", message: "token has expired" });
  made[0].serverClose(4001);
  assert.deepEqual(refusals, ["token_expired"]);
  assert.equal(mc.status, "closed");
  assert.deepEqual(clock.pending(), [], "no reconnect scheduled");
  clock.advance(60_000);
  await flush();
  assert.equal(made.length, 1);
});

test("token in the upgrade: a connection that closes before it opens (a browser's view of a 401) gets a new token", async () => {
  let n = 0;
  const { mc, made, clock } = client({ tokenTransport: "subprotocol", token: undefined, getToken: async () => "t" + n++, pingIntervalMs: 1e9 });
  mc.connect();
  await flush();
  assert.deepEqual(made[0].protocols, ["metrocast", "bearer.t0"]);
  made[0].serverClose(1006); // refused: never opened
  clock.advance(60_000);
  await flush();
  assert.deepEqual(made[1].protocols, ["metrocast", "bearer.t1"]);
  made[1].serverOpen();
  made[1].serverClose(1006); // opened, then lost: the token stands
  clock.advance(60_000);
  await flush();
  assert.deepEqual(made[2].protocols, ["metrocast", "bearer.t1"]);
  assert.equal(n, 2);
  mc.close();
});

test("maxRetries gives up; unlimited by default", async () => {
  const { mc, made, clock } = client({ maxRetries: 2 });
  const errors = [];
  mc.on("error", (e) => errors.push(e.code));
  mc.connect();
  await flush();
  for (let i = 0; i < 3; i++) {
    made[i].serverClose(1006);
    clock.advance(60_000);
    await flush();
  }
  assert.equal(made.length, 3);
  assert.equal(mc.status, "closed");
  assert.deepEqual(errors, ["gave_up"]);

  const u = client();
  u.mc.connect();
  await flush();
  for (let i = 0; i < 50; i++) {
    u.made[i].serverClose(1006);
    u.clock.advance(30_000);
    await flush();
  }
  assert.equal(u.made.length, 51);
  assert.equal(u.mc.status, "reconnecting");
  u.mc.close();
});

test("alerts and updates replayed after a resume are applied once", async () => {
  const { mc, made, clock } = client();
  const alerts = [];
  mc.on("alerts", (m) => alerts.push(m.seq));
  mc.connect();
  await flush();
  made[0].serverOpen();
  made[0].serverSend({ type: "subscribed", epoch: 1, cities: [] });
  made[0].serverSend({ type: "initial_data", city: "nairobi", seq: 0, epoch: 1, resumed: false, data: {} });
  made[0].serverSend({ type: "alerts", city: "nairobi", seq: 1, timestamp: 1, alerts: [{ severity: "info", message: "i" }] });
  made[0].serverClose();
  clock.advance(500);
  await flush();
  made[1].serverOpen();
  made[1].serverSend({ type: "subscribed", epoch: 1, cities: [{ city: "nairobi", seq: 1, resumed: true }] });
  made[1].serverSend({ type: "alerts", city: "nairobi", seq: 1, timestamp: 1, alerts: [{ severity: "info", message: "i" }] });
  made[1].serverSend({ type: "alerts", city: "nairobi", seq: 2, timestamp: 1, alerts: [{ severity: "critical", message: "c" }] });
  assert.deepEqual(alerts, [1, 2]);
  assert.equal(mc.alerts("nairobi").length, 2);
  mc.close();
});

test("connect while a token is being fetched opens one connection; a failed fetch retries", async () => {
  let calls = 0;
  let fail = true;
  const { mc, made, clock } = client({
    token: undefined,
    getToken: async () => {
      calls++;
      if (fail) throw new Error("auth server down");
      return "t1";
    },
  });
  const errors = [];
  mc.on("error", (e) => errors.push(e.code));
  mc.connect();
  mc.connect();
  await flush();
  assert.equal(calls, 1);
  assert.equal(made.length, 0);
  assert.deepEqual(errors, ["token_fetch_failed"]);
  assert.equal(mc.status, "reconnecting");
  fail = false;
  clock.advance(375);
  await flush();
  assert.equal(calls, 2);
  assert.equal(made.length, 1);
  made[0].serverOpen();
  assert.deepEqual(made[0].sent[0], { type: "auth", token: "t1" });
  mc.close();
});

test("presence: subscribe asks for it; snapshot, joins and leaves keep the watchers", async () => {
  const { mc, made } = client({ presence: true });
  const events = [];
  mc.on("presence", (e) => events.push(e));
  mc.connect();
  await flush();
  made[0].serverOpen();
  assert.deepEqual(made[0].sent[1], { type: "subscribe", cities: ["nairobi"], presence: true });
  made[0].serverSend({ type: "presence", city: "nairobi", count: 2, users: ["bob", "alice"] });
  made[0].serverSend({ type: "user_joined", city: "nairobi", count: 3, users: ["carol", "alice"] });
  made[0].serverSend({ type: "user_left", city: "nairobi", count: 2, users: ["bob"] });
  assert.deepEqual(mc.watchers("nairobi"), { count: 2, users: ["alice", "carol"] });
  assert.deepEqual(events.map((e) => e.change), ["presence", "user_joined", "user_left"]);
  mc.close();
});

// fakeStreams returns a fetch whose streams the test drives: each call is
// recorded with its URL and headers; the test answers it with a refusal or
// opens it and writes event-stream text into it.
function fakeStreams() {
  const made = [];
  const fetch = (url, init) => {
    const s = { url: new URL(url), headers: init.headers, aborted: false };
    init.signal.addEventListener("abort", () => {
      s.aborted = true;
      s.ctrl?.error(new Error("aborted"));
    });
    s.response = new Promise((resolve) => {
      s.refuse = (status, body) => resolve({ ok: false, status, text: async () => body });
      s.open = () =>
        resolve({
          ok: true,
          status: 200,
          body: new ReadableStream({ start: (ctrl) => (s.ctrl = ctrl) }),
        });
    });
    s.write = (text) => s.ctrl.enqueue(new TextEncoder().encode(text));
    s.event = (m) => s.write(`event: ${m.type}\ndata: ${JSON.stringify(m)}\n\n`);
    s.end = () => s.ctrl.close();
    made.push(s);
    return s.response;
  };
  return { fetch, made };
}

function streamClient(extra = {}) {
  const { fetch, made } = fakeStreams();
  const clock = new FakeClock();
  const mc = new Metrocast({
    url: "wss://gw.example/ws",
    token: "t0",
    cities: ["nairobi"],
    transport: "sse",
    fetch,
    clock,
    random: () => 0.5,
    ...extra,
  });
  return { mc, made, clock };
}

test("sseUrlOf: the same host and port, http(s), /sse", () => {
  assert.equal(sseUrlOf("ws://127.0.0.1:8080/ws"), "http://127.0.0.1:8080/sse");
  assert.equal(sseUrlOf("wss://gw.example/live/ws?cities=a"), "https://gw.example/sse");
});

test("EventStreamParser: fields, comments and the last id, however the text is cut", () => {
  const text =
    "retry: 1500\n\n: hi\nid: 7/a:1\nevent: data_update\ndata: {\"a\":1}\n\n" +
    "data: x\r\ndata: y\r\n\r\n" + // CRLF, two data lines joined by LF
    "event: alerts\rdata: z\r\r" + // CR alone
    "id\ndata\n\n" + // an empty id, an empty data line
    "event: skipped\n\n"; // no data: nothing dispatched
  const want = [
    { type: "data_update", data: '{"a":1}', lastEventId: "7/a:1" },
    { type: "message", data: "x\ny", lastEventId: "7/a:1" },
    { type: "alerts", data: "z", lastEventId: "7/a:1" },
    { type: "message", data: "", lastEventId: "" },
  ];
  for (let cut = 0; cut <= text.length; cut++) {
    for (const step of [1, 3, text.length]) {
      const got = [];
      let comments = 0;
      const p = new EventStreamParser((ev) => got.push(ev), () => comments++);
      p.feed(text.slice(0, cut));
      for (let i = cut; i < text.length; i += step) p.feed(text.slice(i, i + step));
      assert.deepEqual(got, want, `cut at ${cut}, step ${step}`);
      assert.equal(comments, 1);
      assert.equal(p.retry, 1500);
    }
  }
});

test("sse: the subscription on the URL, the token in a header; resume with since and epoch", async () => {
  const { mc, made, clock } = streamClient({ filters: { types: ["alerts"], minSeverity: "warning" } });
  const statuses = [];
  mc.on("status", (e) => statuses.push(e.status));
  mc.connect();
  await flush();
  assert.equal(made[0].url.origin + made[0].url.pathname, "https://gw.example/sse");
  assert.deepEqual(Object.fromEntries(made[0].url.searchParams), { cities: "nairobi", types: "alerts", minSeverity: "warning" });
  assert.deepEqual(made[0].headers, { Accept: "text/event-stream", Authorization: "Bearer t0" });
  made[0].open();
  await flush();
  made[0].write("retry: 1200\n\n");
  made[0].event({ type: "subscribed", epoch: 9, cities: [{ city: "nairobi", seq: 4, resumed: false }] });
  made[0].write('id: 9/nairobi:4\nevent: initial_data\ndata: {"type":"initial_data","city":"nairobi","seq":4,"epoch":9,"resumed":false,"data":{"a":1}}\n\n');
  made[0].event({ type: "alerts", city: "nairobi", seq: 5, timestamp: 1, alerts: [{ severity: "critical", message: "m" }] });
  await flush();
  assert.equal(mc.status, "open");
  assert.deepEqual(mc.state("nairobi"), { a: 1 });
  assert.equal(mc.lastSeq("nairobi"), 5);
  made[0].end();
  await flush();
  assert.equal(mc.status, "reconnecting");
  clock.advance(375);
  await flush();
  assert.equal(made[1].url.searchParams.get("since"), "nairobi:5");
  assert.equal(made[1].url.searchParams.get("epoch"), "9");
  assert.deepEqual(statuses, ["connecting", "open", "reconnecting"]);
  mc.close();
  assert.equal(made[1].aborted, true);
  assert.deepEqual(clock.pending(), []);
});

test("sse: heartbeats keep a stream; silence past ping + timeout drops it", async () => {
  const { mc, made, clock } = streamClient({ pingIntervalMs: 1000, heartbeatTimeoutMs: 500 });
  mc.connect();
  await flush();
  made[0].open();
  await flush();
  made[0].event({ type: "subscribed", epoch: 1, cities: [] });
  await flush();
  clock.advance(1400);
  made[0].write(":\n\n");
  await flush();
  clock.advance(1400);
  assert.equal(made[0].aborted, false, "a heartbeat restarted the window");
  clock.advance(100);
  assert.equal(made[0].aborted, true, "silent stream dropped");
  clock.advance(375);
  await flush();
  assert.equal(made.length, 2);
  mc.close();
});

test("sse: subscribe, unsubscribe and a new token open a new stream at once, resuming", async () => {
  let n = 0;
  const { mc, made } = streamClient({ token: undefined, getToken: async () => `tok${n++}`, pingIntervalMs: 1e9 });
  mc.connect();
  await flush();
  assert.equal(made[0].headers.Authorization, "Bearer tok0");
  made[0].open();
  await flush();
  made[0].event({ type: "initial_data", city: "nairobi", seq: 3, epoch: 2, resumed: false, data: {} });
  await flush();
  mc.subscribe(["lagos"]);
  await flush();
  assert.equal(made[0].aborted, true);
  assert.equal(made[1].url.searchParams.get("cities"), "nairobi,lagos");
  assert.equal(made[1].url.searchParams.get("since"), "nairobi:3");
  made[1].open();
  await flush();
  made[1].event({ type: "token_expiring", exp: 1, closeAt: 2 });
  await flush();
  await flush();
  assert.equal(made[1].aborted, true, "a stream cannot refresh: a new one takes the token");
  assert.equal(made[2].headers.Authorization, "Bearer tok1");
  mc.unsubscribe(["nairobi"]);
  await flush();
  assert.equal(made[3].url.searchParams.get("cities"), "lagos");
  mc.close();
});

test("sse: a 401 is an auth_error that asks getToken again; other refusals are errors", async () => {
  let n = 0;
  const { mc, made, clock } = streamClient({ token: undefined, getToken: async () => `tok${n++}` });
  const authErrors = [];
  const errors = [];
  mc.on("auth_error", (m) => authErrors.push(m));
  mc.on("error", (e) => errors.push(e));
  mc.connect();
  await flush();
  made[0].refuse(401, "token_expired: the token expired");
  await flush();
  assert.deepEqual(authErrors, [{ type: "auth_error", code: "token_expired", message: "token_expired: the token expired" }]);
  clock.advance(375);
  await flush();
  assert.equal(made[1].headers.Authorization, "Bearer tok1");
  made[1].refuse(403, "forbidden: the token does not cover nairobi");
  await flush();
  assert.deepEqual(errors.map((e) => e.code), ["forbidden"]);
  assert.equal(mc.status, "reconnecting");
  mc.close();
});

test("sseFallback: WebSocket connections that never open move the client to the stream", async () => {
  const { FakeWS, made: sockets } = fakeSockets();
  const { fetch, made: streams } = fakeStreams();
  const clock = new FakeClock();
  const mc = new Metrocast({ url: "ws://gw/ws", token: "t0", cities: ["nairobi"], WebSocket: FakeWS, fetch, clock, random: () => 0.5, sseFallback: true });
  const moved = [];
  mc.on("transport", (e) => moved.push(e));
  mc.connect();
  await flush();
  // A WebSocket that opened once is not a proxy's refusal: no move.
  sockets[0].serverOpen();
  sockets[0].serverClose(1006);
  clock.advance(5000);
  await flush();
  sockets[1].serverClose(1006); // never opened: 1
  clock.advance(5000);
  await flush();
  assert.equal(streams.length, 0);
  sockets[2].serverClose(1006); // never opened: 2
  assert.deepEqual(moved, [{ transport: "sse" }]);
  assert.equal(mc.transport, "sse");
  clock.advance(5000);
  await flush();
  assert.equal(sockets.length, 3);
  assert.equal(streams.length, 1);
  assert.equal(streams[0].url.toString(), "http://gw/sse?cities=nairobi");
  mc.close();
  assert.equal(mc.transport, "sse");
  mc.connect();
  await flush();
  assert.equal(mc.transport, "websocket", "connect() after close() starts over with a WebSocket");
  assert.equal(sockets.length, 4);
  mc.close();
});
