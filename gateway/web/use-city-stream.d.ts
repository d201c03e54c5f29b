// Types of use-city-stream.js.
import type { AlertsEntry, CityState, ErrorEvent, AuthErrorMessage, Options, Status } from "./metrocast.js";

/** The part of React the hook uses (React 16.8 or later). */
export interface ReactHooks {
  useState<S>(init: S | (() => S)): [S, (next: S | ((prev: S) => S)) => void];
  useEffect(effect: () => void | (() => void), deps?: readonly unknown[]): void;
  useRef<T>(init: T): { current: T };
}

export interface CityStreamArgs {
  url: string;
  city?: string;
  token?: string;
  getToken?: () => Promise<string> | string;
  /** More client options (backoff, heartbeat, WebSocket, …). */
  options?: Omit<Options, "url" | "token" | "getToken" | "cities">;
}

export interface CityStream {
  status: Status;
  city: string | undefined;
  state: CityState | undefined;
  seq: number | undefined;
  timestamp: number | undefined;
  alerts: AlertsEntry[];
  error: ErrorEvent | AuthErrorMessage | undefined;
}

export declare function makeUseCityStream(React: ReactHooks): (args: CityStreamArgs) => CityStream;
