/* relaycast dashboard: the on-call views (Routes, Monitors, Keys). Vanilla JS; all inserted data via textContent. */
"use strict";
(() => {
const R = window.relaycast;
const { el, admin, fmtBucketMs, fmtPct, fmtInt, fullTime, money } = R;

const MAX_TRANSITIONS = 100; // the most recent shown, across targets (each target keeps its last 50)

const card = (title, hint, ...body) =>
  el("div", { class: "card" }, el("div", { class: "card-head" }, el("h2", { text: title }), hint ? el("span", { class: "ops-hint", text: hint }) : null), ...body);
const cell = (text, cls) => el("td", { class: cls || null }, text);
const num = (text) => cell(text, "num");
const badge = (text, tone) => el("span", { class: `ops-badge ops-${tone}`, text });

/** A table: headers [{label, num}], rows of <td> arrays; `empty` when there are none. */
function grid(label, headers, rows, empty) {
  const t = el("table", { class: "data ops-table", "aria-label": label });
  const thead = el("thead", null, el("tr", null, headers.map((h) => el("th", { class: h.num ? "num" : null, scope: "col", text: h.label }))));
  const tbody = el("tbody");
  if (!rows.length) tbody.append(el("tr", null, el("td", { class: "empty", colspan: headers.length, text: empty })));
  for (const r of rows) tbody.append(el("tr", null, r));
  t.append(thead, tbody);
  return el("div", { class: "ops-scroll" }, t);
}

function seconds(s) {
  if (s === null || s === undefined) return "the window";
  return s >= 60 && s % 60 === 0 ? `${s / 60} min` : `${s} s`;
}
const when = (unixS) => (unixS === null || unixS === undefined ? "—" : fullTime(unixS * 1000));
const whenMs = (ms) => (ms === null || ms === undefined ? "—" : fullTime(ms));

// ---------- Routes ----------
const STATE_TONE = { healthy: "ok", demoted: "warn", cooling: "warn", recovering: "warn", open: "bad" };
function targetState(t, route) {
  if (!t) return "healthy";
  if (route && t.demoted_in && t.demoted_in[route]) return "demoted";
  if (t.state === "half_open" || t.state === "probing") return "recovering";
  if (t.state === "open") return "open";
  if (t.state === "cooling") return "cooling";
  return "healthy";
}
function errorsByClass(errors, sources) {
  const client = new Set(sources.client || []);
  const parts = Object.entries(errors || {}).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]));
  if (!parts.length) return "none";
  return parts.map(([k, v]) => `${k} ${v}${client.has(k) ? " (client)" : ""}`).join(", ");
}
function ttftCell(w, sla) {
  const v = fmtBucketMs(w.ttft_p99_ms);
  if (!sla || sla.ttft_p99_ms === null || sla.ttft_p99_ms === undefined) return num(v);
  const over = w.ttft_p99_ms !== null && w.ttft_p99_ms > sla.ttft_p99_ms;
  return el("td", { class: "num" + (over ? " ops-over" : "") }, `${v} / SLA ${sla.ttft_p99_ms} ms${over ? " (over)" : ""}`);
}
function p99Cell(w, sla) {
  const v = fmtBucketMs(w.p99_ms);
  if (!sla || sla.p99_ms === null || sla.p99_ms === undefined) return num(v);
  const over = w.p99_ms !== null && w.p99_ms > sla.p99_ms;
  return el("td", { class: "num" + (over ? " ops-over" : "") }, `${v} / SLA ${sla.p99_ms} ms${over ? " (over)" : ""}`);
}
const TARGET_HEADERS = [
  { label: "Target" }, { label: "State" }, { label: "Circuit" }, { label: "Requests", num: true },
  { label: "p50", num: true }, { label: "p99", num: true }, { label: "TTFT p99", num: true },
  { label: "Error rate", num: true }, { label: "Refusals", num: true }, { label: "Errors by class" },
];
function targetRow(name, t, route, sla, sources) {
  const w = (t && t.window) || { requests: 0, errors: {} };
  const st = targetState(t, route);
  const why = route && t && t.demoted_in ? t.demoted_in[route] : (t && t.cooldown_reason) || null;
  return [
    cell(name, "ops-name"),
    el("td", null, badge(st, STATE_TONE[st] || "ok"), why ? el("div", { class: "ops-why", text: why }) : null),
    cell(t ? t.circuit : "closed"),
    num(fmtInt(w.requests)),
    num(fmtBucketMs(w.p50_ms)),
    p99Cell(w, sla),
    ttftCell(w, sla),
    num(w.requests ? `${fmtPct(w.error_rate)} (${fmtInt(w.provider_failures)})` : "—"),
    num(w.requests ? `${fmtPct(w.refusal_rate)} (${fmtInt(w.client_refusals)})` : "—"),
    cell(errorsByClass(w.errors, sources), "ops-wrap"),
  ];
}

