// The webhook-router console: talks to /api/v1 with the session cookie, and sends the
// session's CSRF token (X-CSRF-Token) with every request that changes something.
// No external assets: the chart is SVG drawn here. Every text from the router goes in
// through textContent, never as HTML.
"use strict";

const REFRESH_MS = 5000;
const API = "/api/v1";
const body = document.body;
const writes = body.dataset.writes === "yes";
const csrf = document.querySelector('meta[name="csrf"]').content;
let route = { view: "list" };
let timer = null;

// ------------------------------------------------------------------ small helpers

const $ = (sel) => document.querySelector(sel);

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c);
  return node;
}

class ApiFailure extends Error {
  constructor(status, errors) {
    super(errors.map((e) => (e.path ? `${e.path}: ${e.message}` : e.message)).join("; "));
    this.status = status;
    this.errors = errors;
  }
}

async function api(method, path, payload) {
  const headers = { Accept: "application/json" };
  if (method !== "GET") headers["X-CSRF-Token"] = csrf;
  if (payload !== undefined) headers["Content-Type"] = "application/json";
  const r = await fetch(API + path, {
    method, headers, credentials: "same-origin",
    body: payload === undefined ? undefined : JSON.stringify(payload),
  });
  const text = await r.text();
  const data = text ? JSON.parse(text) : {};
  if (r.status === 401) {  // signed out elsewhere, idle too long, or the token was removed
    window.location.assign("/");
    throw new ApiFailure(401, data.errors || []);
  }
  if (!r.ok && !(r.status === 502 && data.ok === false)) {
    throw new ApiFailure(r.status, data.errors || [{ path: "", message: `HTTP ${r.status}` }]);
  }
  return data;
}

function banner(text) {
  const b = $("#banner");
  b.textContent = text || "";
  b.hidden = !text;
}

function when(iso) {
  if (!iso) return "never";
  const d = new Date(iso);
  return isNaN(d) ? iso : d.toLocaleString();
}

function list(words, joiner = "or") {
  if (words.length <= 1) return words.join("");
  return `${words.slice(0, -1).join(", ")} ${joiner} ${words[words.length - 1]}`;
}

const quote = (s) => `“${s}”`;

// ------------------------------------------------------------------ words for people

const STATES = { active: "Working", failing: "Failing, retrying", disabled: "Turned off",
  unknown: "Not known" };
const HEALTH = { HEALTHY: "Healthy", DEGRADED: "Having trouble", UNHEALTHY: "Unhealthy",
  UNKNOWN: "Not known" };
const REASONS = { manual: "by hand", exhausted: "after failed deliveries",
  gone: "the address answered 410 Gone", config: "in the configuration" };

function stateWords(w) {
  const words = STATES[w.state] || w.state;
  return w.state === "disabled" && REASONS[w.disabled_reason] ? `${words} (${REASONS[w.disabled_reason]})` : words;
}

