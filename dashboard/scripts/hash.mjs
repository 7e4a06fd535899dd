// SHA-256 over the front end's sources: each file's path (relative to dashboard/) and bytes, in
// path order. The same function as tulle.dashboard.sources_hash in Python, which a test runs on
// the sources and compares with the build's build-info.json: a change not rebuilt fails it.
import { createHash } from "node:crypto";
import { readdirSync, readFileSync, statSync } from "node:fs";
import { join, relative, sep } from "node:path";

export const SOURCES = ["index.html", "package.json", "package-lock.json", "vite.config.js", "scripts", "src"];

function files(path) {
  if (!statSync(path).isDirectory()) return [path];
  return readdirSync(path).flatMap((name) => files(join(path, name)));
}

export function sourcesHash(root) {
  const all = SOURCES.flatMap((name) => files(join(root, name)))
    .map((path) => [relative(root, path).split(sep).join("/"), path])
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  const digest = createHash("sha256");
  for (const [name, path] of all) {
    digest.update(Buffer.concat([Buffer.from(name), Buffer.from([0])]));
    digest.update(Buffer.concat([readFileSync(path), Buffer.from([0])]));
  }
  return digest.digest("hex");
}
