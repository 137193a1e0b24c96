/* The chat tab: conversations, a model picker, answers streamed from POST /api/chat as SSE (fetch's
   stream, else XMLHttpRequest's text). Starts when app.js first shows its panel. ES5; uses app.js's api
   and when (loaded before it, so the tab in the address is picked before app.js's first answer). */
(function () {
  "use strict";

  var panel = document.querySelector('[data-panel="chat"]'), md = window.mpgptMarkdown;
  if (!panel || !md) { return; }
  var TURNS = 50, CONVS = 20;
  // generating: the server could not close the answer; recovery finishes it, and it shows in the conversation
  var ENDED = { cut: "回答不完整", failed: "回答失败", timed_out: "回答超时", generating: "回答尚未完成，稍后在对话记录中查看" };
  // view: bumped when another conversation is shown, so late answers to the old one are dropped.
  var st = { started: false, conv: null, earliest: 0, listOffset: 0, busy: false, view: 0 };

  function $(id) { return document.getElementById(id); }
  function show(e, on) { if (on) { e.removeAttribute("hidden"); } else { e.setAttribute("hidden", ""); } }
  function el(tag, cls, text) {
    var e = document.createElement(tag);
    if (cls) { e.className = cls; }
    if (text !== undefined) { e.textContent = text; }
    return e;
  }
  function button(cls, text, onclick) { var b = el("button", cls, text); b.type = "button"; b.onclick = onclick; return b; }
  function parse(s) { try { return JSON.parse(s); } catch (e) { return null; } }
  function unit() { return document.body.getAttribute("data-unit") || "积分"; }  // [texts] unit
  function relogin() { location.reload(); }  // app.js then shows the login form
  function api(method, url, done) {
    window.mpgptPage.api(method, url, method === "POST" ? {} : null, function (status, data) {
      if (status === 401) { relogin(); } else if (status === 200) { done(data); }
    });
  }

  // -- the answer stream

  // Takes text as it arrives; calls onEvent(name, data) per complete event.
  function sseReader(onEvent) {
    var buffer = "";
    return function (chunk, last) {
      var blocks = (buffer + chunk).split(/\r?\n\r?\n/);
      buffer = last ? "" : blocks.pop();
      for (var i = 0; i < blocks.length; i++) {
        var lines = blocks[i].split(/\r?\n/), name = "message", data = [], m;
        for (var j = 0; j < lines.length; j++) {
          if ((m = /^(event|data): ?(.*)$/.exec(lines[j]))) { if (m[1] === "event") { name = m[2]; } else { data.push(m[2]); } }
        }
        var value = data.length ? parse(data.join("\n")) : null;
        if (value !== null) { onEvent(name, value); }
      }
    };
  }

  // h.event(name, data) per event, h.batch() after each piece of text, then h.end(failed);
  // or h.refused(status, json) when the answer is not a stream (400, 404, 413...).
  function postChat(body, h) {
    var feed = sseReader(h.event), json = JSON.stringify(body);
    function take(text, last) { feed(text, last); h.batch(); if (last) { h.end(false); } }
    if (!(window.fetch && window.TextDecoder && window.ReadableStream)) {
      var xhr = new XMLHttpRequest(), seen = 0;
      var grown = function (last) { var t = xhr.responseText || ""; take(t.slice(seen), last); seen = t.length; };
      xhr.open("POST", "/api/chat", true);
      xhr.setRequestHeader("Content-Type", "application/json");
      xhr.onprogress = function () { if (xhr.status === 200) { grown(false); } };
      xhr.onreadystatechange = function () {
        if (xhr.readyState !== 4) { return; }
        if (xhr.status === 200) { grown(true); } else if (xhr.status) { h.refused(xhr.status, parse(xhr.responseText)); } else { h.end(true); }
      };
      xhr.send(json);
      return;
    }
    fetch("/api/chat", { method: "POST", credentials: "same-origin", body: json,
                         headers: { "Content-Type": "application/json" } }).then(function (res) {
      if (!res.ok) { return res.text().then(function (t) { h.refused(res.status, parse(t)); }); }
      if (!res.body || !res.body.getReader) { return res.text().then(function (t) { take(t, true); }); }
      var reader = res.body.getReader(), decoder = new TextDecoder();
      function pump() {
        return reader.read().then(function (r) {
          if (r.done) { take(decoder.decode(), true); return null; }
          take(decoder.decode(r.value, { stream: true }), false);
          return pump();
        });
      }
      return pump();
    })["catch"](function () { h.end(true); });
  }

  // -- turns

  function nearBottom() {
    var doc = document.documentElement;
    return window.innerHeight + (window.pageYOffset || doc.scrollTop) >= doc.scrollHeight - 120;
  }
  function toBottom() { window.scrollTo(0, document.documentElement.scrollHeight); }

  function userTurn(text) {
    var turn = el("div", "turn me");
    turn.appendChild(el("div", "bubble", text));
    return turn;
  }

  function botTurn(text) {
    var turn = el("div", "turn bot"), foot = el("div", "turn-foot");
    var copy = button("copy", "复制", function () { copyText(turn.raw, copy); });
    turn.raw = text;
    turn.setAttribute("data-ai-generated", "true");
    turn.body = turn.appendChild(el("div", "md"));
    turn.meta = el("span", "meta");
    foot.appendChild(copy);
    foot.appendChild(turn.meta);
    turn.appendChild(foot);
    paint(turn);
    return turn;
  }

  // The AI label (ours; chat.css shows it)
  function label(t, d) { if (d.ai_label) { t.body.setAttribute("data-label", d.ai_label); } return t; }

  function paint(turn) {
    turn.body.textContent = "";
    turn.body.appendChild(md(turn.raw));
  }

  function copyText(s, b) {
    function copied(ok) {
      b.textContent = ok ? "已复制" : "复制失败";
      setTimeout(function () { b.textContent = "复制"; }, 1500);
    }
    if (navigator.clipboard && navigator.clipboard.writeText && window.isSecureContext) {
      navigator.clipboard.writeText(s).then(function () { copied(true); }, function () { copied(legacyCopy(s)); });
    } else {
      copied(legacyCopy(s));
    }
  }

  // Older browsers (and any on plain http): copy the selection of an off-screen textarea.
  function legacyCopy(s) {
    var area = el("textarea", "offscreen"), ok = false;
    area.value = s;
    area.setAttribute("readonly", "");
    document.body.appendChild(area);
    area.select();
    area.setSelectionRange(0, s.length);
    try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
    document.body.removeChild(area);
    return ok;
  }

  // -- asking

  function ask(ev) {
    if (ev) { ev.preventDefault(); }
    var input = $("chat-input"), message = input.value.replace(/^\s+|\s+$/g, "");
    if (!message || st.busy) { return; }
    try { document.dispatchEvent(new CustomEvent("mpgpt:act")); } catch (e) { /* the tracker's; old browsers skip it */ }
    var body = { message: message }, model = $("chat-model").value;
    if (model) { body.model = model; }
    if (st.conv !== null) { body.conversation_id = st.conv; }
    input.value = "";
    grow();
    busy(true);
    show($("chat-empty"), false);
    var view = st.view, answer = botTurn(""), got = false, changed = false;
    $("chat-turns").appendChild(userTurn(message));
    $("chat-turns").appendChild(answer);
    answer.className = "turn bot live";
    toBottom();

    function settle(cls, meta) {
      got = true;
      answer.className = "turn bot " + cls;
      answer.meta.textContent = meta;
      busy(false);
    }

    postChat(body, {
      event: function (name, data) {
        if (name === "start" && view === st.view) { st.conv = data.conversation_id; }
        if (name === "delta") { answer.raw += data; }
        if (name === "replace") { answer.raw = data; }
        if (name === "refusal") {
          answer.raw = data.text;
          settle("refused", "");
          if (data.code === "no_credits") { answer.meta.appendChild(button("link-btn", "去充值", topUp)); }
        }
        if (name === "done") {
          var end = ENDED[data.status];
          settle(end ? "ended" : "", (end ? end + " · " : "") + (data.credits_charged
            ? "消耗 " + data.credits_charged + " " + unit() : "未扣" + unit()) + " · 余额 " + data.balance);
          $("balance").textContent = data.balance;
          label(answer, data);
          loadConversations(true, false);
        }
        changed = true;
      },
      batch: function () {
        if (!changed) { return; }
        var stick = nearBottom();
        changed = false;
        paint(answer);
        if (stick) { toBottom(); }
      },
      end: function (failed) {
        if (got) { return; }
        settle("ended", failed ? "连接中断，回答会继续生成并保存" : "回答没有完整送达");
        answer.meta.appendChild(button("link-btn", "刷新查看完整回答", function () { loadConversations(true, true); }));
      },
      refused: function (status, data) {
        if (status === 401) { relogin(); return; }
        if (data && data.reason === "conversation_not_found") { st.conv = null; }
        answer.raw = (data && data.error) || "服务暂时不可用，请稍后再试";
        paint(answer);
        settle("refused", "");
      }
    });
  }

  function topUp() { document.querySelector('#tabs button[data-tab="topup"]').click(); }

  function busy(on) {
    st.busy = on;
    $("chat-send").disabled = on;
    $("chat-send").textContent = on ? "回答中" : "发送";
  }

  function grow() {
    var input = $("chat-input");
    input.style.height = "auto";
    input.style.height = Math.min(input.scrollHeight + 2, 160) + "px";
  }

  function onKey(ev) {
    // Enter sends from a keyboard; on a phone, and while an IME composes Chinese, it is a new line.
    var composing = ev.isComposing || ev.keyCode === 229;
    var touch = window.matchMedia && window.matchMedia("(pointer: coarse)").matches;
    if (ev.keyCode === 13 && !ev.shiftKey && !composing && (!touch || ev.ctrlKey || ev.metaKey)) { ask(ev); }
  }

  // -- conversations and models

  function loadModels() {
    api("GET", "/api/models", function (data) {
      var select = $("chat-model");
      select.textContent = "";
      for (var i = 0; i < data.models.length; i++) {
        var m = data.models[i], option = el("option", null, m.display_name + (m.price ? " · " + m.price.prompt + "/" + m.price.completion + " " + unit() + "/千token"
          : m.cost ? " · " + m.cost + " " + unit() + "/次" : ""));
        option.value = m.name;
        option.selected = !!m.current;
        select.appendChild(option);
      }
      show(select, data.models.length > 0);
    });
  }

  function loadConversations(fresh, openCurrent) {
    var offset = fresh ? 0 : st.listOffset;
    api("GET", "/api/conversations?limit=" + CONVS + "&offset=" + offset, function (data) {
      var list = $("chat-convs"), items = data.conversations, current = null;
      if (fresh) { list.textContent = ""; }
      for (var i = 0; i < items.length; i++) {
        list.appendChild(conversationItem(items[i]));
        current = current || (items[i].current ? items[i] : null);
      }
      st.listOffset = offset + items.length;
      show($("chat-convs-more"), items.length === CONVS);
      show($("chat-convs-empty"), !list.children.length);
      if (openCurrent && current && !st.busy) { open(current); }
      mark();
    });
  }

  function conversationItem(c) {
    var li = el("li"), b = button("", "", function () { if (!st.busy) { open(c); panel.className = "chat"; } });
    b.setAttribute("data-id", c.id);
    b.appendChild(el("span", "preview", c.preview || "（空对话）"));
    b.appendChild(el("span", "when", window.mpgptPage.when(c.last_at) + " · " + c.turns + " 条" + (c.current ? " · 当前" : "")));
    li.appendChild(b);
    return li;
  }

  function mark() {
    var buttons = $("chat-convs").getElementsByTagName("button");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].className = buttons[i].getAttribute("data-id") === String(st.conv) ? "on" : "";
    }
  }

  function clearView(conv) {
    st.view++;
    st.conv = conv;
    $("chat-turns").textContent = "";
    show($("chat-earlier"), false);
    mark();
  }

  function open(c) {
    clearView(c.id);
    st.earliest = Math.max(0, c.turns - TURNS);
    show($("chat-empty"), !c.turns);
    loadTurns(st.earliest, TURNS, false);
  }

  function loadTurns(offset, limit, earlier) {
    var view = st.view;
    api("GET", "/api/conversations/" + st.conv + "?limit=" + limit + "&offset=" + offset, function (data) {
      if (view !== st.view) { return; }
      var turns = $("chat-turns"), before = document.documentElement.scrollHeight;
      var nodes = document.createDocumentFragment();
      for (var i = 0; i < data.turns.length; i++) {
        var t = data.turns[i];
        nodes.appendChild(t.role === "user" ? userTurn(t.content) : label(botTurn(t.content), data));
      }
      turns.insertBefore(nodes, earlier ? turns.firstChild : null);
      show($("chat-earlier"), offset > 0);
      if (earlier) { window.scrollBy(0, document.documentElement.scrollHeight - before); } else { toBottom(); }
    });
  }

  function earlier() {
    var limit = Math.min(TURNS, st.earliest);
    st.earliest -= limit;
    loadTurns(st.earliest, limit, true);
  }

  function newConversation() {
    if (st.busy) { return; }
    api("POST", "/api/conversations/new", function () {
      clearView(null);
      show($("chat-empty"), true);
      panel.className = "chat";
      loadConversations(true, false);
      $("chat-input").focus();
    });
  }

  // -- showing the tab

  function shown() {
    var on = !panel.hasAttribute("hidden");
    document.body.className = on ? "chat-on" : "";
    if (on && !st.started) {
      st.started = true;
      loadModels();
      loadConversations(true, true);
    }
    if (!on && $("tabs").hasAttribute("hidden")) {  // logged out: nothing of this follower stays on screen
      st.started = false;
      clearView(null);
      $("chat-convs").textContent = "";
    }
    // #chat keeps the tab across a reload, and a bookmark can open it.
    if (history.replaceState) { history.replaceState(null, "", location.pathname + location.search + (on ? "#chat" : "")); }
  }

  if (location.hash === "#chat") {  // before app.js's login check answers and picks the tab
    var tabs = document.querySelectorAll("#tabs button");
    for (var i = 0; i < tabs.length; i++) { tabs[i].className = tabs[i].getAttribute("data-tab") === "chat" ? "on" : ""; }
  }
  if (window.MutationObserver) {
    new MutationObserver(shown).observe(panel, { attributes: true, attributeFilter: ["hidden"] });
  } else {
    document.addEventListener("click", function () { setTimeout(shown, 0); }, true);
  }
  $("chat-form").onsubmit = ask;
  $("chat-input").onkeydown = onKey;
  $("chat-input").oninput = grow;
  $("chat-new").onclick = newConversation;
  $("chat-earlier").onclick = earlier;
  $("chat-convs-more").onclick = function () { loadConversations(false, false); };
  $("chat-side-btn").onclick = function () {
    var opening = panel.className === "chat";
    panel.className = opening ? "chat side-open" : "chat";
    if (opening) { panel.scrollIntoView(); }
  };
})();
