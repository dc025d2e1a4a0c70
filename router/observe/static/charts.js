/* Tiny SVG charts for the Triage dashboard: stacked bars, lines, horizontal bars. No dependencies. */
"use strict";
(function () {
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#3056d3", "#1f9d55", "#d98e04", "#8e44ad", "#d64545", "#16a2b8", "#6c757d", "#e67e22",
    "#2c3e50", "#c0392b", "#27ae60", "#7f8c8d"];
  const TIER_COLORS = { fast: "#1f9d55", cascade: "#16a2b8", reasoning: "#3056d3", deliberate: "#8e44ad", passthrough: "#6c757d" };

  function color(name, i) { return TIER_COLORS[name] || PALETTE[i % PALETTE.length]; }

  function el(tag, attrs, parent) {
    const n = document.createElementNS(NS, tag);
    for (const k in attrs || {}) n.setAttribute(k, attrs[k]);
    if (parent) parent.appendChild(n);
    return n;
  }

  function niceStep(v) {
    const p = Math.pow(10, Math.floor(Math.log10(v)));
    for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v * (1 - 1e-9)) return m * p;
    return 10 * p;
  }
  /** Axis top and tick count: round steps (1, 2, 2.5, 5 x 10^n) with the least headroom. */
  function scale(v) {
    if (!(v > 0)) return { max: 1, ticks: 4 };
    let best = null;
    for (const t of [4, 5, 6]) {
      const max = niceStep(v / t) * t;
      if (!best || max < best.max - 1e-12) best = { max, ticks: t };
    }
    return best;
  }
  function niceMax(v) { return scale(v).max; }

  function tip(node, text) {
    node.setAttribute("data-tip", text);
    node.addEventListener("mousemove", (e) => {
      const t = document.getElementById("tooltip");
      t.textContent = text;
      t.classList.remove("hidden");
      t.style.left = (e.clientX + 12) + "px";
      t.style.top = (e.clientY + 12) + "px";
    });
    node.addEventListener("mouseleave", () => document.getElementById("tooltip").classList.add("hidden"));
  }

  function frame(container, height) {
    container.innerHTML = "";
    const width = Math.max(container.clientWidth || 600, 320);
    const svg = el("svg", { class: "chart", viewBox: `0 0 ${width} ${height}`, width: width, height: height,
      role: "img" }, container);
    return { svg, width, height, m: { l: 64, r: 16, t: 10, b: 28 } };
  }

  function yAxis(f, max, fmt) {
    const g = el("g", { class: "grid" }, f.svg);
    const ih = f.height - f.m.t - f.m.b;
    const n = scale(max).ticks;
    for (let i = 0; i <= n; i++) {
      const y = f.m.t + ih - (ih * i) / n;
      el("line", { x1: f.m.l, x2: f.width - f.m.r, y1: y, y2: y }, g);
      const t = el("text", { x: f.m.l - 6, y: y + 4, "text-anchor": "end" }, g);
      t.textContent = fmt((max * i) / n);
    }
  }

  function legend(container, names) {
    const d = document.createElement("div");
    d.className = "legend";
    names.forEach((n, i) => {
      const s = document.createElement("span");
      const sw = document.createElement("i");
      sw.style.background = typeof n === "object" ? n.color : color(n, i);
      s.appendChild(sw);
      s.appendChild(document.createTextNode(typeof n === "object" ? n.name : n));
      d.appendChild(s);
    });
    container.appendChild(d);
  }

  function xLabels(f, labels, xAt) {
    const every = Math.max(1, Math.ceil(labels.length / Math.floor((f.width - f.m.l) / 70)));
    labels.forEach((lab, i) => {
      if (i % every) return;
      const t = el("text", { x: xAt(i), y: f.height - 8, "text-anchor": "middle" }, f.svg);
      t.textContent = lab;
    });
  }

  /** Stacked vertical bars: labels on x, one segment per series. */
  function stackedBars(container, o) {
    const height = o.height || 280;
    if (!o.labels.length || !o.series.length) { container.innerHTML = '<div class="empty">No data in this range.</div>'; return; }
    const f = frame(container, height);
    const totals = o.labels.map((_, i) => o.series.reduce((a, s) => a + (s.values[i] || 0), 0));
    const max = niceMax(Math.max(...totals));
    yAxis(f, max, o.format);
    const iw = f.width - f.m.l - f.m.r, ih = height - f.m.t - f.m.b;
    const step = iw / o.labels.length, bw = Math.max(2, Math.min(48, step * 0.7));
    const xAt = (i) => f.m.l + step * i + step / 2;
    let n = 0;
    o.labels.forEach((lab, i) => {
      let y = f.m.t + ih;
      o.series.forEach((s, j) => {
        const v = s.values[i] || 0;
        if (v <= 0) return;
        const h = (v / max) * ih;
        y -= h;
        const r = el("rect", { class: "seg", x: xAt(i) - bw / 2, y: y, width: bw, height: Math.max(h, 0.5),
          fill: color(s.name, j), "data-series": s.name, "data-value": v }, f.svg);
        tip(r, `${lab}\n${s.name}: ${o.format(v)}`);
        n++;
      });
    });
    f.svg.setAttribute("data-points", n);
    xLabels(f, o.labels, xAt);
    legend(container, o.series.map((s) => s.name));
  }

  /** Lines over labelled x positions; `hlines` are horizontal reference lines (a budget limit). */
  function lines(container, o) {
    const height = o.height || 240;
    const f = frame(container, height);
    const all = o.lines.flatMap((l) => l.values.filter((v) => v != null));
    (o.hlines || []).forEach((h) => all.push(h.value));
    const max = niceMax(Math.max(0, ...all) * 1.05);
    yAxis(f, max, o.format);
    const iw = f.width - f.m.l - f.m.r, ih = height - f.m.t - f.m.b;
    const n = Math.max(o.labels.length - 1, 1);
    const xAt = (i) => f.m.l + (iw * i) / n;
    const yAt = (v) => f.m.t + ih - (v / max) * ih;
    let pts = 0;
    (o.hlines || []).forEach((h) => {
      el("line", { x1: f.m.l, x2: f.width - f.m.r, y1: yAt(h.value), y2: yAt(h.value), stroke: h.color,
        "stroke-width": 1.5, "stroke-dasharray": "2 3" }, f.svg);
      const t = el("text", { x: f.width - f.m.r, y: yAt(h.value) - 4, "text-anchor": "end" }, f.svg);
      t.textContent = h.label;
    });
    o.lines.forEach((l, j) => {
      const c = l.color || color(l.name, j);
      const d = [];
      l.values.forEach((v, i) => { if (v != null) d.push(`${d.length ? "L" : "M"}${xAt(i).toFixed(1)},${yAt(v).toFixed(1)}`); });
      if (!d.length) return;
      el("path", { d: d.join(" "), fill: "none", stroke: c, "stroke-width": 2,
        "stroke-dasharray": l.dashed ? "6 4" : "none", "data-series": l.name }, f.svg);
      l.values.forEach((v, i) => {
        if (v == null || (l.dashed && i !== l.values.length - 1)) return;
        const dot = el("circle", { cx: xAt(i), cy: yAt(v), r: 3, fill: c, "data-value": v }, f.svg);
        tip(dot, `${o.labels[i]}\n${l.name}: ${o.format(v)}`);
        pts++;
      });
    });
    f.svg.setAttribute("data-points", pts);
    xLabels(f, o.labels, xAt);
    legend(container, o.lines.map((l, j) => ({ name: l.name, color: l.color || color(l.name, j) }))
      .concat((o.hlines || []).map((h) => ({ name: h.label, color: h.color }))));
  }

  /** Horizontal bars, one per item; optional second label on the right. */
  function hbars(container, o) {
    if (!o.items.length) { container.innerHTML = '<div class="empty">No data yet.</div>'; return; }
    const rowH = 30, height = o.items.length * rowH + 10;
    const f = frame(container, height);
    const lw = 110, iw = f.width - lw - 90;
    const max = niceMax(Math.max(...o.items.map((i) => i.value)));
    o.items.forEach((it, i) => {
      const y = 5 + i * rowH;
      const t = el("text", { x: lw - 8, y: y + 18, "text-anchor": "end" }, f.svg);
      t.textContent = it.name;
      const r = el("rect", { class: "bar", x: lw, y: y + 5, height: 18, rx: 3, width: Math.max(1, (it.value / max) * iw),
        fill: color(it.name, i), "data-value": it.value }, f.svg);
      tip(r, `${it.name}: ${o.format(it.value)}`);
      const v = el("text", { x: lw + Math.max(1, (it.value / max) * iw) + 6, y: y + 18 }, f.svg);
      v.textContent = o.format(it.value);
    });
    f.svg.setAttribute("data-points", o.items.length);
  }

  /** 100%-stacked horizontal bars: one row per group, segments per key (tier mix per complexity). */
  function mix(container, o) {
    if (!o.rows.length) { container.innerHTML = '<div class="empty">No data yet.</div>'; return; }
    const rowH = 26, height = o.rows.length * rowH + 8;
    const f = frame(container, height);
    const lw = 70, iw = f.width - lw - 20;
    let n = 0;
    o.rows.forEach((row, i) => {
      const y = 4 + i * rowH;
      const t = el("text", { x: lw - 8, y: y + 16, "text-anchor": "end" }, f.svg);
      t.textContent = row.name;
      const total = o.keys.reduce((a, k) => a + (row.values[k] || 0), 0) || 1;
      let x = lw;
      o.keys.forEach((k, j) => {
        const v = row.values[k] || 0;
        if (!v) return;
        const w = (v / total) * iw;
        const r = el("rect", { class: "seg", x: x, y: y + 3, width: w, height: 18, fill: color(k, j),
          "data-series": k, "data-value": v }, f.svg);
        tip(r, `complexity ${row.name}\n${k}: ${v} (${((100 * v) / total).toFixed(0)}%)`);
        x += w;
        n++;
      });
    });
    f.svg.setAttribute("data-points", n);
    legend(container, o.keys);
  }

  window.Charts = { stackedBars, lines, hbars, mix, color };
})();
