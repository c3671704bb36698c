// Run page: curves from metrics.jsonl (loss and eval loss together, each other metric alone), refreshed while the
// run is going.
"use strict";
(() => {
  const charts = document.getElementById("charts");
  const ORDER = ["loss", "lr", "grad_norm", "tokens_per_s"];

  function groups(series) {
    const names = Object.keys(series);
    const out = [];
    const loss = ["loss", "eval_loss"].filter((n) => names.includes(n));
    if (loss.length) out.push({ title: "loss", names: loss });
    const rest = names.filter((n) => !loss.includes(n)).sort((a, b) => {
      const ia = ORDER.indexOf(a), ib = ORDER.indexOf(b);
      return (ia < 0 ? 99 : ia) - (ib < 0 ? 99 : ib) || a.localeCompare(b);
    });
    for (const n of rest) out.push({ title: n, names: [n] });
    return out;
  }

  let latest = RUN.metrics;
  function draw(metrics) {
    latest = metrics;
    charts.innerHTML = "";
    if (!metrics) return;
    for (const g of groups(metrics.series)) {
      const card = document.createElement("div");
      card.className = "card chart-card";
      card.dataset.metric = g.title;
      card.innerHTML = `<h3 style="margin-top:0">${Studio.esc(g.title)}</h3><div class="legend">${g.names.map((n, i) => `<span><i style="background:${Studio.COLORS[i]}"></i>${Studio.esc(n)}</span>`).join("")}</div><div class="chart"></div>`;
      charts.appendChild(card);
      Studio.lineChart(card.querySelector(".chart"), g.names.map((n) => ({ name: n, points: metrics.series[n] })));
    }
    const events = document.getElementById("events");
    events.innerHTML = (metrics.events || []).map((e) => `<div class="msg warn" style="margin-top:14px">event <b>${Studio.esc(e.event)}</b> at step ${Studio.esc(e.step)}</div>`).join("");
    const box = document.getElementById("metrics-error");
    box.hidden = !metrics.error;
    if (metrics.error) box.querySelector(".mono").textContent = metrics.error;
    const records = document.getElementById("records");
    if (records) records.textContent = `${metrics.records} records`;
  }

  async function refresh() {
    const data = await Studio.api("/api/run?path=" + encodeURIComponent(RUN.path));
    if (data.error) return;
    draw(data.metrics);
    document.body.dataset.refreshed = String(Date.now());
    if (data.live) setTimeout(refresh, 2000);
    else document.getElementById("run-state").textContent = data.final ? "finished (final model saved)" : "not running";
  }

  draw(RUN.metrics);
  if (RUN.live) setTimeout(refresh, 2000);
  window.addEventListener("resize", Studio.debounce(() => draw(latest), 200));
})();
