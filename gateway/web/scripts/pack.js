// pack.js builds the npm package of the client (@metrocast/client) with
// the version of the metrocast binary it comes with, so that the two are
// always in step:
//
//   node scripts/pack.js bin/metrocast OUTDIR    # prints the tarball's path
//
// The package's files are those package.json's "files" names (npm decides,
// as for `npm pack` here); they are staged in a temporary directory with a
// package.json that carries the binary's version and leaves out what only
// this repository's tests need (scripts, devDependencies).
import { execFileSync } from "node:child_process";
import { copyFileSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const web = fileURLToPath(new URL("..", import.meta.url));

/**
 * semverOf turns what `metrocast version` prints into an npm version: a
 * release tag v1.2.3 gives 1.2.3, a build past a tag (git describe:
 * v1.2.3-4-gabcdef[-dirty]) a prerelease of it, and a build from an
 * untagged checkout (dev-abcdef, abcdef, dev) 0.0.0-dev-….
 */
export function semverOf(binaryVersion) {
  const v = binaryVersion.trim().split(/\s+/)[0] ?? "";
  const m = /^v?(\d+\.\d+\.\d+)(-[0-9A-Za-z-]+(\.[0-9A-Za-z-]+)*)?$/.exec(v);
  if (m) return m[1] + (m[2] ?? "");
  const rest = v.replace(/^dev-?/, "").replace(/[^0-9A-Za-z-]/g, "-");
  return "0.0.0-dev" + (rest ? "-" + rest : "");
}

/** binaryVersion runs `bin version` and returns its version word. */
export function binaryVersion(bin) {
  const out = execFileSync(bin, ["version"]).toString().trim(); // "metrocast v1.2.3"
  return out.replace(/^metrocast\s+/, "");
}

/** pack writes the package tarball into outDir and returns its path. */
export function pack(bin, outDir) {
  const version = semverOf(binaryVersion(bin));
  const [dry] = JSON.parse(execFileSync("npm", ["pack", "--dry-run", "--json", "--loglevel=error"], { cwd: web }).toString());
  const stage = mkdtempSync(join(tmpdir(), "metrocast-pack-"));
  try {
    for (const { path } of dry.files) {
      if (path !== "package.json") copyFileSync(join(web, path), join(stage, path));
    }
    const manifest = JSON.parse(readFileSync(join(web, "package.json"), "utf8"));
    manifest.version = version;
    delete manifest.scripts;
    delete manifest.devDependencies;
    writeFileSync(join(stage, "package.json"), JSON.stringify(manifest, null, 2) + "\n");
    const out = resolve(outDir);
    const [packed] = JSON.parse(
      execFileSync("npm", ["pack", "--json", "--loglevel=error", "--pack-destination", out], { cwd: stage }).toString(),
    );
    return join(out, packed.filename);
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? "").href) {
  const [bin, outDir] = process.argv.slice(2);
  if (!bin || !outDir) {
    console.error("usage: node scripts/pack.js METROCAST_BINARY OUTDIR");
    process.exit(2);
  }
  console.log(pack(bin, outDir));
}
