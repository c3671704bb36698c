// Tasks page: filter the table as you type (the filters live in the URL, so a filtered view can be shared).
"use strict";
(() => {
  const q = document.getElementById("q"), cluster = document.getElementById("cluster");
  const collection = document.getElementById("collection"), kind = document.getElementById("kind");
  const cotOnly = document.getElementById("cot-only");
  const rows = [...document.querySelectorAll("#tasks tbody tr")];
  const shown = document.getElementById("shown"), none = document.getElementById("none");
  const params = new URLSearchParams(location.search);
  q.value = params.get("q") || "";
  cluster.value = params.get("cluster") || "";
  collection.value = params.get("collection") || "";
  kind.value = params.get("kind") || "";
  cotOnly.checked = params.get("cot") === "1";

  function apply() {
    const words = q.value.toLowerCase().split(/\s+/).filter(Boolean);
    let count = 0;
    for (const tr of rows) {
      const d = tr.dataset;
      const ok = words.every((w) => d.text.includes(w)) && (!cluster.value || d.cluster === cluster.value)
        && (!collection.value || d.collection === collection.value) && (!kind.value || d.kind === kind.value)
        && (!cotOnly.checked || Number(d.cot) > 0);
      tr.hidden = !ok;
      count += ok;
    }
    shown.textContent = `${count} of ${rows.length} shown`;
    none.hidden = count > 0;
    const next = new URLSearchParams();
    if (q.value) next.set("q", q.value);
    if (cluster.value) next.set("cluster", cluster.value);
    if (collection.value) next.set("collection", collection.value);
    if (kind.value) next.set("kind", kind.value);
    if (cotOnly.checked) next.set("cot", "1");
    history.replaceState(null, "", next.toString() ? "?" + next : location.pathname);
  }
  for (const input of [q, cluster, collection, kind, cotOnly]) input.addEventListener("input", apply);
  apply();
  q.focus();
})();