function typeWords(pattern) {
  if (pattern === "*") return "any type";
  if (/^[^*?[\]]+\*$/.test(pattern)) return `any type starting with ${quote(pattern.slice(0, -1))}`;
  if (/[*?[]/.test(pattern)) return `any type matching ${quote(pattern)}`;
  return quote(pattern);
}

const OPS = { eq: "is", ne: "is not", in: "is one of", nin: "is none of", gt: "is more than",
  gte: "is at least", lt: "is less than", lte: "is at most", prefix: "starts with",
  glob: "matches the pattern", regex: "matches the regular expression" };

function valueWords(v) {
  if (Array.isArray(v)) return list(v.map(valueWords));
  return typeof v === "string" ? quote(v) : JSON.stringify(v);
}

function predWords(p) {
  if (p.all) return p.all.map(predWords).join(" and ");
  if (p.any) return `(${p.any.map(predWords).join(" or ")})`;
  if (p.not) return `not (${predWords(p.not)})`;
  const op = Object.keys(p).find((k) => k !== "field");
  if (op === "exists") return `${p.field} ${p.exists ? "is present" : "is absent"}`;
  return `${p.field} ${OPS[op] || op} ${valueWords(p[op])}`;
}

function ruleWords(r) {
  const parts = [];
  parts.push(r.events && r.events.length ? `events of ${list(r.events.map(typeWords))}` : "events of every type");
  parts.push(r.projects && r.projects.length ? `in project ${list(r.projects.map(quote))}` : "in any project");
  parts.push(r.companies && r.companies.length ? `of company ${list(r.companies.map(quote))}` : "of any company");
  let words = parts.join(", ");
  if (r.where) words += `, when ${predWords(r.where)}`;
  return words[0].toUpperCase() + words.slice(1) + ".";
}

function subscription(w) {
  const box = el("div");
  if (w.match) {
    box.append(el("p", { text: "It receives an event when any one of these holds:" }));
    const ol = el("ol");
    for (const r of w.match) ol.append(el("li", { text: ruleWords(r) }));
    box.append(ol);
  } else {
    box.append(el("p", { text: ruleWords(w) }));
  }
  return box;
}

// ------------------------------------------------------------------ the chart

const SVGNS = "http://www.w3.org/2000/svg";

function lastHour(perMinute) {
  // [minute_start, delivered, failed] from the router -> 60 slots, the oldest first.
  const nowMinute = Math.floor(Date.now() / 60000);
  const slots = Array.from({ length: 60 }, () => [0, 0]);
  for (const [start, delivered, failed] of perMinute || []) {
    const ago = nowMinute - Math.floor(start / 60);
    if (ago >= 0 && ago < 60) slots[59 - ago] = [delivered, failed];
  }
  return slots;
}

function chart(perMinute, width, height) {
  const slots = lastHour(perMinute);
  const top = Math.max(1, ...slots.map(([d, f]) => d + f));
  const delivered = slots.reduce((n, s) => n + s[0], 0);
  const failed = slots.reduce((n, s) => n + s[1], 0);
  const svg = document.createElementNS(SVGNS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("width", width);
  svg.setAttribute("height", height);
  svg.setAttribute("role", "img");
  const caption = `Last hour: ${delivered} delivered, ${failed} failed attempts`;
  svg.setAttribute("aria-label", caption);
  svg.dataset.delivered = delivered;
  svg.dataset.failed = failed;
  const title = document.createElementNS(SVGNS, "title");
  title.textContent = caption;
  svg.append(title);
  const bar = width / 60;
  const rect = (cls, x, y, h) => {
    const r = document.createElementNS(SVGNS, "rect");
    r.setAttribute("class", cls);
    r.setAttribute("x", x.toFixed(2));
    r.setAttribute("y", y.toFixed(2));
    r.setAttribute("width", Math.max(1, bar - 1).toFixed(2));
    r.setAttribute("height", h.toFixed(2));
    svg.append(r);
  };
  slots.forEach(([d, f], i) => {
    const x = i * bar;
    const hd = (d / top) * (height - 2);
    const hf = (f / top) * (height - 2);
    rect("base", x, height - 1, 1);
    if (d) rect("ok", x, height - 1 - hd, hd);
    if (f) rect("bad", x, height - 1 - hd - hf, hf);
  });
  return { svg, caption };
}

// ------------------------------------------------------------------ the list

async function showList() {
  const { webhooks } = await api("GET", "/webhooks");
  const rows = webhooks.map((w) => {
    const { svg, caption } = chart(w.per_minute, 180, 32);
    const source = w.source === "api" ? "this console or the API"
      : `file ${w.source.split("/").pop()}`;  // the whole path is on the webhook's page
    return el("tr", { "data-name": w.name },
      el("td", {}, el("a", { href: `#/webhook/${encodeURIComponent(w.name)}`, text: w.name })),
      el("td", {}, el("span", { class: `badge state ${w.state}`, text: stateWords(w) })),
      el("td", {}, el("span", { class: `badge health ${String(w.health).toLowerCase()}`,
        text: HEALTH[w.health] || w.health })),
      el("td", { class: "n queued", text: String(w.queued ?? "") }),
      el("td", { class: "chart", title: caption }, svg),
      el("td", { class: "source", title: w.source, text: source }));
  });
  $("#webhooks tbody").replaceChildren(...rows);
  $("#no-webhooks").hidden = rows.length > 0;
}

// ------------------------------------------------------------------ one webhook

let current = null;  // the webhook on screen, as the API gave it

async function showWebhook(name) {
  const path = `/webhooks/${encodeURIComponent(name)}`;
  const [w, { attempts }] = await Promise.all([api("GET", path), api("GET", `${path}/attempts?limit=50`)]);
  current = w;
  $("#w-name").textContent = w.name;
  const queued = w.queued === 1 ? "1 delivery is waiting" : `${w.queued ?? 0} deliveries are waiting`;
  $("#w-summary").replaceChildren(
    el("span", { class: `badge state ${w.state}`, text: stateWords(w) }), " ",
    el("span", { class: `badge health ${String(w.health).toLowerCase()}`, text: HEALTH[w.health] || w.health }),
    ` ${queued}; ${w.delivered ?? 0} delivered, ${w.failed ?? 0} given up.`);
  $("#w-subscription").replaceChildren(subscription(w));
  const { svg, caption } = chart(w.per_minute, 600, 120);
  $("#w-chart").replaceChildren(svg, el("span", { class: "chart-caption", text: caption }));
  const details = [
    ["Address", w.url],
    ["Signed", w.signature === "none" ? "not signed" : w.signature],
    ["Last success", when(w.last_success)],
    ["Last error", w.last_error || "none"],
    ["Failures in a row", String(w.consecutive_failures ?? 0)],
    ["Time taken (median, slowest 1%)", w.latency_ms && w.latency_ms.p50 != null ?
      `${w.latency_ms.p50} ms, ${w.latency_ms.p99} ms` : "no attempts yet"],
    ["Made in", w.source === "api" ? "this console or the API" : `the file ${w.source} (change it there)`],
  ];
  $("#w-details").replaceChildren(...details.flatMap(([k, v]) => [el("dt", { text: k }), el("dd", { text: v })]));
  const apiMade = w.source === "api";
  $("#w-edit").hidden = !apiMade;
  $("#w-delete").hidden = !apiMade;
  $("#w-edit").setAttribute("href", `#/edit/${encodeURIComponent(w.name)}`);
  $("#w-enable").hidden = w.state !== "disabled";
  $("#w-disable").hidden = w.state === "disabled";
  const rows = attempts.map((a) => {
    const ok = a.error == null;
    const result = ok ? `OK (${a.status})` : a.status ? `${a.status}: ${a.error}` : a.error;
    const response = a.response ? el("details", {}, el("summary", { text: `${a.response.length} characters` }),
      el("pre", { text: a.response })) : el("span", { class: "hint", text: "none" });
    return el("tr", { class: ok ? "ok" : "bad" },
      el("td", { text: when(a.at) }), el("td", { class: "mono", text: a.id }),
      el("td", { class: "n", text: String(a.attempt) }),
      el("td", {}, el("span", { class: `badge ${ok ? "healthy" : "unhealthy"}`, text: result })),
      el("td", { class: "n", text: a.latency_ms == null ? "" : `${Math.round(a.latency_ms)} ms` }),
      el("td", {}, response));
  });
  $("#attempts tbody").replaceChildren(...rows);
  $("#no-attempts").hidden = rows.length > 0;
}

function result(text, ok) {
  const r = $("#w-result");
  r.textContent = text;
  r.className = `result ${ok ? "ok" : "bad"}`;
  r.hidden = false;
}

async function act(button, work) {
  button.disabled = true;
  try {
    await work();
  } catch (e) {
    result(`Not done: ${e.message}`, false);
  } finally {
    button.disabled = false;
  }
  refresh();
}

function bindWebhookActions() {
  const path = () => `/webhooks/${encodeURIComponent(current.name)}`;
  $("#w-test").addEventListener("click", (e) => act(e.currentTarget, async () => {
    result("Sending a test event…", true);
    const r = await api("POST", `${path()}/test`);
    result(r.ok ? `Test event delivered: the address answered ${r.status} in ${r.latency_ms} ms.`
      : `The test event failed: ${r.error}${r.status ? ` (answered ${r.status})` : ""}.`, r.ok);
  }));
  $("#w-enable").addEventListener("click", (e) => act(e.currentTarget, async () => {
    result("Checking the address before turning it on…", true);
    const r = await api("POST", `${path()}/enable`);
    result(r.ok ? "Turned on: the health check passed, waiting deliveries go out now."
      : `Still off: ${r.message || r.error || "the health check failed"}.`, r.ok);
  }));
  $("#w-disable").addEventListener("click", (e) => act(e.currentTarget, async () => {
    await api("POST", `${path()}/disable`);
    result("Turned off. New events are kept and go out when it is turned on again.", true);
  }));
  $("#w-delete").addEventListener("click", (e) => {
    if (!window.confirm(`Delete webhook ${current.name}? Its waiting deliveries are cancelled.`)) return;
    act(e.currentTarget, async () => {
      await api("DELETE", path());
      window.location.hash = "#/";
    });
  });
  $("#w-replay").addEventListener("submit", (e) => {
    e.preventDefault();
    const payload = { failed: $("#replay-failed").checked };
    const since = $("#replay-since").value;
    if (since) payload.since = new Date(since).toISOString();
    act($("#w-replay-button"), async () => {
      const r = await api("POST", `${path()}/replay`, payload);
      result(r.replayed === 1 ? "1 delivery is queued again." : `${r.replayed} deliveries are queued again.`, true);
    });
  });
}

// ------------------------------------------------------------------ create and edit

const chipsOf = (id) => $(`.chips[data-for="${id}"]`);

function chipValues(id) {
  const input = $(`#${id}`);
  if (input.value.trim()) addChip(id, input.value);
  return [...chipsOf(id).querySelectorAll(".chip")].map((c) => c.dataset.value);
}

function addChip(id, value) {
  const input = $(`#${id}`);
  for (const v of value.split(",").map((s) => s.trim()).filter(Boolean)) {
    if ([...chipsOf(id).querySelectorAll(".chip")].some((c) => c.dataset.value === v)) continue;
    const chip = el("span", { class: "chip", "data-value": v, text: v });
    chip.append(el("button", { type: "button", "aria-label": `remove ${v}`, text: "×",
      onclick: () => chip.remove() }));
    input.before(chip);
  }
  input.value = "";
}

function setChips(id, values) {
  chipsOf(id).querySelectorAll(".chip").forEach((c) => c.remove());
  for (const v of values || []) addChip(id, v);
}

function bindChips() {
  for (const box of document.querySelectorAll(".chips")) {
    const id = box.dataset.for;
    const input = $(`#${id}`);
    input.addEventListener("keydown", (e) => {
      if (e.key === "Enter" || e.key === ",") {
        e.preventDefault();
        addChip(id, input.value);
      } else if (e.key === "Backspace" && !input.value) {
        const chips = box.querySelectorAll(".chip");
        if (chips.length) chips[chips.length - 1].remove();
      }
    });
    input.addEventListener("change", () => {  // a suggestion picked from the list
      if (input.value.trim()) addChip(id, input.value);
    });
    box.addEventListener("click", () => input.focus());
  }
}

async function fillSuggestions() {
  // What the router has seen so far (GET /event-types); the form works without it.
  let seen;
  try {
    seen = await api("GET", "/event-types");
  } catch (e) {
    return;
  }
  const types = (seen.event_types || seen.types || []).map((t) => (typeof t === "string" ? t : t.type));
  const fill = (id, values) => $(id).replaceChildren(...[...new Set(values)].filter(Boolean).sort()
    .map((v) => el("option", { value: v })));
  fill("#seen-types", types);
  fill("#seen-projects", seen.projects || []);
  fill("#seen-companies", seen.companies || []);
}

const SETTINGS = ["name", "url", "events", "projects", "companies", "where", "match", "enabled",
  "timeout", "retry", "max_in_flight", "ordered", "rate_limit", "headers", "signature",
  "signature_header", "allow_private_networks"];
let editing = null;  // the webhook being edited (its settings), or null for a new one

async function showForm(name) {
  $("#f-errors").hidden = true;
  editing = null;
  $("#webhook-form").reset();
  let w = { events: [], projects: [], companies: [], enabled: true, signature: "standard" };
  if (name) {
    w = await api("GET", `/webhooks/${encodeURIComponent(name)}`);
    editing = w;
  }
  $("#f-title").textContent = name ? `Edit webhook ${name}` : "New webhook";
  $("#f-name").value = w.name || "";
  $("#f-name").readOnly = Boolean(name);
  $("#f-url").value = w.url || "";
  const several = Boolean(w.match);
  $("#f-match-note").hidden = !several;
  for (const field of ["events", "projects", "companies"]) {
    setChips(`f-${field}-input`, several ? [] : w[field]);
    $(`#f-${field}-input`).disabled = several;
  }
  $("#f-where").value = w.where ? JSON.stringify(w.where) : "";
  $("#f-where").disabled = several;
  $("#f-signature").value = w.signature || "standard";
  $("#f-secret").value = "";
  $("#f-secret-hint").textContent = name ? "(leave empty to keep the current one)"
    : "(leave empty and one is made for you)";
  $("#f-enabled").checked = w.enabled !== false;
  $("#f-private").checked = Boolean(w.allow_private_networks);
  fillSuggestions();
}

function formPayload() {
  const payload = {};
  if (editing) {  // what the form does not show is kept as it is
    for (const k of SETTINGS) {
      const v = editing[k];
      if (v !== null && v !== undefined && !(Array.isArray(v) && !v.length)) payload[k] = v;
    }
    if (editing.health_check) payload.health = editing.health_check;  // `health` is the status
  }
  payload.name = $("#f-name").value.trim();
  payload.url = $("#f-url").value.trim();
  if (!editing || !editing.match) {
    delete payload.match;
    for (const field of ["events", "projects", "companies"]) {
      const values = chipValues(`f-${field}-input`);
      if (values.length) payload[field] = values;
      else delete payload[field];
    }
    const where = $("#f-where").value.trim();
    delete payload.where;
    if (where) {
      try {
        payload.where = JSON.parse(where);
      } catch (e) {
        throw new ApiFailure(0, [{ path: "where", message: `not valid JSON: ${e.message}` }]);
      }
    }
  }
  payload.signature = $("#f-signature").value;
  if (payload.signature !== "hmac-sha256-hex") delete payload.signature_header;
  const secret = $("#f-secret").value.trim();
  if (secret) payload.secret = secret;
  payload.enabled = $("#f-enabled").checked;
  payload.allow_private_networks = $("#f-private").checked;
  return payload;
}

function bindForm() {
  $("#webhook-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = $("#f-save");
    button.disabled = true;
    try {
      const payload = formPayload();
      const saved = editing
        ? await api("PUT", `/webhooks/${encodeURIComponent(editing.name)}`, payload)
        : await api("POST", "/webhooks", payload);
      $("#f-secret").value = "";
      showCreated(saved, !editing);
    } catch (err) {
      const errors = err.errors || [{ path: "", message: err.message }];
      $("#f-errors").replaceChildren(...errors.map((x) => el("li", { text: x.path ? `${x.path}: ${x.message}` : x.message })));
      $("#f-errors").hidden = false;
    } finally {
      button.disabled = false;
    }
  });
}

function showCreated(saved, created) {
  show("created");
  $("#c-text").textContent = created ? `Webhook ${saved.name} is made and takes events from now on.`
    : `Webhook ${saved.name} is changed; its waiting deliveries are kept.`;
  $("#c-secret").textContent = saved.secret || "";
  $("#c-secret-box").hidden = !saved.secret;
  $("#c-open").setAttribute("href", `#/webhook/${encodeURIComponent(saved.name)}`);
  route = { view: "created" };
  history.replaceState(null, "", "#/saved");  // so that "New webhook" opens a fresh form
}

// ------------------------------------------------------------------ explain

function bindExplain() {
  $("#explain-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const out = $("#x-result");
    let event;
    try {
      event = JSON.parse($("#x-event").value);
    } catch (err) {
      out.replaceChildren(el("p", { class: "errors", text: `That is not valid JSON: ${err.message}` }));
      return;
    }
    try {
      const r = await api("POST", "/explain", event);
      const items = r.webhooks.map((w) => el("li", { "data-name": w.name },
        el("strong", { text: w.name }), ": ",
        w.reaches ? el("span", { class: "reach", text: "reaches it" })
          : el("span", { class: "miss", text: "does not reach it" }),
        w.reaches ? "" : ` (${w.why_not.join("; ")})`));
      const summary = r.reaches.length ? `This event would reach ${list(r.reaches, "and")}.`
        : "This event would reach none of your webhooks.";
      out.replaceChildren(el("p", { class: "summary", text: summary }), el("ul", {}, ...items));
    } catch (err) {
      out.replaceChildren(el("p", { class: "errors", text: err.message }));
    }
  });
}

