/* Triage review dashboard. Talks only to /ui/api/* (read) and /admin/* (key and budget changes),
   sending the signed-in key as a Bearer token; the server decides what each key may see. */
"use strict";
(function () {
  const $ = (s) => document.querySelector(s);
  const KEY = "triage.key";
  let me = null;
  let tenant = "";
  let renders = 0;

  function esc(s) {
    return String(s == null ? "" : s).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
  }
  function usd(v) {
    if (v == null) return "—";
    const a = Math.abs(v);
    if (a > 0 && a < 1e-6) return (v < 0 ? "-$" : "$") + a.toPrecision(2);
    const d = a === 0 ? 2 : a < 0.01 ? 6 : a < 1 ? 4 : 2;
    return (v < 0 ? "-$" : "$") + a.toLocaleString("en-US", { minimumFractionDigits: d, maximumFractionDigits: d });
  }
  const usdAxis = (v) => (v === 0 ? "$0" : v >= 100 ? "$" + Math.round(v).toLocaleString("en-US") : "$" + +v.toPrecision(3));
  const pct = (v) => (v == null ? "—" : v.toFixed(1) + "%");
  const num = (v) => (v == null ? "—" : Number(v).toLocaleString("en-US"));
  const when = (ts) => (ts ? new Date(ts * 1000).toISOString().replace("T", " ").slice(0, 19) : "—");

  async function api(path, opts) {
    opts = opts || {};
    const headers = Object.assign({ Authorization: "Bearer " + sessionStorage.getItem(KEY) }, opts.headers || {});
    if (opts.json !== undefined) { headers["Content-Type"] = "application/json"; opts.body = JSON.stringify(opts.json); }
    const r = await fetch(path, { method: opts.method || "GET", headers, body: opts.body });
    const data = await r.json().catch(() => ({}));
    if (!r.ok) {
      const err = new Error((data.error && data.error.message) || r.statusText);
      err.status = r.status;
      throw err;
    }
    return data;
  }
  function q(params) {
    const p = new URLSearchParams();
    if (tenant) p.set("tenant", tenant);
    for (const k in params || {}) if (params[k] !== "" && params[k] != null) p.set(k, params[k]);
    const s = p.toString();
    return s ? "?" + s : "";
  }

  // ---- sign-in -------------------------------------------------------------------------------
  async function signIn(key) {
    sessionStorage.setItem(KEY, key);
    try {
      me = await api("/ui/api/session");
    } catch (e) {
      sessionStorage.removeItem(KEY);
      throw e;
    }
    $("#login").classList.add("hidden");
    $("#app").classList.remove("hidden");
    const badge = $("#who");
    badge.textContent = me.role === "master" ? "master key · all tenants" : "tenant · " + me.tenant;
    badge.className = "badge" + (me.role === "master" ? " master" : "");
    document.querySelectorAll(".master-only").forEach((n) => n.classList.toggle("hidden", me.role !== "master"));
    const sel = $("#tenant-select");
    sel.innerHTML = '<option value="">All tenants</option>' + me.tenants.map((t) => `<option>${esc(t)}</option>`).join("");
    sel.value = tenant;
    route();
  }
  $("#login-form").addEventListener("submit", async (e) => {
    e.preventDefault();
    $("#login-error").textContent = "";
    try { await signIn($("#key").value.trim()); } catch (err) { $("#login-error").textContent = err.message; }
  });
  $("#logout").addEventListener("click", () => { sessionStorage.removeItem(KEY); location.hash = ""; location.reload(); });
  $("#tenant-select").addEventListener("change", (e) => { tenant = e.target.value; route(); });
  window.addEventListener("hashchange", route);

  function route() {
    if (!me) return;
    const parts = (location.hash.replace(/^#\/?/, "").split("?")[0] || "overview").split("/");
    const page = parts[0];
    document.querySelectorAll("#nav a").forEach((a) => a.classList.toggle("active", a.dataset.page === page));
    const main = $("#main");
    const n = (renders += 1);
    main.dataset.ready = "0";
    main.innerHTML = '<div class="loading muted">Loading…</div>';
    const fn = PAGES[page] || PAGES.overview;
    // data-render/data-ready let tests (and people with slow links) tell a finished page from the previous one
    const done = () => { if (n === renders) { main.dataset.render = String(n); main.dataset.ready = "1"; } };
    fn(main, parts.slice(1)).then(done, (e) => { main.innerHTML = `<div class="notice bad">${esc(e.message)}</div>`; done(); });
  }

  function table(cols, rows, opts) {
    opts = opts || {};
    const head = cols.map((c) => `<th class="${c.num ? "num" : ""}">${esc(c.label)}</th>`).join("");
    const body = rows.map((r, i) => `<tr class="${opts.onclick ? "clickable" : ""}" data-i="${i}">` +
      cols.map((c) => `<td class="${c.num ? "num" : ""}">${c.html ? c.html(r) : esc(c.fmt ? c.fmt(r[c.key], r) : r[c.key])}</td>`).join("") +
      "</tr>").join("");
    const wrap = document.createElement("div");
    wrap.className = "table-wrap";
    wrap.innerHTML = `<table><thead><tr>${head}</tr></thead><tbody>${body || `<tr><td colspan="${cols.length}" class="empty">Nothing here yet.</td></tr>`}</tbody></table>`;
    if (opts.onclick) wrap.querySelectorAll("tbody tr[data-i]").forEach((tr) => tr.addEventListener("click", () => opts.onclick(rows[+tr.dataset.i])));
    return wrap;
  }
  function numbers(parent, node) {
    const d = document.createElement("details");
    d.className = "numbers";
    d.innerHTML = "<summary>Show the numbers</summary>";
    d.appendChild(node);
    parent.appendChild(d);
  }
  function card(parent, title, cls) {
    const c = document.createElement("section");
    c.className = "card " + (cls || "");
    if (title) c.innerHTML = `<h2>${esc(title)}</h2>`;
    parent.appendChild(c);
    return c;
  }
  function kpi(parent, label, value, sub, attrs) {
    const c = card(parent, "", "kpi flex1");
    c.innerHTML = `<div class="label">${esc(label)}</div><div class="value ${attrs && attrs.cls || ""}">${esc(value)}</div><div class="sub">${sub || ""}</div>`;
    if (attrs) for (const k in attrs) if (k !== "cls") c.setAttribute(k, attrs[k]);
    return c;
  }
  function div(parent, cls) { const d = document.createElement("div"); d.className = cls || ""; parent.appendChild(d); return d; }
  function budgetBar(b) {
    const used = b.limit_usd > 0 ? (b.spent_usd + b.reserved_usd) / b.limit_usd : 0;
    const cls = used >= 1 ? "bad" : b.soft_pct && used * 100 >= b.soft_pct ? "warn" : used >= 0.8 ? "warn" : "";
    return `<div class="bar-track" title="${(used * 100).toFixed(1)}%"><div class="bar-fill ${cls}" style="width:${Math.min(100, used * 100).toFixed(1)}%"></div></div>`;
  }
  function statusPill(s) {
    const cls = s === "ok" ? "ok" : s && s.startsWith("refused") ? "warn" : s === "cancelled" ? "warn" : "bad";
    return `<span class="pill ${cls}">${esc(s)}</span>`;
  }

  // ---- pages ---------------------------------------------------------------------------------
  const PAGES = {};

  const RANGES = [["24h", "24 hours"], ["7d", "7 days"], ["30d", "30 days"], ["90d", "90 days"]];
  function hashParam(name, dflt) { return new URLSearchParams(location.hash.split("?")[1] || "").get(name) || dflt; }
  function rangePicker(main, page, since) {
    const bar = div(main, "toolbar");
    bar.innerHTML = "<label>Range</label>" + RANGES.map(([v, l]) =>
      `<button class="${v === since ? "active" : ""}" data-since="${v}">${l}</button>`).join("");
    bar.querySelectorAll("[data-since]").forEach((b) => b.addEventListener("click", () => (location.hash = `#/${page}?since=${b.dataset.since}`)));
  }

  PAGES.overview = async (main) => {
    const since = hashParam("since", "30d");
    const o = await api("/ui/api/overview" + q({ since }));
    const label = (RANGES.find((r) => r[0] === since) || [since, since])[1];
    main.innerHTML = `<h1>Overview <span class="muted small">${esc(tenant || (me.role === "master" ? "all tenants" : me.tenant))} · last ${esc(label)}</span></h1>`;
    rangePicker(main, "overview", since);
    const row = div(main, "row");
    const monthBudget = o.budgets.filter((b) => b.period === "month" && /^tenant:[^:]+$/.test(b.scope));
    const dayBudget = o.budgets.filter((b) => b.period === "day" && /^tenant:[^:]+$/.test(b.scope));
    const sumLimit = (bs) => bs.reduce((a, b) => a + b.limit_usd, 0);
    const of = (bs, what) => (!bs.length ? `no ${what} tenant budget` : bs.length === 1 && o.tenants.length === 1 ?
      `of ${usd(sumLimit(bs))} ${what} budget` : `${bs.length} of ${o.tenants.length} tenants have ${what} budgets (${usd(sumLimit(bs))})`);
    kpi(row, "Spend today", usd(o.spend_usd.day), of(dayBudget, "daily"),
      { "data-kpi": "spend-today", "data-usd": o.spend_usd.day });
    kpi(row, "Spend this month", usd(o.spend_usd.month), of(monthBudget, "monthly"),
      { "data-kpi": "spend-month", "data-usd": o.spend_usd.month });
    kpi(row, "Saved vs top tier (estimated)", usd(o.savings.estimated_usd),
      `${pct(o.savings.estimated_pct)} of ${usd(o.totals.counterfactual_usd)} on ${esc(me.top_tier)}` +
      (o.savings.measured && o.savings.measured.by_tier.length ? " · measured: " + o.savings.measured.by_tier.map((t) =>
        `${esc(t.tier)} ${pct(t.savings_pct)} (n=${t.samples})`).join(", ") : " · measured: not sampled"),
      { "data-kpi": "savings", "data-usd": o.savings.estimated_usd, cls: "good" });
    kpi(row, "Requests", num(o.totals.requests), `avg ${usd(o.totals.avg_cost_usd)} / request`,
      { "data-kpi": "requests", "data-n": o.totals.requests });
    kpi(row, "Refusals", num(o.refusals.total),
      Object.entries(o.refusals.by_reason).map(([k, v]) => `${esc(k)}: ${v}`).join(" · ") || "none recorded",
      { "data-kpi": "refusals", "data-n": o.refusals.total });

    const g = div(main, "grid2");
    const order = (t) => { const i = me.tiers.indexOf(t); return i < 0 ? 99 : i; };
    o.by_tier.sort((a, b) => order(a.tier) - order(b.tier));
    const c1 = card(g, "Requests by tier");
    const ch1 = div(c1);
    Charts.hbars(ch1, { items: o.by_tier.map((r) => ({ name: r.tier, value: r.requests })), format: num });
    const c2 = card(g, "Cost vs top-tier cost, by tier");
    const ch2 = div(c2);
    Charts.stackedBars(ch2, { labels: o.by_tier.map((r) => r.tier), height: 200, format: usdAxis,
      series: [{ name: "actual cost", values: o.by_tier.map((r) => r.cost_usd) },
        { name: "saved vs " + me.top_tier, values: o.by_tier.map((r) => Math.max(0, r.savings_usd)) }] });
    const tcols = [{ key: "tier", label: "Tier" }, { key: "requests", label: "Requests", num: true, fmt: num },
      { key: "cost_usd", label: "Cost", num: true, fmt: usd }, { key: "avg_cost_usd", label: "Avg", num: true, fmt: usd },
      { key: "counterfactual_usd", label: "On top tier", num: true, fmt: usd }, { key: "savings_usd", label: "Saved", num: true, fmt: usd },
      { key: "savings_pct", label: "Saved %", num: true, fmt: pct }, { key: "quality", label: "Quality", num: true, fmt: (v) => (v == null ? "—" : v.toFixed(2)) },
      { key: "cost_per_quality_usd", label: "$/quality", num: true, fmt: usd }];
    numbers(c1, table(tcols, o.by_tier));

    const c3 = card(main, "Budgets");
    c3.appendChild(table([{ key: "scope", label: "Scope" }, { key: "period", label: "Period" }, { key: "mode", label: "Mode" },
      { key: "limit_usd", label: "Limit", num: true, fmt: usd }, { key: "spent_usd", label: "Spent", num: true, fmt: usd },
      { key: "reserved_usd", label: "Held", num: true, fmt: usd }, { key: "remaining_usd", label: "Remaining", num: true, fmt: usd },
      { label: "Used", html: budgetBar }], o.budgets));
  };

  PAGES.spend = async (main) => {
    const p = new URLSearchParams(location.hash.split("?")[1] || "");
    const by = p.get("by") || "tier", since = p.get("since") || "30d", until = p.get("until") || "";
    main.innerHTML = "<h1>Spend over time</h1>";
    const bar = div(main, "toolbar");
    bar.innerHTML = `<label>Split by</label><select id="s-by">${["tier", "model", "tenant", "key"].map((b) => `<option ${b === by ? "selected" : ""}>${b}</option>`).join("")}</select>
      <label>From</label><input id="s-since" type="date" value="${/^\d{4}-\d{2}-\d{2}$/.test(since) ? esc(since) : ""}">
      <label>To</label><input id="s-until" type="date" value="${esc(until)}">
      <button id="s-go" class="primary">Apply</button>
      ${["7d", "30d", "90d"].map((r) => `<button data-range="${r}" class="${r === since ? "active" : ""}">Last ${r.replace("d", " days")}</button>`).join("")}`;
    const go = (s, u) => (location.hash = "#/spend?" + new URLSearchParams({ by: $("#s-by").value, since: s, until: u }));
    $("#s-go").addEventListener("click", () => go($("#s-since").value || since, $("#s-until").value));
    $("#s-by").addEventListener("change", () => go(since, until));
    bar.querySelectorAll("[data-range]").forEach((b) => b.addEventListener("click", () => go(b.dataset.range, "")));
    const d = await api("/ui/api/spend" + q({ by, since, until }));
    const c = card(main, `Cost per day by ${by} · total ${usd(d.total_cost_usd)} over ${num(d.total_requests)} requests`);
    c.setAttribute("data-total-usd", d.total_cost_usd);
    const ch = div(c);
    Charts.stackedBars(ch, { labels: d.days.map((x) => x.slice(5)), series: d.series.map((s) => ({ name: s.name, values: s.cost_usd })), format: usdAxis });
    const cols = [{ key: "name", label: by }, { key: "total_requests", label: "Requests", num: true, fmt: num },
      { key: "total_cost_usd", label: "Cost", num: true, fmt: usd }];
    const rows = d.series.slice().sort((a, b) => b.total_cost_usd - a.total_cost_usd);
    const byDay = d.days.map((day, i) => ({ day, cost: d.series.reduce((a, s) => a + s.cost_usd[i], 0), n: d.series.reduce((a, s) => a + s.requests[i], 0) })).filter((r) => r.n);
    c.appendChild(table(cols, rows));
    numbers(c, table([{ key: "day", label: "Day" }, { key: "n", label: "Requests", num: true, fmt: num }, { key: "cost", label: "Cost", num: true, fmt: usd }], byDay));
  };

  PAGES.budgets = async (main) => {
    const d = await api("/ui/api/budgets" + q());
    main.innerHTML = "<h1>Budgets</h1>";
    if (!d.data.length) { main.innerHTML += '<div class="card empty">No budgets set.' + (me.role === "master" ? ' Set one under <a href="#/keys">Keys &amp; budgets</a>.' : "") + "</div>"; return; }
    const g = div(main, "grid2");
    d.data.forEach((b) => {
      const pr = b.projection;
      const c = card(g, b.scope);
      c.setAttribute("data-scope", b.scope);
      if (b.key_tenant) c.querySelector("h2").innerHTML += ` <span class="muted small">${esc(b.key_tenant)}${b.key_label ? " · " + esc(b.key_label) : ""}</span>`;
      const state = b.spent_usd >= b.limit_usd ? '<span class="pill bad">exhausted</span>' :
        pr.exhausts_early ? `<span class="pill warn">runs out ${esc(pr.run_out_at.replace("T", " ").slice(0, 16))} UTC</span>` :
          '<span class="pill ok">on track</span>';
      c.innerHTML += `<div class="muted small">${esc(b.period)} · ${esc(b.mode)}${b.soft_pct ? ` · warn at ${b.soft_pct}%` : ""} · ${state}</div>
        <div class="kv" style="margin:10px 0"><div>Spent / limit</div><div><b data-usd="${b.spent_usd}">${usd(b.spent_usd)}</b> of ${usd(b.limit_usd)} (${pct(b.limit_usd ? 100 * b.spent_usd / b.limit_usd : null)})</div>
        <div>Held in flight</div><div>${usd(b.reserved_usd)}</div><div>Remaining</div><div>${usd(b.remaining_usd)}</div>
        <div>Projected at period end</div><div>${pr.projected_usd == null ? "—" : usd(pr.projected_usd)}</div></div>`;
      const ch = div(c);
      const labels = b.days.map((x) => x.slice(5));
      const lines = [{ name: "spent (cumulative)", values: b.cumulative_usd, color: "#3056d3" }];
      if (pr.projected_usd != null && pr.period_end) {
        const end = pr.period_end.slice(0, 10);
        const last = b.days[b.days.length - 1];
        const nDays = Math.round((Date.parse(end) - Date.parse(last)) / 86400000);
        for (let i = 1; i < nDays; i++) labels.push(new Date(Date.parse(last) + i * 86400000).toISOString().slice(5, 10));
        if (nDays > 1) labels.push("end");
        const proj = b.cumulative_usd.map((_, i) => (i === b.cumulative_usd.length - 1 ? b.spent_usd : null));
        while (proj.length < labels.length) proj.push(null);
        proj[proj.length - 1] = pr.projected_usd;
        lines.push({ name: "projection at current rate", values: proj, dashed: true, color: "#d98e04" });
        if (nDays <= 1) { labels.push("end"); lines[1].values.push(pr.projected_usd); lines[1].values[labels.length - 2] = b.spent_usd; }
      }
      Charts.lines(ch, { labels, lines, hlines: [{ value: b.limit_usd, label: "limit " + usd(b.limit_usd), color: "#d64545" }], format: usdAxis, height: 200 });
    });
  };

  PAGES.routing = async (main) => {
    const since = hashParam("since", "30d");
    const d = await api("/ui/api/routing" + q({ since }));
    main.innerHTML = `<h1>Routing <span class="muted small">classifier ${esc(d.classifier.version)} · thresholds ${esc(Object.entries(d.classifier.thresholds).map(([k, v]) => `${k} ≥ ${(+v).toFixed(2)}`).join(", "))}</span></h1>`;
    rangePicker(main, "routing", since);
    const tiers = me.tiers;
    const buckets = [...new Set(d.cells.map((c) => c.bucket))].sort();
    const c1 = card(main, "Tier mix by complexity bucket");
    const ch = div(c1);
    Charts.mix(ch, { keys: tiers, rows: buckets.map((b) => ({ name: b, values: Object.fromEntries(d.cells.filter((c) => c.bucket === b).map((c) => [c.tier, c.requests])) })) });
    const c2 = card(main, "Cost per unit of rated quality, tier × complexity");
    const cell = (b, t) => d.cells.find((c) => c.bucket === b && c.tier === t);
    const rows = buckets.map((b) => Object.assign({ bucket: b }, Object.fromEntries(tiers.map((t) => [t, cell(b, t)]))));
    c2.appendChild(table([{ key: "bucket", label: "Complexity" }].concat(tiers.map((t) => ({ label: t, num: true,
      html: (r) => { const c = r[t]; if (!c) return '<span class="muted">—</span>'; return c.cost_per_quality_usd == null ? `<span class="muted">${num(c.requests)} req · unrated</span>` : `${usd(c.cost_per_quality_usd)} <span class="muted small">q ${c.quality.toFixed(2)} · ${c.rated} rated</span>`; } }))), rows));
    if (d.measured) {
      const c3 = card(main, `Measured on shadow runs (${num(d.measured.evaluations)} sampled, ${usd(d.measured.evaluation_cost_usd)} spent measuring)`);
      c3.appendChild(table([{ key: "tier", label: "Served tier" }, { key: "samples", label: "Samples", num: true, fmt: num },
        { key: "served_cost_usd", label: "Served cost", num: true, fmt: usd }, { key: "top_tier_cost_usd", label: "Top tier cost", num: true, fmt: usd },
        { key: "savings_pct", label: "Saved %", num: true, fmt: pct },
        { label: "Saving / request (95% CI)", num: true, html: (t) => `${usd(t.saving_per_request_usd)}${t.saving_per_request_ci95_usd ? ` <span class="muted small">[${usd(t.saving_per_request_ci95_usd[0])}, ${usd(t.saving_per_request_ci95_usd[1])}]</span>` : ""}` }],
      d.measured.by_tier));
      numbers(c3, table([{ key: "complexity", label: "Bucket" }, { key: "tier", label: "Tier" }, { key: "runs", label: "Runs", num: true },
        { key: "avg_cost_usd", label: "Avg cost", num: true, fmt: usd }, { key: "quality", label: "Measured quality", num: true, fmt: (x) => (x == null ? "—" : x.toFixed(3)) },
        { key: "judged", label: "Judged", num: true }], d.measured.by_tier_complexity));
    }
    numbers(c2, table([{ key: "bucket", label: "Bucket" }, { key: "tier", label: "Tier" }, { key: "requests", label: "Requests", num: true, fmt: num },
      { key: "cost_usd", label: "Cost", num: true, fmt: usd }, { key: "rated", label: "Rated", num: true }, { key: "quality", label: "Quality", num: true, fmt: (v) => (v == null ? "—" : v.toFixed(3)) },
      { key: "cost_per_quality_usd", label: "$/quality", num: true, fmt: usd }], d.cells));
  };

  PAGES.requests = async (main, rest) => {
    if (rest[0]) return detail(main, decodeURIComponent(rest[0]), hashParam("tenant", ""));
    const p = new URLSearchParams(location.hash.split("?")[1] || "");
    const f = {}; ["key_id", "tier", "model", "status", "since", "until"].forEach((k) => (f[k] = p.get(k) || ""));
    const kind = p.get("kind") || "";
    main.innerHTML = "<h1>Requests</h1>";
    const bar = div(main, "toolbar");
    bar.innerHTML = `<select data-f="kind"><option value="">requests</option><option value="refusal" ${kind === "refusal" ? "selected" : ""}>refusals</option></select>` +
      Object.keys(f).map((k) => `<label>${k.replace("_id", "")}</label><input data-f="${k}" value="${esc(f[k])}" size="${k === "key_id" ? 18 : 9}">`).join("") +
      '<button id="r-go" class="primary">Filter</button>';
    f.kind = kind;
    $("#r-go").addEventListener("click", () => {
      const n = {}; bar.querySelectorAll("input, select").forEach((i) => { if (i.value) n[i.dataset.f] = i.value; });
      location.hash = "#/requests?" + new URLSearchParams(n);
    });
    const d = await api("/ui/api/requests" + q(Object.assign({ limit: 200 }, f)));
    const c = card(main, `${d.data.length} most recent`);
    c.appendChild(table([{ key: "ts", label: "Time (UTC)", fmt: when }, { key: "tenant", label: "Tenant" }, { key: "key_id", label: "Key" },
      { key: "tier", label: "Tier" }, { key: "model", label: "Model" }, { key: "complexity", label: "Cx", num: true, fmt: (v) => (v == null ? "—" : v.toFixed(2)) },
      { label: "Status", html: (r) => statusPill(r.status) }, { key: "prompt_tokens", label: "In", num: true, fmt: num },
      { key: "completion_tokens", label: "Out", num: true, fmt: num }, { key: "calls", label: "Calls", num: true },
      { key: "cost_usd", label: "Cost", num: true, fmt: usd }, { key: "latency_ms", label: "ms", num: true, fmt: (v) => (v == null ? "—" : v.toFixed(0)) }],
    d.data, { onclick: (r) => r.kind === "refusal" ? null : (location.hash = "#/requests/" + encodeURIComponent(r.request_id) + (me.role === "master" ? "?tenant=" + encodeURIComponent(r.tenant) : "")) }));
  };

  async function detail(main, rid, owner) {
    const r = await api("/ui/api/requests/" + encodeURIComponent(rid) + (owner && me.role === "master" ? "?tenant=" + encodeURIComponent(owner) : q()));
    const dec = r.decision || {};
    main.innerHTML = `<h1><a href="#/requests">Requests</a> / <span class="mono">${esc(r.request_id)}</span></h1>`;
    const g = div(main, "grid2");
    const c1 = card(g, "Request");
    c1.innerHTML += `<div class="kv">
      <div>Time (UTC)</div><div>${when(r.ts)}</div><div>Tenant / key</div><div>${esc(r.tenant)} · <span class="mono">${esc(r.key_id)}</span></div>
      <div>Asked for</div><div class="mono">${esc(r.virtual_model)}</div><div>Tier → model</div><div><b>${esc(r.tier)}</b> → ${esc(r.model)}</div>
      <div>Status</div><div>${statusPill(r.status)}${r.partial ? ' <span class="pill warn">partial</span>' : ""}${r.estimated ? ' <span class="pill warn">usage estimated</span>' : ""}</div>
      <div>Cost</div><div><b data-usd="${r.cost_usd}">${usd(r.cost_usd)}</b> <span class="muted">(on top tier ${usd(r.counterfactual_cost_usd)})</span></div>
      <div>Latency</div><div>${r.latency_ms == null ? "—" : r.latency_ms.toFixed(0) + " ms"}${r.ttft_ms != null ? ` · first token ${r.ttft_ms.toFixed(0)} ms` : ""}</div>
      <div>Feedback</div><div>${r.quality == null ? '<span class="muted">not rated</span>' : `quality ${r.quality.toFixed(2)}`}${r.comment ? ` · “${esc(r.comment)}”` : ""}</div>
      ${r.prompt ? `<div>Prompt</div><div>${esc(r.prompt)}</div>` : ""}</div>`;
    const c2 = card(g, "Decision");
    c2.innerHTML += `<div class="kv"><div>Complexity</div><div>${r.complexity == null ? "—" : r.complexity.toFixed(3)}</div>
      <div>Reason</div><div>${esc(r.reason)}</div>${dec.outcome ? `<div>Outcome</div><div>${esc(typeof dec.outcome === "object" ? Object.entries(dec.outcome).map(([k, v]) => `${k}: ${typeof v === "object" ? JSON.stringify(v) : v}`).join(" · ") : dec.outcome)}</div>` : ""}<div>Cost cap</div><div>${dec.cap_usd == null ? "none" : usd(dec.cap_usd)}</div>
      <div>Knobs</div><div>${Object.entries(dec.knobs || {}).map(([k, v]) => `<span class="knob">${esc(k)} ${esc(typeof v === "number" && !Number.isInteger(v) ? +v.toPrecision(4) : v)}</span>`).join("")}</div></div>`;
    c2.appendChild(table([{ key: "tier", label: "Plan tier" }, { key: "model", label: "Model" }, { key: "estimate_usd", label: "Estimate", num: true, fmt: usd },
      { label: "", html: (p) => (p.i === dec.admitted_index ? '<span class="pill ok">admitted</span>' : "") }],
    (dec.candidates || []).map((p, i) => Object.assign({ i }, p))));
    if ((dec.rejected || []).length) { const pre = document.createElement("pre"); pre.className = "json"; pre.textContent = "rejected: " + JSON.stringify(dec.rejected, null, 1); c2.appendChild(pre); }
    const c3 = card(main, "Upstream calls");
    c3.appendChild(table([{ key: "model", label: "Model" }, { key: "hop", label: "Hop" }, { label: "Status", html: (c) => statusPill(c.status) },
      { key: "prompt_tokens", label: "Prompt", num: true, fmt: num }, { key: "cached_tokens", label: "Cached", num: true, fmt: num },
      { key: "completion_tokens", label: "Completion", num: true, fmt: num }, { key: "reasoning_tokens", label: "Reasoning", num: true, fmt: num },
      { key: "latency_ms", label: "ms", num: true, fmt: (v) => (v == null ? "—" : v.toFixed(0)) }, { key: "cost_usd", label: "Cost", num: true, fmt: usd }], r.calls || []));
  }

  PAGES.keys = async (main) => {
    if (me.role !== "master") { main.innerHTML = '<div class="notice bad">Keys and budgets need the master key.</div>'; return; }
    const [keys, budgets] = await Promise.all([api("/admin/keys" + (tenant ? "?tenant=" + encodeURIComponent(tenant) : "")), api("/admin/budgets")]);
    main.innerHTML = "<h1>Keys &amp; budgets</h1><div id=\"k-msg\"></div>";
    const msg = (html, bad) => { $("#k-msg").innerHTML = `<div class="notice ${bad ? "bad" : ""}">${html}</div>`; };
    const c1 = card(main, "Create a key");
    c1.innerHTML += `<form id="k-form" class="form-grid">
      <label>Tenant<input name="tenant" required value="${esc(tenant)}"></label><label>Label<input name="label"></label>
      <label>Budget (USD)<input name="budget_usd" type="number" step="any" min="0"></label>
      <label>Period<select name="period"><option>month</option><option>day</option><option>total</option></select></label>
      <label>Max cost / query<input name="max_cost_per_query" type="number" step="any" min="0"></label>
      <button class="primary" type="submit">Create key</button></form>`;
    $("#k-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const fd = new FormData(e.target), body = {};
      for (const [k, v] of fd.entries()) if (v !== "") body[k] = ["budget_usd", "max_cost_per_query"].includes(k) ? Number(v) : v;
      try {
        const r = await api("/admin/keys", { method: "POST", json: body });
        await PAGES.keys(main);
        msg(`Key created for <b>${esc(r.tenant)}</b>. Copy it now, it is not shown again:<br><span class="secret" id="new-key">${esc(r.key)}</span>`);
      } catch (err) { msg(esc(err.message), true); }
    });
    const c2 = card(main, "Keys");
    c2.appendChild(table([{ key: "key_id", label: "Key id", fmt: (v) => v }, { key: "prefix", label: "Starts with" }, { key: "tenant", label: "Tenant" },
      { key: "label", label: "Label" }, { key: "created_at", label: "Created" }, { key: "max_cost_per_query", label: "Max / query", num: true, fmt: usd },
      { label: "", html: (k) => (k.revoked ? '<span class="pill bad">revoked</span>' : `<button class="danger" data-revoke="${esc(k.key_id)}">Revoke</button>`) }], keys.data));
    c2.querySelectorAll("[data-revoke]").forEach((b) => b.addEventListener("click", async (e) => {
      e.stopPropagation();
      if (!confirm("Revoke key " + b.dataset.revoke + "? Clients using it are refused at once.")) return;
      try { await api("/admin/keys/" + encodeURIComponent(b.dataset.revoke), { method: "DELETE" }); await PAGES.keys(main); msg("Key revoked."); } catch (err) { msg(esc(err.message), true); }
    }));
    const c3 = card(main, "Set a budget");
    c3.innerHTML += `<form id="b-form" class="form-grid">
      <label>Scope<input name="scope" placeholder="tenant:acme or key:k_… [:tier:X|:model:Y]" required></label>
      <label>Limit (USD)<input name="limit_usd" type="number" step="any" required></label>
      <label>Period<select name="period"><option>month</option><option>day</option><option>total</option></select></label>
      <label>Mode<select name="mode"><option>hard</option><option>soft</option></select></label>
      <label>Warn at %<input name="soft_pct" type="number" step="any"></label>
      <button class="primary" type="submit">Save budget</button></form>`;
    $("#b-form").addEventListener("submit", async (e) => {
      e.preventDefault();
      const fd = new FormData(e.target), body = {};
      for (const [k, v] of fd.entries()) if (v !== "") body[k] = ["limit_usd", "soft_pct"].includes(k) ? Number(v) : v;
      try { const r = await api("/admin/budgets", { method: "PUT", json: body }); await PAGES.keys(main); msg(`Budget saved for <b>${esc(r.scope)}</b>.`); } catch (err) { msg(esc(err.message), true); }
    });
    const c4 = card(main, "Budgets");
    c4.appendChild(table([{ key: "scope", label: "Scope" }, { key: "period", label: "Period" }, { key: "mode", label: "Mode" },
      { key: "limit_usd", label: "Limit", num: true, fmt: usd }, { key: "spent_usd", label: "Spent", num: true, fmt: usd },
      { key: "remaining_usd", label: "Remaining", num: true, fmt: usd }, { label: "Used", html: budgetBar },
      { label: "", html: (b) => `<button class="danger" data-del="${esc(b.scope)}">Delete</button>` }], budgets.data));
    c4.querySelectorAll("[data-del]").forEach((b) => b.addEventListener("click", async () => {
      if (!confirm("Delete the budget on " + b.dataset.del + "?")) return;
      try { await api("/admin/budgets?scope=" + encodeURIComponent(b.dataset.del), { method: "DELETE" }); await PAGES.keys(main); msg("Budget deleted."); } catch (err) { msg(esc(err.message), true); }
    }));
  };

  // ---- start ---------------------------------------------------------------------------------
  const saved = sessionStorage.getItem(KEY);
  if (saved) signIn(saved).catch(() => $("#login").classList.remove("hidden"));
  else $("#login").classList.remove("hidden");
})();
