// use-city-stream.js — a React hook over metrocast.js, for React users.
//
// It takes React as a parameter instead of importing it, so the file has no
// dependency, loads in a browser without a bundler, and is tested without
// React:
//
//   import * as React from "react";
//   import { makeUseCityStream } from "./use-city-stream.js";
//   const useCityStream = makeUseCityStream(React);
//   function Panel() {
//     const { status, state, seq, alerts } = useCityStream({ url, getToken, city: "nairobi" });
//     …
//   }
//
// One client per mounted hook (per url); changing `city` moves the
// subscription on the same connection.
import { Metrocast } from "./metrocast.js";

/** makeUseCityStream returns the useCityStream hook built on this React. */
export function makeUseCityStream(React) {
  const { useEffect, useRef, useState } = React;
  return function useCityStream({ url, city, token, getToken, options }) {
    const [snap, setSnap] = useState(() => ({
      status: "idle",
      city,
      state: undefined,
      seq: undefined,
      timestamp: undefined,
      alerts: [],
      error: undefined,
    }));
    const client = useRef(null);

    useEffect(() => {
      const mc = new Metrocast({ ...options, url, token, getToken, cities: [] });
      client.current = mc;
      const offs = [
        mc.on("status", ({ status }) => setSnap((s) => ({ ...s, status }))),
        mc.on("error", (error) => setSnap((s) => ({ ...s, error }))),
        mc.on("auth_error", (error) => setSnap((s) => ({ ...s, error }))),
      ];
      mc.connect();
      return () => {
        for (const off of offs) off();
        mc.close();
        client.current = null;
      };
      // token, getToken and options are read when the client is made: a
      // new token reaches a running client through getToken.
    }, [url]);

    useEffect(() => {
      const mc = client.current;
      if (!mc || !city) return undefined;
      mc.subscribe([city]);
      setSnap((s) => ({
        ...s,
        city,
        state: mc.state(city),
        seq: mc.lastSeq(city),
        alerts: mc.alerts(city),
      }));
      const offs = [
        mc.on("state", (e) => {
          if (e.city === city) setSnap((s) => ({ ...s, state: e.state, seq: e.seq, timestamp: e.timestamp, alerts: mc.alerts(city) }));
        }),
        mc.on("alerts", (m) => {
          if (m.city === city) setSnap((s) => ({ ...s, seq: m.seq, alerts: mc.alerts(city) }));
        }),
      ];
      return () => {
        for (const off of offs) off();
        mc.unsubscribe([city]);
      };
    }, [url, city]);

    return snap;
  };
}
