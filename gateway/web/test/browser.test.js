// The dashboard in a real browser: headless Chromium (Debian's package)
// driven by playwright-core, against the real binary with -demo.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { mkdirSync } from "node:fs";
import { createServer } from "node:http";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";
import { adminTokenFile, chromiumPath, haveChromium, hs256, ports, publish, secretFile, startNode, startProxy, token, waitFor } from "./gateway.js";

const artifacts = fileURLToPath(new URL("../test-results", import.meta.url));
const CITY = "lagos";

let browser;
before(async () => {
  assert.ok(haveChromium(), `${chromiumPath} is missing: apt-get install -y chromium (make test does, as root)`);
  browser = await chromium.launch({
    executablePath: chromiumPath,
    args: [
      "--no-sandbox",
      "--headless",
      "--disable-gpu",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
      "--no-first-run",
    ],
    timeout: 30000,
  });
  mkdirSync(artifacts, { recursive: true });
});
after(() => browser?.close());

// frames returns what the page applied for the city, in order.
const frames = (page) => page.evaluate(() => window.metrocastDashboard.frames);

// contiguous asserts that from frame `from` on, within one epoch, seqs
// rise by exactly one (no gap, no repeat).
function contiguous(list, from) {
  for (let i = from + 1; i < list.length; i++) {
    if (list[i].epoch !== list[i - 1].epoch) continue;
    assert.equal(list[i].seq, list[i - 1].seq + 1, `frame ${i}: seq ${list[i - 1].seq} then ${list[i].seq}\n${JSON.stringify(list.slice(Math.max(0, i - 3), i + 2))}`);
  }
}