// ------------------------------------------------------------------ routing and refresh

function show(view) {
  for (const v of document.querySelectorAll(".view")) v.hidden = v.id !== `view-${view}`;
}

function parseRoute() {
  const parts = window.location.hash.replace(/^#\/?/, "").split("/").map(decodeURIComponent);
  if (parts[0] === "webhook" && parts[1]) return { view: "webhook", name: parts[1] };
  if (parts[0] === "edit" && parts[1] && writes) return { view: "form", name: parts[1] };
  if (parts[0] === "new" && writes) return { view: "form" };
  if (parts[0] === "explain") return { view: "explain" };
  return { view: "list" };
}

async function refresh() {
  clearTimeout(timer);
  try {
    if (route.view === "list") await showList();
    else if (route.view === "webhook") await showWebhook(route.name);
    banner("");
    $("#updated").textContent = `Updated ${new Date().toLocaleTimeString()}; refreshes every ${REFRESH_MS / 1000} seconds.`;
  } catch (e) {
    if (e.status === 404 && route.view === "webhook") {
      banner(`There is no webhook ${route.name} (any more).`);
    } else if (e.status !== 401) {
      banner(`Could not reach the router: ${e.message}`);
    }
  }
  timer = setTimeout(refresh, REFRESH_MS);
}

async function navigate() {
  route = parseRoute();
  $("#c-secret").textContent = "";  // a new webhook's secret is shown once: gone on leaving
  $("#c-secret-box").hidden = true;
  $("#w-result").hidden = true;
  show(route.view);
  if (route.view === "form") {
    try {
      await showForm(route.name);
    } catch (e) {
      banner(`Could not open the form: ${e.message}`);
    }
  }
  refresh();
}

function start() {
  if (body.dataset.view !== "console") {
    const token = $("#token");
    if (token) token.focus();
    return;
  }
  $("#who-token").textContent = body.dataset.token;
  const companies = body.dataset.companies;
  $("#who-scope").textContent = (writes ? "" : " (read only)") + (companies ? `, companies ${companies}` : "");
  bindWebhookActions();
  bindChips();
  bindForm();
  bindExplain();
  window.addEventListener("hashchange", navigate);
  navigate();
}

start();
