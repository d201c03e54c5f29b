// metrocast.js — the browser (and Node) client for a metrocast gateway.
// An ES module without dependencies; types in metrocast.d.ts.
//
//   import { Metrocast } from "./metrocast.js";
//   const mc = new Metrocast({ url: "ws://127.0.0.1:8080/ws", token, cities: ["nairobi"] });
//   mc.on("state", ({ city, state }) => render(city, state));
//   mc.connect();
//
// It reconnects for ever (exponential backoff with jitter, capped), resumes
// every city after its last seq so a reconnect shows no gap, keeps each
// city's state ({...prev, ...update}), detects a dead connection by its
// silence, and fetches a new token before the current one expires.
//
// The token goes out in an auth message once the connection is open
// (tokenTransport "message"), not in the upgrade request: a browser never
// shows a page the HTTP status of a refused upgrade, only a close 1006,
// whereas a refused auth message is answered with an auth_error that names
// the reason. Any refusal discards the token: the next connection asks
// getToken() for a new one.
//
// Where a WebSocket cannot connect (a proxy that breaks the upgrade),
// sseFallback moves the client to the gateway's Server-Sent Events stream
// (GET /sse on the same port, read with fetch so that the token travels in
// a header): the same messages, the same resume (since and epoch on the
// URL), one-way. transport: "sse" starts there.

/** Defaults of the options that have one; see metrocast.d.ts. */
export const defaults = Object.freeze({
  tokenTransport: "message",
  backoffInitialMs: 500,
  backoffMaxMs: 30000,
  backoffFactor: 2,
  maxRetries: Infinity,
  pingIntervalMs: 20000,
  heartbeatTimeoutMs: 10000,
  refreshBeforeMs: 60000,
  maxAlerts: 50,
  transport: "websocket",
  sseFallback: false,
  sseFallbackAfter: 2,
});

/**
 * backoffDelay is the wait before reconnect attempt `attempt` (0 for the
 * first retry): the capped exponential d = min(max, initial·factor^attempt),
 * then "equal jitter", a random point in [d/2, d), so that clients dropped
 * together do not come back together, yet none retries at once.
 */
export function backoffDelay(attempt, opts = {}, random = Math.random) {
  const initial = opts.backoffInitialMs ?? defaults.backoffInitialMs;
  const max = opts.backoffMaxMs ?? defaults.backoffMaxMs;
  const factor = opts.backoffFactor ?? defaults.backoffFactor;
  const d = Math.min(max, initial * Math.pow(factor, Math.max(0, attempt)));
  return Math.floor(d / 2 + random() * (d / 2));
}

/** mergeState applies a data_update to a city's state: top-level keys win. */
export function mergeState(prev, update) {
  return { ...(prev ?? {}), ...(update ?? {}) };
}

/** tokenExpiry is a JWT's exp in ms since the epoch, or undefined. */
export function tokenExpiry(token) {
  if (typeof token !== "string") return undefined;
  const part = token.split(".")[1];
  if (!part) return undefined;
  try {
    const b64 = part.replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(b64 + "=".repeat((4 - (b64.length % 4)) % 4)));
    return typeof claims.exp === "number" ? claims.exp * 1000 : undefined;
  } catch {
    return undefined;
  }
}

/**
 * sseUrlOf is the gateway's Server-Sent Events endpoint beside a WebSocket
 * URL: the same host and port, http(s), path /sse.
 */
export function sseUrlOf(wsUrl) {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === "wss:" ? "https:" : "http:";
  u.pathname = "/sse";
  u.search = "";
  u.hash = "";
  return u.toString();
}

/**
 * EventStreamParser reads the text of an event stream as the HTML
 * standard's interpretation does: lines end at CR, LF or CRLF (even split
 * between chunks), fields data, event, id and retry, comments, an event
 * dispatched at a blank line. onEvent gets {type, data, lastEventId};
 * onComment is called for each comment line (a gateway's heartbeat).
 */
export class EventStreamParser {
  constructor(onEvent, onComment = () => {}) {
    this.onEvent = onEvent;
    this.onComment = onComment;
    this.partial = "";
    this.cr = false; // the last line ended at a CR: an LF right after it is part of the line end
    this.data = [];
    this.type = "";
    this.lastEventId = "";
    this.retry = undefined;
  }

