// Every resource in force, where it came from (a file, applied, the cluster), its findings.
import { el, get, table } from "./api.js";
import { configRows } from "./service.js";

export function configPage(root) {
  const body = el("div");
  root.append(el("h1", {}, "Config in force"), body);
  return {
    async refresh() {
      const data = await get("/api/v1/config");
      const files = data.files.map((f) => el("li", { class: f.severity.toLowerCase() }, `${f.severity} ${f.file}:${f.line}: ${f.message}`));
      body.replaceChildren(
        files.length ? el("ul", { class: "findings" }, files) : el("span"),
        table(["Kind", "Name", "Source", "Findings", ""], configRows(data.items), { "data-testid": "config" }));
    },
    live: true,
  };
}