R.registerView("routes", async (tok) => {
  const body = await admin("routes");
  if (!R.current(tok)) return;
  const root = R.$("view-routes");
  const targets = body.targets || {};
  const sources = body.error_sources || {};
  const win = seconds(body.window_s);
  const note = el("p", { class: "ops-note", id: "routes-window" },
    `Numbers cover the last ${win} (routing.window_s) on this replica. Error rate: provider failures / requests; ` +
    "client-caused refusals (content policy, context length, bad requests…) are counted apart. Latencies: successful " +
    "attempts, as the upper edge of their 10%-wide histogram bucket.");
  const cards = [note];
  const inRoutes = new Set();
  for (const [name, r] of Object.entries(body.routes || {})) {
    const sla = r.sla || {};
    const slaText = [sla.p99_ms != null ? `p99 ${sla.p99_ms} ms` : null, sla.ttft_p99_ms != null ? `TTFT p99 ${sla.ttft_p99_ms} ms` : null].filter(Boolean).join(", ") || "no SLA";
    const rows = r.targets.map((t) => { inRoutes.add(t); return targetRow(t, targets[t], name, sla, sources); });
    const c = card(`Route ${name}`, `${r.strategy}; SLA: ${slaText}`, grid(`Targets of route ${name}`, TARGET_HEADERS, rows, "No targets"));
    c.dataset.route = name;
    cards.push(c);
  }
  const others = Object.keys(targets).filter((t) => !inRoutes.has(t)).sort();
  if (others.length) {
    cards.push(card("Other targets", "named directly by requests, or fallbacks",
      grid("Targets outside routes", TARGET_HEADERS, others.map((t) => targetRow(t, targets[t], null, null, sources)), "None")));
  }
  const history = [];
  for (const [name, t] of Object.entries(targets)) for (const h of t.history || []) history.push({ target: name, ...h });
  history.sort((a, b) => b.at - a.at);
  const trRows = history.slice(0, MAX_TRANSITIONS).map((h) => [
    cell(when(h.at), "nowrap"), cell(h.target, "ops-name"), cell(h.route || "—"),
    el("td", { class: "nowrap" }, `${h.from} → `, badge(h.to, h.to === "ok" || h.to === "closed" ? "ok" : h.to === "open" ? "bad" : "warn")),
    cell(h.why, "ops-wrap"),
  ]);
  cards.push(card("Transitions", `the last ${MAX_TRANSITIONS} at most, newest first: demotions, circuits opening and recovering`,
    grid("Target transitions", [{ label: "Time" }, { label: "Target" }, { label: "Route" }, { label: "Change" }, { label: "Why" }], trRows,
      "No transitions since the gateway started: every target has stayed healthy.")));
  root.replaceChildren(...cards);
});