  feed(text) {
    let from = 0;
    for (let i = 0; i < text.length; i++) {
      const ch = text.charCodeAt(i);
      if (ch === 10 && this.cr) {
        this.cr = false;
        from = i + 1;
        continue;
      }
      this.cr = ch === 13;
      if (ch === 10 || ch === 13) {
        this.line(this.partial + text.slice(from, i));
        this.partial = "";
        from = i + 1;
      }
    }
    this.partial += text.slice(from);
  }

  line(l) {
    if (l === "") {
      if (this.data.length > 0) {
        this.onEvent({ type: this.type || "message", data: this.data.join("\n"), lastEventId: this.lastEventId });
      }
      this.data = [];
      this.type = "";
      return;
    }
    if (l[0] === ":") {
      this.onComment();
      return;
    }
    const i = l.indexOf(":");
    const name = i < 0 ? l : l.slice(0, i);
    let value = i < 0 ? "" : l.slice(i + 1);
    if (value[0] === " ") value = value.slice(1);
    switch (name) {
      case "data":
        this.data.push(value);
        break;
      case "event":
        this.type = value;
        break;
      case "id":
        if (!value.includes("\0")) this.lastEventId = value;
        break;
      case "retry":
        if (/^\d+$/.test(value)) this.retry = Number(value);
        break;
    }
  }
}

/**
 * EventStream is a gateway's Server-Sent Events stream with the face of the
 * WebSocket the client drives (readyState, onopen, onmessage with each
 * event's data, onclose, close). It reads with fetch, so that the token can
 * go in an Authorization header (an EventSource cannot set one). A refusal
 * (the gateway answers before the stream starts) calls onrefused(status,
 * body), then onclose; a comment calls onheartbeat.
 */
class EventStream {
  constructor(url, headers, fetchFn) {
    this.readyState = 0;
    this.onopen = this.onmessage = this.onclose = this.onerror = this.onrefused = this.onheartbeat = null;
    this.ctrl = new AbortController();
    this.run(url, headers, fetchFn);
  }

  async run(url, headers, fetchFn) {
    let reason = "the stream ended";
    try {
      const res = await fetchFn(url, { headers, signal: this.ctrl.signal, cache: "no-store" });
      if (!res.ok) {
        const body = (await res.text()).trim();
        reason = `refused: ${res.status} ${body}`;
        if (this.readyState !== 3) this.onrefused?.(res.status, body);
        return;
      }
      this.readyState = 1;
      this.onopen?.({});
      const parser = new EventStreamParser(
        (ev) => this.readyState === 1 && this.onmessage?.({ data: ev.data }),
        () => this.readyState === 1 && this.onheartbeat?.(),
      );
      const decoder = new TextDecoder();
      const reader = res.body.getReader();
      for (;;) {
        const { value, done } = await reader.read();
        if (done || this.readyState === 3) break;
        parser.feed(decoder.decode(value, { stream: true }));
      }
    } catch (err) {
      reason = String(err?.message ?? err);
    } finally {
      if (this.readyState !== 3) {
        this.readyState = 3;
        this.onclose?.({ code: 1006, reason });
      }
    }
  }

  send() {
    // A stream carries nothing to the gateway.
  }

  close() {
    if (this.readyState === 3) return;
    this.readyState = 3;
    this.ctrl.abort();
  }
}

const realClock = {
  setTimeout: (fn, ms) => globalThis.setTimeout(fn, ms),
  clearTimeout: (id) => globalThis.clearTimeout(id),
  now: () => Date.now(),
};

/**
 * Metrocast is one logical connection to a gateway: it survives any number
 * of WebSocket connections. Events: status, subscribed, initial_data,
 * data_update, alerts, state, error, auth_error, reconnect, refreshed,
 * message. on() returns a function that removes the listener.
 */
export class Metrocast {
  constructor(options) {
    if (!options || !options.url) throw new TypeError("metrocast: options.url is required");
    this.opts = { ...defaults, ...options };
    this.WebSocket = options.WebSocket ?? globalThis.WebSocket;
    this.fetch = options.fetch ?? globalThis.fetch?.bind(globalThis);
    this.transport = this.opts.transport;
    if (this.transport !== "websocket" && this.transport !== "sse") {
      throw new TypeError(`metrocast: transport ${this.transport}: want "websocket" or "sse"`);
    }
    if (this.transport === "websocket" && !this.WebSocket) throw new TypeError("metrocast: no WebSocket implementation; pass options.WebSocket");
    if ((this.transport === "sse" || this.opts.sseFallback) && !this.fetch) throw new TypeError("metrocast: no fetch implementation; pass options.fetch");
    this.wsFailures = 0; // WebSocket connections in a row that never opened
    this.clock = options.clock ?? realClock;
    this.random = options.random ?? Math.random;
    this.token = options.token;
    this.cities = new Set(options.cities ?? []);
    this.filters = options.filters;
    this.listeners = new Map();
    /** Per city: { seq, state, alerts, timestamp }. */
    this.cityData = new Map();
    this.epoch = undefined;
    this.status = "idle";
    this.attempt = 0;
    this.ws = null;
    this.hintMs = undefined;
    this.stopped = true;
    this.opening = false; // open() awaits getToken
    this.opened = false; // the current WebSocket has opened
    this.timers = { retry: null, ping: null, dead: null, refresh: null };
  }

