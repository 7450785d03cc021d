// taskqueue dashboard: conveniences on top of pages that work without JavaScript.
// Nothing here writes HTML from data: every value goes in through textContent.
(function () {
  "use strict";

  document.addEventListener("submit", function (e) {
    var msg = e.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) { e.preventDefault(); }
  });
  document.addEventListener("click", function (e) {
    var b = e.target.closest ? e.target.closest("[data-confirm-click]") : null;
    if (b && !window.confirm(b.getAttribute("data-confirm-click"))) { e.preventDefault(); }
  });

  document.querySelectorAll(".select-all").forEach(function (all) {
    all.addEventListener("change", function () {
      all.form.querySelectorAll('input[type=checkbox][name=id]').forEach(function (c) { c.checked = all.checked; });
    });
  });

  var auto = document.getElementById("autorefresh");
  if (auto) {
    auto.checked = window.localStorage && localStorage.getItem("tq-autorefresh") === "1";
    var timer = null;
    var arm = function () {
      if (timer) { clearTimeout(timer); timer = null; }
      if (auto.checked) { timer = setTimeout(function () { location.reload(); }, 5000); }
    };
    auto.addEventListener("change", function () {
      if (window.localStorage) { localStorage.setItem("tq-autorefresh", auto.checked ? "1" : "0"); }
      arm();
    });
    arm();
  }

  // Search: continue the bounded scan step by step, with progress, until done, stopped, or enough matches.
  var res = document.getElementById("search-results");
  if (res && res.dataset.cursor) {
    var rows = document.getElementById("search-rows");
    var bar = document.getElementById("search-progress");
    var status = document.getElementById("search-status");
    var stop = document.getElementById("search-stop");
    var more = document.getElementById("search-more");
    var cursor = res.dataset.cursor, scanned = +res.dataset.scanned, total = +res.dataset.total;
    var stopped = false, found = rows.children.length;
    if (more) { more.hidden = true; }
    stop.hidden = false;
    stop.addEventListener("click", function () { stopped = true; });
    var cell = function (tr, text, cls) {
      var td = document.createElement("td");
      if (cls) { td.className = cls; }
      td.textContent = text;
      tr.appendChild(td);
      return td;
    };
    var step = function () {
      if (stopped || !cursor || found >= 1000) {
        stop.hidden = true;
        status.textContent = scanned + " of about " + total + " entries scanned" + (cursor ? ", stopped" : ", done");
        if (more && cursor) {
          var a = more.querySelector("a");
          var u = new URL(a.href);
          u.searchParams.set("cursor", cursor);
          u.searchParams.set("scanned", scanned);
          a.href = u.toString();
          more.hidden = false;
        }
        res.dataset.done = "1";
        return;
      }
      var q = new URLSearchParams({ id: res.dataset.id, text: res.dataset.text, cursor: cursor });
      fetch(res.dataset.json + "?" + q.toString(), { credentials: "same-origin" })
        .then(function (r) { if (!r.ok) { throw new Error("HTTP " + r.status); } return r.json(); })
        .then(function (page) {
          page.matches.forEach(function (m) {
            var tr = document.createElement("tr");
            tr.className = "task-row";
            var a = document.createElement("a");
            a.href = res.dataset.qbase + "/task?id=" + encodeURIComponent(m.id);
            a.textContent = m.id;
            cell(tr, "", "id").appendChild(a);
            var st = document.createElement("span");
            st.className = "state " + m.state;
            st.textContent = m.state;
            cell(tr, "").appendChild(st);
            cell(tr, m.func);
            cell(tr, m.error, "err");
            rows.appendChild(tr);
            found++;
          });
          cursor = page.cursor;
          scanned += page.scanned;
          total = page.total;
          bar.value = cursor ? Math.min(99, Math.floor(100 * scanned / Math.max(total, 1))) : 100;
          status.textContent = scanned + " of about " + total + " entries scanned";
          step();
        })
        .catch(function (err) { status.textContent = "search stopped: " + err.message; stopped = true; cursor = ""; res.dataset.done = "1"; });
    };
    step();
  } else if (res) {
    res.dataset.done = "1";
  }
})();