// ---------- Monitors ----------
function contributorsText(inc) {
  const d = inc.details || {};
  if (Array.isArray(d.top_contributors) && d.top_contributors.length) {
    return d.top_contributors.map((c) => `${c.dimension} ${c.value || "(none)"} +${money(c.growth_usd)}`).join("; ");
  }
  if (d.by_class && Object.keys(d.by_class).length) {
    const refused = d.client_refusals ? `; ${d.client_refusals} client refusals not counted` : "";
    return Object.entries(d.by_class).map(([k, v]) => `${k} ${v}`).join(", ") + refused;
  }
  if (d.requests !== undefined) return `${fmtInt(d.requests)} requests (${d.metric || "latency"})`;
  if (d.period) return `this ${d.period} (UTC)`;
  return "—";
}
function fmtValue(v) {
  if (v === null || v === undefined) return "—";
  return Number.isInteger(v) ? String(v) : Number(v).toPrecision(4).replace(/\.?0+$/, "");
}
function noMonitors() {
  return card("No monitors are configured", null,
    el("p", null, "Monitors live in the config's ", el("code", { text: "monitors:" }),
      " section: rules (spend spikes, latency SLAs, provider error rates, budgets) evaluated on an interval, with incidents here and notifications to webhooks or Slack. For example:"),
    el("pre", { class: "ops-pre", text:
      "monitors:\n  interval_s: 60\n  notify:\n    - {name: ops, kind: webhook, url: https://ops.example/hooks/llm}\n  rules:\n" +
      "    - {name: openai-errors, kind: error_rate, provider: openai, threshold_pct: 5, window: 5m}\n" +
      "    - {name: fast-p99, kind: latency_sla, route: fast, metric: p99, threshold_ms: 2000, window: 5m}" }),
    el("p", null, "Every rule and option is described in ", el("code", { text: "docs/monitors-and-metrics.md" }),
      " (in the relaycast repository and its source package); restart the gateway after changing the config."));
}

let monitorsMessage = "";
R.registerView("monitors", async (tok) => {
  const body = await admin("monitors");
  if (!R.current(tok)) return;
  const root = R.$("view-monitors");
  const mon = body.monitors;
  if (!mon) { root.replaceChildren(noMonitors()); return; }
  const status = el("p", { class: "ops-note", id: "monitors-status", role: "status" });
  const button = el("button", { type: "button", class: "btn", id: "monitors-evaluate", text: "Evaluate now" });
  button.addEventListener("click", async () => {
    button.disabled = true;
    status.textContent = "Evaluating…";
    try {
      const res = await admin("monitors/evaluate", { method: "POST" });
      const n = (res.notifications || []).length;
      // The reloaded view replaces this one; its status line says what the evaluation sent.
      monitorsMessage = `Evaluated now: ${n} notification${n === 1 ? "" : "s"} (alerts and resolutions) sent.`;
      await R.reload();
    } catch (e) {
      status.textContent = `Evaluation failed: ${e.message}`;
      button.disabled = false;
    }
  });
  status.textContent = monitorsMessage;
  monitorsMessage = "";
  const last = mon.last_evaluated_at ? `last at ${when(mon.last_evaluated_at)}` : "not evaluated yet";
  const head = el("div", { class: "toolbar" }, button,
    el("span", { class: "ops-note", text: `${mon.rules.length} rules, evaluated every ${mon.interval_s} s; ${fmtInt(mon.evaluations)} evaluations, ${last}; ${fmtInt(mon.errors)} errors` }));
  const ruleRows = [];
  for (const r of mon.rules) {
    const fs = r.findings.length ? r.findings : [null];
    for (const f of fs) {
      ruleRows.push([
        cell(r.name, "ops-name"), cell(r.kind), cell(f ? f.scope || "(all)" : "—", "ops-name"),
        el("td", null, f ? badge(f.state, f.state === "ALERT" ? "bad" : "ok") : badge("no data yet", "muted")),
        num(f ? fmtValue(f.value) : "—"), num(f ? fmtValue(f.threshold) : "—"),
        cell(f ? f.message : "Not evaluated yet, or no traffic in its window.", "ops-wrap"),
      ]);
    }
  }
  const incidents = body.incidents || [];
  const incRows = incidents.map((i) => [
    cell(whenMs(i.opened_ms), "nowrap"), cell(i.rule, "ops-name"), cell(i.scope || "(all)", "ops-name"),
    el("td", null, badge(i.state, i.state === "open" ? "bad" : "ok")),
    num(`${fmtValue(i.value)} / ${fmtValue(i.threshold)}`),
    cell(contributorsText(i), "ops-wrap"),
    cell(i.message, "ops-wrap"),
    cell(i.resolved_ms ? `${whenMs(i.resolved_ms)}: ${i.resolve_message || ""}` : "—", "ops-wrap"),
  ]);
  const open = incidents.filter((i) => i.state === "open").length;
  const notifyRows = Object.entries(mon.notify || {}).map(([name, n]) => [
    cell(name, "ops-name"), cell(n.kind), num(fmtInt(n.sent)),
    el("td", { class: "num" + (n.failed ? " ops-over" : "") }, fmtInt(n.failed)), num(fmtInt(n.retries)), num(fmtInt(n.queued)),
  ]);
  root.replaceChildren(
    head, status,
    card("Rules", "each scope's state and its value against the threshold, at the last evaluation",
      grid("Monitor rules", [{ label: "Rule" }, { label: "Kind" }, { label: "Scope" }, { label: "State" }, { label: "Value", num: true }, { label: "Threshold", num: true }, { label: "Message" }], ruleRows, "No rules")),
    card("Incidents", `${open} open; the last 50, newest first`,
      grid("Incidents", [{ label: "Opened" }, { label: "Rule" }, { label: "Scope" }, { label: "State" }, { label: "Value / threshold", num: true }, { label: "Top contributors" }, { label: "Message" }, { label: "Resolved" }], incRows, "No incidents yet")),
    card("Notifications", "delivery to each notification target (alerts always go to the log too)",
      grid("Notification targets", [{ label: "Target" }, { label: "Kind" }, { label: "Sent", num: true }, { label: "Failed", num: true }, { label: "Retries", num: true }, { label: "Queued", num: true }], notifyRows, "No notification targets: alerts go to the log only")),
  );
});

