/* relaycast dashboard: vanilla JS, no build step. All inserted data goes through textContent. */
"use strict";
(() => {
// The views of this file; other files (ops.js, settings.js) add theirs with relaycast.registerView.
const VIEWS = ["overview", "latency", "errors", "requests"];
const PALETTE = ["#4f46e5", "#0ea5e9", "#10b981", "#f59e0b", "#ef4444", "#8b5cf6", "#ec4899", "#14b8a6", "#84cc16", "#f97316", "#6366f1", "#06b6d4"];
const OTHER_COLOR = "#94a3b8";
const MON = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"];
const body = document.body;
const $ = (id) => document.getElementById(id);

const state = { range: "24h", view: null, token: 0, latBy: "model", before: null, detailId: null, colors: new Map(), params: new URLSearchParams() };
const RANGE_LABELS = { "15m": "Last 15 minutes", "1h": "Last hour", "6h": "Last 6 hours", "24h": "Last 24 hours", "7d": "Last 7 days", "30d": "Last 30 days" };
const BUCKET_WORDS = { minute: "per minute", hour: "per hour", day: "per day" };
// The explorer's filters: URL hash parameter -> its input (the status select is apart).
const FILTERS = { model: "filter-model", route: "filter-route", target: "filter-target", provider: "filter-provider", key: "filter-key", user: "filter-user", feature: "filter-feature", session: "filter-session", error_class: "filter-error-class" };

// ---------- DOM helpers ----------
function el(tag, attrs, ...children) {
  const n = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") n.className = v;
      else if (k === "text") n.textContent = String(v);
      else if (k.startsWith("on")) n.addEventListener(k.slice(2), v);
      else n.setAttribute(k, String(v));
    }
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    n.append(c instanceof Node ? c : String(c)); // strings become text nodes
  }
  return n;
}

// ---------- formatting ----------
const pad = (n) => String(n).padStart(2, "0");
const disp = (k) => (k === "" || k === null || k === undefined ? "(none)" : String(k));
const compactFmt = new Intl.NumberFormat(undefined, { notation: "compact", maximumFractionDigits: 1 });
const fmtInt = (n) => (n === null || n === undefined ? "—" : Number(n).toLocaleString());
const fmtCompact = (n) => (n === null || n === undefined ? "—" : compactFmt.format(Number(n)));

function money(v) {
  if (v === null || v === undefined || v === "") return null;
  const n = Number(v);
  if (!Number.isFinite(n)) return String(v);
  if (n === 0) return "$0.00";
  const a = Math.abs(n);
  let s;
  if (a >= 1) s = a.toLocaleString(undefined, { minimumFractionDigits: 2, maximumFractionDigits: 2 });
  else {
    const d = Math.min(10, Math.max(2, 2 - Math.floor(Math.log10(a))));
    s = a.toFixed(d).replace(/(\.\d\d\d*?)0+$/, "$1");
    if (Number(s) === 0) s = "<0.0000000001";
  }
  return (n < 0 ? "-$" : "$") + s;
}

/** Cost text for a group/request: never shows $0 for unpriced traffic. */
function costText(cost, unpriced) {
  const m = money(cost);
  if (m === null) return unpriced > 0 ? "unpriced" : "—";
  return unpriced > 0 ? `${m} + ${unpriced} unpriced` : m;
}

function fmtMs(v) {
  if (v === null || v === undefined || !Number.isFinite(Number(v))) return "—";
  v = Number(v);
  if (v < 10) return `${v.toFixed(1)} ms`;
  if (v < 1000) return `${Math.round(v)} ms`;
  return `${(v / 1000).toFixed(v < 10000 ? 2 : 1)} s`;
}
// A percentile read from the store's latency histogram (relaycast/store/histogram.py: buckets 10% wide, read back
// as their middle) is shown as its bucket's upper edge rounded up to two significant digits: "≤ 180 ms" for 163.873.
// The same as the CLI (relaycast/cli/report_format.py, fmt_bucket_ms).
const HIST_RATIO = 1.1;
function bucketUpperMs(v) {
  const edge = Math.pow(HIST_RATIO, Math.floor(Math.log(Math.max(v, 0.01)) / Math.log(HIST_RATIO)) + 1);
  const step = Math.pow(10, Math.floor(Math.log10(edge)) - 1);
  return Math.ceil(Number((edge / step).toFixed(9))) * step;
}
function fmtDuration(ms) {
  if (ms >= 1000) return `${(ms / 1000).toFixed(ms < 10000 ? 1 : 0)} s`;
  if (ms >= 10) return `${Math.round(ms)} ms`;
  if (ms >= 1) return `${ms.toFixed(1)} ms`;
  return `${Number(ms.toPrecision(2))} ms`;
}
function fmtBucketMs(v) {
  if (v === null || v === undefined || !Number.isFinite(Number(v))) return "—";
  return `≤ ${fmtDuration(bucketUpperMs(Number(v)))}`;
}
// Rates: a percent with one decimal, as the CLI writes them ("<0.1%" for a rate that would round to 0.0%).
function fmtPct(r) {
  if (r === null || r === undefined || !Number.isFinite(Number(r))) return "—";
  const p = Number(r) * 100;
  return p > 0 && p < 0.05 ? "<0.1%" : `${p.toFixed(1)}%`;
}
// A bucket's label on a chart's axis, in the viewer's time zone: `14:05` (minutes, hours), `Mar 12` (days); an
// hourly axis over several days says the day at midnight.
function bucketLabel(ts, bucket) {
  const d = new Date(ts * 1000);
  if (bucket === "day") return `${MON[d.getMonth()]} ${pad(d.getDate())}`;
  const hm = `${pad(d.getHours())}:${pad(d.getMinutes())}`;
  return bucket === "hour" && d.getHours() === 0 ? `${MON[d.getMonth()]} ${pad(d.getDate())} ${hm}` : hm;
}
const utcHm = (d) => `${pad(d.getUTCHours())}:${pad(d.getUTCMinutes())}`;
/** A bucket in a tooltip: its span in the viewer's time zone, then in UTC. */
function bucketTitle(ts, bucketS) {
  const a = new Date(ts * 1000);
  const b = new Date((ts + (bucketS || 3600)) * 1000);
  if (bucketS >= 86400) return `${MON[a.getMonth()]} ${pad(a.getDate())} (from ${MON[a.getUTCMonth()]} ${pad(a.getUTCDate())} ${utcHm(a)} UTC)`;
  return `${fullTime(ts * 1000, false)}–${pad(b.getHours())}:${pad(b.getMinutes())} · ${utcHm(a)}–${utcHm(b)} UTC`;
}
/** What a chart covers: "Last 15 minutes · per minute" (the bucket the API used). */
function whenText(d) {
  const label = RANGE_LABELS[state.range] || `Since ${state.range}`;
  return d && d.bucket ? `${label} · ${BUCKET_WORDS[d.bucket] || d.bucket}` : label;
}
function setWhen(id, d, withBucket = true) {
  const n = $(id);
  if (!n) return;
  n.textContent = whenText(withBucket ? d : null);
  if (withBucket && d && d.bucket) n.dataset.bucket = d.bucket;
  else delete n.dataset.bucket;
  if (d && d.range) n.title = `${fullTime(d.range.start * 1000)} to ${fullTime(d.range.end * 1000)} (your time zone)`;
}
function fullTime(ms, seconds = true) {
  const d = new Date(ms);
  return `${MON[d.getMonth()]} ${pad(d.getDate())} ${pad(d.getHours())}:${pad(d.getMinutes())}${seconds ? ":" + pad(d.getSeconds()) : ""}`;
}
function colorFor(key) {
  if (key === "(other)") return OTHER_COLOR;
  if (!state.colors.has(key)) state.colors.set(key, PALETTE[state.colors.size % PALETTE.length]);
  return state.colors.get(key);
}
const alpha = (hex, a) => hex + Math.round(a * 255).toString(16).padStart(2, "0");

