// Server-Sent Events against the real binary: Node's fetch streaming as an
// independent client (its own parser below), and metrocast.js falling back
// to the stream where a proxy breaks the WebSocket upgrade.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import WebSocket from "ws";
import { Metrocast } from "../metrocast.js";
import { ports, publish, secretFile, startNode, startProxy, token, waitFor } from "./gateway.js";

let p, node, secret;
before(async () => {
  p = await ports();
  secret = secretFile();
  node = await startNode(p, ["-auth-hmac-secret-file", secret]);
});
after(() => node?.stop());

// stream GETs /sse with fetch and collects its events ({event, id, data});
// stop() ends it.
async function stream(url, headers = {}) {
  const ctrl = new AbortController();
  const res = await fetch(url, { headers, signal: ctrl.signal });
  const s = { res, events: [], comments: 0, lastId: "", stop: () => ctrl.abort() };
  if (!res.ok) return s;
  (async () => {
    const dec = new TextDecoder();
    let buf = "";
    let ev = { data: [] };
    try {
      for await (const chunk of res.body) {
        buf += dec.decode(chunk, { stream: true });
        let i;
        while ((i = buf.indexOf("\n")) >= 0) {
          const line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line === "") {
            if (ev.data.length) s.events.push({ event: ev.event, id: s.lastId, data: JSON.parse(ev.data.join("\n")) });
            ev = { data: [] };
          } else if (line.startsWith(":")) s.comments++;
          else {
            const [k, ...rest] = line.split(":");
            const v = rest.join(":").replace(/^ /, "");
            if (k === "id") s.lastId = v;
            else if (k === "data") ev.data.push(v);
            else ev[k] = v;
          }
        }
      }
    } catch {
      // aborted
    }
  })();
  return s;
}

test("fetch streaming: events with ids, resumed by Last-Event-ID alone, history as NDJSON", { timeout: 20000 }, async () => {
  const tok = token(secret, "ops", "nairobi,lagos");
  const auth = { Authorization: `Bearer ${tok}` };
  const base = `http://127.0.0.1:${p.ws}`;
  const s = await stream(`${base}/sse?cities=nairobi,lagos`, auth);
  assert.equal(s.res.status, 200);
  assert.match(s.res.headers.get("content-type"), /^text\/event-stream/);
  await waitFor(() => s.events.filter((e) => e.event === "initial_data").length === 2, 5000, "no initial_data");
  const [a1, a2] = await publish(
    p,
    { city: "nairobi", type: "data_update", id: "s1", data: { pm25: 9 } },
    { city: "lagos", type: "alerts", id: "s2", alerts: [{ severity: "warning", message: "w" }] },
  );
  await waitFor(() => s.events.length === 5, 5000, "no live events");
  const [upd, al] = s.events.slice(3);
  assert.deepEqual([upd.event, upd.data.seq, upd.data.data], ["data_update", a1.seq, { pm25: 9 }]);
  assert.deepEqual([al.event, al.data.seq], ["alerts", a2.seq]);
  assert.match(al.id, new RegExp(`^\\d+/lagos:${a2.seq},nairobi:${a1.seq}$`));
  const last = s.lastId;
  s.stop();

  const [m1, m2] = await publish(
    p,
    { city: "lagos", type: "data_update", id: "s3", data: { x: 1 } },
    { city: "nairobi", type: "data_update", id: "s4", data: { pm25: 10 } },
  );
  const r = await stream(`${base}/sse?cities=nairobi,lagos`, { ...auth, "Last-Event-ID": last });
  await waitFor(() => r.events.length === 3, 5000, "no resumed events");
  const [sub, ...missed] = r.events;
  assert.deepEqual(sub.data.cities.map((c) => c.resumed), [true, true]);
  assert.deepEqual(missed.map((e) => [e.data.city, e.data.seq]).sort(), [["lagos", m1.seq], ["nairobi", m2.seq]].sort());
  r.stop();

  const h = await fetch(`${base}/history?city=nairobi&since=0`, { headers: auth });
  assert.equal(h.status, 200);
  const lines = (await h.text()).trim().split("\n").map((l) => JSON.parse(l));
  assert.deepEqual(lines.map((m) => m.seq), [a1.seq, m2.seq]);
  assert.equal(h.headers.get("metrocast-head"), String(m2.seq));
  const gone = await fetch(`${base}/history?city=nairobi&since=0&epoch=1`, { headers: auth });
  assert.equal(gone.status, 410);
  assert.equal((await gone.json()).code, "gone");
  const refused = await fetch(`${base}/sse?cities=accra`, { headers: auth });
  assert.equal(refused.status, 403);
  await refused.text();
});

test("metrocast.js falls back to SSE behind a proxy that breaks upgrades, and resumes without a gap", { timeout: 30000 }, async () => {
  const proxy = await startProxy(p.ws, { breakUpgrades: true });
  let tokens = 0;
  const mc = new Metrocast({
    url: `ws://127.0.0.1:${proxy.port}/ws`,
    getToken: () => (tokens++, token(secret, "carol", "kisumu")),
    cities: ["kisumu"],
    WebSocket,
    sseFallback: true,
    backoffInitialMs: 50,
  });
  const moved = [];
  mc.on("transport", (e) => moved.push(e.transport));
  const seqs = [];
  mc.on("data_update", (m) => seqs.push(m.seq));
  mc.connect();
  try {
    await waitFor(() => mc.status === "open", 10000, "not open over SSE");
    assert.deepEqual(moved, ["sse"]);
    assert.ok(proxy.heads.some((h) => h.startsWith("GET /sse?cities=kisumu ")), "no stream request");
    await publish(p, { city: "kisumu", type: "data_update", id: "k1", data: { a: 1 } });
    await waitFor(() => seqs.length === 1, 5000, "no update");

    // The network drops; frames are published meanwhile.
    proxy.cut();
    await publish(
      p,
      { city: "kisumu", type: "data_update", id: "k2", data: { b: 2 } },
      { city: "kisumu", type: "data_update", id: "k3", data: { a: 3 } },
    );
    await waitFor(() => seqs.length === 3, 10000, "missed frames after the reconnect");
    assert.deepEqual(seqs, [seqs[0], seqs[0] + 1, seqs[0] + 2]);
    assert.deepEqual(mc.state("kisumu"), { a: 3, b: 2 });
    assert.match(proxy.heads.at(-1), /since=kisumu%3A\d+&epoch=\d+/);

    // A new token: a new stream, resuming.
    const before = tokens;
    await mc.refresh();
    await publish(p, { city: "kisumu", type: "data_update", id: "k4", data: { c: 4 } });
    await waitFor(() => seqs.length === 4, 5000, "no update after the refresh");
    assert.equal(tokens, before + 1);
    assert.equal(seqs[3], seqs[2] + 1);
  } finally {
    mc.close();
    await proxy.close();
  }
});
