// The dashboard: a page per hash route, each re-reading its data every few seconds.
import { LoginNeeded, el } from "./api.js";
import { graphPage } from "./graph.js";
import { servicePage, servicesPage } from "./service.js";
import { tracePage, tracesPage } from "./traces.js";
import { configPage } from "./config.js";

const REFRESH_MS = 2000;
const page = document.getElementById("page");
const status = document.getElementById("status");
let current = null; // { refresh, dispose }
let timer = null;

function route() {
  const [name, ...rest] = (location.hash.replace(/^#\/?/, "") || "graph").split("/");
  const argument = rest.map(decodeURIComponent).join("/");
  switch (name) {
    case "graph": return ["graph", () => graphPage(page)];
    case "services": return ["services", () => servicesPage(page)];
    case "service": return ["services", () => servicePage(page, argument)];
    case "traces": return ["traces", () => tracesPage(page)];
    case "trace": return ["traces", () => tracePage(page, argument)];
    case "config": return ["config", () => configPage(page)];
    default: return ["graph", () => graphPage(page)];
  }
}

async function refresh() {
  if (!current) return;
  try {
    await current.refresh();
    status.textContent = `updated ${new Date().toLocaleTimeString()}`;
    status.className = "muted";
  } catch (error) {
    status.className = "error";
    if (error instanceof LoginNeeded) {
      page.replaceChildren(el("p", { class: "login", "data-testid": "login-needed" },
        "Not logged in (or the session ended). Run ", el("code", {}, "tulle dashboard"),
        " to open a logged-in page."));
      status.textContent = "not logged in";
      return;
    }
    status.textContent = String(error.message || error);
  }
}

function show() {
  if (current && current.dispose) current.dispose();
  clearInterval(timer);
  page.replaceChildren();
  const [name, make] = route();
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.page === name);
  }
  current = make();
  refresh();
  if (current.live !== false) timer = setInterval(refresh, REFRESH_MS);
}

window.addEventListener("hashchange", show);
show();
