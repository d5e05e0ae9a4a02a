/* relaycast dashboard: Settings > Broadcast. Vanilla JS; all inserted data goes through textContent. */
"use strict";
(() => {
const R = window.relaycast;
const { el, $, admin, fmtInt, fullTime } = R;
const REFRESH_MS = 3000;
const COMMON = [
  { name: "sample_rate", label: "Sample rate", type: "number", help: "0 to 1, kept or dropped per session.", advanced: true, step: "0.01" },
  { name: "privacy_mode", label: "Privacy mode", type: "bool", help: "Send no prompts or completions.", advanced: true },
];
const S = { kinds: null, data: null, editing: null, timer: null, tests: new Map() };

// ---------- status ----------
function stateOf(d) {
  if (d.problem) return ["broken", "Broken", "badge-err"];
  if (!d.status) return ["off", d.editable && S.data && !S.data.enabled ? "Off (Broadcast off)" : "Off", "badge-off"];
  if (!d.status.healthy) return ["down", "Down", "badge-err"];
  return ["healthy", "Live", "badge-ok"];
}
function dropped(st) {
  if (!st || !st.dropped_total) return "0";
  const parts = Object.entries(st.dropped || {}).filter(([, n]) => n > 0).map(([k, n]) => `${k.replace(/_/g, " ")} ${fmtInt(n)}`);
  return `${fmtInt(st.dropped_total)} (${parts.join(", ")})`;
}
function lastError(d) {
  if (d.problem) return d.problem;
  const st = d.status;
  if (!st || !st.last_error) return null;
  return `${st.last_error}${st.last_error_at ? " · " + fullTime(st.last_error_at * 1000) : ""}`;
}
function destRow(d) {
  const [key, label, cls] = stateOf(d);
  const st = d.status;
  const err = lastError(d);
  const tested = S.tests.get(d.name);
  const actions = el("td", { class: "actions" },
    st ? el("button", { type: "button", class: "btn btn-small", "data-test": d.name, "aria-label": `Test ${d.name}`, text: "Test" }) : null,
    d.editable ? el("button", { type: "button", class: "btn btn-small", "data-edit": d.name, "aria-label": `Edit ${d.name}`, text: "Edit" }) : null,
    d.editable ? el("button", { type: "button", class: "btn btn-small btn-danger", "data-delete": d.name, "aria-label": `Delete ${d.name}`, text: "Delete" }) : null);
  return el("tr", { "data-destination": d.name, "data-state": key },
    el("td", { class: "strong wrap" }, d.name),
    el("td", null, d.title || d.kind),
    el("td", { class: "wrap" }, d.editable ? "dashboard" : `${d.source} (read-only)`),
    el("td", null, el("span", { class: "badge " + cls, text: label })),
    el("td", { class: "num" }, st ? fmtInt(st.sent) : "—"),
    el("td", { class: "num" }, st ? fmtInt(st.queued) : "—"),
    el("td", { class: "num" }, st ? fmtInt(st.spooled_records) : "—"),
    el("td", { class: "wrap small" }, st ? dropped(st) : "—"),
    el("td", { class: "wrap small" + (err ? " err-text" : " muted") },
      err || (st && st.last_success_at ? `last sent ${fullTime(st.last_success_at * 1000)}` : "—"),
      tested ? el("div", { class: "row-test " + (tested.ok ? "ok" : "fail"), "data-test-ok": String(tested.ok), text: `${tested.ok ? "Test OK" : "Test failed"}: ${tested.message}` }) : null),
    actions);
}
function renderList() {
  const d = S.data;
  $("broadcast-toggle").checked = !!d.enabled;
  $("broadcast-toggle").disabled = !d.store;
  $("broadcast-toggle-note").textContent = d.store
    ? (d.enabled ? "Destinations added here are sending." : "Destinations added here are paused.") + " Destinations from the config file or the DD_* / OTEL_* variables are always on and read-only here."
    : "The store is disabled: destinations can only come from the config file.";
  const tbody = $("dest-table").tBodies[0];
  const rows = d.destinations.map(destRow);
  if (!rows.length) rows.push(el("tr", null, el("td", { colspan: 10, class: "empty", text: "No destinations yet: add one below." })));
  tbody.replaceChildren(...rows);
  const applied = d.sync && d.sync.synced_at ? `Applied ${fullTime(d.sync.synced_at * 1000)} · replicas pick changes up within ${d.sync.poll_s} s` : "";
  const age = d.view_age_s > 0 ? `Statuses as of ${Math.round(d.view_age_s)} s ago: the telemetry process is busy` : "";
  $("settings-sync").textContent = [applied, age].filter(Boolean).join(" · ");
}
async function refresh() {
  S.data = await admin("broadcast/destinations");
  renderList();
}

// ---------- the form ----------
function kindOf(kind) { return (S.kinds || []).find((k) => k.kind === kind); }
function fieldInput(f, value, saved) {
  const id = `dest-f-${f.name}`;
  let input;
  if (f.type === "select") {
    input = el("select", { id, name: f.name },
      f.options.map((o) => el("option", { value: o, text: o === "" ? "(default)" : o })));
    input.value = value !== undefined && value !== null ? String(value) : (f.default ?? "");
  } else if (f.type === "bool") {
    input = el("input", { id, name: f.name, type: "checkbox" });
    input.checked = value === true;
  } else if (f.type === "headers") {
    input = el("textarea", { id, name: f.name, rows: 3, spellcheck: "false", placeholder: saved ? "saved: leave empty to keep" : "name=value, one per line" });
  } else {
    const type = f.type === "secret" ? "password" : f.type === "number" ? "number" : f.type === "url" ? "url" : "text";
    input = el("input", { id, name: f.name, type, autocomplete: f.type === "secret" ? "new-password" : "off", spellcheck: "false", step: f.step || null });
    if (f.type === "secret") input.placeholder = saved ? "saved: leave empty to keep" : "";
    else if (value !== undefined && value !== null) input.value = String(value);
    else if (f.default !== null && f.default !== undefined) input.value = String(f.default);
  }
  if (f.required) input.setAttribute("aria-required", "true");
  const helpId = `${id}-help`;
  const errId = `${id}-error`;
  input.setAttribute("aria-describedby", `${helpId} ${errId}`);
  const label = el("label", { for: id }, f.label, f.required ? el("span", { class: "req", "aria-hidden": "true", text: " *" }) : null, saved ? el("span", { class: "saved-tag", text: " (saved)" }) : null);
  return el("div", { class: "field" + (f.type === "bool" ? " field-bool" : ""), "data-field": f.name },
    f.type === "bool" ? [input, label] : [label, input],
    el("p", { id: helpId, class: "field-help", text: f.help || "" }),
    el("p", { id: errId, class: "field-error", role: "alert", hidden: true }));
}
function openForm(kind, existing) {
  const k = kindOf(kind);
  if (!k) return;
  S.editing = { kind, name: existing ? existing.name : null };
  const settings = (existing && existing.settings) || {};
  const savedSecrets = new Set((existing && existing.secrets_set) || []);
  const fields = [...k.fields, ...COMMON];
  const main = fields.filter((f) => !f.advanced);
  const adv = fields.filter((f) => f.advanced);
  const nameField = el("div", { class: "field", "data-field": "name" },
    el("label", { for: "dest-f-name" }, "Name", el("span", { class: "req", "aria-hidden": "true", text: " *" })),
    el("input", { id: "dest-f-name", name: "name", type: "text", value: existing ? existing.name : kind.replace(/_/g, "-"), readonly: existing ? "readonly" : null, "aria-required": "true", "aria-describedby": "dest-f-name-help dest-f-name-error", autocomplete: "off" }),
    el("p", { id: "dest-f-name-help", class: "field-help", text: existing ? "The name cannot change; delete and add to rename." : "Letters, digits, '_', '.' or '-'." }),
    el("p", { id: "dest-f-name-error", class: "field-error", role: "alert", hidden: true }));
  const enabled = el("div", { class: "field field-bool", "data-field": "enabled" },
    el("input", { id: "dest-f-enabled", name: "enabled", type: "checkbox" }),
    el("label", { for: "dest-f-enabled", text: "Enabled" }));
  const form = el("form", { id: "dest-form", class: "card dest-form", "data-kind": kind, novalidate: "novalidate", "aria-labelledby": "dest-form-title" },
    el("div", { class: "card-head" }, el("h2", { id: "dest-form-title", text: `${existing ? "Edit" : "Add"} ${k.title} destination` })),
    el("div", { class: "form-grid" }, nameField, main.map((f) => fieldInput(f, settings[f.name], savedSecrets.has(f.name)))),
    el("details", { class: "advanced" }, el("summary", { text: "Advanced settings" }),
      el("div", { class: "form-grid" }, adv.map((f) => fieldInput(f, settings[f.name], savedSecrets.has(f.name))), enabled)),
    el("div", { id: "dest-result", class: "test-result", role: "status", "aria-live": "polite", hidden: true }),
    el("div", { class: "form-actions" },
      el("button", { type: "button", id: "dest-test", class: "btn", text: "Test Connection" }),
      el("button", { type: "submit", id: "dest-save", class: "btn btn-primary", text: "Save" }),
      el("button", { type: "button", id: "dest-save-anyway", class: "btn btn-danger", hidden: true, text: "Save anyway" }),
      el("button", { type: "button", id: "dest-cancel", class: "btn btn-ghost", text: "Cancel" })));
  form.querySelector("#dest-f-enabled").checked = settings.enabled !== false;
  form.addEventListener("submit", (e) => { e.preventDefault(); save(false); });
  form.querySelector("#dest-test").addEventListener("click", tryIt);
  form.querySelector("#dest-save-anyway").addEventListener("click", () => save(true));
  form.querySelector("#dest-cancel").addEventListener("click", closeForm);
  $("dest-form-slot").replaceChildren(form);
  form.querySelector(existing ? "input:not([readonly])" : "#dest-f-name").focus();
  form.scrollIntoView({ block: "nearest" });
}
function closeForm() {
  S.editing = null;
  $("dest-form-slot").replaceChildren();
}
function formValues() {
  const k = kindOf(S.editing.kind);
  const out = {};
  for (const f of [...k.fields, ...COMMON]) {
    const input = $(`dest-f-${f.name}`);
    if (!input) continue;
    if (f.type === "bool") { if (input.checked) out[f.name] = true; continue; }
    const v = input.value.trim();
    if (v === "") continue;
    if (f.type === "number") out[f.name] = Number(v);
    else if (f.type === "headers") {
      const h = {};
      for (const line of v.split(/\n|,/)) {
        const i = line.indexOf("=");
        if (i > 0) h[line.slice(0, i).trim()] = line.slice(i + 1).trim();
      }
      out[f.name] = h;
    } else out[f.name] = v;
  }
  if (!$("dest-f-enabled").checked) out.enabled = false;
  return { name: $("dest-f-name").value.trim(), kind: S.editing.kind, settings: out };
}
function clearErrors() {
  for (const p of document.querySelectorAll("#dest-form .field-error")) { p.hidden = true; p.textContent = ""; }
  for (const i of document.querySelectorAll("#dest-form [aria-invalid]")) i.removeAttribute("aria-invalid");
}
function showResult(ok, message) {
  const box = $("dest-result");
  box.hidden = false;
  box.dataset.ok = String(ok);
  box.className = "test-result " + (ok ? "ok" : "fail");
  box.replaceChildren(el("b", { text: ok ? "Connected. " : "Failed. " }), el("span", { class: "test-message", text: message }));
}
function showFieldError(e) {
  const param = e.data && e.data.error && e.data.error.param;
  const target = param && $(`dest-f-${param}`);
  if (target) {
    target.setAttribute("aria-invalid", "true");
    const p = $(`dest-f-${param}-error`);
    p.textContent = e.message;
    p.hidden = false;
    const details = target.closest("details");
    if (details) details.open = true;
  }
  showResult(false, e.message);
}
async function withBusy(button, text, fn) {
  const old = button.textContent;
  button.disabled = true;
  button.textContent = text;
  try { return await fn(); } finally { button.disabled = false; button.textContent = old; }
}
async function tryIt() {
  clearErrors();
  const v = formValues();
  await withBusy($("dest-test"), "Testing…", async () => {
    try {
      const r = await admin("broadcast/try", { body: { name: S.editing.name || v.name, kind: v.kind, settings: v.settings } });
      showResult(r.ok, r.message);
    } catch (e) { showFieldError(e); }
  });
}
async function save(anyway) {
  clearErrors();
  const v = formValues();
  const name = S.editing.name || v.name;
  await withBusy($(anyway ? "dest-save-anyway" : "dest-save"), "Saving…", async () => {
    try {
      const r = await admin(`broadcast/destinations/${encodeURIComponent(name)}`, { method: "PUT", body: { kind: v.kind, settings: v.settings, save_anyway: anyway, create: !S.editing.name } });
      closeForm();
      const note = $("settings-saved");
      note.hidden = false;
      note.textContent = `Saved ${name}. Test Connection ${r.test.ok ? "passed" : "failed"}: ${r.test.message}`;
      await refresh();
    } catch (e) {
      if (e.status === 422) {
        showResult(false, e.message);
        $("dest-save-anyway").hidden = false;
      } else showFieldError(e);
    }
  });
}

// ---------- the view ----------
function skeleton() {
  const root = $("view-settings");
  if (root.dataset.built) return;
  root.dataset.built = "1";
  const kindButtons = el("div", { class: "kind-grid", role: "group", "aria-label": "Destination kinds" });
  root.append(
    el("div", { class: "card" },
      el("div", { class: "card-head" }, el("h2", { text: "Broadcast" }), el("span", { class: "hint", text: "every request's trace, sent out of band" })),
      el("div", { class: "toggle-row" },
        el("input", { type: "checkbox", id: "broadcast-toggle", role: "switch", class: "switch" }),
        el("label", { for: "broadcast-toggle", class: "strong", text: "Enable Broadcast" }),
        el("p", { id: "broadcast-toggle-note", class: "muted small" })),
      el("p", { id: "settings-saved", class: "saved-note", role: "status", hidden: true })),
    el("div", { class: "card card-flush" },
      el("div", { class: "card-head pad" }, el("h2", { text: "Destinations" }), el("span", { id: "settings-sync", class: "hint" })),
      el("div", { class: "table-scroll" },
        el("table", { id: "dest-table", class: "data dest-table" },
          el("thead", null, el("tr", null, ["Name", "Kind", "From", "State", "Sent", "Queued", "Spooled", "Dropped", "Last error / success", "Actions"].map((h, i) => el("th", { scope: "col", class: i >= 4 && i <= 6 ? "num" : null, text: h })))),
          el("tbody")))),
    el("div", { class: "card" },
      el("div", { class: "card-head" }, el("h2", { text: "Add a destination" })),
      kindButtons),
    el("div", { id: "dest-form-slot" }));
  $("broadcast-toggle").addEventListener("change", async (e) => {
    const on = e.target.checked;
    try { await admin("broadcast/enabled", { method: "PUT", body: { enabled: on } }); await refresh(); } catch (err) { e.target.checked = !on; R.showError(err); }
  });
  $("dest-table").addEventListener("click", async (e) => {
    const b = e.target.closest("button");
    if (!b) return;
    if (b.dataset.edit) {
      const d = S.data.destinations.find((x) => x.name === b.dataset.edit);
      if (d) openForm(d.kind, d);
    } else if (b.dataset.delete) {
      if (!window.confirm(`Delete the destination ${b.dataset.delete}? What it has queued is sent or spooled first.`)) return;
      try { await admin(`broadcast/destinations/${encodeURIComponent(b.dataset.delete)}`, { method: "DELETE" }); await refresh(); } catch (err) { R.showError(err); }
    } else if (b.dataset.test) {
      await withBusy(b, "Testing…", async () => {
        try {
          const r = await admin("broadcast/test", { params: { name: b.dataset.test }, method: "POST" });
          S.tests.set(b.dataset.test, (r.results || {})[b.dataset.test] || { ok: false, message: "no result" });
          renderList();
        } catch (err) { R.showError(err); }
      });
    }
  });
  S.kindButtons = kindButtons;
}
function renderKinds() {
  S.kindButtons.replaceChildren(...S.kinds.map((k) => el("button", { type: "button", class: "btn kind-btn", "data-add-kind": k.kind, text: k.title })));
  S.kindButtons.addEventListener("click", (e) => {
    const b = e.target.closest("button[data-add-kind]");
    if (b) openForm(b.dataset.addKind, null);
  });
}
async function loadSettings(tok) {
  skeleton();
  if (!S.kinds) {
    S.kinds = (await admin("broadcast/kinds")).kinds;
    renderKinds();
  }
  await refresh();
  if (!R.current(tok)) return;
  clearInterval(S.timer);
  S.timer = setInterval(() => {
    if (R.state.view !== "settings") { clearInterval(S.timer); return; }
    refresh().catch(() => {});
  }, REFRESH_MS);
}
R.registerView("settings", loadSettings);
})();
