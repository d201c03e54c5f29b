// dashboard.js — the demo dashboard on the admin port's "/". Plain DOM and
// inline SVG over metrocast.js; no libraries.
//
// The token comes from the URL fragment (#token=…, never sent to a server;
// `metrocast serve --demo` prints such a URL), is kept in sessionStorage and
// removed from the address bar; without one, or when the node refuses it
// (expired, revoked, another key), the page asks for one, saying why, and
// connects with it without a reload: the form answers the client's
// getToken().
import { Metrocast, tokenExpiry } from "./metrocast.js";
import { describe, formatValue, groupLabel, withUnit } from "./dashboard-format.js";

const $ = (id) => document.getElementById(id);
const HISTORY = 180; // chart points per metric
const TOKEN_KEY = "metrocast.token";

const ui = {
  city: $("city"),
  conn: $("conn"),
  connText: $("conn-text"),
  seq: $("seq"),
  latency: $("latency"),
  rate: $("rate"),
  epoch: $("epoch"),
  watchers: $("watchers"),
  clock: $("clock"),
  cards: $("cards"),
  metric: $("metric"),
  metricNow: $("metric-now"),
  chart: $("chart"),
  alerts: $("alerts"),
  alertCount: $("alert-count"),
  tokenForm: $("token-form"),
  tokenInput: $("token-input"),
  tokenReason: $("token-reason"),
};

// What the browser test reads: every city frame applied, in order.
const frames = [];
window.metrocastDashboard = { frames, client: null };

let client = null;
let city = "";
let series = new Map(); // metric path -> [{t, v}]
let frameTimes = [];

function fragment() {
  return new URLSearchParams(location.hash.slice(1));
}

function setFragment(params) {
  const h = params.toString();
  window.history.replaceState(null, "", h ? "#" + h : location.pathname + location.search);
}

function takeToken() {
  const f = fragment();
  const t = f.get("token");
  if (t) {
    sessionStorage.setItem(TOKEN_KEY, t);
    f.delete("token");
    setFragment(f);
  }
  return sessionStorage.getItem(TOKEN_KEY) ?? undefined;
}

// getJSON fetches from the admin port with the page's client token, which
// an admin port beyond loopback asks for (and answers with the token's
// cities only). A 401 is an error with status 401.
async function getJSON(path, token) {
  const headers = token ? { Authorization: `Bearer ${token}` } : {};
  const r = await fetch(path, { cache: "no-store", headers });
  if (!r.ok) throw Object.assign(new Error(`${path}: ${r.status}`), { status: r.status });
  return r.json();
}

async function loadCities(token) {
  const { cities } = await getJSON("/api/cities", token);
  return cities.sort();
}

function fillPicker(names) {
  const have = new Set([...ui.city.options].map((o) => o.value));
  for (const n of names) {
    if (have.has(n)) continue;
    const o = document.createElement("option");
    o.value = n;
    o.textContent = n;
    ui.city.append(o);
  }
  const sorted = [...ui.city.options].sort((a, b) => a.value.localeCompare(b.value));
  ui.city.replaceChildren(...sorted);
  if (city) ui.city.value = city;
}

const fmt = (v) => formatValue(v);

// units keeps the unit of each metric path shown (for the chart).
const units = new Map();

// metrics flattens a state one level deep: {traffic: {speed: 3}} gives
// "traffic.speed".
function metrics(state) {
  const out = [];
  for (const [k, v] of Object.entries(state ?? {})) {
    if (v && typeof v === "object" && !Array.isArray(v)) {
      for (const [k2, v2] of Object.entries(v)) out.push([k, k2, v2]);
    } else {
      out.push(["", k, v]);
    }
  }
  return out;
}

function renderCards(state) {
  const groups = new Map();
  for (const [g, k, v] of metrics(state)) {
    if (!groups.has(g)) groups.set(g, []);
    groups.get(g).push([k, v]);
  }
  for (const [g, rows] of groups) {
    const id = "card-" + (g || "misc");
    let card = document.getElementById(id);
    if (!card) {
      card = document.createElement("article");
      card.className = "card";
      card.id = id;
      card.innerHTML = `<h3></h3><div class="rows"></div>`;
      card.querySelector("h3").textContent = groupLabel(g);
      ui.cards.append(card);
    }
    const box = card.querySelector(".rows");
    for (const [k, v] of rows) {
      let row = box.querySelector(`[data-key="${CSS.escape(k)}"]`);
      if (!row) {
        row = document.createElement("div");
        row.className = "row";
        row.dataset.key = k;
        row.innerHTML = `<span class="k"></span><span class="v"></span><span class="u"></span>`;
        const d = describe(k);
        row.querySelector(".k").textContent = d.label;
        row.querySelector(".u").textContent = d.unit;
        box.append(row);
      }
      const el = row.querySelector(".v");
      const text = fmt(v);
      if (el.textContent !== text) {
        el.textContent = text;
        el.classList.add("flash");
        setTimeout(() => el.classList.remove("flash"), 400);
      }
    }
  }
}

