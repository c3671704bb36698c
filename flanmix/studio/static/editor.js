// Template editor: line numbers, a live preview on every edit (a small JSON request), problems at their line, save.
"use strict";
(() => {
  const text = document.getElementById("text"), gutter = document.getElementById("gutter");
  const preview = document.getElementById("preview"), status = document.getElementById("status");
  const errors = document.getElementById("errors"), saveBtn = document.getElementById("save");
  const saveStatus = document.getElementById("save-status");
  const controls = ["row", "n", "seed", "random"].map((id) => document.getElementById(id));
  let errorLines = new Set(), controller = null, sequence = 0, saved = text.value;

  function drawGutter() {
    const count = text.value.split("\n").length;
    let html = "";
    for (let i = 1; i <= count; i++) html += `<span class="${errorLines.has(i) ? "err" : ""}" data-line="${i}">${i}</span>`;
    gutter.innerHTML = html;
    gutter.scrollTop = text.scrollTop;
  }

  function goToLine(line) {
    const lines = text.value.split("\n");
    const start = lines.slice(0, line - 1).reduce((n, l) => n + l.length + 1, 0);
    text.focus();
    text.setSelectionRange(start, start + (lines[line - 1] || "").length);
    text.scrollTop = Math.max(0, (line - 5) * 19);
  }

  function showErrors(list) {
    errorLines = new Set(list.filter((e) => e.line).map((e) => e.line));
    errors.innerHTML = list.map((e) => `<li data-line="${e.line || ""}">${e.line ? `<span class="line">line ${e.line}</span>` : ""}${Studio.esc(e.message)}</li>`).join("");
    drawGutter();
  }

  async function refresh() {
    const mine = ++sequence;
    if (controller) controller.abort();
    controller = new AbortController();
    const started = performance.now();
    status.textContent = "rendering…";
    const body = { text: text.value, row: controls[0].value, n: controls[1].value, seed: controls[2].value,
      random: controls[3].checked };
    let data;
    try {
      data = await Studio.api(`/api/tasks/${encodeURIComponent(TASK)}/preview`, body, controller.signal);
    } catch (err) {
      return; // superseded by a newer edit
    }
    if (mine !== sequence) return;
    const list = data.errors || (data.error ? [{ line: data.line, message: data.error }] : []);
    showErrors(list);
    if (data.html) {
      const keep = preview.scrollTop;
      preview.innerHTML = data.html;
      Studio.initTabs(preview);
      preview.scrollTop = keep;
    } else if (list.length) {
      preview.querySelectorAll(".tmpl").forEach((n) => n.style.opacity = 0.45);
    }
    const ms = Math.round(performance.now() - started);
    status.dataset.ms = ms;
    status.textContent = data.html ? `${data.renders} renders · server ${data.ms} ms · round trip ${ms} ms` +
      (list.length ? ` · ${list.length} problem(s)` : "") : `not rendered: ${list.length} problem(s)`;
    document.body.dataset.previewed = String(mine);
  }

  const later = Studio.debounce(refresh, 80);
  text.addEventListener("input", () => { drawGutter(); later(); saveStatus.textContent = text.value === saved ? "" : "unsaved changes"; });
  text.addEventListener("scroll", () => { gutter.scrollTop = text.scrollTop; });
  text.addEventListener("keydown", (event) => {
    if (event.key === "Tab") { event.preventDefault(); text.setRangeText("  ", text.selectionStart, text.selectionEnd, "end"); later(); }
    if ((event.ctrlKey || event.metaKey) && event.key === "s") { event.preventDefault(); if (!saveBtn.disabled) save(); }
  });
  for (const c of controls) c.addEventListener("input", later);
  errors.addEventListener("click", (event) => {
    const li = event.target.closest("li[data-line]");
    if (li && li.dataset.line) goToLine(Number(li.dataset.line));
  });

  async function save() {
    saveBtn.disabled = true;
    saveStatus.textContent = "saving…";
    const data = await Studio.api(`/api/tasks/${encodeURIComponent(TASK)}/save`, { text: text.value, base: BASE });
    saveBtn.disabled = false;
    if (data.error) {
      saveStatus.innerHTML = `<span style="color:var(--bad)">${Studio.esc(data.error)}</span>`;
      return;
    }
    saved = text.value;
    BASE = data.base;
    saveStatus.innerHTML = `<span style="color:var(--good)">saved ${Studio.esc(data.saved)}</span> · previous version in ${Studio.esc(data.backup)}`;
  }
  saveBtn.addEventListener("click", save);
  drawGutter();
  refresh();
})();
