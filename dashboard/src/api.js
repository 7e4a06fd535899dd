// The control plane's HTTP API, read with the session cookie `tulle dashboard` set (same
// origin; the cookie is HttpOnly, so no script here ever sees a credential).

export class LoginNeeded extends Error {}

export async function get(path) {
  const response = await fetch(path, { credentials: "same-origin", headers: { accept: "application/json" } });
  if (response.status === 401) throw new LoginNeeded("log in: run `tulle dashboard`");
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `${path}: ${response.status}`);
  return body;
}

// Small DOM helpers: text is always set as text (never parsed as HTML).
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export const percent = (share) => (share === null || share === undefined ? "-" : `${(share * 100).toFixed(1)}%`);
export const millis = (ms) => (ms === null || ms === undefined ? "-" : ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : `${ms.toFixed(1)} ms`);
export const rate = (rps) => (rps === null || rps === undefined ? "-" : `${rps.toFixed(rps < 10 ? 2 : 1)}/s`);

export function table(headers, rows, attributes = {}) {
  return el(
    "table",
    attributes,
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows),
  );
}

// A line of values as an inline SVG (requests/s over the last minutes).
export function sparkline(values, { width = 260, height = 40, label = "" } = {}) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", label);
  const top = Math.max(1e-9, ...values);
  const points = values.map((v, i) => `${(i / Math.max(1, values.length - 1)) * (width - 2) + 1},${height - 2 - (v / top) * (height - 4)}`);
  const line = document.createElementNS("http://www.w3.org/2000/svg", "polyline");
  line.setAttribute("points", points.join(" "));
  line.setAttribute("fill", "none");
  line.setAttribute("stroke", "currentColor");
  line.setAttribute("stroke-width", "1.5");
  svg.append(line);
  return svg;
}
