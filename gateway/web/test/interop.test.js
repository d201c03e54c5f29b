// Interop against the real binary: Node's ws package as an independent
// client, and metrocast.js running over it (Node 20 has no WebSocket).
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Metrocast } from "../metrocast.js";
import { hs256, ports, publish, secretFile, startNode, textFile, token, waitFor } from "./gateway.js";

let p, node, secret;
before(async () => {
  p = await ports();
  secret = secretFile();
  node = await startNode(p, ["-auth-hmac-secret-file", secret]);
});
after(() => node?.stop());

function messages(ws) {
  const got = [];
  ws.on("message", (b) => got.push(JSON.parse(String(b))));
  return got;
}

test("ws: bearer subprotocol, subscribe, live frames, ping, forbidden city", { timeout: 20000 }, async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${p.ws}/ws`, ["metrocast", "bearer." + token(secret, "alice", "nairobi")]);
  const got = messages(ws);
  await new Promise((res, rej) => ws.once("open", res).once("error", rej));
  assert.equal(ws.protocol, "metrocast", "the server echoes metrocast, never the token");
  ws.send(JSON.stringify({ type: "subscribe", cities: ["nairobi", "lagos"] }));
  await waitFor(() => got.find((m) => m.type === "initial_data"), 5000, "no initial_data");
  assert.ok(got.find((m) => m.type === "error" && m.code === "forbidden" && m.city === "lagos"));
  const [ack] = await publish(p, { city: "nairobi", type: "data_update", id: "i1", data: { pm25: 7 } });
  const upd = await waitFor(() => got.find((m) => m.type === "data_update"), 5000, "no data_update");
  assert.deepEqual([upd.seq, upd.data], [ack.seq, { pm25: 7 }]);
  ws.send(JSON.stringify({ type: "ping" }));
  await waitFor(() => got.find((m) => m.type === "pong"), 5000, "no pong");
  ws.close(1000);
  const [code] = await new Promise((r) => ws.once("close", (...a) => r(a)));
  assert.equal(code, 1000);
});

test("ws: a bad token is a 401 before the upgrade", { timeout: 10000 }, async () => {
  const ws = new WebSocket(`ws://127.0.0.1:${p.ws}/ws?cities=nairobi`, ["metrocast", "bearer.not-a-token"]);
  const status = await new Promise((r) => ws.once("unexpected-response", (_req, res) => r(res.statusCode)).once("error", () => r("error")));
  assert.equal(status, 401);
});

test("metrocast.js over ws: state, resume without a gap after a lost connection, token refresh", { timeout: 20000 }, async () => {
  let fetched = 0;
  const mc = new Metrocast({
    url: `ws://127.0.0.1:${p.ws}/ws`,
    getToken: () => (fetched++, token(secret, "bob", "accra")),
    cities: ["accra"],
    WebSocket,
  });
  const seqs = [];
  mc.on("data_update", (m) => seqs.push(m.seq));
  const subscribed = [];
  mc.on("subscribed", (m) => subscribed.push(m));
  mc.connect();
  try {
    await waitFor(() => mc.state("accra") !== undefined, 5000, "no initial state");
    await publish(p, { city: "accra", type: "data_update", id: "a1", data: { a: 1 } });
    await waitFor(() => seqs.length === 1, 5000, "no update");

    // Lose the connection, publish while it is down, reconnect.
    mc.drop("test");
    await publish(
      p,
      { city: "accra", type: "data_update", id: "a2", data: { b: 2 } },
      { city: "accra", type: "alerts", id: "a3", alerts: [{ severity: "critical", message: "gap" }] },
      { city: "accra", type: "data_update", id: "a4", data: { a: 3 } },
    );
    await waitFor(() => seqs.length === 3, 10000, "missed frames after the reconnect");
    assert.equal(subscribed.at(-1).cities[0].resumed, true, "resumed with since");
    assert.deepEqual(seqs, [seqs[0], seqs[0] + 1, seqs[0] + 3]);
    assert.equal(mc.alerts("accra")[0].alerts[0].message, "gap");
    assert.deepEqual(mc.state("accra"), { a: 3, b: 2 });

    // refresh() fetches a token and the gateway confirms it.
    const refreshed = new Promise((r) => mc.on("refreshed", r));
    await mc.refresh();
    assert.ok((await refreshed).exp > Date.now() / 1000);
    assert.equal(fetched, 2, "one token to connect (kept across the reconnect), one for refresh");
  } finally {
    mc.close();
  }
});

test("metrocast.js over ws: every refusal arrives as auth_error, and getToken is asked again", { timeout: 30000 }, async () => {
  // A node that wants aud "web" and has revoked mallory's tokens.
  const q = await ports();
  const revoked = textFile("revoked", "sub mallory\n");
  const strict = await startNode(q, ["-auth-hmac-secret-file", secret, "-auth-audience", "web", "-auth-revoked-file", revoked]);
  const rotatedOut = secretFile("a-key-the-node-no-longer-has-0123456789");
  const now = Math.floor(Date.now() / 1000);
  const tokens = [
    token(rotatedOut, "bob", "accra", ["-aud", "web"]), // another key
    token(secret, "bob", "accra"), // no aud
    hs256(secret, { sub: "bob", cities: ["accra"], aud: "web", iat: now - 7200, exp: now - 3600 }), // expired
    token(secret, "mallory", "accra", ["-aud", "web"]), // revoked
    token(secret, "bob", "accra", ["-aud", "web"]),
  ];
  let n = 0;
  const mc = new Metrocast({
    url: `ws://127.0.0.1:${q.ws}/ws`,
    getToken: () => tokens[n++],
    cities: ["accra"],
    WebSocket,
    backoffInitialMs: 20,
    backoffMaxMs: 100,
  });
  const refusals = [];
  mc.on("auth_error", (m) => refusals.push(m.code));
  mc.connect();
  try {
    await waitFor(() => mc.state("accra") !== undefined, 15000, () => `not subscribed; refusals ${refusals}`);
    assert.deepEqual(refusals, ["invalid_token", "invalid_claims", "token_expired", "token_revoked"]);
    assert.equal(n, tokens.length, "one getToken call per connection");
    assert.equal(mc.status, "open");
  } finally {
    mc.close();
    await strict.stop();
  }
});

test("metrocast.js over ws: without getToken, a refused token stops the client", { timeout: 10000 }, async () => {
  const mc = new Metrocast({ url: `ws://127.0.0.1:${p.ws}/ws`, token: "not.a.token", cities: ["accra"], WebSocket });
  const refusals = [];
  mc.on("auth_error", (m) => refusals.push(m.code));
  mc.connect();
  await waitFor(() => mc.status === "closed", 5000, "still trying");
  assert.deepEqual(refusals, ["invalid_token"]);
});
