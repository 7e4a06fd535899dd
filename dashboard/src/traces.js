// Recent traces from the control plane's trace store (GET /api/v1/traces), filtered by service,
// status and minimum duration; one trace (GET /api/v1/traces/{id}) as a waterfall.
import { el, get, millis, table } from "./api.js";

export function tracesPage(root) {
  const service = el("input", { name: "service", placeholder: "any service", "data-testid": "filter-service" });
  const status = el("select", { name: "status", "data-testid": "filter-status" },
    el("option", { value: "" }, "any status"), el("option", { value: "ok" }, "ok"), el("option", { value: "error" }, "error"));
  const minimum = el("input", { name: "minDurationMs", type: "number", min: "0", placeholder: "min ms", "data-testid": "filter-min" });
  const list = el("div");
  const summary = el("p", { class: "muted" });
  root.append(el("h1", {}, "Traces"),
    el("form", { class: "filters", onsubmit: (e) => e.preventDefault() }, service, status, minimum), summary, list);
  let asked = 0; // answers to older questions (before a filter changed) are not shown
  const view = {
    async refresh() {
      const mine = ++asked;
      const query = new URLSearchParams({ limit: "50" });
      if (service.value.trim()) query.set("service", service.value.trim());
      if (status.value) query.set("status", status.value);
      if (minimum.value) query.set("minDurationMs", minimum.value);
      const data = await get(`/api/v1/traces?${query}`);
      if (mine !== asked) return;
      summary.textContent = `${data.store.traces} traces, ${data.store.spans} spans held (at most ${data.store.maxSpans}).`;
      list.replaceChildren(table(["Started", "Root", "Services", "Spans", "Duration", "Status"],
        data.traces.map((t) => el("tr", { "data-testid": "trace-row", class: t.status === "error" ? "bad" : "" },
          el("td", {}, new Date(t.start * 1000).toLocaleTimeString()),
          el("td", {}, el("a", { href: `#/trace/${t.traceId}`, "data-testid": "trace-link" }, `${t.rootService}: ${t.rootName}`)),
          el("td", {}, t.services.join(", ")), el("td", { class: "num" }, t.spanCount),
          el("td", { class: "num" }, millis(t.durationMs)), el("td", {}, t.status)))));
    },
  };
  for (const filter of [service, status, minimum]) {
    filter.addEventListener("input", () => view.refresh().catch(() => {})); // at once
  }
  return view;
}

export function tracePage(root, traceId) {
  const body = el("div");
  root.append(el("h1", {}, "Trace ", el("code", {}, traceId)), body);
  return {
    async refresh() {
      const t = await get(`/api/v1/traces/${encodeURIComponent(traceId)}`);
      const total = Math.max(t.durationMs, 0.001);
      const rows = t.spans.map((s) => {
        const bar = el("div", { class: `bar ${s.status === "error" ? "error" : ""} ${s.kind}` });
        bar.style.marginLeft = `${(s.offsetMs / total) * 100}%`;
        bar.style.width = `${Math.max(0.3, (s.durationMs / total) * 100)}%`;
        for (const event of s.events) {
          const mark = el("span", { class: "event", title: `${event.name} at +${millis(event.offsetMs)}` });
          mark.style.left = `${s.durationMs ? (event.offsetMs / s.durationMs) * 100 : 0}%`;
          bar.append(mark);
        }
        const name = el("div", { class: "span-name" }, `${s.service}: ${s.name}`);
        name.style.paddingLeft = `${s.depth * 14}px`;
        const detail = el("details", {}, el("summary", {}, name),
          el("pre", {}, JSON.stringify({ kind: s.kind, status: s.status, statusMessage: s.statusMessage || undefined,
            attributes: s.attributes, events: s.events }, null, 1)));
        return el("div", { class: "span-row", "data-testid": "span-row", "data-service": s.service },
          detail, el("div", { class: "track" }, bar), el("div", { class: "num" }, millis(s.durationMs)));
      });
      body.replaceChildren(
        el("p", { class: "muted" }, `${t.spanCount} spans, ${t.services.join(", ")}; ${millis(t.durationMs)}; ${t.status}${t.complete ? "" : " (incomplete)"}`),
        el("div", { class: "waterfall", "data-testid": "waterfall" }, rows));
    },
    live: false,
  };
}