// ---------- API ----------
class ApiError extends Error {}
/** A call to the admin API with the session cookie: `path` under /admin/, query `params`, an optional JSON
 * `body` (sent with `method`, POST by default). Errors carry the API's message and status. */
async function admin(path, { params = {}, method, body } = {}) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(params)) if (v !== null && v !== undefined && v !== "") q.set(k, String(v));
  const qs = q.toString();
  const init = { method: method || (body === undefined ? "GET" : "POST"), credentials: "same-origin", headers: { Accept: "application/json" } };
  // The gateway takes a change made with the session cookie only with this header, which no form can send.
  if (init.method !== "GET") init.headers["X-Relaycast-Dashboard"] = "1";
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const r = await fetch(`/admin/${path}${qs ? "?" + qs : ""}`, init);
  if (r.status === 401) {
    location.href = "/dashboard/login";
    throw new ApiError("Session expired");
  }
  let data = null;
  try { data = await r.json(); } catch (_) { /* non-JSON body */ }
  if (!r.ok) {
    const err = new ApiError((data && data.error && data.error.message) || `HTTP ${r.status}`);
    err.status = r.status;
    err.data = data;
    throw err;
  }
  return data;
}
const api = (path, params = {}) => admin(`analytics/${path}`, { params });

// ---------- charts ----------
function countPoints(datasets) {
  let n = 0;
  for (const ds of datasets) for (const v of ds.data) if (v !== null && v !== undefined && !Number.isNaN(v)) n++;
  return n;
}
// A line's point is drawn where it stands alone (no value on either side): a series with one point, or a point
// between gaps, shows as a dot rather than nothing.
function isolatedRadius(base) {
  return (ctx) => {
    const data = ctx.dataset.data || [];
    const i = ctx.dataIndex;
    const has = (j) => j >= 0 && j < data.length && data[j] !== null && data[j] !== undefined;
    return has(i) && !has(i - 1) && !has(i + 1) ? 4 : base;
  };
}
/** Draw a Chart.js chart on canvas `id`. `timeBuckets` (unix seconds) titles the tooltips with each bucket's span
 * in the viewer's time zone and in UTC; `more.bucketS` is the bucket's length; `more.pick(index, dataset)`, when
 * given, is called with the bucket and series clicked (for drill-down). */
function drawChart(id, config, timeBuckets, more = {}) {
  const canvas = $(id);
  const old = Chart.getChart(canvas);
  if (old) old.destroy();
  const opts = config.options || (config.options = {});
  opts.animation = false;
  opts.responsive = true;
  opts.maintainAspectRatio = false;
  opts.plugins = opts.plugins || {};
  if (timeBuckets) {
    const tt = opts.plugins.tooltip || (opts.plugins.tooltip = {});
    tt.callbacks = Object.assign({ title: (items) => (items.length ? bucketTitle(timeBuckets[items[0].dataIndex], more.bucketS) : "") }, tt.callbacks);
  }
  if (config.type === "line") {
    for (const ds of config.data.datasets) ds.pointRadius = isolatedRadius(ds.pointRadius === undefined ? 1.5 : ds.pointRadius);
  }
  if (more.pick) {
    opts.onClick = (evt, _els, chart) => {
      const hit = chart.getElementsAtEventForMode(evt, "nearest", { intersect: true }, false);
      const any = hit.length ? hit : chart.getElementsAtEventForMode(evt, "index", { intersect: false }, false);
      if (!any.length) return;
      more.pick(any[0].index, hit.length ? chart.data.datasets[hit[0].datasetIndex] : null);
    };
    opts.onHover = (evt, els) => { evt.native.target.style.cursor = els.length ? "pointer" : "default"; };
  }
  new Chart(canvas, config);
  const n = countPoints(config.data.datasets);
  canvas.dataset.points = String(n);
  canvas.dataset.labels = String(config.data.labels.filter((l) => l !== "" && l !== null && l !== undefined).length);
  // Buckets (labels) with a value other than 0 in some series: what tests read.
  canvas.dataset.filled = String(config.data.labels.filter((_, i) => config.data.datasets.some((ds) => ds.data[i] !== null && ds.data[i] !== undefined && Number(ds.data[i]) !== 0)).length);
  canvas.parentElement.classList.toggle("is-empty", n === 0);
}
function setupChartDefaults() {
  const d = Chart.defaults;
  d.animation = false;
  d.font.family = getComputedStyle(body).fontFamily;
  d.font.size = 12;
  d.color = "#64748b";
  d.borderColor = "#eef0f4";
  d.plugins.legend.position = "bottom";
  d.plugins.legend.labels.boxWidth = 10;
  d.plugins.legend.labels.boxHeight = 10;
  d.plugins.legend.labels.usePointStyle = true;
  d.plugins.tooltip.backgroundColor = "#0f172a";
  d.plugins.tooltip.padding = 10;
  d.plugins.tooltip.cornerRadius = 6;
  d.interaction = { mode: "index", intersect: false };
}
const gridX = { grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 16 } };