test("dashboard: live updates, alerts, resume after a lost connection, survives a gateway restart", { timeout: 90000 }, async () => {
  const p = await ports();
  const secret = secretFile();
  // The admin port beyond loopback, as operators run it: the page works
  // with its client token alone; the test's publishes carry the admin token.
  const admin = adminTokenFile();
  p.adminToken = admin.token;
  const flags = ["-demo", "-auth-hmac-secret-file", secret, "-admin-addr", `0.0.0.0:${p.admin}`, "-admin-token-file", admin.path];
  let node = await startNode(p, flags);
  const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  // Console errors: a Content-Security-Policy violation, a failed load.
  // Connection failures while the node restarts are expected.
  page.on("console", (m) => {
    if (m.type() === "error" && !/WebSocket connection|ERR_CONNECTION_REFUSED/.test(m.text())) errors.push(m.text());
  });
  try {
    const url = node.out.match(/http:\/\/\S+#token=\S+/)?.[0];
    assert.ok(url, `no dashboard URL with a token in:\n${node.out}`);
    await page.goto(`${url}&city=${CITY}`);

    // Connected, the picker on the city, live numbers arriving.
    await page.waitForSelector('#conn[data-status="open"]', { timeout: 15000 });
    assert.equal(await page.inputValue("#city"), CITY);
    assert.equal(await page.locator("#city option").count(), 12);
    assert.equal(page.url().includes("token="), false, "the token is removed from the address bar");
    await page.waitForSelector("#card-air_quality .row .v", { timeout: 10000 });
    const seq0 = Number(await page.textContent("#seq"));
    await waitFor(async () => Number(await page.textContent("#seq")) >= seq0 + 5, 10000, "seq does not advance");
    assert.match(await page.textContent("#latency"), /^\d+ ms$/);
    // Presence: the page counts itself among the city's watchers.
    await waitFor(async () => (await page.textContent("#watchers")) === "1", 5000, "no presence count");
    await page.waitForSelector("#chart polyline", { timeout: 10000 }); // the chart draws a line

    // Alerts: the demo's first one from recent_alerts, and a critical one
    // published now, highlighted.
    await page.waitForSelector('#alerts li[data-severity="info"]', { timeout: 10000 });
    const [ack] = await publish(p, { city: CITY, type: "alerts", id: "b1", alerts: [{ severity: "critical", message: "Browser test: river over the flood mark" }] });
    const crit = page.locator('#alerts li[data-severity="critical"]', { hasText: "Browser test" });
    await crit.waitFor({ timeout: 10000 });
    assert.equal(await crit.evaluate((el) => getComputedStyle(el).borderLeftColor), "rgb(255, 77, 79)");
    assert.ok((await frames(page)).some((f) => f.seq === ack.seq && f.type === "alerts"));
    await page.screenshot({ path: join(artifacts, "dashboard.png") });

    // A lost connection (the client gives it up, as on a dead network):
    // it reconnects and resumes with since; not one frame is missed.
    let n = (await frames(page)).length;
    await page.evaluate(() => window.metrocastDashboard.client.drop("test"));
    await waitFor(async () => (await frames(page)).length > n + 8, 15000, "no frames after the reconnect");
    let list = await frames(page);
    contiguous(list, 0);
    assert.equal(list.filter((f) => f.type === "initial_data" && !f.resumed).length, 1, "the resume needed no initial_data");

    // A gateway restart: SIGTERM drains (reconnect hint), a new process
    // takes the ports. A single node's seqs start over with a new epoch,
    // so the page gets the current state in initial_data and then every
    // frame of the new run without a gap.
    const epoch0 = list.at(-1).epoch;
    const stopped = await node.stop();
    assert.equal(stopped.code, 0, node.err);
    node = await startNode(p, flags);
    await waitFor(async () => (await frames(page)).some((f) => f.epoch !== epoch0), 20000, "no frames from the restarted node");
    await page.waitForSelector('#conn[data-status="open"]', { timeout: 10000 });
    n = (await frames(page)).length;
    await waitFor(async () => (await frames(page)).length > n + 8, 15000, "no live frames after the restart");
    list = await frames(page);
    const first = list.findIndex((f) => f.epoch !== epoch0);
    assert.equal(list[first].type, "initial_data");
    contiguous(list, 0);
    assert.notEqual(await page.textContent("#epoch"), String(epoch0));
    await page.waitForSelector('#alerts li[data-severity="info"]', { timeout: 10000 });
    await page.screenshot({ path: join(artifacts, "dashboard-after-restart.png") });
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
    await node.stop();
  }
});

// overflow lists the page's parts that stick out of the viewport's width
// (cut off on a phone), and the page itself if it scrolls sideways.
const overflow = (page) =>
  page.evaluate(() => {
    const w = document.documentElement.clientWidth;
    const out = [];
    if (document.documentElement.scrollWidth > w) out.push(`the page is ${document.documentElement.scrollWidth} px wide in ${w}`);
    const parts = "header, header *, #token-form:not([hidden]), #token-form:not([hidden]) *, main > section, .card, .card *, .panel-head *, #alerts li";
    for (const el of document.querySelectorAll(parts)) {
      const r = el.getBoundingClientRect();
      if (r.width > 0 && (r.left < -0.5 || r.right > w + 0.5)) {
        out.push(`${el.tagName.toLowerCase()}${el.id ? "#" + el.id : ""} "${el.textContent.trim().slice(0, 30)}" spans ${Math.round(r.left)}..${Math.round(r.right)} of ${w}`);
      }
    }
    return out;
  });

test("dashboard on a phone: a refused token shows the form with the reason; a pasted one connects without a reload", { timeout: 60000 }, async () => {
  const p = await ports();
  const secret = secretFile();
  const node = await startNode(p, ["-demo", "-auth-hmac-secret-file", secret]);
  const page = await browser.newPage({ viewport: { width: 360, height: 740 }, isMobile: true, hasTouch: true });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  try {
    const now = Math.floor(Date.now() / 1000);
    const expired = hs256(secret, { sub: "ops", cities: ["*"], iat: now - 7200, exp: now - 3600 });
    await page.goto(`http://127.0.0.1:${p.admin}/#token=${expired}&city=${CITY}`);
    await page.evaluate(() => (window.notReloaded = true));

    // The node refuses the expired token after the upgrade: the page shows
    // why and asks, instead of "reconnecting" for ever.
    await page.waitForSelector("#token-form:not([hidden])", { timeout: 15000 });
    await waitFor(async () => (await page.textContent("#token-reason")).includes("token_expired"), 5000, "no reason shown");
    assert.match(await page.textContent("#conn-text"), /token refused: token_expired/);
    assert.deepEqual(await overflow(page), [], "cut off on a phone, token form shown");
    await page.screenshot({ path: join(artifacts, "dashboard-phone-token.png"), fullPage: true });

    // A token signed with a key the node does not have: refused too, with
    // its reason.
    await page.fill("#token-input", token(secretFile("a-key-the-node-no-longer-has-0123456789"), "ops", "*"));
    await page.click("#token-form button");
    await waitFor(async () => (await page.textContent("#token-reason")).includes("invalid_token"), 10000, "no reason for the second token");

    // A good token connects, on the same page.
    await page.fill("#token-input", token(secret, "ops", "*"));
    await page.click("#token-form button");
    await page.waitForSelector('#conn[data-status="open"]', { timeout: 15000 });
    assert.equal(await page.isHidden("#token-form"), true);
    assert.equal(await page.evaluate(() => window.notReloaded), true, "the page was not reloaded");

    // Formatted labels with their units.
    const row = page.locator('#card-air_quality [data-key="pm25"]');
    await row.waitFor({ timeout: 10000 });
    assert.equal(await page.textContent("#card-air_quality h3"), "Air quality");
    assert.deepEqual([await row.locator(".k").textContent(), await row.locator(".u").textContent()], ["PM2.5", "µg/m³"]);
    await page.waitForSelector('#card-traffic [data-key="avg_speed_kmh"]', { timeout: 10000 });
    assert.equal(await page.textContent('#card-traffic [data-key="avg_speed_kmh"] .k'), "Avg speed");
    assert.equal(await page.textContent('#card-traffic [data-key="avg_speed_kmh"] .u'), "km/h");
    await page.waitForSelector('#alerts li[data-severity="info"]', { timeout: 10000 });
    await page.waitForSelector("#chart polyline", { timeout: 10000 });
    await page.waitForSelector("#card-energy", { timeout: 10000 });
    assert.match(await page.textContent("#metric-now"), /^[\d,.-]+( \S+|%)?$/);

    // Nothing cut off at phone width, and the page does not scroll sideways.
    assert.deepEqual(await overflow(page), [], "cut off on a phone");
    await page.screenshot({ path: join(artifacts, "dashboard-phone.png"), fullPage: true });
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
    await node.stop();
  }
});

// pageServer serves a blank page of its own origin, from which a test's
// script reaches the gateway across origins, as a web app does.
function pageServer() {
  const srv = createServer((_req, res) => res.end("<!doctype html><title>app</title>"));
  return new Promise((r) => srv.listen(0, "127.0.0.1", () => r({ url: `http://127.0.0.1:${srv.address().port}/`, close: () => new Promise((c) => srv.close(c)) })));
}

test("Chromium's own EventSource: a dropped connection resumes by Last-Event-ID alone, with no gap and no duplicate", { timeout: 60000 }, async () => {
  const p = await ports();
  const secret = secretFile();
  const node = await startNode(p, ["-auth-hmac-secret-file", secret]);
  const proxy = await startProxy(p.ws);
  const app = await pageServer();
  const page = await browser.newPage();
  try {
    await page.goto(app.url);
    const url = `http://127.0.0.1:${proxy.port}/sse?cities=mombasa,malindi&token=${token(secret, "web", "mombasa,malindi")}`;
    await page.evaluate((url) => {
      window.got = [];
      window.drops = 0;
      const es = new EventSource(url);
      for (const type of ["initial_data", "data_update", "alerts"]) {
        es.addEventListener(type, (e) => {
          const m = JSON.parse(e.data);
          window.got.push({ type, city: m.city, seq: m.seq, resumed: m.resumed, id: e.lastEventId });
        });
      }
      es.onerror = () => window.drops++;
    }, url);
    const got = () => page.evaluate(() => window.got);
    await waitFor(async () => (await got()).length === 2, 10000, "no initial_data");
    const sent = [];
    const pub = async (n) => {
      for (let i = 0; i < n; i++) {
        const city = i % 2 ? "malindi" : "mombasa";
        const [a] = await publish(p, { city, type: "data_update", id: `e${sent.length}`, data: { n: sent.length } });
        sent.push({ city, seq: a.seq });
      }
    };
    await pub(4);
    await waitFor(async () => (await got()).length === 6, 10000, "no live events");

    // The network drops; the browser reconnects by itself after retry and
    // sends the last id it saw; frames published meanwhile arrive once.
    const requests = proxy.heads.length;
    proxy.cut();
    await pub(6);
    await waitFor(async () => (await got()).length === 12, 20000, () => "no resume");
    await pub(2);
    await waitFor(async () => (await got()).length === 14, 10000, "no live events after the resume");
    const list = await got();
    for (const city of ["mombasa", "malindi"]) {
      const seqs = (l) => l.filter((e) => e.city === city).map((e) => e.seq);
      assert.deepEqual(seqs(list.slice(2)), seqs(sent), `${city}: every frame once, in order`);
    }
    assert.equal(list.filter((e) => e.type === "initial_data").length, 2, "no initial_data after the resume");
    assert.ok((await page.evaluate(() => window.drops)) >= 1, "the page saw the drop");
    const again = proxy.heads.slice(requests).find((h) => h.startsWith("GET /sse?"));
    assert.ok(again, "no second request");
    assert.match(again, /^last-event-id: \d+\/(mombasa|malindi):\d+,(mombasa|malindi):\d+\r$/im, "the reconnect carries Last-Event-ID");
    assert.doesNotMatch(again.split("\r\n")[0], /since=/, "the URL did not change: the id alone resumed");
  } finally {
    await page.close();
    await app.close();
    await proxy.close();
    await node.stop();
  }
});

test("dashboard over SSE: behind a proxy that breaks the WebSocket upgrade it falls back, and resumes without a gap", { timeout: 60000 }, async () => {
  const p = await ports();
  const secret = secretFile();
  const node = await startNode(p, ["-demo", "-auth-hmac-secret-file", secret]);
  const proxy = await startProxy(p.ws, { breakUpgrades: true });
  const page = await browser.newPage({ viewport: { width: 1600, height: 900 } });
  const errors = [];
  page.on("pageerror", (e) => errors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error" && !/WebSocket connection|ERR_CONNECTION|ERR_EMPTY_RESPONSE/.test(m.text())) errors.push(m.text());
  });
  try {
    const url = node.out.match(/http:\/\/\S+#token=\S+/)?.[0];
    assert.ok(url, `no dashboard URL with a token in:\n${node.out}`);
    await page.goto(`${url}&city=${CITY}&ws=ws://127.0.0.1:${proxy.port}/ws`);
    await page.waitForSelector('#conn[data-status="open"][data-transport="sse"]', { timeout: 20000 });
    assert.equal(await page.textContent("#conn-text"), "open (SSE)");
    await page.waitForSelector("#card-air_quality .row .v", { timeout: 10000 });
    const seq0 = Number(await page.textContent("#seq"));
    await waitFor(async () => Number(await page.textContent("#seq")) >= seq0 + 3, 10000, "seq does not advance over SSE");
    assert.ok(proxy.heads.some((h) => h.startsWith("GET /sse?")), "no stream request");

    let n = (await frames(page)).length;
    proxy.cut();
    await waitFor(async () => (await frames(page)).length > n + 8, 20000, "no frames after the stream was cut");
    const list = await frames(page);
    contiguous(list, 0);
    assert.equal(list.filter((f) => f.type === "initial_data" && !f.resumed).length, 1, "the resume needed no initial_data");
    await page.screenshot({ path: join(artifacts, "dashboard-sse.png") });
    assert.deepEqual(errors, []);
  } finally {
    await page.close();
    await proxy.close();
    await node.stop();
  }
});