function record(state, t) {
  for (const [g, k, v] of metrics(state)) {
    if (typeof v !== "number") continue;
    const path = g ? `${g}.${k}` : k;
    if (!series.has(path)) {
      series.set(path, []);
      const d = describe(k);
      units.set(path, d.unit);
      const o = document.createElement("option");
      o.value = path;
      o.textContent = (g ? groupLabel(g) + " · " : "") + d.label + (d.unit ? ` (${d.unit})` : "");
      ui.metric.append(o);
      if (!ui.metric.value || ui.metric.options.length === 1) ui.metric.value = path;
    }
    const h = series.get(path);
    h.push({ t, v });
    if (h.length > HISTORY) h.shift();
  }
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function renderChart() {
  const h = series.get(ui.metric.value) ?? [];
  const W = 600, H = 220, P = 28;
  const nodes = [];
  for (let i = 0; i <= 4; i++) nodes.push(svg("line", { class: "grid", x1: P, x2: W, y1: (i * (H - 10)) / 4 + 5, y2: (i * (H - 10)) / 4 + 5 }));
  if (h.length >= 2) {
    let lo = Math.min(...h.map((p) => p.v));
    let hi = Math.max(...h.map((p) => p.v));
    if (hi === lo) (hi += 1), (lo -= 1);
    const t0 = h[0].t, t1 = h[h.length - 1].t || t0 + 1;
    const x = (t) => P + ((t - t0) / Math.max(1, t1 - t0)) * (W - P);
    const y = (v) => 5 + (1 - (v - lo) / (hi - lo)) * (H - 10);
    const pts = h.map((p) => `${x(p.t).toFixed(1)},${y(p.v).toFixed(1)}`).join(" ");
    nodes.push(svg("polygon", { class: "area", points: `${P},${H - 5} ${pts} ${W},${H - 5}` }));
    nodes.push(svg("polyline", { class: "line", points: pts }));
    const top = svg("text", { x: 2, y: 14 });
    top.textContent = fmt(hi);
    const bottom = svg("text", { x: 2, y: H - 8 });
    bottom.textContent = fmt(lo);
    nodes.push(top, bottom);
    ui.metricNow.textContent = withUnit(fmt(h[h.length - 1].v), units.get(ui.metric.value));
  } else {
    ui.metricNow.textContent = h.length ? withUnit(fmt(h[0].v), units.get(ui.metric.value)) : "";
  }
  ui.chart.replaceChildren(...nodes);
}

// alertsShown identifies the alerts on screen: they are rebuilt only when
// they change, not on every frame.
let alertsShown = "";

function renderAlerts(entries, fresh) {
  const key = `${client.epoch}:${entries.length}:${entries[0]?.seq}`;
  if (key === alertsShown) return;
  alertsShown = key;
  const items = [];
  for (const e of entries) {
    for (const a of e.alerts) {
      const li = document.createElement("li");
      li.dataset.severity = a.severity;
      li.dataset.seq = e.seq;
      if (fresh === e.seq) li.classList.add("new");
      li.innerHTML = `<div class="meta"><span class="sev"></span><span class="when"></span></div><div class="msg"></div>`;
      li.querySelector(".sev").textContent = a.severity;
      li.querySelector(".when").textContent = e.timestamp ? new Date(e.timestamp).toLocaleTimeString() : "";
      li.querySelector(".msg").textContent = a.message;
      items.push(li);
    }
  }
  ui.alerts.replaceChildren(...items);
  ui.alertCount.textContent = String(items.length);
}

function showFrame(seq, timestamp) {
  ui.seq.textContent = String(seq);
  if (timestamp) ui.latency.textContent = `${Math.max(0, Date.now() - timestamp)} ms`;
  const now = performance.now();
  frameTimes.push(now);
  while (frameTimes.length && frameTimes[0] < now - 5000) frameTimes.shift();
}

function setStatus(text, status) {
  ui.conn.dataset.status = status;
  ui.connText.textContent = text;
}

function pick(next) {
  if (!next || next === city) return;
  const prev = city;
  city = next;
  localStorage.setItem("metrocast.city", city);
  const f = fragment();
  f.set("city", city);
  setFragment(f);
  ui.city.value = city;
  series = new Map();
  ui.metric.replaceChildren();
  ui.cards.replaceChildren();
  ui.alerts.replaceChildren();
  alertsShown = "";
  ui.alertCount.textContent = "0";
  ui.seq.textContent = "–";
  ui.latency.textContent = "–";
  ui.watchers.textContent = "–";
  if (prev) client.unsubscribe([prev]);
  client.subscribe([city]);
}

// The token in use, and why the node last refused one ("" when it has not).
let token;
let refusal = "";

// getToken answers the client: first the token the page came with, then
// whatever the form is given. The client asks after every refusal and
// before the token expires.
let offered;
async function getToken() {
  if (offered) {
    const t = offered;
    offered = undefined;
    return t;
  }
  const exp = tokenExpiry(token);
  const why = refusal || (exp > Date.now() ? `The token expires at ${new Date(exp).toLocaleTimeString()}: paste a new one to stay connected.` : "");
  refusal = "";
  token = await askToken(why);
  setStatus("connecting", "connecting");
  return token;
}

function start(url, secure) {
  offered = token;
  // Where a proxy breaks the WebSocket upgrade, the page follows the city
  // over the gateway's Server-Sent Events stream (no presence there).
  client = new Metrocast({ url, getToken: secure ? getToken : undefined, cities: city ? [city] : [], presence: true, sseFallback: true });
  window.metrocastDashboard.client = client;
  client.on("status", ({ status }) => {
    const text = status === "open" && client.transport === "sse" ? "open (SSE)" : status;
    if (!(refusal && status === "reconnecting")) setStatus(text, status);
  });
  client.on("transport", () => (ui.conn.dataset.transport = client.transport));
  client.on("reconnect", (e) => {
    if (!refusal) setStatus(`reconnecting in ${(e.delayMs / 1000).toFixed(1)} s`, "reconnecting");
  });
  client.on("subscribed", (m) => (ui.epoch.textContent = String(m.epoch)));
  client.on("presence", (e) => {
    if (e.city === city) ui.watchers.textContent = String(e.count);
  });
  // The chart plots the values each frame carried, not the merged state:
  // a point per change.
  const plot = (m) => {
    if (m.city === city) record(m.data, m.timestamp ?? Date.now());
  };
  client.on("initial_data", plot);
  client.on("data_update", plot);
  client.on("message", (m) => {
    if (m.city && m.seq !== undefined && m.city === city) {
      frames.push({ city: m.city, seq: m.seq, type: m.type, epoch: client.epoch, resumed: m.resumed });
      if (frames.length > 10000) frames.splice(0, frames.length - 10000);
    }
  });
  client.on("state", (e) => {
    if (e.city !== city) return;
    renderCards(e.state);
    renderChart();
    showFrame(e.seq, e.timestamp);
    renderAlerts(client.alerts(city));
  });
  client.on("alerts", (m) => {
    if (m.city !== city) return;
    showFrame(m.seq, m.timestamp);
    renderAlerts(client.alerts(city), m.seq);
  });
  // The client asks getToken for another (the form, with the reason).
  client.on("auth_error", (m) => {
    sessionStorage.removeItem(TOKEN_KEY);
    refusal = `The node refused the token: ${m.code} (${m.message}).`;
    setStatus(`token refused: ${m.code}`, "closed");
  });
  client.connect();
}

// asking is the token form's answer while it is shown.
let asking = null;

// askToken shows the token form, with why when given, and resolves with
// the token pasted into it. A second call while it is shown updates the
// reason and shares the answer.
function askToken(why) {
  ui.tokenForm.hidden = false;
  ui.tokenReason.textContent = why;
  ui.tokenReason.hidden = !why;
  if (ui.conn.dataset.status !== "closed") setStatus("token needed", "closed");
  asking ??= new Promise((resolve) => {
    ui.tokenForm.onsubmit = (ev) => {
      ev.preventDefault();
      const t = ui.tokenInput.value.trim();
      if (!t) return;
      sessionStorage.setItem(TOKEN_KEY, t);
      ui.tokenInput.value = "";
      ui.tokenForm.hidden = true;
      asking = null;
      resolve(t);
    };
  });
  return asking;
}

async function main() {
  setInterval(() => {
    ui.clock.textContent = new Date().toLocaleTimeString();
    ui.rate.textContent = (frameTimes.length / 5).toFixed(1);
  }, 1000);
  token = takeToken();
  let info;
  for (;;) {
    try {
      info = await getJSON("/api/client", token);
      break;
    } catch (err) {
      if (err.status !== 401) throw err;
      // An admin port beyond loopback wants a valid client token.
      if (token) sessionStorage.removeItem(TOKEN_KEY);
      setStatus(token ? "token refused" : "token needed", "closed");
      token = await askToken(token ? "The admin port refused the token (expired, revoked, or not for this node)." : "");
    }
  }
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const url = fragment().get("ws") ?? `${scheme}://${location.hostname}:${info.ws_port}${info.ws_path}`;
  ui.city.onchange = () => pick(ui.city.value);
  ui.metric.onchange = renderChart;
  let names = [];
  for (let i = 0; names.length === 0 && i < 30; i++) {
    names = await loadCities(token).catch(() => []);
    if (names.length === 0) await new Promise((r) => setTimeout(r, 1000));
  }
  fillPicker(names);
  const wanted = fragment().get("city") ?? localStorage.getItem("metrocast.city");
  start(url, !info.insecure);
  pick(wanted && (names.includes(wanted) || fragment().get("city")) ? wanted : names[0] ?? "");
  fillPicker([city]);
  setInterval(() => loadCities(token).then(fillPicker, () => {}), 15000);
}

main().catch((err) => setStatus(String(err), "closed"));