// ---------- shared table builder ----------
function table(tbl, headers, rows) {
  const thead = el("thead", null, el("tr", null, headers.map((h) => el("th", { class: h.num ? "num" : null, text: h.label }))));
  const tbody = el("tbody");
  if (!rows.length) tbody.append(el("tr", null, el("td", { class: "empty", colspan: headers.length, text: "No data in this range" })));
  for (const r of rows) tbody.append(el("tr", null, r));
  tbl.replaceChildren(thead, tbody);
}
const td = (text, cls) => el("td", { class: cls || null }, text);

// ---------- drill-down ----------
/** The Requests explorer's address for these filters (`#requests?model=fast&since=24h`): a link, so it can be
 * shared and the back button returns. An empty value means "(none)"; the time defaults to the range. */
function explorerHref(filters) {
  const q = new URLSearchParams();
  for (const [k, v] of Object.entries(filters)) if (v !== null && v !== undefined) q.set(k, v === "" ? "(none)" : String(v));
  if (!q.has("since")) q.set("since", state.range);
  return `#requests?${q}`;
}
function drillLink(text, filters, cls) {
  return el("a", { class: "drill" + (cls ? " " + cls : ""), href: explorerHref(filters), title: `${text}: see its requests` , text });
}
function openExplorer(filters) { location.hash = explorerHref(filters).slice(1); }
/** The filters of a chart's bucket `i`: its time window, and the series' own value (none for "(other)"). */
function bucketPick(d, dim, extra) {
  return (i, ds) => {
    const b = d.buckets[i];
    const f = Object.assign({ since: String(b), until: String(b + d.bucket_s) }, extra || {});
    if (ds && dim && ds.key !== undefined && ds.key !== "(other)") f[dim] = ds.key;
    openExplorer(f);
  };
}

