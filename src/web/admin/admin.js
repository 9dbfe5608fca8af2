// Herald admin: the few things that need script. Every page works without it.
"use strict";
(function () {
  // Live progress: poll the page's JSON twin and update the numbers in place.
  var progress = document.querySelector("[data-progress-url]");
  if (progress) {
    var url = progress.getAttribute("data-progress-url");
    var set = function (name, value) {
      var el = progress.querySelector('[data-field="' + name + '"]');
      if (el) { el.textContent = value; }
    };
    var tick = function () {
      fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (p) {
          if (!p) { return; }
          Object.keys(p.fields).forEach(function (k) { set(k, p.fields[k]); });
          var bar = progress.querySelector("progress");
          if (bar) { bar.max = p.total > 0 ? p.total : 1; bar.value = p.done; }
          var list = progress.querySelector("[data-failures]");
          if (list) {
            list.textContent = "";
            p.failures.forEach(function (f) {
              var li = document.createElement("li");
              li.textContent = f;
              list.appendChild(li);
            });
          }
          if (!p.finished) { setTimeout(tick, 2000); }
        })
        .catch(function () { setTimeout(tick, 5000); });
    };
    setTimeout(tick, 1000);
  }

  // Markdown live preview: ask the server to render what is typed.
  var summary = document.querySelector("[data-markdown-preview]");
  if (summary) {
    var target = document.getElementById(summary.getAttribute("data-markdown-preview"));
    var csrf = document.querySelector('input[name="csrf"]');
    var timer = null;
    var render = function () {
      var body = new URLSearchParams();
      body.set("markdown", summary.value);
      fetch("/admin/markdown-preview", {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf ? csrf.value : "", "Content-Type": "application/x-www-form-urlencoded" },
        body: body.toString()
      }).then(function (r) { return r.ok ? r.text() : null; })
        .then(function (html) { if (html !== null && target) { target.innerHTML = html; } });
    };
    summary.addEventListener("input", function () { clearTimeout(timer); timer = setTimeout(render, 300); });
    render();
  }
})();
