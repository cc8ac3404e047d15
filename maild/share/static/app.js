/* Agent Mail bundle viewer: lazy search over the chunked index in search/ (loaded as scripts,
   which work from file:// where fetch() of local files does not). Results are built with
   textContent only, never innerHTML, so message text cannot become markup. */
(function () {
  "use strict";
  var root = document.body.getAttribute("data-root") || "";
  var loaded = {}, waiting = {};
  var data = { config: null, terms: {}, meta: {} };

  function done(name) {
    loaded[name] = true;
    (waiting[name] || []).forEach(function (resolve) { resolve(); });
    waiting[name] = [];
  }
  window.mailIndex = {
    config: function (value) { data.config = value; done("config"); },
    terms: function (shard, value) { data.terms[shard] = value; done("terms-" + shard); },
    meta: function (n, rows) { data.meta[n] = rows; done("meta-" + String(n).padStart(4, "0")); }
  };
  function load(name) {
    return new Promise(function (resolve) {
      if (loaded[name]) { resolve(); return; }
      var first = !waiting[name];
      (waiting[name] = waiting[name] || []).push(resolve);
      if (!first) { return; }
      var script = document.createElement("script");
      script.src = root + "search/" + name + ".js";
      script.onerror = function () { done(name); };  /* no such shard: no term starts so */
      document.head.appendChild(script);
    });
  }
  function hex(text) {
    var bytes = new TextEncoder().encode(Array.from(text).slice(0, 2).join(""));
    return Array.prototype.map.call(bytes, function (b) { return b.toString(16).padStart(2, "0"); }).join("");
  }
  function idsFor(term) {
    var shard = hex(term);
    return load("terms-" + shard).then(function () {
      var terms = data.terms[shard] || {}, found = new Set();
      Object.keys(terms).forEach(function (t) {
        if (t.lastIndexOf(term, 0) === 0) { terms[t].forEach(function (id) { found.add(id); }); }
      });
      return found;
    });
  }
  function metaFile(id) {
    var starts = data.config.ids, lo = 0, hi = starts.length - 1;
    while (lo < hi) {
      var mid = (lo + hi + 1) >> 1;
      if (starts[mid] <= id) { lo = mid; } else { hi = mid - 1; }
    }
    return lo;
  }
  function search(query) {
    var terms = (query.toLowerCase().match(/[\p{L}\p{N}]{2,40}/gu) || []);
    if (!terms.length) { return Promise.resolve({ total: 0, rows: [] }); }
    return load("config").then(function () {
      return Promise.all(terms.map(idsFor));
    }).then(function (sets) {
      var hits = Array.from(sets[0]).filter(function (id) {
        return sets.every(function (s) { return s.has(id); });
      }).sort(function (a, b) { return b - a; });
      var top = hits.slice(0, 50), files = {};
      top.forEach(function (id) { files[metaFile(id)] = true; });
      return Promise.all(Object.keys(files).map(function (n) {
        return load("meta-" + String(n).padStart(4, "0"));
      })).then(function () {
        var rows = top.map(function (id) {
          var list = data.meta[metaFile(id)] || [];
          for (var i = 0; i < list.length; i++) { if (list[i][0] === id) { return list[i]; } }
          return null;
        }).filter(Boolean);
        return { total: hits.length, rows: rows };
      });
    });
  }
  function show(result, started) {
    var list = document.getElementById("results");
    list.textContent = "";
    var head = document.createElement("li");
    head.className = "count";
    head.textContent = result.total + (result.total === 1 ? " message matches" : " messages match");
    list.appendChild(head);
    result.rows.forEach(function (row) {
      var item = document.createElement("li"), link = document.createElement("a"), meta = document.createElement("span");
      link.href = root + row[4];
      link.className = "hit";
      link.textContent = row[1];
      meta.className = "meta";
      meta.textContent = " " + row[2] + " · " + row[3].slice(0, 16).replace("T", " ");
      item.appendChild(link);
      item.appendChild(meta);
      list.appendChild(item);
    });
    list.setAttribute("data-ms", String(Math.round(performance.now() - started)));
    list.setAttribute("data-done", "1");
  }
  var form = document.getElementById("search");
  if (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var started = performance.now();
      document.getElementById("results").removeAttribute("data-done");
      search(document.getElementById("q").value).then(function (result) { show(result, started); });
    });
  }
}());