// ---------- Overview ----------
function kpi(label, value, sub, cls, title) {
  return el("div", { class: "kpi" + (cls ? " " + cls : ""), title: title || null },
    el("div", { class: "kpi-label", text: label }),
    el("div", { class: "kpi-value", text: value }),
    el("div", { class: "kpi-sub", text: sub || "\u00a0" }));
}
function renderKpis(t, e) {
  const reqs = t.requests || 0;
  const et = (e && e.totals) || {};
  const priced = [];
  if (t.estimated_requests) priced.push(`${fmtInt(t.estimated_requests)} estimated`);
  if (t.reported_requests) priced.push(`${fmtInt(t.reported_requests)} reported`);
  const tokens = (t.prompt_tokens || 0) + (t.completion_tokens || 0);
  let tokSub = `${fmtCompact(t.prompt_tokens || 0)} in · ${fmtCompact(t.completion_tokens || 0)} out`;
  if (t.cached_tokens) tokSub += ` · ${fmtCompact(t.cached_tokens)} cached`;
  const spend = money(t.cost_usd);
  const refusals = et.attempts ? `of attempts · client refusals apart: ${fmtInt(et.refusals || 0)} (${fmtPct(et.refusal_rate)})` : "no attempts";
  $("kpis").replaceChildren(
    kpi("Total spend", spend === null ? (t.unpriced_requests > 0 ? "unpriced" : "—") : spend, priced.length ? "incl. " + priced.join(", ") : "computed from prices", "kpi-accent"),
    kpi("Requests", fmtInt(reqs), `${fmtInt(t.errors || 0)} failed`),
    Object.assign(kpi("Provider error rate", fmtPct(et.error_rate), refusals, et.error_rate > 0.05 ? "kpi-bad" : null,
      "Provider failures (5xx, timeouts, rate limits, cut streams…) per attempt; refusals the client caused (bad requests, content policy…) are counted apart"), { id: "kpi-error-rate" }),
    kpi("Tokens", fmtCompact(tokens), tokSub),
    kpi("Unpriced requests", fmtInt(t.unpriced_requests || 0), t.unpriced_requests > 0 ? "not counted in spend" : "everything priced", t.unpriced_requests > 0 ? "kpi-warn" : null));
}
function renderTop(id, groups, dim) {
  const root = $(id);
  root.replaceChildren();
  // A group with no requests and nothing spent (an attempt that failed unbilled before a failover) says nothing.
  groups = (groups || []).filter((g) => (g.requests || 0) > 0 || Number(g.cost_usd || 0) > 0 || (g.unpriced_requests || 0) > 0);
  if (!groups.length) {
    root.append(el("li", { class: "empty", text: "No requests in this range" }));
    return;
  }
  const useCost = groups.some((g) => g.cost_usd !== null && Number(g.cost_usd) > 0);
  const val = (g) => (useCost ? Number(g.cost_usd || 0) : g.requests || 0);
  const max = Math.max(...groups.map(val)) || 1;
  for (const g of groups) {
    const bar = el("span", { class: "top-bar-fill" });
    bar.style.width = `${Math.max(1.5, (val(g) / max) * 100)}%`;
    bar.style.background = id === "top-models" ? colorFor(g.key) : id === "top-users" ? "#0ea5e9" : "#10b981";
    const cost = costText(g.cost_usd, g.unpriced_requests || 0);
    const muted = g.key === "" || g.key === "(other)" ? " muted" : "";
    const name = g.key === "(other)"
      ? el("span", { class: "top-name" + muted, title: "everything past the top entries", text: disp(g.key) })
      : drillLink(disp(g.key), { [dim]: g.key }, "top-name" + muted);
    if (g.key !== "(other)") name.dataset.key = g.key;
    root.append(el("li", { class: "top-row" },
      el("div", { class: "top-line" },
        name,
        el("span", { class: "top-vals" },
          el("span", { class: "top-cost" + (cost === "unpriced" ? " unpriced" : ""), text: cost }),
          el("span", { class: "top-req", text: `${fmtInt(g.requests)} req` }))),
      el("div", { class: "top-bar" }, bar)));
  }
}
async function loadOverview(tok) {
  const [m, u, f, e] = await Promise.all([
    ...["model", "user", "feature"].map((by) => api("spend", { by, since: state.range, limit: 8 })),
    api("errors", { since: state.range }),
  ]);
  if (tok !== state.token) return;
  renderKpis(m.totals || {}, e);
  const buckets = m.buckets || [];
  const entries = Object.entries(m.series || {});
  const sum = (a) => (a || []).reduce((x, y) => x + (y || 0), 0);
  entries.sort((a, b) => (a[0] === "(other)") - (b[0] === "(other)") || sum(b[1].cost) - sum(a[1].cost));
  setWhen("spend-when", m);
  drawChart("spend-chart", {
    type: "bar",
    data: {
      labels: buckets.map((b) => bucketLabel(b, m.bucket)),
      datasets: entries.map(([k, s]) => ({ key: k, label: disp(k), data: s.cost || [], backgroundColor: colorFor(k), stack: "cost", borderRadius: 2, maxBarThickness: 36 })),
    },
    options: {
      scales: {
        x: Object.assign({ stacked: true }, gridX),
        y: { stacked: true, beginAtZero: true, ticks: { callback: (v) => money(v) } },
      },
      plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${money(c.raw)}` } } },
    },
  }, buckets, { bucketS: m.bucket_s, pick: bucketPick(m, "model") });
  renderTop("top-models", m.groups, "model");
  renderTop("top-users", u.groups, "user");
  renderTop("top-features", f.groups, "feature");
}

// ---------- Latency ----------
/** A long name on a chart's axis as lines of at most `n` characters (Chart.js draws an array as lines). */
function wrapLabel(text, n = 30) {
  const s = String(text);
  if (s.length <= n) return s;
  const out = [];
  for (let i = 0; i < s.length && out.length < 4; i += n) out.push(s.slice(i, i + n));
  if (out.join("").length < s.length) out[out.length - 1] = out[out.length - 1].slice(0, n - 1) + "…";
  return out;
}
async function loadLatency(tok) {
  const d = await api("latency", { by: state.latBy, since: state.range });
  if (tok !== state.token) return;
  const buckets = d.buckets || [];
  const datasets = [];
  for (const [k, s] of Object.entries(d.series || {})) {
    const c = colorFor(k);
    const base = { key: k, borderColor: c, backgroundColor: c, borderWidth: 2, pointRadius: 1.5, pointHoverRadius: 4, spanGaps: true, cubicInterpolationMode: "monotone" };
    datasets.push(Object.assign({ label: `${disp(k)} p50`, data: s.total_p50 || [] }, base));
    datasets.push(Object.assign({ label: `${disp(k)} p99`, data: s.total_p99 || [], borderDash: [5, 4] }, base, { borderWidth: 1.5 }));
  }
  for (const id of ["latency-when", "latency-table-when"]) setWhen(id, d, id === "latency-when");
  setWhen("ttft-when", d, false);
  drawChart("latency-chart", {
    type: "line",
    data: { labels: buckets.map((b) => bucketLabel(b, d.bucket)), datasets },
    options: {
      scales: { x: gridX, y: { beginAtZero: true, ticks: { callback: (v) => fmtMs(v) } } },
      plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${fmtBucketMs(c.raw)}` } } },
    },
  }, buckets, { bucketS: d.bucket_s, pick: bucketPick(d, state.latBy) });

  const groups = d.groups || [];
  const top = groups.slice(0, 24);
  const p = (o, k) => (o && o[k] !== undefined ? o[k] : null);
  // Horizontal bars: every model's name is on the axis, whole (wrapped), however many there are.
  $("ttft-wrap").style.height = `${Math.max(160, 70 + top.length * 46)}px`;
  drawChart("ttft-chart", {
    type: "bar",
    data: {
      labels: top.map((g) => wrapLabel(disp(g.key))),
      datasets: [
        { label: "TTFT p99", data: top.map((g) => p(g.ttft_ms, "p99")), backgroundColor: "#0ea5e9", borderRadius: 3, maxBarThickness: 16 },
        { label: "Total p99", data: top.map((g) => p(g.total_ms, "p99")), backgroundColor: "#4f46e5", borderRadius: 3, maxBarThickness: 16 },
      ],
    },
    options: {
      indexAxis: "y",
      interaction: { mode: "index", axis: "y", intersect: false },
      scales: {
        y: { grid: { display: false }, ticks: { autoSkip: false, color: "#334155" } },
        x: { beginAtZero: true, ticks: { callback: (v) => fmtMs(v) } },
      },
      plugins: { tooltip: { callbacks: { title: (items) => (items.length ? disp(top[items[0].dataIndex].key) : ""), label: (c) => `${c.dataset.label}: ${fmtBucketMs(c.raw)}` } } },
    },
  });

  const H = (label, num) => ({ label, num });
  table($("latency-table"),
    [H(state.latBy === "provider" ? "Provider" : "Model"), H("Attempts", 1), H("p50", 1), H("p90", 1), H("p99", 1), H("TTFT p50", 1), H("TTFT p90", 1), H("TTFT p99", 1)],
    groups.map((g) => [
      el("td", { class: "wrap name-cell" }, el("span", { class: "swatch" }), drillLink(disp(g.key), { [state.latBy]: g.key })),
      td(fmtInt(g.attempts), "num"),
      td(fmtBucketMs(p(g.total_ms, "p50")), "num"), td(fmtBucketMs(p(g.total_ms, "p90")), "num"), td(fmtBucketMs(p(g.total_ms, "p99")), "num strong"),
      td(fmtBucketMs(p(g.ttft_ms, "p50")), "num"), td(fmtBucketMs(p(g.ttft_ms, "p90")), "num"), td(fmtBucketMs(p(g.ttft_ms, "p99")), "num strong"),
    ]));
  const sw = $("latency-table").querySelectorAll(".swatch");
  groups.forEach((g, i) => { if (sw[i]) sw[i].style.background = colorFor(g.key); });
}

