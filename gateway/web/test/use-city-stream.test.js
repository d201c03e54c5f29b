// useCityStream under a minimal stand-in for React's hooks (state, effects
// with dependencies, refs) and a fake WebSocket: no React, no network.
import { test } from "node:test";
import assert from "node:assert/strict";
import { makeUseCityStream } from "../use-city-stream.js";

// fakeReact renders one component: render() runs it, then the effects whose
// dependencies changed (cleanup first, as React does); a state change
// renders again.
function fakeReact() {
  const slots = [];
  let i = 0;
  let pending = [];
  let component;
  let last;
  let busy = false; // rendering or running effects
  let dirty = false; // a state change while busy: render again after
  const React = {
    useState(init) {
      const k = i++;
      if (!(k in slots)) {
        const slot = [typeof init === "function" ? init() : init];
        slot[1] = (next) => {
          const v = typeof next === "function" ? next(slot[0]) : next;
          if (v !== slot[0]) {
            slot[0] = v;
            if (busy) dirty = true;
            else render();
          }
        };
        slots[k] = slot;
      }
      return [slots[k][0], slots[k][1]];
    },
    useRef(init) {
      const k = i++;
      if (!(k in slots)) slots[k] = { current: init };
      return slots[k];
    },
    useEffect(fn, deps) {
      const k = i++;
      const prev = slots[k];
      if (!prev || !deps || deps.some((d, j) => d !== prev.deps[j])) {
        pending.push(() => {
          prev?.cleanup?.();
          slots[k] = { deps, cleanup: fn() };
        });
      }
    },
  };
  function render(props) {
    if (props) component.props = props;
    busy = true;
    do {
      dirty = false;
      i = 0;
      last = component.fn(component.props);
      const run = pending;
      pending = [];
      for (const f of run) f();
    } while (dirty);
    busy = false;
  }
  return {
    React,
    mount(fn, props) {
      component = { fn, props };
      render(props);
      return { result: () => last, rerender: (p) => render(p) };
    },
    unmount() {
      for (const s of slots) s?.cleanup?.();
    },
  };
}

function fakeSockets() {
  const made = [];
  class FakeWS {
    constructor(url, protocols) {
      Object.assign(this, { url, protocols, readyState: 0, sent: [] });
      made.push(this);
    }
    send(s) {
      this.sent.push(JSON.parse(s));
    }
    close() {
      this.readyState = 3;
    }
  }
  const open = (ws) => {
    ws.readyState = 1;
    ws.onopen({});
  };
  const recv = (ws, m) => ws.onmessage({ data: JSON.stringify(m) });
  return { FakeWS, made, open, recv };
}

const flush = () => new Promise((r) => setImmediate(r));

test("useCityStream follows a city's state, alerts and status, and moves with the city prop", async () => {
  const r = fakeReact();
  const useCityStream = makeUseCityStream(r.React);
  const { FakeWS, made, open, recv } = fakeSockets();
  const options = { WebSocket: FakeWS, random: () => 0.5 };
  const view = r.mount((p) => useCityStream(p), { url: "ws://gw/ws", token: "t", city: "nairobi", options });
  await flush();
  assert.equal(made.length, 1);
  const ws = made[0];
  open(ws);
  assert.deepEqual(ws.sent, [
    { type: "auth", token: "t" },
    { type: "subscribe", cities: ["nairobi"] },
  ]);
  recv(ws, { type: "subscribed", epoch: 1, cities: [{ city: "nairobi", seq: 0, resumed: false }] });
  assert.equal(view.result().status, "open");
  recv(ws, { type: "initial_data", city: "nairobi", seq: 3, epoch: 1, resumed: false, data: { a: 1 } });
  recv(ws, { type: "data_update", city: "nairobi", seq: 4, timestamp: 9, data: { b: 2 } });
  recv(ws, { type: "alerts", city: "nairobi", seq: 5, timestamp: 9, alerts: [{ severity: "critical", message: "x" }] });
  let s = view.result();
  assert.deepEqual(s.state, { a: 1, b: 2 });
  assert.equal(s.seq, 5);
  assert.equal(s.alerts[0].alerts[0].severity, "critical");

  view.rerender({ url: "ws://gw/ws", token: "t", city: "lagos", options });
  assert.equal(made.length, 1, "same connection for another city");
  assert.deepEqual(ws.sent.slice(2), [
    { type: "unsubscribe", cities: ["nairobi"] },
    { type: "subscribe", cities: ["lagos"] },
  ]);
  s = view.result();
  assert.equal(s.city, "lagos");
  assert.equal(s.state, undefined);
  recv(ws, { type: "data_update", city: "nairobi", seq: 6, timestamp: 9, data: { stale: true } });
  assert.equal(view.result().state, undefined, "the old city's frames are ignored");
  recv(ws, { type: "initial_data", city: "lagos", seq: 1, epoch: 1, resumed: false, data: { l: 1 } });
  assert.deepEqual(view.result().state, { l: 1 });

  r.unmount();
  assert.equal(ws.readyState, 3, "unmount closes the connection");
});
