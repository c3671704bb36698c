// flanmix studio: helpers every page uses (requests with the launch token, tabs, charts drawn as plain SVG).
"use strict";

const Studio = (() => {
  const SVG = "http://www.w3.org/2000/svg";
  const COLORS = ["#3b5bdb", "#e8590c", "#2f9e44", "#ae3ec9", "#1098ad", "#f08c00", "#c2255c", "#5c7cfa"];

  function token() {
    const meta = document.querySelector('meta[name="studio-token"]');
    return meta ? meta.content : "";
  }

  // POST a JSON body (GET without one) and return the JSON answer; a failure becomes {error}.
  async function api(url, body, signal) {
    const init = { headers: { "X-Studio-Token": token() }, signal };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(url, init);
    } catch (err) {
      if (err.name === "AbortError") throw err;
      return { error: "the studio server did not answer (is it still running?)" };
    }
    let data;
    try { data = await res.json(); } catch (_) { data = { error: `HTTP ${res.status}` }; }
    if (!res.ok && !data.error) data.error = `HTTP ${res.status}`;
    return data;
  }

  function debounce(fn, ms) {
    let timer = null;
    return (...args) => { clearTimeout(timer); timer = setTimeout(() => fn(...args), ms); };
  }

  function esc(text) {
    return String(text).replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  function pct(v, digits = 1) { return v == null ? "-" : (v * 100).toFixed(digits) + "%"; }

  function el(tag, attrs = {}, parent = null) {
    const node = document.createElementNS(SVG, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (parent) parent.appendChild(node);
    return node;
  }

  // Variant tabs: the chosen variant survives re-renders (editor preview) and reloads (URL hash).
  let chosenVariant = null;
  function initTabs(root) {
    if (!root) return;
    const buttons = [...root.querySelectorAll(".tabs button[data-variant]")];
    if (!buttons.length) return;
    const wanted = chosenVariant || (location.hash || "").slice(1);
    const first = buttons.find((b) => b.dataset.variant === wanted)
      || buttons.find((b) => !b.classList.contains("unused")) || buttons[0];
    const show = (variant) => {
      chosenVariant = variant;
      for (const b of buttons) b.classList.toggle("on", b.dataset.variant === variant);
      for (const s of root.querySelectorAll("section.variant")) s.hidden = s.dataset.variant !== variant;
    };
    for (const b of buttons) {
      b.addEventListener("click", () => { show(b.dataset.variant); history.replaceState(null, "", "#" + b.dataset.variant); });
    }
    show(first.dataset.variant);
  }

  // Task page: a click on a data row renders the templates on it.
  function initRowPicker() {
    const form = document.getElementById("controls");
    const table = document.getElementById("data");
    if (!form || !table) return;
    table.addEventListener("click", (event) => {
      const tr = event.target.closest("tr[data-row]");
      if (!tr) return;
      form.elements.row.value = tr.dataset.row;
      form.action = location.pathname + location.hash;
      form.submit();
    });
  }

  function relativeTimes() {
    const now = Date.now() / 1000;
    for (const td of document.querySelectorAll("[data-time]")) {
      const s = Math.max(0, now - Number(td.dataset.time));
      td.textContent = s < 60 ? `${Math.round(s)} s ago` : s < 3600 ? `${Math.round(s / 60)} min ago`
        : s < 86400 ? `${Math.round(s / 3600)} h ago` : new Date(Number(td.dataset.time) * 1000).toLocaleDateString();
    }
  }

  // Ablation page: reload when results.md / results.jsonl change (a grid is running).
  function watchAblation(path, updated) {
    setInterval(async () => {
      const data = await api("/api/run?path=" + encodeURIComponent(path));
      if (data.updated && data.updated !== updated) location.reload();
    }, 3000);
  }

  // ---------------------------------------------------------------------------------------------- charts

  // Horizontal bars: items [{name, value, base}] (value: the bold bar; base: the light one behind it).
  function barChart(container, items, opts = {}) {
    container.innerHTML = "";
    if (!items.length) { container.innerHTML = '<p class="muted small">nothing to show</p>'; return; }
    const width = Math.max(320, container.clientWidth || 600);
    const longest = Math.max(...items.map((i) => i.name.length));
    const labelW = Math.min(260, Math.max(80, longest * 7 + 10));
    const valueW = 110, rowH = 20, top = 4;
    const plotW = width - labelW - valueW;
    const max = Math.max(1e-9, ...items.map((i) => Math.max(i.value || 0, i.base || 0)));
    const svg = el("svg", { viewBox: `0 0 ${width} ${top + rowH * items.length + 4}`, role: "img" }, container);
    items.forEach((item, n) => {
      const y = top + n * rowH;
      const label = el("text", { x: labelW - 8, y: y + 14, "text-anchor": "end", class: "mono" }, svg);
      label.textContent = item.name.length > 38 ? item.name.slice(0, 36) + "…" : item.name;
      el("title", {}, label).textContent = item.name;
      if (item.base != null) {
        el("rect", { x: labelW, y: y + 2, width: Math.max(0, plotW * item.base / max), height: rowH - 4, rx: 2,
          fill: "var(--target)", opacity: 0.45 }, svg);
      }
      const bar = el("rect", { x: labelW, y: y + 6, width: Math.max(0, plotW * (item.value || 0) / max), height: rowH - 12,
        rx: 2, fill: "var(--realized)", class: "bar", "data-name": item.name, "data-value": item.value }, svg);
      el("title", {}, bar).textContent = `${item.name}: ${pct(item.value, 2)}` + (item.base != null ? ` (${opts.baseLabel || "file"} ${pct(item.base, 2)})` : "");
      const text = el("text", { x: width - valueW + 8, y: y + 14, class: "value", "data-name": item.name }, svg);
      text.textContent = pct(item.value, 2);
      if (item.base != null && Math.abs(item.value - item.base) >= 0.00005) {
        const d = el("tspan", { fill: item.value > item.base ? "var(--good)" : "var(--bad)", dx: 6 }, text);
        d.textContent = (item.value > item.base ? "+" : "") + ((item.value - item.base) * 100).toFixed(2);
      }
    });
  }

  function niceTicks(lo, hi, count = 5) {
    if (!(hi > lo)) { hi = lo + 1; }
    const raw = (hi - lo) / count;
    const mag = Math.pow(10, Math.floor(Math.log10(raw)));
    const step = [1, 2, 2.5, 5, 10].map((m) => m * mag).find((s) => s >= raw) || raw;
    const ticks = [];
    for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(Number(t.toPrecision(12)));
    return ticks;
  }

  function fmt(v) {
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a >= 1e5 || a < 1e-3) return v.toExponential(1);
    return Number(v.toPrecision(4)).toString();
  }

  // Line chart: series [{name, points: [[x, y], ...]}]; a tooltip follows the mouse.
  function lineChart(container, series, opts = {}) {
    container.innerHTML = "";
    const width = Math.max(320, container.clientWidth || 480), height = opts.height || 220;
    const m = { l: 52, r: 14, t: 10, b: 26 };
    const all = series.flatMap((s) => s.points);
    if (!all.length) { container.innerHTML = '<p class="muted small">no points yet</p>'; return; }
    let [x0, x1] = [Math.min(...all.map((p) => p[0])), Math.max(...all.map((p) => p[0]))];
    let [y0, y1] = [Math.min(...all.map((p) => p[1])), Math.max(...all.map((p) => p[1]))];
    if (x1 === x0) { x0 -= 1; x1 += 1; }
    if (y1 === y0) { const d = Math.abs(y0) * 0.1 || 1; y0 -= d; y1 += d; }
    const pad = (y1 - y0) * 0.06; y0 -= pad; y1 += pad;
    const X = (x) => m.l + (x - x0) / (x1 - x0) * (width - m.l - m.r);
    const Y = (y) => height - m.b - (y - y0) / (y1 - y0) * (height - m.t - m.b);
    const svg = el("svg", { viewBox: `0 0 ${width} ${height}` }, container);
    for (const t of niceTicks(y0, y1, 4)) {
      el("line", { x1: m.l, x2: width - m.r, y1: Y(t), y2: Y(t), class: "gridline" }, svg);
      el("text", { x: m.l - 6, y: Y(t) + 4, "text-anchor": "end" }, svg).textContent = fmt(t);
    }
    for (const t of niceTicks(x0, x1, 6)) {
      if (t < x0 || t > x1) continue;
      el("line", { x1: X(t), x2: X(t), y1: height - m.b, y2: height - m.b + 4, class: "axis" }, svg);
      el("text", { x: X(t), y: height - 8, "text-anchor": "middle" }, svg).textContent = fmt(t);
    }
    el("line", { x1: m.l, x2: width - m.r, y1: height - m.b, y2: height - m.b, class: "axis" }, svg);
    series.forEach((s, i) => {
      const color = s.color || COLORS[i % COLORS.length];
      const d = s.points.map((p, k) => `${k ? "L" : "M"}${X(p[0]).toFixed(1)},${Y(p[1]).toFixed(1)}`).join("");
      el("path", { d, fill: "none", stroke: color, "stroke-width": 1.8, class: "curve", "data-series": s.name }, svg);
      if (s.points.length <= 40) for (const p of s.points) el("circle", { cx: X(p[0]), cy: Y(p[1]), r: 2.6, fill: color }, svg);
    });
    const cursor = el("line", { y1: m.t, y2: height - m.b, stroke: "#98a2b3", "stroke-dasharray": "3,3", visibility: "hidden" }, svg);
    const tip = document.createElement("div");
    tip.className = "tooltip"; tip.hidden = true;
    container.style.position = "relative";
    container.appendChild(tip);
    svg.addEventListener("mousemove", (event) => {
      const box = svg.getBoundingClientRect();
      const x = x0 + ((event.clientX - box.left) * width / box.width - m.l) / (width - m.l - m.r) * (x1 - x0);
      const lines = [];
      let at = null;
      for (const s of series) {
        if (!s.points.length) continue;
        const p = s.points.reduce((a, b) => Math.abs(b[0] - x) < Math.abs(a[0] - x) ? b : a);
        at = at === null ? p[0] : at;
        lines.push(`${esc(s.name)}: ${fmt(p[1])}`);
      }
      if (at === null) return;
      cursor.setAttribute("x1", X(at)); cursor.setAttribute("x2", X(at)); cursor.setAttribute("visibility", "visible");
      tip.innerHTML = `step ${fmt(at)}<br>` + lines.join("<br>");
      tip.hidden = false;
      tip.style.left = Math.min(box.width - 140, (X(at) * box.width / width) + 10) + "px";
      tip.style.top = "6px";
    });
    svg.addEventListener("mouseleave", () => { tip.hidden = true; cursor.setAttribute("visibility", "hidden"); });
  }

  return { api, debounce, esc, pct, token, initTabs, initRowPicker, relativeTimes, watchAblation, barChart,
    lineChart, COLORS };
})();
