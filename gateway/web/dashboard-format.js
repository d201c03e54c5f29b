// dashboard-format.js — labels and units for the dashboard's numbers. Pure
// functions, tested under Node.
//
// A state key names its unit by a suffix (avg_speed_kmh is a speed in
// km/h, reservoir_pct a percentage), as feeds commonly do; a few names
// that no rule spells (pm25, no2) are listed.

/** Names a label cannot guess: [label, unit]. */
const NAMES = {
  aqi: ["AQI", ""],
  pm25: ["PM2.5", "µg/m³"],
  pm10: ["PM10", "µg/m³"],
  no2: ["NO₂", "µg/m³"],
  o3: ["O₃", "µg/m³"],
  so2: ["SO₂", "µg/m³"],
  co: ["CO", "mg/m³"],
};

/** Unit suffixes of key names, longest first where one ends another. */
const SUFFIXES = [
  ["_pct", "%"],
  ["_kmh", "km/h"],
  ["_mw", "MW"],
  ["_kw", "kW"],
  ["_hz", "Hz"],
  ["_mm", "mm"],
  ["_km", "km"],
  ["_m", "m"],
  ["_c", "°C"],
  ["_ms", "ms"],
  ["_s", "s"],
];

/** words turns a snake_case key into words, the first capitalised. */
function words(key) {
  const s = String(key).replace(/_/g, " ").trim();
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/**
 * describe returns the label and the unit ("" when none) of a state key:
 * avg_speed_kmh → {label: "Avg speed", unit: "km/h"}.
 */
export function describe(key) {
  const k = String(key);
  const known = NAMES[k.toLowerCase()];
  if (known) return { label: known[0], unit: known[1] };
  for (const [suffix, unit] of SUFFIXES) {
    if (k.length > suffix.length && k.toLowerCase().endsWith(suffix)) {
      return { label: words(k.slice(0, -suffix.length)), unit };
    }
  }
  return { label: words(k), unit: "" };
}

/** groupLabel is a group's heading: air_quality → "Air quality". */
export function groupLabel(group) {
  return group ? words(group) : "Metrics";
}

/**
 * formatValue formats a value for display: numbers in the locale's way,
 * digits grouped, with the feed's decimals up to two (a grid frequency
 * of 49.98 Hz must not read 50); strings as they are, anything else as
 * JSON.
 */
export function formatValue(v, locale) {
  if (typeof v === "number") {
    if (!Number.isFinite(v)) return String(v);
    return new Intl.NumberFormat(locale, { maximumFractionDigits: 2 }).format(v);
  }
  if (typeof v === "string") return v;
  return JSON.stringify(v);
}

/** withUnit joins a formatted value and its unit: "12.5 km/h", "40%". */
export function withUnit(text, unit) {
  if (!unit) return text;
  return unit === "%" ? text + unit : `${text} ${unit}`;
}
