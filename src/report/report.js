// coreheap report: sorting, filtering, the occupancy maps and the optional sections.
// Data comes from the inline JSON element; text reaches the page only via textContent.
"use strict";
(function () {
  var errors = [];
  function fail(msg) {
    errors.push(String(msg));
    var box = document.getElementById("js-errors");
    if (box) { box.hidden = false; box.textContent = "Script errors:\n" + errors.join("\n"); }
    document.documentElement.setAttribute("data-errors", String(errors.length));
  }
  window.addEventListener("error", function (e) { fail(e.message + " (" + e.lineno + ")"); });

  var UNUSED = 255;
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  }
  function bytes(n) {
    var neg = n < 0; n = Math.abs(n);
    var u = ["B", "KiB", "MiB", "GiB", "TiB"], i = 0;
    while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
    var s = i === 0 ? String(n) : (n >= 100 ? n.toFixed(0) : n.toFixed(2));
    return (neg ? "-" : "") + s + " " + u[i];
  }
  function count(n) { return String(n).replace(/\B(?=(\d{3})+(?!\d))/g, "\u2009"); }
  function hex(n) { return "0x" + n.toString(16); }

  var tip = document.getElementById("tip");
  function showTip(ev, text) {
    tip.textContent = text; tip.hidden = false;
    tip.style.left = Math.min(ev.clientX + 14, window.innerWidth - 300) + "px";
    tip.style.top = (ev.clientY + 14) + "px";
  }
  function hideTip() { tip.hidden = true; }

  // Sortable tables: click a header; numbers sort by data-v.
  function sortable(table) {
    var ths = table.tHead ? table.tHead.rows[0].cells : [];
    Array.prototype.forEach.call(ths, function (th, col) {
      th.addEventListener("click", function () {
        var body = table.tBodies[0];
        var rows = Array.prototype.slice.call(body.rows).filter(function (r) { return r.cells.length > col; });
        var desc = !th.classList.contains("desc");
        Array.prototype.forEach.call(ths, function (h) { h.classList.remove("asc", "desc"); });
        th.classList.add(desc ? "desc" : "asc");
        rows.sort(function (a, b) {
          var x = a.cells[col], y = b.cells[col];
          var vx = x.getAttribute("data-v"), vy = y.getAttribute("data-v");
          var r = (vx !== null && vy !== null) ? Number(vx) - Number(vy)
            : x.textContent.localeCompare(y.textContent);
          return desc ? -r : r;
        });
        rows.forEach(function (r) { body.appendChild(r); });
      });
    });
  }

  function typeFilter() {
    var input = document.getElementById("type-filter");
    var table = document.getElementById("type-table");
    var shown = document.getElementById("type-shown");
    if (!input || !table) return;
    input.addEventListener("input", function () {
      var q = input.value.toLowerCase(), n = 0;
      Array.prototype.forEach.call(table.tBodies[0].rows, function (r) {
        var ok = r.cells[0].textContent.toLowerCase().indexOf(q) >= 0;
        r.hidden = !ok; if (ok) n++;
      });
      shown.textContent = q ? n + " shown" : "";
    });
  }

  // Fill 0..100 → a colour from pale yellow (empty) to dark blue (full).
  var STOPS = [[255, 247, 188], [253, 174, 97], [116, 173, 209], [49, 54, 149]];
  function colour(v) {
    if (v === UNUSED) return "#f1f1f1";
    var t = Math.max(0, Math.min(100, v)) / 100 * (STOPS.length - 1);
    var i = Math.min(Math.floor(t), STOPS.length - 2), f = t - i, a = STOPS[i], b = STOPS[i + 1];
    return "rgb(" + [0, 1, 2].map(function (k) { return Math.round(a[k] + (b[k] - a[k]) * f); }).join(",") + ")";
  }

  function occupancy(maps) {
    var root = document.getElementById("occupancy");
    if (!root) return;
    maps.forEach(function (m) {
      var box = el("div", "occ");
      var cells = 0;
      m.regions.forEach(function (r) { cells += r.fill.length; });
      var unit = m.units_per_cell > 1 ? m.units_per_cell + " " + m.unit + "s" : "one " + m.unit;
      var n = m.regions.length + m.regions_left_off;
      box.appendChild(el("h3", null, m.allocator + ": " + n + (m.allocator === "pymalloc" ? " arena" : " heap") + (n === 1 ? "" : "s") +
        ", one cell per " + unit + " (" + bytes(m.unit_bytes * m.units_per_cell) + ")" +
        (m.regions_left_off ? "; " + m.regions_left_off + " more left off" : "")));
      var width = Math.min(root.clientWidth || 1100, 1200);
      var cell = cells > 20000 ? 4 : (cells > 5000 ? 6 : 9);
      var cols = Math.max(16, Math.floor(width / cell));
      // pymalloc arenas start on a new row when they fit in one (easy to read);
      // otherwise the cells run on, region after region.
      var perRow = m.regions.length && m.regions.every(function (r) { return r.fill.length <= cols; });
      var layout = [], row = 0, colAt = 0;
      m.regions.forEach(function (r, ri) {
        if (perRow) {
          if (colAt + r.fill.length > cols) { row++; colAt = 0; }
        }
        for (var i = 0; i < r.fill.length; i++) {
          if (colAt >= cols) { row++; colAt = 0; }
          layout.push([row, colAt, ri, i]); colAt++;
        }
        if (perRow) colAt++; // a gap between arenas on one row
      });
      var rows = row + 1;
      var canvas = el("canvas");
      canvas.width = cols * cell; canvas.height = Math.min(rows * cell, 30000);
      var ctx = canvas.getContext("2d");
      var at = {};
      layout.forEach(function (L) {
        var r = m.regions[L[2]], v = r.fill[L[3]];
        ctx.fillStyle = colour(v);
        ctx.fillRect(L[1] * cell, L[0] * cell, cell - 1, cell - 1);
        at[L[0] * cols + L[1]] = L;
      });
      ctx.strokeStyle = "#e0245e"; ctx.lineWidth = 1;
      layout.forEach(function (L) {
        if (m.regions[L[2]].pinned) ctx.strokeRect(L[1] * cell + 0.5, L[0] * cell + 0.5, cell - 2, cell - 2);
      });
      canvas.addEventListener("mousemove", function (ev) {
        var b = canvas.getBoundingClientRect();
        var c = Math.floor((ev.clientX - b.left) / cell), rr = Math.floor((ev.clientY - b.top) / cell);
        var L = at[rr * cols + c];
        if (!L) { hideTip(); return; }
        var r = m.regions[L[2]], v = r.fill[L[3]];
        var addr = Number(BigInt(r.address) + BigInt(L[3] * m.units_per_cell * m.unit_bytes));
        showTip(ev, (m.allocator === "pymalloc" ? "arena " : "heap ") + r.address + (r.pinned ? " (pinned)" : "") +
          ", " + m.unit + " at " + hex(addr) + ": " + (v === UNUSED ? "never used" : v + "% live"));
      });
      canvas.addEventListener("mouseleave", hideTip);
      box.appendChild(canvas);
      root.appendChild(box);
    });
  }

  // Optional section: an icicle of a tree (bytes), click to zoom, hover for counts.
  function icicle(host, tree) {
    var ROW = 22, MAXDEPTH = 14;
    var box = el("div", "icicle");
    var crumbs = el("p", "dim");
    host.appendChild(crumbs); host.appendChild(box);
    var parents = new Map();
    (function index(n, depth) {
      if (depth > 64) return;
      (n.children || []).forEach(function (c) { parents.set(c, n); index(c, depth + 1); });
    })(tree, 0);
    function draw(focus) {
      box.textContent = "";
      var path = [], p = focus;
      while (p) { path.unshift(p.name); p = parents.get(p); }
      crumbs.textContent = path.join(" › ") + " — " + bytes(focus.bytes) + (focus === tree ? "" : " (click the top bar to zoom out)");
      var W = box.clientWidth || 1100, depthMax = 0;
      function place(n, x, w, depth) {
        if (w < 2 || depth > MAXDEPTH) return;
        depthMax = Math.max(depthMax, depth);
        var d = el("div", null, n.name + " " + bytes(n.bytes));
        d.style.left = x + "px"; d.style.width = w + "px"; d.style.top = depth * ROW + "px";
        var hue = (n.name.length * 37 + depth * 53) % 360;
        d.style.background = "hsl(" + hue + ",55%," + (depth === 0 ? 80 : 72) + "%)";
        d.addEventListener("mousemove", function (ev) {
          showTip(ev, n.name + ": " + bytes(n.bytes) + ", " + count(n.count) + " objects" +
            (focus.bytes ? " (" + (100 * n.bytes / focus.bytes).toFixed(1) + "%)" : ""));
        });
        d.addEventListener("mouseleave", hideTip);
        d.addEventListener("click", function (ev) {
          ev.stopPropagation(); hideTip();
          draw(n === focus && parents.get(n) ? parents.get(n) : n);
        });
        box.appendChild(d);
        var cx = x, total = n.bytes || 1;
        (n.children || []).forEach(function (c) {
          var cw = w * c.bytes / total;
          place(c, cx, cw, depth + 1); cx += cw;
        });
      }
      place(focus, 0, W, 0);
      box.style.height = (depthMax + 1) * ROW + 2 + "px";
    }
    draw(tree);
  }

  function table(host, t) {
    var tb = el("table", "grid sortable"), head = el("thead"), tr = el("tr");
    t.columns.forEach(function (c) { tr.appendChild(el("th", c.kind === "text" ? null : "num", c.title)); });
    head.appendChild(tr); tb.appendChild(head);
    var body = el("tbody");
    t.rows.forEach(function (r) {
      var row = el("tr");
      r.forEach(function (v, i) {
        var kind = (t.columns[i] || {}).kind || "text";
        var text = kind === "bytes" ? bytes(v) : kind === "delta" ? (v > 0 ? "+" : "") + bytes(v)
          : kind === "count" ? count(v) : String(v);
        var td = el("td", kind === "text" ? "mono" : "num", text);
        if (kind !== "text") td.setAttribute("data-v", String(v));
        if (kind === "delta") td.classList.add(v > 0 ? "up" : "down");
        row.appendChild(td);
      });
      body.appendChild(row);
    });
    tb.appendChild(body); host.appendChild(tb); sortable(tb);
  }

  try {
    var data = JSON.parse(document.getElementById("data").textContent);
    Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), sortable);
    typeFilter();
    occupancy(data.occupancy || []);
    Array.prototype.forEach.call(document.querySelectorAll("section.ext"), function (sec) {
      var s = data.sections[Number(sec.getAttribute("data-index"))];
      var host = sec.querySelector(".ext-body");
      if (!s || !host) return;
      if (s.body.kind === "tree") icicle(host, s.body.root);
      else if (s.body.kind === "table") table(host, s.body);
    });
    document.documentElement.setAttribute("data-ready", "1");
  } catch (e) {
    fail(e && e.stack ? e.stack : e);
  }
})();
