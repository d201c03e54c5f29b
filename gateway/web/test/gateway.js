// Helpers for the tests that run the real metrocast binary: build it once,
// start nodes on free loopback ports, stop them, poll for conditions.
import { spawn, execFileSync } from "node:child_process";
import { createHmac } from "node:crypto";
import { mkdtempSync, readFileSync, writeFileSync, existsSync } from "node:fs";
import { connect, createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

const repo = fileURLToPath(new URL("../../..", import.meta.url));

let built;
/** binary is bin/metrocast from METROCAST_BIN, or a fresh build of ./cmd/metrocast. */
export function binary() {
  if (process.env.METROCAST_BIN) return resolve(repo, process.env.METROCAST_BIN);
  if (!built) {
    built = join(mkdtempSync(join(tmpdir(), "metrocast-web-")), "metrocast");
    execFileSync("go", ["build", "-o", built, "./cmd/metrocast"], { cwd: repo, stdio: "inherit" });
  }
  return built;
}

/** freePort asks the kernel for an unused loopback port. */
export function freePort() {
  return new Promise((res, rej) => {
    const s = createServer();
    s.on("error", rej);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

/** secretFile writes an HMAC secret (the given one, or the tests') for a node and returns its path. */
export function secretFile(secret = "web-test-secret-web-test-secret-0123456789") {
  const p = join(mkdtempSync(join(tmpdir(), "metrocast-secret-")), "secret");
  writeFileSync(p, secret + "\n", { mode: 0o600 });
  return p;
}

/** textFile writes text to a fresh file and returns its path. */
export function textFile(name, text) {
  const p = join(mkdtempSync(join(tmpdir(), "metrocast-file-")), name);
  writeFileSync(p, text);
  return p;
}

/** adminTokenFile writes an admin token for a node and returns its path and the token. */
export function adminTokenFile() {
  const token = "web-test-admin-token-web-test-admin-token";
  const p = join(mkdtempSync(join(tmpdir(), "metrocast-admin-")), "admin-token");
  writeFileSync(p, token + "\n", { mode: 0o600 });
  return { path: p, token };
}

/** ports picks the three ports of a node. */
export async function ports() {
  return { ws: await freePort(), admin: await freePort(), ingest: await freePort() };
}

/**
 * startNode runs `metrocast serve` with the given ports and extra flags and
 * resolves once it listens, with its process, its stdout so far, and stop().
 */
export function startNode(p, extra = []) {
  const args = [
    "serve",
    "-addr", `127.0.0.1:${p.ws}`,
    "-admin-addr", `127.0.0.1:${p.admin}`,
    "-ingest-addr", `127.0.0.1:${p.ingest}`,
    "-loops", "2",
    "-drain-window", "1s",
    ...extra,
  ];
  const proc = spawn(binary(), args, { stdio: ["ignore", "pipe", "pipe"] });
  const node = { proc, out: "", err: "", exited: new Promise((r) => proc.on("exit", (code, sig) => r({ code, sig }))) };
  proc.stdout.on("data", (b) => (node.out += b));
  proc.stderr.on("data", (b) => (node.err += b));
  node.stop = async () => {
    if (proc.exitCode === null && proc.signalCode === null) proc.kill("SIGTERM");
    return node.exited;
  };
  return waitFor(() => node.err.includes("metrocast listening") && (!extra.includes("-demo") || node.out.includes("http://")), 15000, () => `node did not start:\n${node.err}`).then(
    () => node,
    async (e) => {
      await node.stop();
      throw e;
    },
  );
}

/** waitFor polls cond every 20 ms until it is truthy or ms pass. */
export async function waitFor(cond, ms, what) {
  const end = Date.now() + ms;
  for (;;) {
    const v = await cond();
    if (v) return v;
    if (Date.now() > end) throw new Error(typeof what === "function" ? what() : what ?? "timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * publish sends NDJSON lines to the node's HTTP ingest and returns the
 * answers; with p.adminToken set, as Authorization: Bearer.
 */
export async function publish(p, ...lines) {
  const r = await fetch(`http://127.0.0.1:${p.admin}/api/publish`, {
    method: "POST",
    headers: p.adminToken ? { Authorization: `Bearer ${p.adminToken}` } : {},
    body: lines.map((l) => JSON.stringify(l)).join("\n") + "\n",
  });
  const text = await r.text();
  if (r.status !== 200) throw new Error(`publish: ${r.status} ${text}`);
  return text.trim().split("\n").map((l) => JSON.parse(l));
}

/** token mints a client token with `metrocast token` (extra: more flags, e.g. ["-aud", "x"]). */
export function token(secret, sub, cities, extra = []) {
  return execFileSync(binary(), ["token", "-auth-hmac-secret-file", secret, "-sub", sub, "-cities", cities, "-ttl", "1h", ...extra])
    .toString()
    .trim();
}

/**
 * hs256 signs claims with the secret in the file secret, for tokens
 * `metrocast token` will not mint (an expired one).
 */
export function hs256(secret, claims) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const body = `${b64({ alg: "HS256", typ: "JWT" })}.${b64(claims)}`;
  const key = readFileSync(secret, "utf8").trim();
  return `${body}.${createHmac("sha256", key).update(body).digest("base64url")}`;
}

export const chromiumPath = "/usr/bin/chromium";
export const haveChromium = () => existsSync(chromiumPath);

/**
 * startProxy forwards TCP connections to 127.0.0.1:port, as a network in
 * between does: cut() drops every connection open so far (a lost network),
 * heads lists the first bytes each connection sent (its request head), and
 * with breakUpgrades a connection whose request asks for a WebSocket
 * upgrade is closed at once, as a proxy that does not pass upgrades does.
 * close() stops it.
 */
export function startProxy(port, { breakUpgrades = false } = {}) {
  const conns = new Set();
  const heads = [];
  const server = createServer((client) => {
    conns.add(client);
    client.on("close", () => conns.delete(client));
    client.on("error", () => {});
    client.once("data", (first) => {
      const head = first.toString("latin1");
      heads.push(head);
      if (breakUpgrades && /^upgrade:\s*websocket/im.test(head)) {
        client.destroy();
        return;
      }
      const upstream = connect(port, "127.0.0.1");
      conns.add(upstream);
      upstream.on("close", () => {
        conns.delete(upstream);
        client.destroy();
      });
      upstream.on("error", () => client.destroy());
      client.on("close", () => upstream.destroy());
      upstream.write(first);
      client.pipe(upstream);
      upstream.pipe(client);
    });
  });
  return new Promise((res) =>
    server.listen(0, "127.0.0.1", () =>
      res({
        port: server.address().port,
        heads,
        cut() {
          for (const c of conns) c.destroy();
        },
        close() {
          this.cut();
          return new Promise((r) => server.close(r));
        },
      }),
    ),
  );
}