  on(type, fn) {
    if (!this.listeners.has(type)) this.listeners.set(type, new Set());
    this.listeners.get(type).add(fn);
    return () => this.listeners.get(type)?.delete(fn);
  }

  emit(type, ev) {
    for (const fn of this.listeners.get(type) ?? []) {
      try {
        fn(ev);
      } catch (err) {
        queueMicrotask(() => {
          throw err;
        });
      }
    }
  }

  setStatus(status) {
    if (this.status === status) return;
    this.status = status;
    this.emit("status", { status });
  }

  /** state returns a city's current state (undefined before initial_data). */
  state(city) {
    return this.cityData.get(city)?.state;
  }

  /** lastSeq returns the seq of the last frame applied for a city. */
  lastSeq(city) {
    return this.cityData.get(city)?.seq;
  }

  /** alerts returns a city's latest alerts messages, newest first. */
  alerts(city) {
    return this.cityData.get(city)?.alerts ?? [];
  }

  connect() {
    if (this.stopped) this.transport = this.opts.transport;
    this.stopped = false;
    if (!this.ws && !this.timers.retry && !this.opening) this.open();
  }

  /** close ends the connection for good (until connect() again). */
  close() {
    this.stopped = true;
    this.clearTimers();
    const ws = this.ws;
    this.ws = null;
    if (ws) {
      this.detach(ws);
      try {
        ws.close(1000);
      } catch {
        // already closed
      }
    }
    this.setStatus("closed");
  }

  subscribe(cities, filters) {
    for (const c of cities) this.cities.add(c);
    if (filters) this.filters = filters;
    if (this.transport === "sse") this.restart();
    else if (this.isOpen()) this.sendSubscribe(cities);
  }

  unsubscribe(cities) {
    for (const c of cities) {
      this.cities.delete(c);
      this.cityData.delete(c);
    }
    if (this.transport === "sse") this.restart();
    else if (this.isOpen()) this.send({ type: "unsubscribe", cities });
  }

  // restart replaces a stream by one with the current cities, filters and
  // token, at once (a stream's subscription is its URL). Idle while no
  // stream is open or opening: the next open takes them anyway.
  restart() {
    const ws = this.ws;
    if (!ws || this.stopped) return;
    this.detach(ws);
    this.ws = null;
    ws.close();
    for (const k of ["ping", "dead"]) {
      if (this.timers[k] !== null) this.clock.clearTimeout(this.timers[k]);
      this.timers[k] = null;
    }
    this.open();
  }

  isOpen() {
    return this.ws !== null && this.ws.readyState === 1;
  }

  send(msg) {
    this.ws.send(JSON.stringify(msg));
  }

  clearTimers() {
    for (const k of Object.keys(this.timers)) {
      if (this.timers[k] !== null) this.clock.clearTimeout(this.timers[k]);
      this.timers[k] = null;
    }
  }

  async open() {
    this.timers.retry = null;
    this.setStatus(this.attempt === 0 && this.status !== "reconnecting" ? "connecting" : "reconnecting");
    if (this.opts.getToken && this.needsToken()) {
      this.opening = true;
      try {
        this.token = await this.opts.getToken();
      } catch (err) {
        this.opening = false;
        this.emit("error", { code: "token_fetch_failed", message: String(err) });
        if (!this.stopped) this.scheduleReconnect("token_fetch_failed");
        return;
      }
      this.opening = false;
      if (this.stopped) return;
    }
    if (this.transport === "sse") {
      this.attach(new EventStream(this.streamUrl(), this.streamHeaders(), this.fetch));
      return;
    }
    let url = this.opts.url;
    let protocols;
    if (this.token && this.opts.tokenTransport === "subprotocol") {
      protocols = ["metrocast", "bearer." + this.token];
    } else if (this.token && this.opts.tokenTransport === "query") {
      url += (url.includes("?") ? "&" : "?") + "token=" + encodeURIComponent(this.token);
    }
    let ws;
    try {
      ws = protocols ? new this.WebSocket(url, protocols) : new this.WebSocket(url);
    } catch (err) {
      this.emit("error", { code: "connect_failed", message: String(err) });
      this.failedWebSocket();
      this.scheduleReconnect("connect_failed");
      return;
    }
    this.attach(ws);
  }

