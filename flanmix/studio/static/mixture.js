// Mixture page: knobs move the target shares (the file is not changed), rows of the plan, and a background build.
"use strict";
(() => {
  const KINDS = ["component", "template_type", "task"], TASKS_SHOWN = 30;
  const TYPES = ["zs_opt", "zs_noopt", "fs_opt", "fs_noopt"];
  const errorBox = document.getElementById("mix-error"), knobStatus = document.getElementById("knob-status");
  const inputs = [...document.querySelectorAll("#knobs input[data-key]")];
  const rowsInput = document.getElementById("rows");
  const base = MIX.data ? MIX.data.shares : null;
  let current = MIX.data ? MIX.data.shares : null, sampleStart = 0, controller = null;

  function overrides() {
    const out = {};
    for (const input of inputs) if (input.value !== input.dataset.orig && input.value !== "") out[input.dataset.key] = input.value;
    return out;
  }

  function showError(text) {
    errorBox.hidden = !text;
    errorBox.innerHTML = text ? `<span class="mono">${Studio.esc(text)}</span>` : "";
  }

  function items(shares, kind, field, baseShares, baseField) {
    const baseMap = new Map((baseShares ? baseShares[kind] : []).map((i) => [i.name, i[baseField]]));
    let list = shares[kind].map((i) => ({ name: i.name, value: i[field], base: baseShares ? (baseMap.get(i.name) ?? 0) : null }));
    if (kind === "task") list = list.sort((a, b) => b.value - a.value).slice(0, TASKS_SHOWN);
    if (kind === "template_type") list = list.sort((a, b) => TYPES.indexOf(a.name) - TYPES.indexOf(b.name));
    return list;
  }

  function drawShares() {
    if (!current) {
      for (const kind of KINDS) document.getElementById(`chart-${kind}`).innerHTML = '<p class="muted small">no shares: see the problem above</p>';
      return;
    }
    for (const kind of KINDS) Studio.barChart(document.getElementById(`chart-${kind}`), items(current, kind, "target", base, "target"));
    const n = current.task.length;
    document.getElementById("task-note").textContent = n > TASKS_SHOWN ? `(the ${TASKS_SHOWN} largest of ${n})` : "";
  }

  async function update() {
    for (const input of inputs) input.classList.toggle("changed", input.value !== input.dataset.orig);
    if (controller) controller.abort();
    controller = new AbortController();
    knobStatus.textContent = "resolving…";
    let data;
    try { data = await Studio.api("/api/mixture", { ref: MIX.ref, overrides: overrides() }, controller.signal); }
    catch (_) { return; }
    if (data.error) { showError(data.error); knobStatus.textContent = ""; return; }
    showError("");
    current = data.shares;
    drawShares();
    document.getElementById("tree").innerHTML = data.tree_html;
    knobStatus.textContent = Object.keys(overrides()).length ? "changed (not saved to the file)" : "";
    document.body.dataset.resolved = String(Date.now());
  }
  const later = Studio.debounce(update, 150);
  for (const input of inputs) input.addEventListener("input", later);
  document.getElementById("reset").addEventListener("click", () => { for (const i of inputs) i.value = i.dataset.orig; update(); });

  // rows of the plan
  function renderSamples(rows, planned) {
    const box = document.getElementById("samples");
    document.getElementById("sample-note").textContent = `rows ${sampleStart}–${sampleStart + rows.length - 1} of a ${planned.toLocaleString()}-row plan`;
    box.innerHTML = rows.map((r) => `<div class="sample"><div class="tmpl-head"><a class="idx" href="/tasks/${encodeURIComponent(r.task_name)}">${Studio.esc(r.task_name)}</a>
      <span class="chip">${r.template_type}</span><span class="muted small mono">template ${r.template_idx}</span>${r.cot ? '<span class="badge cot">CoT</span>' : ""}
      <span class="src">${Studio.esc(r.example_id)}</span></div><div class="render"><div class="part"><div class="label">INPUT</div><pre>${Studio.esc(r.inputs)}</pre></div>
      <div class="part"><div class="label">TARGET</div><pre>${Studio.esc(r.targets)}</pre></div></div></div>`).join("")
      || '<p class="muted">No rows.</p>';
  }
  async function sample(next) {
    sampleStart = next ? sampleStart + 8 : 0;
    const data = await Studio.api("/api/mixture/sample", { ref: MIX.ref, overrides: overrides(), start: sampleStart, count: 8 });
    if (data.error) { showError(data.error); return; }
    renderSamples(data.rows, data.planned);
    document.getElementById("sample-next").hidden = false;
  }
  document.getElementById("sample").addEventListener("click", () => sample(false));
  document.getElementById("sample-next").addEventListener("click", () => sample(true));

  // build
  const progress = document.getElementById("progress"), buildStatus = document.getElementById("build-status");
  const buildBtn = document.getElementById("build");
  function showStats(stats) {
    const box = document.getElementById("build-result");
    document.getElementById("build-card").hidden = false;
    const size = stats.rows;
    const lengths = Object.entries(stats.lengths).map(([k, s]) => `<tr><td class="mono">${k}</td><td class="num">${s.mean.toFixed(1)}</td><td class="num">${s.min}</td><td class="num">${s.p50}</td><td class="num">${s.p90}</td><td class="num">${s.max}</td></tr>`).join("");
    box.innerHTML = `<div class="msg ok" id="build-rows"><b>${size.rows.toLocaleString()}</b> rows (planned ${size.planned.toLocaleString()}, dedup dropped ${size.dedup_dropped}, decontaminated ${size.decontaminated})</div>
      <div class="legend"><span><i style="background:var(--realized)"></i>realized</span><span><i style="background:var(--target)"></i>target</span></div>
      ${KINDS.map((k) => `<h3>per ${k.replace("_", " ")}</h3><div class="chart" id="stats-${k}"></div>`).join("")}
      <h3>lengths</h3><table><thead><tr><th></th><th class="num">mean</th><th class="num">min</th><th class="num">p50</th><th class="num">p90</th><th class="num">max</th></tr></thead><tbody>${lengths}</tbody></table>`;
    for (const k of KINDS) Studio.barChart(document.getElementById(`stats-${k}`), items(stats.proportions, k, "realized", stats.proportions, "target"), { baseLabel: "target" });
  }
  async function poll(id) {
    const job = await Studio.api(`/api/jobs/${id}`);
    if (job.error) { buildStatus.textContent = job.error; buildBtn.disabled = false; return; }
    const share = job.total ? job.done / job.total : 0;
    progress.querySelector("div").style.width = (job.state === "done" ? 100 : share * 100).toFixed(1) + "%";
    progress.className = "progress " + job.state;
    buildStatus.textContent = job.state === "running" ? `building… ${job.done.toLocaleString()} / ${job.total ? job.total.toLocaleString() : "?"} rows · ${job.seconds} s` : job.message;
    if (job.state === "running") { setTimeout(() => poll(id), 400); return; }
    buildBtn.disabled = false;
    buildStatus.dataset.state = job.state;
    if (job.state === "done") showStats(job.stats);
  }
  buildBtn.addEventListener("click", async () => {
    const changes = overrides();
    if (rowsInput.value && rowsInput.value !== rowsInput.defaultValue) changes["size.examples"] = rowsInput.value;
    buildBtn.disabled = true;
    progress.hidden = false;
    progress.className = "progress";
    progress.querySelector("div").style.width = "0";
    document.getElementById("build-result").innerHTML = "";
    document.getElementById("build-card").hidden = true;
    buildStatus.textContent = "starting…";
    const job = await Studio.api("/api/mixture/build", { ref: MIX.ref, overrides: changes });
    if (job.error) { buildStatus.innerHTML = `<span style="color:var(--bad)">${Studio.esc(job.error)}</span>`; buildBtn.disabled = false; progress.hidden = true; return; }
    poll(job.id);
  });

  drawShares();
  window.addEventListener("resize", Studio.debounce(drawShares, 200));
})();