// ---------- Keys ----------
const LIMITS = [["rpm", "RPM"], ["tpm", "TPM"], ["budget_day_usd", "Budget per day (USD)"], ["budget_month_usd", "Budget per month (USD)"]];
function limitsText(l) {
  const parts = [];
  if (l.rpm != null) parts.push(`${fmtInt(l.rpm)} rpm`);
  if (l.tpm != null) parts.push(`${fmtInt(l.tpm)} tpm`);
  if (l.budget_day_usd != null) parts.push(`${money(l.budget_day_usd)}/day`);
  if (l.budget_month_usd != null) parts.push(`${money(l.budget_month_usd)}/month`);
  return parts.join(", ") || "none";
}

/** A modal dialog; resolves true when confirmed. `danger` styles the confirm button. */
function confirmDialog(title, text, confirmLabel) {
  return new Promise((resolve) => {
    const ok = el("button", { type: "button", class: "btn ops-danger", text: confirmLabel });
    const cancel = el("button", { type: "button", class: "btn", text: "Cancel" });
    const d = el("dialog", { class: "ops-dialog", "aria-labelledby": "ops-confirm-title" },
      el("h2", { id: "ops-confirm-title", text: title }), el("p", { text }), el("div", { class: "ops-dialog-actions" }, cancel, ok));
    const finish = (v) => { d.close(); d.remove(); resolve(v); };
    ok.addEventListener("click", () => finish(true));
    cancel.addEventListener("click", () => finish(false));
    d.addEventListener("cancel", (e) => { e.preventDefault(); finish(false); });
    document.body.append(d);
    d.showModal();
    cancel.focus();
  });
}