  attach(ws) {
    this.ws = ws;
    this.opened = false;
    this.hintMs = undefined;
    ws.onopen = () => this.onOpen(ws);
    ws.onmessage = (ev) => this.onMessage(ws, ev.data);
    ws.onclose = (ev) => this.onClose(ws, ev.code, ev.reason);
    ws.onerror = () => {}; // a close follows; it decides
    if (ws instanceof EventStream) {
      ws.onheartbeat = () => ws === this.ws && this.alive();
      ws.onrefused = (status, body) => ws === this.ws && this.streamRefused(status, body);
    }
  }

  // streamUrl is the stream's URL: the cities, each resuming after its
  // last seq, and the filters. The token goes in a header.
  streamUrl() {
    const u = new URL(this.opts.sseUrl ?? sseUrlOf(this.opts.url));
    const q = u.searchParams;
    q.set("cities", [...this.cities].join(","));
    const since = [];
    for (const c of this.cities) {
      const seq = this.cityData.get(c)?.seq;
      if (seq !== undefined) since.push(`${c}:${seq}`);
    }
    if (since.length > 0) {
      q.set("since", since.join(","));
      if (this.epoch !== undefined) q.set("epoch", String(this.epoch));
    }
    if (this.filters?.types?.length) q.set("types", this.filters.types.join(","));
    if (this.filters?.minSeverity) q.set("minSeverity", this.filters.minSeverity);
    return u.toString();
  }

