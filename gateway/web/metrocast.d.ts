// Types of metrocast.js, the metrocast gateway client.

export type CityState = Record<string, unknown>;

export type Severity = "info" | "warning" | "critical";

export interface Alert {
  severity: Severity;
  message: string;
  [key: string]: unknown;
}

export interface SubscribedMessage {
  type: "subscribed";
  epoch: number;
  cities: { city: string; seq: number; resumed: boolean }[];
}

export interface InitialDataMessage {
  type: "initial_data";
  city: string;
  seq: number;
  epoch: number;
  resumed: boolean;
  timestamp?: number;
  data: CityState;
  recent_alerts?: { seq: number; timestamp: number; alerts: Alert[] }[];
}

export interface DataUpdateMessage {
  type: "data_update";
  city: string;
  seq: number;
  timestamp: number;
  data: CityState;
}

export interface AlertsMessage {
  type: "alerts";
  city: string;
  seq: number;
  timestamp: number;
  alerts: Alert[];
}

export interface ErrorEvent {
  type?: "error";
  /** A gateway error code (bad_request, forbidden, rate_limited, …) or a
   * client one: token_fetch_failed, connect_failed, bad_frame, gave_up,
   * stream_refused (the gateway answered a stream request with an HTTP error
   * other than 401 and 403). */
  code: string;
  city?: string;
  message: string;
}

export interface AuthErrorMessage {
  type: "auth_error";
  code: string;
  message: string;
}

export interface RefreshedMessage {
  type: "refreshed";
  exp: number;
  closeAt: number;
}

export interface ReconnectEvent {
  /** Consecutive failed attempts so far (not increased by a drain hint). */
  attempt: number;
  delayMs: number;
  /** true when the wait is the gateway's reconnect hint (a drain). */
  hinted: boolean;
  reason: string;
  code?: number;
}

export interface StateEvent {
  city: string;
  seq: number;
  state: CityState;
  timestamp?: number;
}

/** An alerts message as kept per city, newest first. */
export interface AlertsEntry {
  city: string;
  seq: number;
  timestamp: number;
  alerts: Alert[];
}

export interface PresenceEvent {
  city: string;
  /** Watchers (distinct users) of the city. */
  count: number;
  /** The watchers named so far (the gateway names at most 100). */
  users: string[];
  change: "presence" | "user_joined" | "user_left";
}

export type Status = "idle" | "connecting" | "open" | "reconnecting" | "closed";

export interface EventMap {
  status: { status: Status };
  subscribed: SubscribedMessage;
  initial_data: InitialDataMessage;
  data_update: DataUpdateMessage;
  alerts: AlertsMessage;
  state: StateEvent;
  error: ErrorEvent;
  /** The node refused the token (close 4001 follows): see Options.getToken. */
  auth_error: AuthErrorMessage;
  reconnect: ReconnectEvent;
  refreshed: RefreshedMessage;
  /** The city's watchers changed (options.presence). */
  presence: PresenceEvent;
  /** Every message from the gateway, parsed. */
  message: { type: string; [key: string]: unknown };
  /** The client moved to the gateway's Server-Sent Events stream (sseFallback). */
  transport: { transport: Transport };
}

export type Transport = "websocket" | "sse";

export interface Filters {
  types?: ("data_update" | "alerts")[];
  minSeverity?: Severity;
}