// ---------- Errors ----------
// Error classes by whose fault they are (from the API: relaycast.errors), each in its family of colours.
const CLASS_COLORS = {
  provider: ["#dc2626", "#ea580c", "#b91c1c", "#f97316", "#c2410c", "#ef4444", "#d97706", "#9a3412"],
  client: ["#64748b", "#2563eb", "#94a3b8", "#0ea5e9", "#475569", "#1d4ed8", "#60a5fa", "#334155"],
  gateway: ["#7c3aed", "#a78bfa", "#6d28d9", "#c4b5fd"],
};
function classColors(classes) {
  const out = {};
  const seen = { provider: 0, client: 0, gateway: 0 };
  for (const c of Object.keys(classes).sort()) {
    const src = CLASS_COLORS[classes[c]] ? classes[c] : "gateway";
    const pal = CLASS_COLORS[src];
    out[c] = pal[seen[src]++ % pal.length];
  }
  return out;
}
const sourceOf = (d, c) => (d.classes || {})[c] || "gateway";
async function loadErrors(tok) {
  const d = await api("errors", { since: state.range });
  if (tok !== state.token) return;
  const buckets = d.buckets || [];
  const providers = d.providers || [];
  for (const id of ["errors-when", "errors-class-when"]) setWhen(id, d);
  setWhen("errors-table-when", d, false);
  drawChart("errors-chart", {
    type: "line",
    data: {
      labels: buckets.map((b) => bucketLabel(b, d.bucket)),
      datasets: Object.entries(d.series || {}).map(([k, s]) => {
        const c = colorFor("provider:" + k);
        return { key: k, label: disp(k), data: s.rate || [], borderColor: c, backgroundColor: alpha(c, 0.12), fill: false, borderWidth: 2, pointRadius: 1.5, cubicInterpolationMode: "monotone" };
      }),
    },
    options: {
      scales: { x: gridX, y: { beginAtZero: true, suggestedMax: 0.1, ticks: { callback: (v) => fmtPct(v) } } },
      plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${fmtPct(c.raw)}` } } },
    },
  }, buckets, { bucketS: d.bucket_s, pick: bucketPick(d, "provider", { status: "error" }) });

  const colors = classColors(d.classes || {});
  const order = { provider: 0, client: 1, gateway: 2 };
  const classes = Object.entries(d.by_class || {}).sort((a, b) => order[sourceOf(d, a[0])] - order[sourceOf(d, b[0])] || a[0].localeCompare(b[0]));
  const whose = { provider: "provider failure", client: "client refusal", gateway: "gateway error" };
  drawChart("errors-class-chart", {
    type: "bar",
    data: {
      labels: buckets.map((b) => bucketLabel(b, d.bucket)),
      datasets: classes.map(([c, counts]) => ({ key: c, label: `${c} (${whose[sourceOf(d, c)]})`, data: counts, backgroundColor: colors[c], stack: "errors", borderRadius: 2, maxBarThickness: 36 })),
    },
    options: {
      scales: { x: Object.assign({ stacked: true }, gridX), y: { stacked: true, beginAtZero: true, ticks: { precision: 0 } } },
      plugins: { tooltip: { callbacks: { label: (c) => `${c.dataset.label}: ${fmtInt(c.raw)}` } } },
    },
  }, buckets, { bucketS: d.bucket_s, pick: bucketPick(d, "error_class") });

  const rows = providers.slice().sort((a, b) => (b.error_rate || 0) - (a.error_rate || 0));
  table($("errors-table"),
    [{ label: "Provider" }, { label: "Attempts", num: 1 }, { label: "Provider failures", num: 1 }, { label: "Error rate" }, { label: "Client refusals", num: 1 }, { label: "By class" }],
    rows.map((r) => {
      const fill = el("span", { class: "rate-fill" });
      fill.style.width = `${Math.min(100, (r.error_rate || 0) * 100)}%`;
      const cls = Object.entries(r.by_class || {}).sort((a, b) => b[1] - a[1]);
      // Which class is whose fault comes from the API (relaycast.errors), never decided here.
      const chip = (c, n) => {
        const src = sourceOf(d, c);
        const title = src === "provider" ? "provider failure: counts in the error rate" : src === "client" ? "client-caused refusal: not in the error rate" : "the gateway's own error: not in the error rate";
        return el("a", { class: "chip " + (src === "provider" ? "chip-err" : "chip-" + src), title: `${title}; see these requests`, "data-source": src, href: explorerHref({ provider: r.provider, error_class: c }) }, c, el("b", { text: fmtInt(n) }));
      };
      return [
        el("td", { class: "strong wrap name-cell" }, drillLink(disp(r.provider), { provider: r.provider, status: "error" })),
        td(fmtInt(r.attempts), "num"),
        td(fmtInt(r.errors), "num"),
        el("td", { class: "rate-cell" }, el("span", { class: "rate-bar" + ((r.error_rate || 0) >= 0.1 ? " bad" : "") }, fill), el("span", { class: "rate-val", text: fmtPct(r.error_rate) })),
        td(r.refusals ? `${fmtInt(r.refusals)} (${fmtPct(r.refusal_rate)})` : "0", "num"),
        el("td", { class: "wrap" }, cls.length ? cls.map(([c, n]) => chip(c, n)) : el("span", { class: "muted", text: "none" })),
      ];
    }));
}

// ---------- Requests ----------
function statusBadge(status, errorClass) {
  const ok = !errorClass && status !== null && status !== undefined && status < 400;
  const text = [status === null || status === undefined ? null : String(status), errorClass].filter(Boolean).join(" · ") || "—";
  return el("span", { class: "badge " + (ok ? "badge-ok" : "badge-err"), text });
}
function costCell(r) {
  const m = money(r.cost_usd);
  const text = m === null ? (r.cost_source === "unpriced" ? "unpriced" : "—") : m;
  const c = el("span", { class: m === null && r.cost_source === "unpriced" ? "unpriced" : null, title: r.cost_source ? `cost source: ${r.cost_source}` : null, text });
  return el("td", { class: "num" }, c, r.cost_source === "estimated" || r.cost_source === "reported" ? el("span", { class: "src", text: r.cost_source === "estimated" ? "est" : "rep" }) : null);
}
// The Model column: what the request asked for, then where it went (its target) when that differs: the Model
// filter matches either (and the upstream model).
function modelCell(r) {
  const asked = disp(r.model_requested);
  const went = r.target || r.model || "";
  const title = went && went !== r.model_requested ? `asked for ${asked}; served by ${went} (model ${disp(r.model)})` : asked;
  return el("td", { class: "wrap", "data-col": "model", title, "data-requested": r.model_requested, "data-target": r.target || "", "data-model": r.model || "" },
    el("span", { class: "strong", text: asked }),
    went && went !== r.model_requested ? [el("span", { class: "arrow", text: " → " }), el("span", { class: "mono small", text: went })] : null,
    r.attempts > 1 ? el("span", { class: "src", title: `${r.attempts} attempts`, text: `×${r.attempts}` }) : null);
}
function requestRow(r) {
  const tokens = r.prompt_tokens === null && r.completion_tokens === null ? "—" : `${fmtInt(r.prompt_tokens || 0)} → ${fmtInt(r.completion_tokens || 0)}`;
  return el("tr", { "data-request-id": r.request_id, tabindex: "0", class: r.request_id === state.detailId ? "selected" : null },
    el("td", { class: "mono small", title: new Date(r.ts).toISOString(), text: fullTime(r.ts) }),
    modelCell(r),
    el("td", { class: "wrap" }, statusBadge(r.status, r.error_class)),
    td(fmtMs(r.duration_ms), "num"),
    td(r.stream ? fmtMs(r.ttft_ms) : "—", "num"),
    td(tokens, "num"),
    costCell(r),
    el("td", { class: "wrap" + (r.user ? "" : " muted"), "data-col": "user", title: disp(r.user), text: disp(r.user) }),
    el("td", { class: "wrap" + (r.feature ? "" : " muted"), "data-col": "feature", title: disp(r.feature), text: disp(r.feature) }));
}
/** The explorer's time: a window from the address (a chart bucket's, or a drill-down's range), else the range. */
function explorerTime() {
  const since = state.params.get("since");
  const until = state.params.get("until");
  return { since: since || state.range, until: until || null };
}
function describeTime({ since, until }) {
  const at = (v) => (/^\d+(\.\d+)?$/.test(v) ? fullTime(Number(v) * 1000, false) : v);
  if (until) {
    const a = Number(since);
    const b = Number(until);
    if (Number.isFinite(a) && Number.isFinite(b) && b - a <= 86400) {
      const e = new Date(b * 1000);
      return `${fullTime(a * 1000, false)}–${pad(e.getHours())}:${pad(e.getMinutes())}`;
    }
    return `${at(since)} to ${at(until)}`;
  }
  return RANGE_LABELS[since] || `Since ${at(since)}`;
}
function fillFilters() {
  for (const [k, id] of Object.entries(FILTERS)) $(id).value = state.params.get(k) || "";
  const st = state.params.get("status") || "";
  const sel = $("filter-status");
  if (st && ![...sel.options].some((o) => o.value === st)) sel.append(el("option", { value: st, text: `Status ${st}` }));
  sel.value = st;
}
/** The filters typed in, into the address (replacing the entry: typing does not fill the history). */
function filtersToHash() {
  const q = new URLSearchParams();
  for (const k of ["since", "until"]) if (state.params.get(k)) q.set(k, state.params.get(k));
  for (const [k, id] of Object.entries(FILTERS)) { const v = $(id).value.trim(); if (v) q.set(k, v); }
  if ($("filter-status").value) q.set("status", $("filter-status").value);
  state.params = q;
  const qs = q.toString();
  history.replaceState(null, "", `#requests${qs ? "?" + qs : ""}`);
}
function requestParams() {
  const t = explorerTime();
  const p = { limit: 50, since: t.since, until: t.until, status: state.params.get("status") };
  for (const k of Object.keys(FILTERS)) p[k] = state.params.get(k);
  return p;
}
async function loadRequests(tok, append) {
  const params = requestParams();
  if (append) params.before = state.before;
  const t = explorerTime();
  const custom = !!t.until || t.since !== state.range;
  $("filter-window").hidden = !custom;
  $("filter-window-text").textContent = custom ? `Time: ${describeTime(t)}` : "";
  $("requests-when").textContent = `Newest first · ${describeTime(t)}`;
  const d = await api("requests", params);
  if (tok !== state.token) return;
  const tbody = $("requests-table").tBodies[0];
  const rows = (d.requests || []).map(requestRow);
  if (append) tbody.append(...rows);
  else tbody.replaceChildren(...rows);
  state.before = d.next_before || null;
  $("requests-more").hidden = !state.before;
  $("requests-empty").hidden = tbody.rows.length > 0;
}
async function loadMore() {
  const btn = $("requests-more");
  btn.disabled = true;
  btn.textContent = "Loading…";
  try { await loadRequests(state.token, true); } catch (e) { showError(e); } finally {
    btn.disabled = false;
    btn.textContent = "Load more";
  }
}

// ---------- Request detail ----------
function section(title, ...content) {
  return el("section", { class: "d-section" }, el("h3", { text: title }), ...content);
}
function kv(pairs) {
  return el("dl", { class: "kv" }, pairs.filter(Boolean).map(([k, v, cls]) => [el("dt", { text: k }), el("dd", { class: cls || null }, v instanceof Node ? v : String(v === null || v === undefined || v === "" ? "—" : v))]));
}
function privacyNote() { return el("p", { class: "muted note", text: "not stored (privacy mode)" }); }
function renderMessages(msgs) {
  if (msgs === null || msgs === undefined) return privacyNote();
  if (!msgs.length) return el("p", { class: "muted note", text: "none" });
  return el("div", { class: "msgs" }, msgs.map((m) => el("div", { class: "msg" },
    el("div", { class: "msg-role", text: (m && m.role) || "?" }),
    el("pre", { class: "msg-body", text: typeof (m && m.content) === "string" ? m.content : JSON.stringify(m && m.content !== undefined ? m.content : m, null, 2) }))));
}
function waterfall(req, attempts) {
  const end = (a) => (Number(a.started_ms) || 0) + (Number(a.duration_ms) || 0);
  const total = Math.max(Number(req.duration_ms) || 0, ...attempts.map(end), 1);
  const wf = el("div", { id: "waterfall", class: "wf" });
  wf.append(el("div", { class: "wf-axis" }, el("span"), el("div", { class: "wf-scale" }, el("span", { text: "0" }), el("span", { text: fmtMs(total / 2) }), el("span", { text: fmtMs(total) })), el("span")));
  if (!attempts.length) wf.append(el("p", { class: "muted note", text: "No attempts recorded." }));
  for (const a of attempts) {
    const ok = !a.error_class && !(a.upstream_status >= 400);
    const left = Math.min(100, ((Number(a.started_ms) || 0) / total) * 100);
    const width = Math.min(100 - left, Math.max(0.8, ((Number(a.duration_ms) || 0) / total) * 100));
    const bar = el("div", { class: "wf-bar " + (ok ? "wf-ok" : "wf-error"), title: `${a.target}: started +${fmtMs(a.started_ms)}, took ${fmtMs(a.duration_ms)}` });
    bar.style.left = `${left}%`;
    bar.style.width = `${width}%`;
    if (a.ttft_ms !== null && a.ttft_ms !== undefined && a.duration_ms > 0) {
      const mk = el("div", { class: "wf-ttft", title: `TTFT ${fmtMs(a.ttft_ms)}` });
      mk.style.left = `${Math.min(100, (a.ttft_ms / a.duration_ms) * 100)}%`;
      bar.append(mk);
    }
    const meta = [fmtMs(a.duration_ms)];
    if (a.ttft_ms !== null && a.ttft_ms !== undefined) meta.push(`TTFT ${fmtMs(a.ttft_ms)}`);
    const row = el("div", { class: "wf-row " + (ok ? "ok" : "error"), "data-attempt": String(a.index) },
      el("div", { class: "wf-label" }, el("span", { class: "wf-idx", text: `#${a.index}` }), el("span", { class: "wf-target mono", title: a.target, text: a.target || "—" })),
      el("div", { class: "wf-track" }, bar),
      el("div", { class: "wf-meta" }, meta.join(" · "),
        ok ? null : el("span", { class: "wf-errclass", text: [a.error_class || "error", a.upstream_status ? `(${a.upstream_status})` : null].filter(Boolean).join(" ") })));
    wf.append(row);
    if (!ok && a.error_message) wf.append(el("div", { class: "wf-msg", text: a.error_message }));
  }
  return wf;
}
function renderDetail(d) {
  const r = d.request || {};
  const attempts = (d.attempts || []).slice().sort((a, b) => a.index - b.index);
  const costM = money(r.cost_usd);
  const cost = costM === null ? (r.cost_source === "unpriced" ? "unpriced" : "—") : costM;
  const out = [];
  out.push(el("div", { class: "d-title" }, el("code", { class: "mono", text: r.request_id }), statusBadge(r.status, r.error_class)));
  if (r.error_class || r.error_message) {
    out.push(el("div", { class: "d-error" }, el("b", { text: r.error_class || "error" }), r.error_message ? el("span", { text: " — " + r.error_message }) : null));
  }
  out.push(section("Summary", kv([
    ["Time", fullTime(r.ts)], ["Endpoint", r.endpoint, "mono"], ["Model requested", r.model_requested],
    ["Target", r.target, "mono"], ["Stream", r.stream ? "yes" : "no"], ["Attempts", fmtInt(r.attempts)],
    ["Duration", fmtMs(r.duration_ms)], ["TTFT", fmtMs(r.ttft_ms)],
    ["Tokens", `${fmtInt(r.prompt_tokens || 0)} prompt · ${fmtInt(r.completion_tokens || 0)} completion`],
    ["Cost", `${cost}${r.cost_source ? ` (${r.cost_source})` : ""}`, cost === "unpriced" ? "unpriced" : null],
  ])));
  out.push(section("Attribution", kv([
    ["User", disp(r.user)], ["Feature", disp(r.feature)], ["Key", disp(r.key), "mono"],
    ["Session", r.session_id, "mono"], r.app_url ? ["App URL", r.app_url, "mono"] : null,
  ]), r.tags && Object.keys(r.tags).length ? el("div", { class: "chips" }, Object.entries(r.tags).map(([k, v]) => el("span", { class: "chip" }, `${k}=`, el("b", { text: typeof v === "string" ? v : JSON.stringify(v) })))) : null));
  out.push(section("Attempts", waterfall(r, attempts)));
  out.push(section("Parameters", r.params && Object.keys(r.params).length ? el("pre", { class: "code", text: JSON.stringify(r.params, null, 2) }) : el("p", { class: "muted note", text: "none" })));
  out.push(section("Input messages", renderMessages(r.input_messages)));
  const output = r.output_text !== null && r.output_text !== undefined ? el("pre", { class: "msg-body out", text: r.output_text })
    : (r.input_messages === null || r.input_messages === undefined ? privacyNote() : el("p", { class: "muted note", text: "no output" }));
  out.push(section("Output", output));
  $("detail-body").replaceChildren(...out);
}
async function openDetail(id) {
  const panel = $("request-detail");
  state.detailId = id;
  delete panel.dataset.requestId;
  panel.hidden = false;
  body.classList.add("drawer-open");
  for (const tr of $("requests-table").tBodies[0].rows) tr.classList.toggle("selected", tr.dataset.requestId === id);
  $("detail-body").replaceChildren(el("p", { class: "muted note", text: "Loading…" }));
  try {
    const d = await api(`requests/${encodeURIComponent(id)}`);
    if (state.detailId !== id) return;
    renderDetail(d);
    panel.dataset.requestId = id;
    $("detail-body").scrollTop = 0;
  } catch (e) {
    if (state.detailId === id) $("detail-body").replaceChildren(el("p", { class: "d-error", text: `Could not load request: ${e.message}` }));
  }
}
function closeDetail() {
  state.detailId = null;
  const panel = $("request-detail");
  panel.hidden = true;
  delete panel.dataset.requestId;
  body.classList.remove("drawer-open");
  for (const tr of $("requests-table").tBodies[0].rows) tr.classList.remove("selected");
}

// ---------- routing / loading ----------
const LOADERS = { overview: loadOverview, latency: loadLatency, errors: loadErrors, requests: (tok) => loadRequests(tok, false) };
function showError(e) {
  if (e instanceof ApiError && e.message === "Session expired") return;
  $("alert-text").textContent = `Could not load data: ${e && e.message ? e.message : e}`;
  $("alert").hidden = false;
}
async function load(view) {
  const tok = ++state.token;
  delete body.dataset.loaded;
  delete body.dataset.error;
  $("alert").hidden = true;
  body.classList.add("is-loading");
  try {
    await LOADERS[view](tok);
    if (tok === state.token) body.dataset.loaded = view;
  } catch (e) {
    if (tok === state.token) {
      body.dataset.error = view;
      showError(e);
    }
  } finally {
    if (tok === state.token) body.classList.remove("is-loading");
  }
}
// The address is `#<view>` or `#<view>?<parameters>` (the explorer's filters: `#requests?model=fast&since=24h`).
function route() {
  const hash = location.hash.replace(/^#/, "");
  const cut = hash.indexOf("?");
  let v = cut < 0 ? hash : hash.slice(0, cut);
  state.params = new URLSearchParams(cut < 0 ? "" : hash.slice(cut + 1));
  if (!VIEWS.includes(v)) v = "overview";
  if (v === "requests") fillFilters();
  state.view = v;
  body.dataset.view = v;
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== `view-${v}`;
  for (const a of document.querySelectorAll(".tabs a")) {
    const on = a.dataset.view === v;
    a.classList.toggle("active", on);
    if (on) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  if (v !== "requests") closeDetail();
  load(v);
}

function init() {
  if (typeof Chart === "undefined") {
    showError(new Error("chart library failed to load"));
    return;
  }
  setupChartDefaults();
  const range = $("range");
  state.range = range.value || "24h";
  range.addEventListener("change", () => {
    state.range = range.value;
    if (state.view === "requests" && (state.params.has("since") || state.params.has("until"))) {
      state.params.delete("since");
      state.params.delete("until");
      filtersToHash();
    }
    load(state.view);
  });
  $("alert-retry").addEventListener("click", () => load(state.view));

  for (const b of $("latency-by").querySelectorAll("button")) {
    b.addEventListener("click", () => {
      if (state.latBy === b.dataset.by) return;
      state.latBy = b.dataset.by;
      for (const x of $("latency-by").querySelectorAll("button")) {
        x.classList.toggle("active", x === b);
        x.setAttribute("aria-pressed", String(x === b));
      }
      load("latency");
    });
  }

  let debounce = null;
  const now = () => { clearTimeout(debounce); filtersToHash(); load("requests"); };
  const refilter = () => { clearTimeout(debounce); debounce = setTimeout(now, 300); };
  const form = $("requests-filters");
  form.addEventListener("submit", (e) => { e.preventDefault(); now(); });
  form.addEventListener("input", (e) => { if (e.target.tagName === "INPUT") refilter(); });
  $("filter-status").addEventListener("change", now);
  $("filter-window-clear").addEventListener("click", () => {
    state.params.delete("since");
    state.params.delete("until");
    now();
  });
  $("filter-clear").addEventListener("click", () => {
    for (const id of Object.values(FILTERS)) $(id).value = "";
    $("filter-status").value = "";
    state.params = new URLSearchParams();
    now();
  });
  $("requests-more").addEventListener("click", loadMore);

  const tbody = $("requests-table").tBodies[0];
  tbody.addEventListener("click", (e) => {
    const tr = e.target.closest("tr[data-request-id]");
    if (tr) openDetail(tr.dataset.requestId);
  });
  tbody.addEventListener("keydown", (e) => {
    const tr = e.target.closest("tr[data-request-id]");
    if (tr && (e.key === "Enter" || e.key === " ")) { e.preventDefault(); openDetail(tr.dataset.requestId); }
  });
  $("detail-close").addEventListener("click", closeDetail);
  $("detail-body").tabIndex = 0; // a scrolling region: reachable and scrollable from the keyboard
  document.addEventListener("keydown", (e) => { if (e.key === "Escape" && !$("request-detail").hidden) closeDetail(); });

  window.addEventListener("hashchange", route);
  route();
}

// What the other views' files use: the DOM and formatting helpers, the API, and registerView(name, loader), where
// `loader(tok)` fills the view's section (#view-<name>) and returns when its data is shown (or throws).
window.relaycast = {
  el, $, td, table, admin, api, ApiError, money, costText, fmtMs, fmtBucketMs, fmtPct, fmtInt, fmtCompact, fullTime,
  bucketLabel, bucketTitle, drawChart, colorFor, disp, showError, state, explorerHref, drillLink,
  current: (tok) => tok === state.token,
  reload: () => load(state.view),
  registerView(name, loader) {
    if (!VIEWS.includes(name)) VIEWS.push(name);
    LOADERS[name] = loader;
  },
};

if (document.readyState === "loading") document.addEventListener("DOMContentLoaded", init);
else init();
})();
