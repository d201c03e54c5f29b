// Labels and units of the dashboard's numbers.
import { test } from "node:test";
import assert from "node:assert/strict";
import { describe, formatValue, groupLabel, withUnit } from "../dashboard-format.js";

test("describe: the unit from the key's suffix or a known name, a label in words", () => {
  const f = (key, label, unit) => assert.deepEqual(describe(key), { label, unit }, key);
  f("pm25", "PM2.5", "µg/m³");
  f("no2", "NO₂", "µg/m³");
  f("aqi", "AQI", "");
  f("avg_speed_kmh", "Avg speed", "km/h");
  f("congestion_pct", "Congestion", "%");
  f("river_level_m", "River level", "m");
  f("grid_load_mw", "Grid load", "MW");
  f("frequency_hz", "Frequency", "Hz");
  f("incidents", "Incidents", "");
  f("temp_c", "Temp", "°C");
  // A suffix alone is a name, not a unit.
  f("m", "M", "");
  f("_pct", "Pct", "");
});

test("groupLabel and withUnit", () => {
  assert.equal(groupLabel("air_quality"), "Air quality");
  assert.equal(groupLabel(""), "Metrics");
  assert.equal(withUnit("12.5", "km/h"), "12.5 km/h");
  assert.equal(withUnit("40", "%"), "40%");
  assert.equal(withUnit("3", ""), "3");
});

test("formatValue: grouped digits, up to two decimals", () => {
  const f = (v, want) => assert.equal(formatValue(v, "en-US"), want, String(v));
  f(3, "3");
  f(49.987, "49.99");
  f(50, "50");
  f(123.456, "123.46");
  f(3412.7, "3,412.7");
  f(-0.5, "-0.5");
  f(1234567, "1,234,567");
  f(NaN, "NaN");
  f("ok", "ok");
  f({ a: 1 }, '{"a":1}');
});