/** The subset of the WebSocket API the client uses (browsers, Node ≥ 22, the ws package). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string[]) => WebSocketLike;

export interface Clock {
  setTimeout(fn: () => void, ms: number): unknown;
  clearTimeout(id: unknown): void;
  now(): number;
}

export interface Options {
  /** The gateway's WebSocket URL, e.g. ws://127.0.0.1:8080/ws. */
  url: string;
  /** A JWT; optional with getToken or against an insecure node. Without getToken, a refusal (auth_error) stops the client. */
  token?: string;
  /**
   * Fetches a new token: before connecting without one, refreshBeforeMs before the token's exp, on
   * token_expiring, and after any refusal (auth_error of any code: expired, revoked, a key the node
   * no longer has, wrong aud or iss), since a refused token is never offered again.
   */
  getToken?: () => Promise<string> | string;
  /**
   * How the token travels: an auth message once the connection is open (default; a refusal arrives
   * as auth_error, which a browser can see), the "bearer.<token>" subprotocol, or ?token=. In the
   * upgrade a refusal is an HTTP 401 a browser never shows: a connection that closes before it opens
   * then makes the client ask getToken again.
   */
  tokenTransport?: "message" | "subprotocol" | "query";
  cities?: string[];
  filters?: Filters;
  /** First reconnect wait before jitter (default 500). */
  backoffInitialMs?: number;
  /** Cap of the wait (default 30000). */
  backoffMaxMs?: number;
  /** Growth per attempt (default 2). */
  backoffFactor?: number;
  /** Failed attempts before giving up (default Infinity: never). */
  maxRetries?: number;
  /** Send a ping after this much silence (default 20000). */
  pingIntervalMs?: number;
  /** Give the connection up this long after the ping with still nothing heard (default 10000). */
  heartbeatTimeoutMs?: number;
  /** Fetch a new token this long before exp (default 60000). */
  refreshBeforeMs?: number;
  /** Subscribe with "presence": true: count this user among the watchers and follow them. */
  presence?: boolean;
  /** Alerts messages kept per city (default 50). */
  maxAlerts?: number;
  /** The WebSocket implementation (default globalThis.WebSocket). */
  WebSocket?: WebSocketConstructor;
  /**
   * Where to start: a WebSocket (default), or the gateway's Server-Sent Events stream (GET /sse on the
   * same port, read with fetch; the token goes in an Authorization header). A stream carries the same
   * messages and resumes the same way (since and epoch on its URL); it is one-way, so subscribe(),
   * unsubscribe() and a new token (refresh) open a new stream, resuming, and it has no presence.
   */
  transport?: Transport;
  /**
   * Move to the Server-Sent Events stream after sseFallbackAfter WebSocket connections in a row that
   * never opened (a proxy that breaks the upgrade), until close(). Default false.
   */
  sseFallback?: boolean;
  /** WebSocket connections in a row that never opened before sseFallback moves (default 2). */
  sseFallbackAfter?: number;
  /** The stream's URL (default: url's host and port, http(s), path /sse: see sseUrlOf). */
  sseUrl?: string;
  /**
   * The fetch implementation for streams (default globalThis.fetch): called with the URL and
   * {headers, signal, cache}, it must resolve to a Response whose body is a ReadableStream.
   * Typed loosely so that the types need no DOM library.
   */
  fetch?: (url: string, init: any) => Promise<any>;
  /** Timers and time (tests). */
  clock?: Clock;
  /** Random numbers in [0, 1) for the jitter (tests). */
  random?: () => number;
}

export declare const defaults: Readonly<
  Required<
    Pick<
      Options,
      | "tokenTransport"
      | "backoffInitialMs"
      | "backoffMaxMs"
      | "backoffFactor"
      | "maxRetries"
      | "pingIntervalMs"
      | "heartbeatTimeoutMs"
      | "refreshBeforeMs"
      | "maxAlerts"
      | "transport"
      | "sseFallback"
      | "sseFallbackAfter"
    >
  >
>;

/** The wait before reconnect attempt `attempt` (0-based): capped exponential, equal jitter in [d/2, d). */
export declare function backoffDelay(
  attempt: number,
  opts?: Pick<Options, "backoffInitialMs" | "backoffMaxMs" | "backoffFactor">,
  random?: () => number,
): number;

/** {...prev, ...update}. */
export declare function mergeState(prev: CityState | undefined, update: CityState | undefined): CityState;

/** A JWT's exp in ms since the epoch, or undefined. */
export declare function tokenExpiry(token: string | undefined): number | undefined;

/** The gateway's Server-Sent Events URL beside a WebSocket URL: same host and port, http(s), path /sse. */
export declare function sseUrlOf(wsUrl: string): string;

/** Reads an event stream as the HTML standard does; feed() takes chunks cut anywhere. */
export declare class EventStreamParser {
  constructor(onEvent: (ev: { type: string; data: string; lastEventId: string }) => void, onComment?: () => void);
  feed(text: string): void;
  readonly lastEventId: string;
  readonly retry: number | undefined;
}

export declare class Metrocast {
  constructor(options: Options);
  readonly status: Status;
  /** The epoch of the node last subscribed to. */
  readonly epoch: number | undefined;
  /** The transport in use: options.transport, or "sse" once sseFallback moved. */
  readonly transport: Transport;
  on<K extends keyof EventMap>(type: K, fn: (ev: EventMap[K]) => void): () => void;
  connect(): void;
  close(): void;
  subscribe(cities: string[], filters?: Filters): void;
  unsubscribe(cities: string[]): void;
  /** Give the current connection up (as on a dead network) and reconnect, resuming. */
  drop(reason: string): void;
  /** Fetch a new token with getToken now and send it to the gateway. */
  refresh(): Promise<void>;
  state(city: string): CityState | undefined;
  lastSeq(city: string): number | undefined;
  alerts(city: string): AlertsEntry[];
  watchers(city: string): { count: number; users: string[] };
}
