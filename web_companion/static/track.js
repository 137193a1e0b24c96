/* mpgpt page analytics: page views, time on page, clicks. No cookies, no openid: an anonymous
   visitor id in localStorage. Events go out with sendBeacon, which never holds up the page.

   The companion page is a single-page app: each screen it shows (login, account, shop, chat) is a
   view of its own. The page names the screen in `window.mpgptScreen` and announces a change with a
   "mpgpt:screen" event; "mpgpt:act" says something was done without a click (a question sent with
   Enter). Visible time is sent whenever the page is hidden or closed, and when the screen changes. */
(function () {
  "use strict";
  var END = "/api/track", WAIT_MS = 2000;
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
  var page = location.pathname, cur = null, acted = false;

  function send(ev) {
    ev.vid = vid; ev.pv = cur.pv;
    var body = JSON.stringify(ev);
    /* text/plain: a type sendBeacon may post without a CORS preflight; the server reads JSON anyway */
    try {
      if (navigator.sendBeacon && navigator.sendBeacon(END, new Blob([body], { type: "text/plain" }))) return;
    } catch (e) { /* fall through */ }
    try { fetch(END, { method: "POST", body: body, keepalive: true }); } catch (e) { /* analytics only */ }
  }
  function ref() {
    try { var u = new URL(document.referrer); return u.origin + u.pathname; } catch (e) { return ""; }
  }
  function visible() { return document.visibilityState !== "hidden"; }
  function screenNow() {
    var s = window.mpgptScreen;
    return typeof s === "string" && /^[a-z][a-z0-9_-]{0,31}$/.test(s) ? s : "";
  }

  /* Visible time only: a tab in the background is not time on page. */
  function start(screen) {
    cur = { pv: rid(), screen: screen, shown: visible() ? Date.now() : 0, total: 0 };
    send({ t: "view", page: page, screen: screen, ref: ref(), vw: innerWidth, vh: innerHeight });
    if (acted) { acted = false; send({ t: "act" }); }
  }
  function report() {
    if (!cur) start(screenNow());
    if (cur.shown) { cur.total += Date.now() - cur.shown; cur.shown = 0; }
    send({ t: "leave", ms: Math.round(cur.total) });
  }
  function switchTo(screen) {
    if (cur && cur.screen === screen) return;
    if (cur) report();
    start(screen);
  }

  /* The first view waits (briefly) for the page to say which screen it shows. */
  if (screenNow()) start(screenNow());
  else setTimeout(function () { if (!cur) start(screenNow()); }, WAIT_MS);
  document.addEventListener("mpgpt:screen", function () { switchTo(screenNow()); });
  document.addEventListener("mpgpt:act", function () { if (cur) send({ t: "act" }); else acted = true; });
  document.addEventListener("submit", function () { if (cur) send({ t: "act" }); else acted = true; }, true);

  document.addEventListener("visibilitychange", function () {
    if (!visible()) report();
    else if (cur && !cur.shown) cur.shown = Date.now();
  });
  addEventListener("pagehide", function () { if (!cur || cur.shown) report(); });

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
    if (!cur) start(screenNow());
    /* the screen the click was made on: a tab button's click counts for the screen it leaves */
    send({ t: "click", page: page, screen: cur.screen, x: Math.round(e.pageX), y: Math.round(e.pageY),
           vw: innerWidth, el: path(e.target) });
  }, true);
})();
