// The service graph: a node per workload (a service's version; versions of one service are
// grouped in a box), an edge per caller and callee with requests/s, success rate, p99 and
// whether the calls went over mTLS. Laid out left to right in layers (dagre) and redrawn in
// place every refresh; the same figures are listed in a table below it.
import cytoscape from "cytoscape";
import dagre from "cytoscape-dagre";
import { el, get, millis, percent, rate, table } from "./api.js";

cytoscape.use(dagre);

const STYLE = [
  { selector: "node", style: {
    label: "data(label)", "text-valign": "bottom", "text-margin-y": 4, "font-size": 11,
    "background-color": "#4c6ef5", width: 26, height: 26, color: "#222",
  } },
  { selector: "node[?outside]", style: { "background-color": "#868e96", shape: "round-rectangle" } },
  { selector: "node[?idle]", style: { "background-color": "#ced4da" } },
  { selector: ":parent", style: {
    "background-color": "#f1f3f5", "border-color": "#adb5bd", "border-width": 1,
    label: "data(label)", "text-valign": "top", "font-weight": "bold", padding: 12, shape: "round-rectangle",
  } },
  { selector: "edge", style: {
    width: "data(width)", "curve-style": "bezier", "target-arrow-shape": "triangle",
    "line-color": "data(color)", "target-arrow-color": "data(color)", label: "data(label)",
    "font-size": 9, "text-rotation": "autorotate", "text-background-color": "#fff",
    "text-background-opacity": 0.85, "text-background-padding": 2, color: "#333",
  } },
  { selector: "edge[?degraded]", style: { "line-style": "dashed" } },
];

function color(edge) {
  if (edge.degraded) return "#e03131";
  if (edge.success === null) return "#adb5bd";
  if (edge.success >= 0.99) return "#2f9e44";
  if (edge.success >= 0.9) return "#f08c00";
  return "#e03131";
}

function edgeLabel(edge) {
  const parts = [rate(edge.rps), percent(edge.success), `p99 ${millis(edge.p99)}`];
  if (edge.mtls !== null && edge.mtls >= 0.999) parts.push("mTLS");
  else if (edge.mtls) parts.push(`mTLS ${percent(edge.mtls)}`);
  if (edge.ejected.length) parts.push(`ejected: ${edge.ejected.join(", ")}`);
  else if (edge.degraded && edge.replicas.length) {
    const worst = edge.replicas[0];
    parts.push(`${worst.replica} ${percent(worst.success)}`);
  }
  return parts.join(" · ");
}

function elements(data) {
  const services = new Map();
  for (const node of data.nodes) {
    if (!node.outside) services.set(node.service, (services.get(node.service) || 0) + 1);
  }
  const called = new Set(data.edges.flatMap((e) => [e.source, e.target]));
  const nodes = [];
  for (const [service, count] of services) {
    if (count > 1) nodes.push({ data: { id: `service:${service}`, label: service } });
  }
  for (const node of data.nodes) {
    const grouped = !node.outside && services.get(node.service) > 1;
    const label = grouped || node.id === node.service ? node.id : `${node.service} (${node.id})`;
    nodes.push({ data: {
      id: node.id, label: node.version ? `${label} ${node.version}` : label,
      parent: grouped ? `service:${node.service}` : undefined, outside: !!node.outside,
      idle: !called.has(node.id),
    } });
  }
  const edges = data.edges.map((edge) => ({ data: {
    id: edge.id, source: edge.source, target: edge.target, label: edgeLabel(edge),
    color: color(edge), degraded: !!edge.degraded, width: Math.min(8, 1 + Math.log2(1 + edge.rps)),
  } }));
  return { nodes, edges };
}

function edgeRows(data) {
  return data.edges.map((edge) => el("tr", {
    "data-testid": "edge-row", "data-source": edge.source, "data-target": edge.target,
    "data-success": edge.success ?? "", "data-rps": edge.rps, class: edge.degraded ? "bad" : "",
  },
  el("td", {}, edge.source), el("td", {}, el("a", { href: `#/service/${encodeURIComponent(edge.service)}` }, edge.target)),
  el("td", { class: "num" }, rate(edge.rps)),
  el("td", { class: "num", "data-testid": "edge-success" }, percent(edge.success)),
  el("td", { class: "num" }, percent(edge.client ? edge.client.success : null)),
  el("td", { class: "num" }, millis(edge.p99)),
  el("td", {}, edge.mtls === null ? "-" : edge.mtls >= 0.999 ? "yes" : edge.mtls > 0 ? percent(edge.mtls) : "no"),
  el("td", { "data-testid": "edge-replicas" },
    edge.ejected.length ? `ejected: ${edge.ejected.join(", ")}; ` : "",
    edge.replicas.map((r) => `${r.replica} ${percent(r.success)}`).join(", "))));
}

export function graphPage(root) {
  const box = el("div", { id: "graph", "data-testid": "graph" });
  const note = el("p", { class: "muted" });
  const calls = el("div");
  const windows = [["10", "last 10 s"], ["60", "last minute"], ["300", "last 5 minutes"], ["900", "last 15 minutes"]];
  const span = el("select", { "data-testid": "graph-window", "aria-label": "time window" },
    windows.map(([seconds, label]) => el("option", { value: seconds }, label)));
  root.append(el("h1", {}, "Service graph ", span), note, box, el("h2", {}, "Calls"), calls);
  const cy = cytoscape({ container: box, style: STYLE, wheelSensitivity: 0.3, minZoom: 0.2, maxZoom: 3 });
  window.tulleGraph = cy; // for a look from the browser's console (and the tests)
  cy.on("tap", "node", (event) => {
    const node = event.target;
    if (node.isParent()) location.hash = `#/service/${encodeURIComponent(node.data("label"))}`;
    else if (!node.data("outside")) {
      const service = node.parent().length ? node.parent().data("label") : node.data("label").split(" ")[0];
      location.hash = `#/service/${encodeURIComponent(service)}`;
    }
  });
  let shape = "";
  let asked = 0; // an answer to an older question (before the window changed) is dropped
  const view = {
    async refresh() {
      const mine = ++asked;
      const data = await get(`/api/v1/graph?window=${span.value}`);
      if (mine !== asked) return;
      const covered = data.span < data.window - 1 ? ` (the control plane has ${Math.round(data.span)} s of readings so far)` : "";
      note.textContent = `Calls in the last ${data.window} s${covered}, as the callee saw them (every attempt, retries included; the caller's own view is in the table). Source: ${data.source}.`;
      const { nodes, edges } = elements(data);
      const next = JSON.stringify([nodes.map((n) => [n.data.id, n.data.parent]), edges.map((e) => e.data.id)]);
      if (next !== shape) {
        shape = next;
        cy.elements().remove();
        cy.add([...nodes, ...edges]);
        cy.layout({ name: "dagre", rankDir: "LR", nodeSep: 60, rankSep: 220, padding: 20 }).run();
      } else {
        for (const item of [...nodes, ...edges]) cy.getElementById(item.data.id).data(item.data);
      }
      calls.replaceChildren(table(
        ["From", "To", "Req/s", "Success (callee)", "Success (caller)", "p99", "mTLS", "Replicas"],
        edgeRows(data), { "data-testid": "edges" }));
    },
    dispose() { cy.destroy(); delete window.tulleGraph; },
  };
  span.addEventListener("change", () => view.refresh().catch(() => {}));
  return view;
}