  streamHeaders() {
    const h = { Accept: "text/event-stream" };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  // streamRefused handles the HTTP answer that refused a stream: a 401 as
  // an auth_error (its body is "code: message"), anything else as an error;
  // the close that follows reconnects.
  streamRefused(status, body) {
    const i = body.indexOf(":");
    const code = i > 0 ? body.slice(0, i) : String(status);
    if (status === 401) this.refused({ type: "auth_error", code, message: body });
    else this.emit("error", { code: status === 403 ? "forbidden" : "stream_refused", message: `${status} ${body}` });
  }

  // failedWebSocket counts a WebSocket that never opened; with sseFallback,
  // sseFallbackAfter of them in a row move the client to the SSE stream
  // (until close()).
  failedWebSocket() {
    if (this.transport !== "websocket") return;
    this.wsFailures++;
    if (this.opts.sseFallback && this.wsFailures >= this.opts.sseFallbackAfter) {
      this.transport = "sse";
      this.wsFailures = 0;
      this.emit("transport", { transport: "sse" });
    }
  }

  // needsToken: fetch a token when there is none or it is about to expire.
  needsToken() {
    if (!this.token) return true;
    const exp = tokenExpiry(this.token);
    return exp !== undefined && exp - this.clock.now() < this.opts.refreshBeforeMs;
  }

  detach(ws) {
    ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
  }

  onOpen(ws) {
    if (ws !== this.ws) return;
    this.opened = true;
    if (this.transport === "sse") {
      this.alive(); // the subscription and the token went with the request
      return;
    }
    this.wsFailures = 0;
    if (this.token && this.opts.tokenTransport === "message") {
      this.send({ type: "auth", token: this.token });
    }
    if (this.cities.size > 0) this.sendSubscribe([...this.cities]);
    this.alive();
  }

  sendSubscribe(cities) {
    const msg = { type: "subscribe", cities };
    const since = {};
    for (const c of cities) {
      const seq = this.cityData.get(c)?.seq;
      if (seq !== undefined) since[c] = seq;
    }
    if (Object.keys(since).length > 0) {
      msg.since = since;
      if (this.epoch !== undefined) msg.epoch = this.epoch;
    }
    if (this.filters) msg.filters = this.filters;
    if (this.opts.presence) msg.presence = true;
    this.send(msg);
  }

  // alive restarts the heartbeat: after pingIntervalMs of silence the
  // client sends a ping (a browser cannot see the server's ping frames),
  // and heartbeatTimeoutMs later with still nothing heard, it gives the
  // connection up as dead and reconnects.
  //
  // A stream cannot ping: the gateway sends a comment every ping_interval
  // (25 s by default), and pingIntervalMs + heartbeatTimeoutMs of silence
  // means a dead stream.
  alive() {
    const t = this.timers;
    if (t.ping !== null) this.clock.clearTimeout(t.ping);
    if (t.dead !== null) this.clock.clearTimeout(t.dead);
    t.ping = t.dead = null;
    if (this.transport === "sse") {
      t.dead = this.clock.setTimeout(() => {
        t.dead = null;
        this.drop("heartbeat_timeout");
      }, this.opts.pingIntervalMs + this.opts.heartbeatTimeoutMs);
      return;
    }
    t.ping = this.clock.setTimeout(() => {
      t.ping = null;
      if (!this.isOpen()) return;
      this.send({ type: "ping" });
      t.dead = this.clock.setTimeout(() => {
        t.dead = null;
        this.drop("heartbeat_timeout");
      }, this.opts.heartbeatTimeoutMs);
    }, this.opts.pingIntervalMs);
  }

  /** drop gives the current connection up and reconnects, resuming. */
  drop(reason) {
    const ws = this.ws;
    if (!ws) return;
    this.detach(ws);
    this.ws = null;
    try {
      ws.close(4000, reason);
    } catch {
      // closing a dead socket may throw; it is gone either way
    }
    this.afterClose(reason);
  }

  scheduleRefresh() {
    if (!this.opts.getToken) return;
    const exp = tokenExpiry(this.token);
    if (exp === undefined) return;
    if (this.timers.refresh !== null) this.clock.clearTimeout(this.timers.refresh);
    const ms = Math.max(0, exp - this.opts.refreshBeforeMs - this.clock.now());
    this.timers.refresh = this.clock.setTimeout(() => {
      this.timers.refresh = null;
      this.refresh();
    }, ms);
  }

  /** refresh fetches a new token with getToken and hands it to the gateway. */
  async refresh() {
    if (!this.opts.getToken) return;
    let token;
    try {
      token = await this.opts.getToken();
    } catch (err) {
      this.emit("error", { code: "token_fetch_failed", message: String(err) });
      return;
    }
    this.token = token;
    // A stream cannot take a new token: a new stream does, resuming.
    if (this.transport === "sse") this.restart();
    else if (this.isOpen()) this.send({ type: "refresh", token });
  }

  onMessage(ws, raw) {
    if (ws !== this.ws) return;
    this.alive();
    let m;
    try {
      m = JSON.parse(typeof raw === "string" ? raw : String(raw));
    } catch {
      this.emit("error", { code: "bad_frame", message: "the gateway sent a frame that is not JSON" });
      return;
    }
    this.emit("message", m);
    switch (m.type) {
      case "subscribed":
        // A subscription stands: the connection is healthy, so the next
        // loss starts the backoff over.
        this.attempt = 0;
        if (m.epoch !== undefined && this.epoch !== undefined && m.epoch !== this.epoch) {
          // The node restarted: its seqs started over; initial_data follows.
          for (const d of this.cityData.values()) d.seq = undefined;
        }
        this.epoch = m.epoch;
        this.setStatus("open");
        // The node took the token (subscribed answers auth too): plan its
        // refresh. Not before: a token the node is about to refuse needs
        // none, and an already expiring one would be refreshed at once,
        // racing the refusal for getToken's next token.
        this.scheduleRefresh();
        this.emit("subscribed", m);
        break;
      case "initial_data":
        this.applyInitial(m);
        break;
      case "data_update":
        this.applyUpdate(m);
        break;
      case "alerts":
        this.applyAlerts(m);
        break;
      case "reconnect":
        this.hintMs = m.after_ms;
        break;
      case "token_expiring":
        this.refresh();
        break;
      case "refreshed":
        this.emit("refreshed", m);
        this.scheduleRefresh();
        break;
      case "auth_error":
        this.refused(m);
        break;
      case "error":
        this.emit("error", m);
        break;
      case "presence":
      case "user_joined":
      case "user_left":
        this.applyPresence(m);
        break;
    }
  }

  city(name) {
    let d = this.cityData.get(name);
    if (!d) {
      d = { seq: undefined, state: undefined, alerts: [], timestamp: undefined };
      this.cityData.set(name, d);
    }
    return d;
  }

  // fresh reports whether frame seq is new for the city: a replay that
  // overlaps what was applied is skipped (exactly once per city).
  fresh(d, seq) {
    return d.seq === undefined || seq > d.seq;
  }

  applyInitial(m) {
    if (!this.cities.has(m.city)) return;
    const d = this.city(m.city);
    d.seq = m.seq;
    d.state = { ...(m.data ?? {}) };
    d.timestamp = m.timestamp;
    if (!m.resumed && Array.isArray(m.recent_alerts)) {
      d.alerts = m.recent_alerts
        .map((a) => ({ city: m.city, seq: a.seq, timestamp: a.timestamp, alerts: a.alerts }))
        .sort((a, b) => b.seq - a.seq)
        .slice(0, this.opts.maxAlerts);
    }
    this.emit("initial_data", m);
    this.emit("state", { city: m.city, seq: m.seq, state: d.state, timestamp: m.timestamp });
  }

  applyUpdate(m) {
    const d = this.city(m.city);
    if (!this.fresh(d, m.seq)) return;
    d.seq = m.seq;
    d.state = mergeState(d.state, m.data);
    d.timestamp = m.timestamp;
    this.emit("data_update", m);
    this.emit("state", { city: m.city, seq: m.seq, state: d.state, timestamp: m.timestamp });
  }

  applyAlerts(m) {
    const d = this.city(m.city);
    if (!this.fresh(d, m.seq)) return;
    d.seq = m.seq;
    d.alerts = [{ city: m.city, seq: m.seq, timestamp: m.timestamp, alerts: m.alerts }, ...d.alerts].slice(
      0,
      this.opts.maxAlerts,
    );
    this.emit("alerts", m);
  }

  // applyPresence keeps a city's watchers: a snapshot replaces them,
  // events add or remove users (the gateway may repeat a join).
  applyPresence(m) {
    if (!this.cities.has(m.city)) return;
    const d = this.city(m.city);
    if (m.type === "presence" || !d.watchers) d.watchers = new Set();
    for (const u of m.users ?? []) {
      if (m.type === "user_left") d.watchers.delete(u);
      else d.watchers.add(u);
    }
    d.watcherCount = m.count;
    this.emit("presence", { city: m.city, count: m.count, users: [...d.watchers].sort(), change: m.type });
  }

  /** watchers returns a city's watchers (presence: true), as far as listed. */
  watchers(city) {
    const d = this.cityData.get(city);
    return { count: d?.watcherCount ?? 0, users: [...(d?.watchers ?? [])].sort() };
  }

  // refused handles an auth_error (a close 4001 follows). Whatever the
  // reason (expired, revoked, signed with a key the node no longer has,
  // wrong aud or iss), a refused token is refused again: it is not offered
  // again, and the next connection asks getToken for a new one. Without
  // getToken nothing can change, so the client stops.
  refused(m) {
    this.token = undefined;
    this.emit("auth_error", m);
    if (!this.opts.getToken) this.close();
  }

  onClose(ws, code, reason) {
    if (ws !== this.ws) return;
    this.detach(ws);
    this.ws = null;
    // Refused in the upgrade (401), a browser sees only a connection that
    // closed without opening, as on a network failure: with the token in
    // the request, ask getToken for a new one rather than offer the same
    // one for ever.
    if (!this.opened && this.transport === "websocket" && this.opts.tokenTransport !== "message" && this.opts.getToken) this.token = undefined;
    if (!this.opened) this.failedWebSocket();
    this.afterClose(reason || "closed " + code, code);
  }

  afterClose(reason, code) {
    const t = this.timers;
    for (const k of ["ping", "dead", "refresh"]) {
      if (t[k] !== null) this.clock.clearTimeout(t[k]);
      t[k] = null;
    }
    if (this.stopped) return;
    this.scheduleReconnect(reason, code);
  }

  scheduleReconnect(reason, code) {
    const hinted = this.hintMs !== undefined;
    if (!hinted && this.attempt >= this.opts.maxRetries) {
      this.setStatus("closed");
      this.emit("error", { code: "gave_up", message: `gave up after ${this.attempt} attempts` });
      return;
    }
    // A draining node names the wait; it is not a failure, so the backoff
    // does not grow.
    const delayMs = hinted ? this.hintMs : backoffDelay(this.attempt, this.opts, this.random);
    if (!hinted) this.attempt++;
    this.hintMs = undefined;
    this.setStatus("reconnecting");
    this.emit("reconnect", { attempt: this.attempt, delayMs, hinted, reason, code });
    this.timers.retry = this.clock.setTimeout(() => this.open(), delayMs);
  }
}
