// The npm package as a front-end team gets it: packed with the binary's
// version, installed from the tarball into a scratch project, imported
// under Node through its exports, and type-checked with tsc --strict
// against the .d.ts it ships.
import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { binaryVersion, pack, semverOf } from "../scripts/pack.js";
import { binary } from "./gateway.js";

const tsc = fileURLToPath(new URL("../node_modules/typescript/bin/tsc", import.meta.url));

test("semverOf: the binary's version as an npm version", () => {
  const f = (v, want) => assert.equal(semverOf(v), want, v);
  f("v1.2.3", "1.2.3");
  f("1.2.3", "1.2.3");
  f("v0.4.0-rc.1", "0.4.0-rc.1");
  f("v1.2.3-4-gabcdef0", "1.2.3-4-gabcdef0");
  f("v1.2.3-4-gabcdef0-dirty", "1.2.3-4-gabcdef0-dirty");
  f("dev-0123456789ab go1.26.8", "0.0.0-dev-0123456789ab");
  f("dev-0123456789ab-dirty", "0.0.0-dev-0123456789ab-dirty");
  f("37ada81-dirty", "0.0.0-dev-37ada81-dirty");
  f("dev go1.26.8", "0.0.0-dev");
  f("dev", "0.0.0-dev");
});

// The consumer a front-end team would write. The @ts-expect-error lines
// fail the check unless the shipped types reject them: types that were
// missing or `any` would let everything through.
const consumer = `
import { Metrocast, backoffDelay, type StateEvent, type AuthErrorMessage, type Status } from "@metrocast/client";
import { makeUseCityStream, type ReactHooks, type CityStream } from "@metrocast/client/use-city-stream";

const mc = new Metrocast({
  url: "ws://127.0.0.1:8080/ws",
  getToken: async () => "token",
  cities: ["nairobi"],
  filters: { types: ["alerts"], minSeverity: "warning" },
  presence: true,
});
const off: () => void = mc.on("state", (e: StateEvent) => {
  const city: string = e.city;
  const seq: number = e.seq;
  void [city, seq, e.state["pm25"]];
});
mc.on("auth_error", (m: AuthErrorMessage) => void m.code.toUpperCase());
mc.on("reconnect", ({ attempt, delayMs, hinted }) => void [attempt + delayMs, hinted === true]);
const status: Status = mc.status;
const delay: number = backoffDelay(3, { backoffInitialMs: 100 });
const seq: number | undefined = mc.lastSeq("nairobi");
mc.subscribe(["lagos"], { types: ["data_update"] });
off();
mc.close();

// @ts-expect-error: url is required
new Metrocast({ cities: ["nairobi"] });
// @ts-expect-error: no such transport
new Metrocast({ url: "ws://x", tokenTransport: "header" });
// @ts-expect-error: no such event
mc.on("nope", () => {});
// @ts-expect-error: a state event has no code
mc.on("state", (e) => e.code);

declare const React: ReactHooks;
const useCityStream = makeUseCityStream(React);
const stream: CityStream = useCityStream({ url: "ws://x", city: "nairobi", options: { maxRetries: 3 } });
const alerts: number = stream.alerts.length;
// @ts-expect-error: city must be a string
useCityStream({ url: "ws://x", city: 42 });

export { status, delay, seq, alerts };
`;

test("the package: packed with the binary's version, installed from the tarball, imported, type-checked", { timeout: 120000 }, () => {
  const bin = binary();
  const dir = mkdtempSync(join(tmpdir(), "metrocast-package-"));
  const tgz = pack(bin, dir);

  const files = execFileSync("tar", ["-tzf", tgz]).toString().trim().split("\n").sort();
  assert.deepEqual(files, [
    "package/README.md",
    "package/metrocast.d.ts",
    "package/metrocast.js",
    "package/package.json",
    "package/use-city-stream.d.ts",
    "package/use-city-stream.js",
  ]);
  const manifest = JSON.parse(execFileSync("tar", ["-xzOf", tgz, "package/package.json"]).toString());
  assert.equal(manifest.name, "@metrocast/client");
  assert.equal(manifest.version, semverOf(binaryVersion(bin)), "the package's version is the binary's");
  assert.equal(manifest.devDependencies, undefined);
  assert.equal(manifest.dependencies, undefined, "no runtime dependencies");

  // A scratch project installs the tarball (no registry needed: the
  // package has no dependencies).
  const app = join(dir, "app");
  execFileSync("mkdir", [app]);
  writeFileSync(join(app, "package.json"), JSON.stringify({ name: "scratch", private: true, type: "module" }));
  execFileSync("npm", ["install", "--offline", "--no-audit", "--no-fund", "--loglevel=error", tgz], { cwd: app });
  const installed = JSON.parse(readFileSync(join(app, "node_modules/@metrocast/client/package.json"), "utf8"));
  assert.equal(installed.version, manifest.version);

  // Both entry points under Node, through the exports map; files it does
  // not export stay private.
  const out = execFileSync(
    process.execPath,
    [
      "--input-type=module",
      "-e",
      `
      const m = await import("@metrocast/client");
      const h = await import("@metrocast/client/use-city-stream");
      let deep = "exported";
      try { await import("@metrocast/client/metrocast.js"); } catch (e) { deep = e.code; }
      console.log(JSON.stringify({
        client: typeof m.Metrocast, backoff: m.backoffDelay(0, {}, () => 0), transport: m.defaults.tokenTransport,
        hook: typeof h.makeUseCityStream, deep,
      }));
      `,
    ],
    { cwd: app },
  );
  assert.deepEqual(JSON.parse(out.toString()), {
    client: "function",
    backoff: 250,
    transport: "message",
    hook: "function",
    deep: "ERR_PACKAGE_PATH_NOT_EXPORTED",
  });

  // A TypeScript consumer, strict, against the shipped .d.ts.
  writeFileSync(join(app, "consumer.ts"), consumer);
  writeFileSync(
    join(app, "tsconfig.json"),
    JSON.stringify({
      compilerOptions: { strict: true, noEmit: true, module: "nodenext", moduleResolution: "nodenext", target: "es2022", lib: ["es2022"], types: [], skipLibCheck: false },
      files: ["consumer.ts"],
    }),
  );
  try {
    execFileSync(process.execPath, [tsc, "-p", app, "--pretty", "false"], { cwd: app });
  } catch (err) {
    assert.fail(`tsc --strict on the consumer:\n${err.stdout}${err.stderr}`);
  }
});