/** The new secret, once: a dialog with a copy button; nothing of it stays in the page after it closes. */
function showSecret(title, secret) {
  const code = el("code", { class: "ops-secret", id: "ops-secret", text: secret });
  const copied = el("span", { class: "ops-note", role: "status" });
  const copy = el("button", { type: "button", class: "btn", id: "ops-secret-copy", text: "Copy" });
  const close = el("button", { type: "button", class: "btn", id: "ops-secret-close", text: "Done" });
  const d = el("dialog", { class: "ops-dialog", id: "ops-secret-dialog", "aria-labelledby": "ops-secret-title" },
    el("h2", { id: "ops-secret-title", text: title }),
    el("p", { class: "ops-warn-text", text: "Copy this secret now: you will not see it again. relaycast keeps only its hash." }),
    code,
    el("div", { class: "ops-dialog-actions" }, copied, copy, close));
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(secret);
      copied.textContent = "Copied.";
    } catch (_) {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      copied.textContent = document.execCommand("copy") ? "Copied." : "Select the secret and copy it.";
    }
  });
  const forget = () => { code.textContent = ""; getSelection().removeAllRanges(); d.remove(); };
  close.addEventListener("click", () => d.close());
  d.addEventListener("close", forget);
  document.body.append(d);
  d.showModal();
  copy.focus();
}

function field(id, label, attrs) {
  return el("div", { class: "ops-field" }, el("label", { for: id, text: label }), el("input", { id, name: id.replace(/^key-/, ""), ...attrs }));
}
function createForm(status) {
  const form = el("form", { class: "ops-form", id: "key-create", autocomplete: "off" },
    field("key-name", "Name", { type: "text", required: true, pattern: "[A-Za-z0-9_.\\-]{1,64}", maxlength: 64 }),
    field("key-owner", "Owner", { type: "text" }),
    field("key-models", "Models (comma-separated; patterns like openai/*)", { type: "text" }),
    field("key-user", "Default user", { type: "text" }),
    field("key-feature", "Default feature", { type: "text" }),
    ...LIMITS.map(([k, label]) => field(`key-${k}`, label, { type: "number", min: k.startsWith("budget") ? "0.01" : "1", step: k.startsWith("budget") ? "0.01" : "1" })),
    field("key-expires", "Expires in days", { type: "number", min: "0.001", step: "any" }),
    el("div", { class: "ops-field ops-check" }, el("input", { type: "checkbox", id: "key-pin" }),
      el("label", { for: "key-pin", text: "Pin: its user and feature replace what requests name" })),
    el("div", { class: "ops-field ops-submit" }, el("button", { type: "submit", class: "btn ops-primary", id: "key-create-submit", text: "Create key" })));
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const v = (id) => document.getElementById(id).value.trim();
    const spec = { name: v("key-name") };
    for (const f of ["owner", "user", "feature"]) if (v(`key-${f}`)) spec[f] = v(`key-${f}`);
    if (v("key-models")) spec.models = v("key-models").split(",").map((m) => m.trim()).filter(Boolean);
    for (const [k] of LIMITS) if (v(`key-${k}`)) spec[k] = Number(v(`key-${k}`));
    if (v("key-expires")) spec.expires_in_s = Number(v("key-expires")) * 86400;
    if (document.getElementById("key-pin").checked) spec.pin = true;
    try {
      const res = await admin("keys", { body: spec });
      form.reset();
      await refreshKeys(`Created ${res.key.name}.`);
      showSecret(`New key ${res.key.name}`, res.secret);
    } catch (err) {
      status.textContent = `Could not create the key: ${err.message}`;
    }
  });
  return form;
}

