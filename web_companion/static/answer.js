/* The answer page: renders the answer (markdown.js, as the web chat does), follows it as it is written
   (Server-Sent Events from data-events: replace, delta, done) and copies it. Without this script the
   text in the HTML is the page. ES5, like the companion page. */
(function () {
  "use strict";

  var article = document.getElementById("answer"), body = document.getElementById("answer-text");
  var copy = document.getElementById("copy"), status = document.getElementById("answer-status");
  var md = window.mpgptMarkdown;
  if (!article || !body || !md) { return; }
  var ENDED = { cut: "回答不完整", failed: "回答失败", timed_out: "回答超时" };
  var raw = body.textContent, painted = null;

  function paint() {
    if (raw === painted) { return; }
    painted = raw;
    body.className = "md";
    body.textContent = "";
    body.appendChild(md(raw));
  }

  function copied(ok) {
    copy.textContent = ok ? "已复制" : "复制失败";
    setTimeout(function () { copy.textContent = "复制"; }, 1500);
  }

  // Older browsers (and any on plain http): copy the selection of an off-screen textarea.
  function legacyCopy(s) {
    var area = document.createElement("textarea"), ok = false;
    area.className = "offscreen";
    area.value = s;
    area.setAttribute("readonly", "");
    document.body.appendChild(area);
    area.select();
    area.setSelectionRange(0, s.length);
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  copy.onclick = function () {
    if (navigator.clipboard && navigator.clipboard.writeText && window.isSecureContext) {
      navigator.clipboard.writeText(raw).then(function () { copied(true); }, function () { copied(legacyCopy(raw)); });
    } else {
      copied(legacyCopy(raw));
    }
  };
  copy.removeAttribute("hidden");
  paint();

  // The stream also tells the server the whole answer was shown here (chat then owes none of it).
  if (!window.EventSource) { return; }
  var events = new EventSource(article.getAttribute("data-events"));
  function data(e) { try { return JSON.parse(e.data); } catch (err) { return null; } }
  events.addEventListener("replace", function (e) { var d = data(e); if (typeof d === "string") { raw = d; paint(); } });
  events.addEventListener("delta", function (e) { var d = data(e); if (typeof d === "string") { raw += d; paint(); } });
  events.addEventListener("done", function (e) {
    var d = data(e) || {};
    events.close();
    article.className = "turn bot" + (ENDED[d.status] ? " ended" : "");
    article.setAttribute("data-status", d.status || "done");
    status.textContent = ENDED[d.status] || "";
  });
})();
