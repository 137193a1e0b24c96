/* The companion page. Plain ES5 with XMLHttpRequest so older WeChat browsers run it too. */
(function () {
  "use strict";

  var POLL_MS = 2000;
  var KINDS = {
    trial: "新用户赠送", daily: "每日免费额度", expire: "免费额度过期", reserve: "提问",
    refund: "提问失败退回", topup: "充值", admin: "人工调整", redeem: "兑换码", invite: "邀请奖励"
  };
  var OUTCOMES = { ok: "完成", cut: "中断", refused: "未回答", timed_out: "超时", failed: "失败" };
  var ORDER_STATES = {
    closed: "订单已关闭，请重新下单。", failed: "下单失败，请稍后再试。",
    held: "支付金额异常，已转人工处理，请联系公众号客服。"
  };

  var state = { historyOffset: 0, order: null, pollTimer: null, waitTimer: null, waiting: false, loggedIn: false };

  function $(id) { return document.getElementById(id); }
  function show(el, on) { if (on) { el.removeAttribute("hidden"); } else { el.setAttribute("hidden", ""); } }
  function text(el, s) { el.textContent = s; }

  function api(method, url, body, done) {
    // a preview (the heatmap's picture of a screen) shows the screen empty: no request, no login
    if (state.preview) { setTimeout(function () { done(503, { error: "" }); }, 0); return; }
    var xhr = new XMLHttpRequest();
    xhr.open(method, url, true);
    xhr.setRequestHeader("Accept", "application/json");
    if (body !== null) { xhr.setRequestHeader("Content-Type", "application/json"); }
    xhr.onreadystatechange = function () {
      if (xhr.readyState !== 4) { return; }
      var data = null;
      try { data = JSON.parse(xhr.responseText); } catch (e) { data = null; }
      if (xhr.status === 0) { data = { error: "网络不可用，请检查网络后重试" }; }
      if (!data) { data = { error: "服务暂时不可用，请稍后再试" }; }
      done(xhr.status, data);
    };
    xhr.send(body === null ? null : JSON.stringify(body));
  }

  function pad(n) { return n < 10 ? "0" + n : "" + n; }
  function when(ts) {
    var d = new Date(ts * 1000);
    return pad(d.getMonth() + 1) + "-" + pad(d.getDate()) + " " + pad(d.getHours()) + ":" + pad(d.getMinutes());
  }

  function notice(msg) { text($("notice"), msg || ""); show($("notice"), !!msg); }

  // The analytics tracker (track.js) records each screen as a view of its own.
  function announce(screen) {
    if (window.mpgptScreen === screen) { return; }
    window.mpgptScreen = screen;
    var ev;
    try { ev = new CustomEvent("mpgpt:screen"); } catch (e) {
      ev = document.createEvent("Event");
      ev.initEvent("mpgpt:screen", false, false);
    }
    document.dispatchEvent(ev);
  }

  // -- login ------------------------------------------------------------------------------------------

  function showLogin(info) {
    state.loggedIn = false;
    announce("login");
    show($("login"), true);
    show($("tabs"), false);
    show($("logout"), false);
    var panels = document.querySelectorAll("[data-panel]");
    for (var i = 0; i < panels.length; i++) { show(panels[i], false); }
    if (info && info.login_word) {
      var words = document.querySelectorAll(".login-word");
      for (var j = 0; j < words.length; j++) { text(words[j], info.login_word); }
    }
    var inWeChat = /MicroMessenger/i.test(navigator.userAgent);
    var failed = /[?&]login=failed/.test(location.search);
    if (failed) { notice("微信授权登录没有成功，请在公众号发送「登录」获取登录链接。"); }
    if (info && info.oauth_url && inWeChat && !failed) { location.href = info.oauth_url; return; }
    if (!state.waiting) { waitForCode(); }
  }

  // A one-time link from chat carries its token in the fragment, which no server or proxy log sees.
  function linkToken() {
    var m = /^#login=([A-Za-z0-9_-]{32,64})$/.exec(location.hash);
    return m ? m[1] : null;
  }

  function loginWithLink(token) {
    if (history.replaceState) { history.replaceState(null, "", location.pathname + location.search); }
    api("POST", "/api/login", { token: token }, function (status, data) {
      if (status === 200) { notice(""); loadMe(true); return; }
      showLogin(null);
      notice(data.error || "登录失败");
    });
  }

  // A browser without the link shows a short code; the follower sends it in chat, and this browser
  // (which holds the matching cookie) is logged in.
  function waitForCode() {
    state.waitTimer = null;
    if (state.loggedIn) { state.waiting = false; return; }
    state.waiting = true;
    api("POST", "/api/login/wait", {}, function (status, data) {
      if (state.loggedIn || !state.waiting) { return; }
      if (status === 200 && data.ok) { state.waiting = false; notice(""); loadMe(true); return; }
      if (status === 200) {
        text($("login-send"), data.send);
        show($("login-desktop"), true);
        show($("login-error"), false);
      } else {
        text($("login-error"), data.error || "暂时无法获取登录码");
        show($("login-error"), true);
      }
      state.waitTimer = setTimeout(waitForCode, POLL_MS);
    });
  }

  function stopWaiting() {
    if (state.waitTimer) { clearTimeout(state.waitTimer); }
    state.waitTimer = null;
    state.waiting = false;
  }

  function onLogout() {
    api("POST", "/api/logout", {}, function () { stopPolling(); showLogin(null); });
  }

  // -- account ----------------------------------------------------------------------------------------

  function loadMe(fresh) {
    var offset = fresh ? 0 : state.historyOffset;
    api("GET", "/api/me?offset=" + offset, null, function (status, data) {
      if (status === 401) { showLogin(data); return; }
      if (status !== 200) { notice(data.error); return; }
      if (!state.loggedIn) { enterApp(); }
      renderAccount(data, fresh);
    });
  }

  function enterApp() {
    state.loggedIn = true;
    stopWaiting();
    show($("login"), false);
    show($("tabs"), true);
    show($("logout"), true);
    selectTab(currentTab() || "account");
    loadProducts();
  }

  function renderAccount(me, fresh) {
    text($("balance"), me.balance);
    text($("daily-line"), me.daily_free > 0
      ? "其中今日免费 " + me.daily + "（每天 " + me.daily_free + "，当天有效）" : "");
    show($("frozen"), !!me.frozen);
    var inv = me.invite;
    show($("invite"), !!inv);
    if (inv) {
      var a = document.createElement("a");
      a.href = inv.link;  // a bare path (no public address configured) becomes this page's own address
      text($("invite-link"), a.href);
      text($("invite-send"), inv.send);
      text($("invite-line"), "邀请码 " + inv.code + " · 已邀请 " + inv.invited + " 人" +
        (inv.reward > 0 ? "，好友首次充值后你将获得 " + inv.reward + " " + UNIT : ""));
    }
    var list = $("history");
    if (fresh) { list.innerHTML = ""; }
    var items = me.history.items;
    for (var i = 0; i < items.length; i++) {
      var it = items[i];
      var s = it.credits;
      list.appendChild(row((KINDS[it.kind] || it.kind) + (it.model ? " " + it.model : "") + (it.estimated ? "（估算）" : ""),
        when(it.at), s, s[0] == "-" ? "minus" : "plus"));
    }
    state.historyOffset = me.history.offset + items.length;
    show($("history-more"), me.history.more);
    show($("history-empty"), list.children.length === 0);
    var usage = $("usage");
    usage.innerHTML = "";
    for (var j = 0; j < me.usage.length; j++) {
      var u = me.usage[j];
      usage.appendChild(row(u.model, when(u.at), OUTCOMES[u.outcome] || u.outcome, ""));
    }
    show($("usage-empty"), me.usage.length === 0);
  }

  function row(title, sub, value, cls) {
    var li = document.createElement("li");
    var left = document.createElement("span");
    left.appendChild(document.createTextNode(title));
    var small = document.createElement("span");
    small.className = "when";
    text(small, sub);
    left.appendChild(small);
    var right = document.createElement("span");
    right.className = cls;
    text(right, value);
    li.appendChild(left);
    li.appendChild(right);
    return li;
  }

  function moreHistory() {
    api("GET", "/api/me?offset=" + state.historyOffset, null, function (status, data) {
      if (status === 200) { renderAccount(data, false); } else if (status === 401) { showLogin(data); }
    });
  }

  // -- tabs -------------------------------------------------------------------------------------------

  function currentTab() {
    var on = document.querySelector("#tabs button.on");
    return on ? on.getAttribute("data-tab") : null;
  }

  function selectTab(name) {
    var buttons = document.querySelectorAll("#tabs button");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].className = buttons[i].getAttribute("data-tab") === name ? "on" : "";
    }
    var panels = document.querySelectorAll("[data-panel]");
    for (var j = 0; j < panels.length; j++) { show(panels[j], panels[j].getAttribute("data-panel") === name); }
    announce(SCREENS[name] || name);
    // the bar (and WeChat's in-app browser title) names the open tab
    var title = TITLES[name] || TITLES.account;
    document.title = title;
    document.querySelector("header.bar h1").textContent = title;
  }

  var UNIT = document.body.getAttribute("data-unit") || "积分";
  var TITLES = { account: document.body.getAttribute("data-title") || "我的" + UNIT, chat: "对话", topup: "充值" };
  var SCREENS = { account: "account", chat: "chat", topup: "shop" };

  // -- products and paying ----------------------------------------------------------------------------

  function loadProducts() {
    api("GET", "/api/products", null, function (status, data) {
      var list = $("products");
      list.innerHTML = "";
      show($("shop-closed"), !data.open);
      text($("shop-closed"), data.message || "");
      if (!data.open) { return; }
      for (var i = 0; i < data.products.length; i++) { list.appendChild(productItem(data.products[i])); }
    });
  }

  function productItem(p) {
    var li = document.createElement("li");
    var b = document.createElement("button");
    b.type = "button";
    b.setAttribute("data-id", p.id);
    var left = document.createElement("span");
    var name = document.createElement("span");
    name.className = "name";
    text(name, p.name);
    var credits = document.createElement("span");
    credits.className = "credits";
    text(credits, p.gives);
    left.appendChild(name);
    left.appendChild(credits);
    var price = document.createElement("span");
    price.className = "price";
    text(price, "¥" + p.price);
    b.appendChild(left);
    b.appendChild(price);
    b.onclick = function () { buy(p, null); };
    li.appendChild(b);
    return li;
  }

  function buy(p, kind) {
    stopPolling();
    show($("checkout"), true);
    show($("qr"), false);
    show($("pay-again"), false);
    text($("checkout-title"), "购买 " + p.name + "（¥" + p.price + "）");
    status("正在下单…", "");
    if ($("checkout").scrollIntoView) { $("checkout").scrollIntoView(); }
    var body = { product_id: p.id };
    if (kind) { body.kind = kind; }
    api("POST", "/api/orders", body, function (code, order) {
      if (code === 401) { showLogin(order); return; }
      if (code !== 200) { status(order.error || "下单失败", ""); return; }
      state.order = order;
      state.product = p;
      if (order.qr_svg) {
        $("qr-img").src = order.qr_svg;
        show($("qr"), true);
        status("等待支付…", "");
      } else if (order.jsapi) {
        payInWeChat(order.jsapi);
      }
      startPolling();
    });
  }

  function payInWeChat(params) {
    function invoke() {
      window.WeixinJSBridge.invoke("getBrandWCPayRequest", params, function (res) {
        var msg = (res && res.err_msg) || "";
        // The bridge's answer is only a hint: the order's state (from WeChat Pay's notify) decides.
        if (msg === "get_brand_wcpay_request:ok") {
          status("正在确认支付结果…", "");
        } else if (msg === "get_brand_wcpay_request:cancel") {
          status("已取消支付", "");
          show($("pay-again"), true);
        } else {
          status("无法在当前页面支付，已改为扫码支付", "");
          buy(state.product, "native");
        }
      });
    }
    status("请在弹出的窗口中完成支付", "");
    if (window.WeixinJSBridge && window.WeixinJSBridge.invoke) { invoke(); return; }
    if (document.addEventListener) {
      document.addEventListener("WeixinJSBridgeReady", invoke, false);
    }
  }

  function status(msg, cls) { var s = $("pay-status"); text(s, msg); s.className = "status " + cls; }

  function startPolling() {
    stopPolling();
    state.pollTimer = setTimeout(poll, POLL_MS);
  }

  function stopPolling() {
    if (state.pollTimer) { clearTimeout(state.pollTimer); }
    state.pollTimer = null;
  }

  function poll() {
    state.pollTimer = null;
    var order = state.order;
    if (!order) { return; }
    api("GET", "/api/orders/" + encodeURIComponent(order.out_trade_no), null, function (code, data) {
      if (state.order !== order) { return; }
      if (code === 401) { showLogin(data); return; }
      if (code === 200 && data.paid) {
        show($("qr"), false);
        status("支付成功，已到账 " + data.gives + "，当前可用 " + data.balance + " " + UNIT, "ok");
        text($("balance"), data.balance);
        state.order = null;
        loadMe(true);
        return;
      }
      if (code === 200 && ORDER_STATES[data.state]) {
        show($("qr"), false);
        status(ORDER_STATES[data.state], "");
        state.order = null;
        return;
      }
      if (order.expires_at * 1000 < new Date().getTime()) {
        show($("qr"), false);
        status(ORDER_STATES.closed, "");
        state.order = null;
        return;
      }
      state.pollTimer = setTimeout(poll, POLL_MS);
    });
  }

  // -- redemption codes -------------------------------------------------------------------------------

  function onRedeem(ev) {
    if (ev) { ev.preventDefault(); }
    var input = $("redeem-code"), out = $("redeem-result");
    var code = input.value.replace(/^\s+|\s+$/g, "");
    if (!code) { text(out, "请输入兑换码"); out.className = "status error"; show(out, true); return; }
    $("redeem-btn").disabled = true;
    api("POST", "/api/redeem", { code: code }, function (status, data) {
      $("redeem-btn").disabled = false;
      if (status === 401) { showLogin(data); return; }
      var ok = status === 200;
      text(out, ok ? data.message : (data.error || "兑换失败"));
      out.className = ok ? "status ok" : "status error";
      show(out, true);
      if (ok) { input.value = ""; text($("balance"), data.balance); }
    });
  }

  function closeCheckout() {
    stopPolling();
    state.order = null;
    show($("checkout"), false);
  }

  // -- start ------------------------------------------------------------------------------------------

  $("logout").onclick = onLogout;
  $("history-more").onclick = moreHistory;
  $("pay-cancel").onclick = closeCheckout;
  $("redeem-form").onsubmit = onRedeem;
  $("pay-again").onclick = function () { if (state.order && state.order.jsapi) { payInWeChat(state.order.jsapi); } };
  var tabButtons = document.querySelectorAll("#tabs button");
  for (var t = 0; t < tabButtons.length; t++) {
    tabButtons[t].onclick = function () {
      var name = this.getAttribute("data-tab");
      selectTab(name);
      if (name === "account") { loadMe(true); }  // questions asked in the chat tab changed it
    };
  }
  var token = linkToken(), preview = /^#preview=(login|account|chat|shop)$/.exec(location.hash);
  if (preview) {
    state.preview = true;
    if (preview[1] === "login") { show($("login"), true); announce("login"); } else {
      show($("tabs"), true);
      selectTab(preview[1] === "shop" ? "topup" : preview[1]);
    }
  } else if (token) { loginWithLink(token); } else { loadMe(true); }
  window.mpgptPage = { api: api, when: when };  // for chat.js
})();