async function keyAction(name, action) {
  const path = `keys/${encodeURIComponent(name)}`;
  if (action === "rotate") {
    if (!(await confirmDialog(`Rotate ${name}?`, `A new secret replaces ${name}'s: the current one stops working on every replica within a second.`, "Rotate"))) return;
    const res = await admin(`${path}/rotate`, { method: "POST" });
    await refreshKeys(`Rotated ${name}.`);
    showSecret(`New secret for ${name}`, res.secret);
    return;
  }
  const verb = action === "revoke" ? "Revoke" : "Delete";
  const what = action === "revoke"
    ? `${name} stops working on every replica within a second; it stays listed as revoked.`
    : `${name}'s row is deleted: it stops working on every replica within a second, and is no longer listed.`;
  if (!(await confirmDialog(`${verb} ${name}?`, what, verb))) return;
  const res = action === "revoke" ? await admin(`${path}/revoke`, { method: "POST" }) : await admin(path, { method: "DELETE" });
  await refreshKeys(`${verb}d ${name}.${res.note ? " " + res.note : ""}`);
}

function accessText(a) {
  if (!a) return "";
  if (!a.required) return "The gateway is open: requests without a key are served (no key exists).";
  return `Requests need a key (${a.because}); ${fmtInt(a.live_keys)} live key${a.live_keys === 1 ? "" : "s"}.`;
}

let keysMessage = "";
async function refreshKeys(message) {
  keysMessage = message || "";
  await R.reload();
}

R.registerView("keys", async (tok) => {
  const root = R.$("view-keys");
  let body;
  try {
    body = await admin("keys");
  } catch (e) {
    if (e.status === 503) {
      root.replaceChildren(card("Keys", null, el("p", { text: e.message })));
      return;
    }
    throw e;
  }
  if (!R.current(tok)) return;
  const status = el("p", { class: "ops-note", id: "keys-status", role: "status", text: keysMessage });
  keysMessage = "";
  const rows = body.keys.map((k) => {
    const acts = [];
    if (k.state === "active") {
      acts.push(el("button", { type: "button", class: "btn btn-small", "data-action": "rotate", "aria-label": `Rotate ${k.name}`, text: "Rotate" }));
      acts.push(el("button", { type: "button", class: "btn btn-small", "data-action": "revoke", "aria-label": `Revoke ${k.name}`, text: "Revoke" }));
    }
    acts.push(el("button", { type: "button", class: "btn btn-small ops-danger", "data-action": "delete", "aria-label": `Delete ${k.name}`, text: "Delete" }));
    const tr = [
      cell(k.name, "ops-name"), cell(`${k.prefix}…`, "mono"), cell(k.owner || "—", "ops-name"),
      cell(k.models ? k.models.join(", ") : "all", "ops-wrap"),
      cell(limitsText(k.limits) + (k.pin ? "; pinned" : ""), "ops-wrap"),
      el("td", null, badge(k.state, k.state === "active" ? "ok" : "bad")),
      cell(whenMs(k.created_ms), "nowrap"), cell(whenMs(k.rotated_ms), "nowrap"),
      cell(k.revoked_ms ? whenMs(k.revoked_ms) : k.expires_ms ? `expires ${whenMs(k.expires_ms)}` : "—", "nowrap"),
      el("td", { class: "ops-actions" }, acts),
    ];
    return tr;
  });
  const list = grid("Virtual keys", [{ label: "Name" }, { label: "Prefix" }, { label: "Owner" }, { label: "Models" }, { label: "Limits" }, { label: "State" }, { label: "Created" }, { label: "Rotated" }, { label: "Revoked / expires" }, { label: "Actions" }], rows, "No virtual keys yet");
  list.addEventListener("click", async (e) => {
    const b = e.target.closest("button[data-action]");
    if (!b) return;
    const name = b.closest("tr").firstChild.textContent;
    try {
      await keyAction(name, b.dataset.action);
    } catch (err) {
      document.getElementById("keys-status").textContent = `Could not ${b.dataset.action} ${name}: ${err.message}`;
    }
  });
  root.replaceChildren(
    el("p", { class: "ops-note ops-access", id: "keys-access", text: accessText(body.access) }),
    status,
    card("Keys", "virtual keys in the store; keys of the config file are not listed; secrets are never shown after creation", list),
    card("Create a key", "limits are optional; the secret is shown once", createForm(status)),
  );
});
})();
