/* mpgpt page analytics: page views, time on page, clicks. No cookies, no openid: an anonymous
   visitor id in localStorage. Events go out with sendBeacon, which never holds up the page. */
(function () {
  "use strict";
  var END = "/api/track";
  function rid() {
    var a = new Uint8Array(12), s = "";
    (window.crypto || window.msCrypto).getRandomValues(a);
    for (var i = 0; i < a.length; i++) s += ("0" + a[i].toString(16)).slice(-2);
    return s;
  }
  var vid;
  try {
    vid = localStorage.getItem("mpgpt_vid");
    if (!/^[0-9a-f]{24}$/.test(vid || "")) { vid = rid(); localStorage.setItem("mpgpt_vid", vid); }
  } catch (e) { vid = rid(); } /* storage blocked: one visit, one id */
  var pv = rid(), page = location.pathname;

  function send(ev) {
    ev.vid = vid; ev.pv = pv;
    var body = JSON.stringify(ev);
    if (navigator.sendBeacon && navigator.sendBeacon(END, body)) return;
    try { fetch(END, { method: "POST", body: body, keepalive: true }); } catch (e) { /* analytics only */ }
  }
  function ref() {
    try { var u = new URL(document.referrer); return u.origin + u.pathname; } catch (e) { return ""; }
  }
  send({ t: "view", page: page, ref: ref(), vw: innerWidth, vh: innerHeight });

  /* Visible time only: a tab in the background is not time on page. */
  var shown = document.visibilityState === "visible" ? Date.now() : 0, total = 0;
  function leave() {
    if (shown) { total += Date.now() - shown; shown = 0; }
    send({ t: "leave", ms: Math.round(total) });
  }
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "hidden") leave();
    else if (!shown) shown = Date.now();
  });
  addEventListener("pagehide", function () { if (shown) leave(); });

  function path(el) {
    var parts = [];
    for (var n = 0; el && el.nodeType === 1 && n < 4; n++, el = el.parentElement) {
      var p = el.tagName.toLowerCase();
      if (el.id) { parts.unshift(p + "#" + el.id); break; }
      if (typeof el.className === "string" && el.className.trim()) p += "." + el.className.trim().split(/\s+/)[0];
      parts.unshift(p);
    }
    return parts.join(">").replace(/[^\x20-\x7e]/g, "").slice(0, 200);
  }
  addEventListener("click", function (e) {
    if (!e.pageX && !e.pageY) return; /* a keyboard "click": no position */
    send({ t: "click", page: page, x: Math.round(e.pageX), y: Math.round(e.pageY), vw: innerWidth,
           el: path(e.target) });
  }, true);
})();
