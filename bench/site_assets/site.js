// bench leaderboards: sortable columns and row filters. A classic script (no modules), so it runs from file://.
(function () {
  "use strict";
  var table = document.getElementById("board");
  if (!table) return;
  var body = table.tBodies[0];
  var heads = Array.prototype.slice.call(table.tHead.rows[0].cells);
  var selects = Array.prototype.slice.call(document.querySelectorAll("select[data-filter]"));
  var count = document.getElementById("count");

  function sortKey(row, index, numeric) {
    var cell = row.cells[index];
    var raw = cell.hasAttribute("data-sort") ? cell.getAttribute("data-sort") : cell.textContent.trim();
    if (!numeric) return raw.toLowerCase();
    var value = parseFloat(raw);
    return isNaN(value) ? null : value;
  }

  function sortBy(index) {
    var th = heads[index];
    var numeric = th.getAttribute("data-type") === "num";
    var descending = th.getAttribute("aria-sort") === "ascending";   // a second click reverses
    heads.forEach(function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", descending ? "descending" : "ascending");
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = sortKey(a, index, numeric), y = sortKey(b, index, numeric);
      if (x === y) return 0;
      if (x === null || x === "") return 1;     // empty cells last, either direction
      if (y === null || y === "") return -1;
      var order = x < y ? -1 : 1;
      return descending ? -order : order;
    });
    rows.forEach(function (r) { body.appendChild(r); });
  }

  function applyFilters() {
    var shown = 0, rows = body.rows;
    for (var i = 0; i < rows.length; i++) {
      var keep = selects.every(function (s) {
        return !s.value || rows[i].getAttribute("data-" + s.getAttribute("data-filter")) === s.value;
      });
      rows[i].hidden = !keep;
      if (keep) shown++;
    }
    if (count) count.textContent = shown + " of " + rows.length + " rows";
  }

  heads.forEach(function (th, i) {
    th.querySelector("button").addEventListener("click", function () { sortBy(i); });
  });
  selects.forEach(function (s) { s.addEventListener("change", applyFilters); });
  applyFilters();
})();
