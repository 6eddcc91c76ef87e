// A stored send's progress on the campaign page: the JSON status asked for every 1.5 s while it can change.
// Without JavaScript the section shows the state as the page was rendered; reloading shows new numbers.
(function () {
  "use strict";
  var box = document.getElementById("send-progress");
  if (!box || !window.fetch) return;
  var source = box.getAttribute("data-source");
  var finished = ["done", "cancelled"];
  function show(status) {
    box.setAttribute("data-state", status.state);
    var state = document.getElementById("send-state");
    if (state) state.textContent = status.state;
    ["sent", "failed", "skipped", "left", "total", "problems"].forEach(function (key) {
      var cell = box.querySelector('[data-progress="' + key + '"]');
      if (cell) cell.textContent = String(status[key]);
    });
    var bar = box.querySelector("progress");
    if (bar) { bar.max = status.total || 1; bar.value = status.total - status.left; }
    box.querySelectorAll("form[data-states]").forEach(function (form) {
      form.hidden = form.getAttribute("data-states").split(" ").indexOf(status.state) < 0;
    });
    var rendered = Number(box.getAttribute("data-problems"));
    var newer = document.getElementById("problems-newer");
    if (newer) newer.hidden = status.problems === rendered;
  }
  function poll() {
    fetch(source, { credentials: "same-origin", cache: "no-store" })
      .then(function (answer) { return answer.ok ? answer.json() : null; })
      .then(function (status) {
        if (status) show(status);
        if (!status || finished.indexOf(status.state) < 0) window.setTimeout(poll, 1500);
      })
      .catch(function () { window.setTimeout(poll, 3000); });
  }
  if (finished.indexOf(box.getAttribute("data-state")) < 0) poll();
})();
