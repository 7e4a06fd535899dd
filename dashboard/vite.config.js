// Builds the dashboard into the Python package (tulle/dashboard/static), served by the control
// plane under /dashboard/; build-info.json records the hash of the sources it was built from.
import { writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { defineConfig } from "vite";
import { sourcesHash } from "./scripts/hash.mjs";

const here = dirname(fileURLToPath(import.meta.url));
const out = resolve(here, "../tulle/dashboard/static");

export default defineConfig({
  root: here,
  base: "/dashboard/",
  build: {
    outDir: out,
    emptyOutDir: true,
    assetsDir: "assets",
    sourcemap: false,
    chunkSizeWarningLimit: 1200,
  },
  plugins: [
    {
      name: "tulle-build-info",
      closeBundle() {
        const info = { sources: sourcesHash(here), builtWith: "vite" };
        writeFileSync(resolve(out, "build-info.json"), JSON.stringify(info, null, 1) + "\n");
      },
    },
  ],
});
