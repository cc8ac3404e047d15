// Live updates for the Agent Mail web mailbox. Pages work without this file: it only listens to
// the server's change events (SSE) and swaps in a fresh copy of the page's #live region when
// something the page shows (its data-live kinds) has changed. EventSource reconnects by itself.
(function () {
  "use strict";
  var body = document.body;
  var wanted = (body.getAttribute("data-live") || "").split(/\s+/).filter(Boolean);
  var status = document.getElementById("live-status");
  if (!window.EventSource || !status) { return; }
  var pending = false, again = false;

  function setStatus(state, text) {
    status.className = "live-status " + state;
    status.textContent = text;
  }

  function refresh() {
    if (pending) { again = true; return; }
    pending = true;
    fetch(window.location.href, { credentials: "same-origin", headers: { "Accept": "text/html" } })
      .then(function (r) { return r.ok ? r.text() : null; })
      .then(function (text) {
        if (text === null) { return; }
        var fresh = new DOMParser().parseFromString(text, "text/html").getElementById("live");
        var here = document.getElementById("live");
        if (fresh && here) {
          var checked = {};  // keep what the person ticked in the mark-read form
          here.querySelectorAll("input[type=checkbox]:checked").forEach(function (b) { checked[b.value] = true; });
          here.replaceChildren.apply(here, Array.prototype.slice.call(fresh.childNodes));
          here.querySelectorAll("input[type=checkbox]").forEach(function (b) { if (checked[b.value]) { b.checked = true; } });
          body.setAttribute("data-refreshed", String(Date.now()));
        }
      })
      .catch(function () { /* the next event or a reload will catch up */ })
      .then(function () {
        pending = false;
        if (again) { again = false; refresh(); }
      });
  }

  var source = new EventSource(body.getAttribute("data-events") || "/mail/events");
  source.addEventListener("open", function () { setStatus("on", "live"); });
  source.addEventListener("error", function () { setStatus("off", "reconnecting…"); });
  source.addEventListener("change", function (event) {
    var change = JSON.parse(event.data);
    body.setAttribute("data-seq", String(change.seq));
    window.dispatchEvent(new CustomEvent("mail-change", { detail: change }));
    if (change.kinds.some(function (k) { return wanted.indexOf(k) >= 0; })) { refresh(); }
  });
}());
