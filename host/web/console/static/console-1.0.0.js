// tapkiosk staff console 1.0.0: the live feed (server-sent events), print buttons, one submit per form.
(function () {
  "use strict";
  var base = document.body.getAttribute("data-base") || "";

  // A form submits once; the server applies a money form once anyway (idempotency key).
  document.querySelectorAll("form[method=post]").forEach(function (form) {
    form.addEventListener("submit", function () {
      setTimeout(function () {
        form.querySelectorAll("button[type=submit]").forEach(function (b) { b.disabled = true; });
      }, 0);
    });
  });

  var print = document.getElementById("print");
  if (print) { print.addEventListener("click", function () { window.print(); }); }

  var feed = document.getElementById("feed");
  if (!feed || !window.EventSource) { return; }
  var canOpen = feed.getAttribute("data-can-open") === "1";
  var source = new EventSource(feed.getAttribute("data-events"));

  source.addEventListener("ready", function () { feed.setAttribute("data-ready", "1"); });
  source.addEventListener("error", function () { feed.removeAttribute("data-ready"); });

  function add(kind, cls, text, memberId) {
    var li = document.createElement("li");
    li.className = "event " + kind + (cls ? " " + cls : "");
    li.textContent = new Date().toLocaleTimeString() + " " + text;  // never HTML
    if (memberId && canOpen) {
      var a = document.createElement("a");
      a.href = base + "/members/" + encodeURIComponent(memberId);
      a.textContent = " #" + memberId;
      li.appendChild(a);
    }
    feed.insertBefore(li, feed.firstChild);
    while (feed.children.length > 100) { feed.removeChild(feed.lastChild); }
  }

  function on(kind, render) {
    source.addEventListener(kind, function (msg) {
      var env = JSON.parse(msg.data), d = env.data || {};
      render(d);
    });
  }
  on("tap", function (d) { add("tap", "", "TAP " + d.device_id + " " + d.uid, null); });
  on("decision", function (d) {
    add("decision", d.verdict, d.device_id + " " + d.uid + " " + d.verdict + " " + (d.text || ""), d.member_id);
  });
  on("device_online", function (d) { add("device", "grant", d.device_id + " online", null); });
  on("device_offline", function (d) { add("device", "deny", d.device_id + " offline", null); });
  on("sale", function (d) { add("sale", "", "SALE " + d.kind + " " + (d.staff || d.token || ""), d.member_id); });
})();
