// A service: its versions and the split between them, its endpoints (health, ejections), its
// callers' breaker overflows, its traffic over the last minutes, the config that applies to it
// with its findings, and the sync state (and NACKs) of its proxies.
import { el, get, percent, rate, sparkline, table } from "./api.js";

export function servicesPage(root) {
  const list = el("div");
  root.append(el("h1", {}, "Services"), list);
  return {
    async refresh() {
      const data = await get("/api/v1/services");
      list.replaceChildren(table(["Service", "Workloads"], data.services.map((s) => el("tr", {},
        el("td", {}, el("a", { href: `#/service/${encodeURIComponent(s.name)}`, "data-testid": "service-link" }, s.name)),
        el("td", {}, s.workloads.join(", "))))));
    },
  };
}

function findingsList(findings) {
  if (!findings.length) return el("span", { class: "muted" }, "no findings");
  return el("ul", { class: "findings" }, findings.map((f) => el("li", { class: f.severity.toLowerCase() },
    `${f.severity} ${f.file}:${f.line} ${f.field}: ${f.message}`)));
}

// Which resources' specs are open, so that a refresh (every 2 s) keeps them open.
const opened = new Set();

export function configRows(items) {
  return items.map((item) => {
    const key = `${item.kind}/${item.namespace}/${item.name}`;
    const spec = el("details", { open: opened.has(key) }, el("summary", {}, "spec"),
      el("pre", {}, JSON.stringify(item.resource.spec ?? {}, null, 1)));
    spec.addEventListener("toggle", () => (spec.open ? opened.add(key) : opened.delete(key)));
    return el("tr", { "data-testid": "config-row" },
      el("td", {}, item.kind), el("td", {}, `${item.namespace}/${item.name}`),
      el("td", {}, item.source), el("td", {}, findingsList(item.findings)), el("td", {}, spec));
  });
}

function proxyRows(proxies) {
  return proxies.map((p) => {
    const types = Object.entries(p.types);
    const nacks = types.filter(([, t]) => t.nack).map(([name, t]) => `${name}: ${t.nack}`);
    const synced = types.length > 0 && types.every(([, t]) => t.current);
    return el("tr", { "data-testid": "proxy-row", class: nacks.length ? "bad" : "" },
      el("td", {}, p.node), el("td", {}, p.mode), el("td", {}, p.secure ? "TLS" : "plain"),
      el("td", {}, synced ? "synced" : "not synced"),
      el("td", {}, types.map(([name, t]) => `${name} ${t.acked ?? "-"}`).join(", ")),
      el("td", {}, nacks.length ? nacks.join("; ") : "-"));
  });
}

export function servicePage(root, name) {
  const body = el("div");
  root.append(el("h1", {}, "Service ", el("span", { "data-testid": "service-name" }, name)), body);
  return {
    async refresh() {
      const s = await get(`/api/v1/services/${encodeURIComponent(name)}`);
      const inbound = s.traffic.map((p) => p.inbound.rps);
      const outbound = s.traffic.map((p) => p.outbound.rps);
      const last = s.traffic.length ? s.traffic[s.traffic.length - 1] : null;
      body.replaceChildren(
        el("h2", {}, "Versions"),
        table(["Workload", "Version", "Share of requests (last minute)"], s.versions.map((v) => el("tr", {},
          el("td", {}, v.workload), el("td", {}, v.version || "-"), el("td", { class: "num" }, percent(s.split[v.workload] ?? null))))),
        el("h2", {}, "Endpoints"),
        table(["Address", "Replica", "Workload", "Version", "Registered", "Ejected by"], s.endpoints.map((e) => el("tr", {
          "data-testid": "endpoint-row", "data-ejected": e.ejected_by.length ? "true" : "false", class: e.ejected_by.length ? "bad" : "",
        },
        el("td", {}, e.address), el("td", {}, e.replica || "-"), el("td", {}, e.workload), el("td", {}, e.version || "-"),
        el("td", {}, e.healthy ? "healthy" : "unhealthy"),
        el("td", {}, e.ejected_by.length ? `ejected by ${e.ejected_by.join(", ")}` : "-")))),
        el("h2", {}, "Callers' circuit breakers and outlier detection"),
        s.clusters.length
          ? table(["Caller", "Cluster", "Ejected now", "Ejections", "Breaker overflows"], s.clusters.map((c) => el("tr", {},
            el("td", {}, c.caller), el("td", {}, c.cluster), el("td", {}, c.ejected.join(", ") || "-"),
            el("td", { class: "num" }, c.ejections), el("td", { class: "num" }, c.overflows))))
          : el("p", { class: "muted" }, "No ejections or breaker overflows."),
        el("h2", {}, "Traffic, last 5 minutes"),
        el("div", { class: "sparks" },
          el("figure", {}, sparkline(inbound, { label: "inbound requests/s" }),
            el("figcaption", {}, `in: ${rate(last ? last.inbound.rps : null)}, success ${percent(last ? last.inbound.success : null)}`)),
          el("figure", {}, sparkline(outbound, { label: "outbound requests/s" }),
            el("figcaption", {}, `out: ${rate(last ? last.outbound.rps : null)}, success ${percent(last ? last.outbound.success : null)}`))),
        el("h2", {}, "Config that applies"),
        table(["Kind", "Name", "Source", "Findings", ""], configRows(s.config)),
        el("h2", {}, "Proxies and libraries"),
        table(["Node", "Mode", "xDS", "Sync", "ACKed versions", "NACK"], proxyRows(s.proxies)),
        el("p", { class: "muted" }, `Traffic source: ${s.source}.`),
      );
    },
  };
}
