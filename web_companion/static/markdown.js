/* A small markdown renderer for model answers: window.mpgptMarkdown(text) -> DocumentFragment.
   Every piece of model text becomes a text node (createElement/createTextNode, never innerHTML), so raw
   HTML in an answer shows as text; links are made only for http(s) URLs. Partial markdown (an answer
   still streaming) renders as far as it goes: an unclosed code fence is code up to the end. ES5. */
(function () {
  "use strict";

  var SAFE_URL = /^https?:\/\/[^\s]+$/i;
  // Earliest match wins; at one position the first alternative: `code`, **bold**, *italic*, ~~del~~,
  // [label](url), a bare URL (not swallowing the punctuation after it).
  var INLINE = new RegExp([
    "`([^`\\n]+)`",
    "\\*\\*(\\S(?:.*?\\S)?)\\*\\*",
    "\\*(\\S(?:[^*]*?\\S)?)\\*",
    "~~(\\S(?:.*?\\S)?)~~",
    "\\[([^\\]\\n]+)\\]\\(\\s*([^()\\s]+)\\s*\\)",
    "(https?:\\/\\/[^\\s<>()\\[\\]\"'，。；！？、）」]*[^\\s<>()\\[\\]\"'，。；！？、）」.,;:!?])"
  ].join("|"));
  var FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+#.-]*)/;
  var HEADING = /^\s{0,3}(#{1,6})\s+(.*?)(?:\s+#+)?\s*$/;
  var RULE = /^\s{0,3}([-*_])(?:\s*\1){2,}\s*$/;
  var ITEM = /^(\s*)(?:[-*+]|(\d{1,9})[.)])\s+(.*)$/;
  var QUOTE = /^\s{0,3}>\s?(.*)$/;
  var TABLE_RULE = /^\s*\|?\s*:?-+:?\s*(\|\s*:?-+:?\s*)*\|?\s*$/;

  function el(tag) { return document.createElement(tag); }
  function add(parent, tag) { return parent.appendChild(el(tag)); }
  function txt(parent, s) { parent.appendChild(document.createTextNode(s)); }

  function link(parent, href, label, raw) {
    if (!SAFE_URL.test(href)) { txt(parent, raw); return; }  // javascript:, data:, relative...: plain text
    var a = add(parent, "a");
    a.setAttribute("href", href);
    a.setAttribute("target", "_blank");
    a.setAttribute("rel", "noopener noreferrer");
    a.textContent = label || href;
  }

  function inline(parent, s) {
    var m;
    while (s && (m = INLINE.exec(s))) {
      if (m.index) { txt(parent, s.slice(0, m.index)); }
      if (m[1] !== undefined) { add(parent, "code").textContent = m[1]; }
      else if (m[2] !== undefined) { inline(add(parent, "strong"), m[2]); }
      else if (m[3] !== undefined) { inline(add(parent, "em"), m[3]); }
      else if (m[4] !== undefined) { inline(add(parent, "del"), m[4]); }
      else if (m[5] !== undefined) { link(parent, m[6], m[5], m[0]); }
      else { link(parent, m[7], null, m[7]); }
      s = s.slice(m.index + m[0].length);
    }
    if (s) { txt(parent, s); }
  }

  function cells(line) {
    return line.replace(/^\s*\|/, "").replace(/\|\s*$/, "").split("|");
  }

  function table(out, lines, i) {
    var wrap = add(out, "div"), t = add(wrap, "table"), row = add(add(t, "thead"), "tr"), body = add(t, "tbody");
    var head = cells(lines[i]), j;
    wrap.className = "table";
    for (j = 0; j < head.length; j++) { inline(add(row, "th"), head[j].trim()); }
    for (i += 2; i < lines.length && lines[i].indexOf("|") >= 0 && lines[i].trim(); i++) {
      var tr = add(body, "tr"), c = cells(lines[i]);
      for (j = 0; j < head.length; j++) { inline(add(tr, "td"), (c[j] || "").trim()); }
    }
    return i - 1;
  }

  // lists: the open lists, outermost first, each {el, indent}; a deeper item opens a list in the last item.
  function item(out, lists, m) {
    var indent = m[1].replace(/\t/g, "    ").length, tag = m[2] ? "OL" : "UL", top;
    while (lists.length && indent < lists[lists.length - 1].indent) { lists.pop(); }
    top = lists[lists.length - 1];
    if (top && indent >= top.indent + 2) {
      top = null;
    } else if (top && top.el.tagName !== tag) {
      lists.pop();
      top = null;
    }
    if (!top) {
      var parent = lists.length ? lists[lists.length - 1].el.lastChild : out;
      top = { el: add(parent, tag), indent: indent };
      if (m[2] && m[2] !== "1") { top.el.setAttribute("start", String(parseInt(m[2], 10))); }
      lists.push(top);
    }
    inline(add(top.el, "li"), m[3]);
  }

  function render(src) {
    var out = document.createDocumentFragment();
    var lines = String(src || "").replace(/\r\n?/g, "\n").split("\n");
    var para = null, lists = [], m, i;
    for (i = 0; i < lines.length; i++) {
      var line = lines[i];
      if ((m = FENCE.exec(line))) {
        var close = new RegExp("^\\s*" + (m[1].charAt(0) === "`" ? "`" : "~") + "{" + m[1].length + ",}\\s*$");
        var code = [];
        for (i++; i < lines.length && !close.test(lines[i]); i++) { code.push(lines[i]); }
        var pre = add(out, "pre");
        if (m[2]) { pre.setAttribute("data-lang", m[2]); }
        add(pre, "code").textContent = code.join("\n");
        para = null; lists = [];
        continue;
      }
      if (!line.trim()) { para = null; lists = []; continue; }
      if ((m = ITEM.exec(line)) && !RULE.test(line)) { para = null; item(out, lists, m); continue; }
      if (lists.length && /^\s+\S/.test(line)) {  // an indented line goes on with the last item
        var li = lists[lists.length - 1].el.lastChild;
        add(li, "br");
        inline(li, line.trim());
        continue;
      }
      para = para && !lists.length ? para : null;
      lists = [];
      if ((m = HEADING.exec(line))) { para = null; inline(add(out, "h" + Math.min(6, m[1].length + 2)), m[2]); continue; }
      if (RULE.test(line)) { para = null; add(out, "hr"); continue; }
      if (QUOTE.test(line)) {
        var quoted = [];
        for (; i < lines.length && (m = QUOTE.exec(lines[i])); i++) { quoted.push(m[1]); }
        i--;
        add(out, "blockquote").appendChild(render(quoted.join("\n")));
        para = null;
        continue;
      }
      if (line.indexOf("|") >= 0 && i + 1 < lines.length && lines[i + 1].indexOf("|") >= 0 &&
          TABLE_RULE.test(lines[i + 1])) {
        i = table(out, lines, i);
        para = null;
        continue;
      }
      if (para) { add(para, "br"); } else { para = add(out, "p"); }
      inline(para, line);
    }
    return out;
  }

  window.mpgptMarkdown = render;
})();
