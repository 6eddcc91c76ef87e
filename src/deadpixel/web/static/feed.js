// The live feed: each open and click the server streams (/feed) becomes the first item of the list.
// Without JavaScript the list stays as the server rendered it; reloading the page shows new numbers.
(function () {
  "use strict";
  var list = document.getElementById("live-feed");
  if (!list || !window.EventSource) return;
  var limit = 50;
  var source = new EventSource(list.getAttribute("data-source"));
  var status = document.getElementById("live-status");
  source.onopen = function () { if (status) status.textContent = "live"; };
  source.onerror = function () { if (status) status.textContent = "reconnecting…"; };
  source.onmessage = function (message) {
    var event;
    try { event = JSON.parse(message.data); } catch (e) { return; }
    var item = document.createElement("li");
    item.className = "feed-" + event.type + (event.kind ? " kind-" + event.kind : "");
    item.setAttribute("data-message", event.message_id);
    var when = document.createElement("time");
    when.dateTime = event.at;
    when.textContent = new Date(event.at).toLocaleTimeString();
    var who = document.createElement("a");
    who.href = "/messages/" + encodeURIComponent(event.message_id);
    who.textContent = event.recipient || event.message_id;
    var facts = [event.type === "click" ? "clicked" : "opened"];
    if (event.campaign && !list.hasAttribute("data-campaign")) facts.push("in " + event.campaign);
    if (event.kind) facts.push("(" + event.kind + ")");
    var detail = [event.client, event.device, event.country].filter(Boolean).join(", ");
    if (detail) facts.push("· " + detail);
    if (event.url) facts.push("→ " + event.url);
    item.appendChild(when);
    item.appendChild(document.createTextNode(" "));
    item.appendChild(who);
    item.appendChild(document.createTextNode(" " + facts.join(" ")));
    var empty = list.querySelector(".empty");
    if (empty) empty.remove();
    list.insertBefore(item, list.firstChild);
    while (list.children.length > limit) list.removeChild(list.lastChild);
  };
})();
