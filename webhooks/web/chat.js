/* 问科 web chat: talks to POST /api/chat and POST /api/feedback.
 *
 * Every text that comes from the server or the user is put on the page with
 * textContent, never as HTML. The conversation (user id, messages and their
 * feedback state) is kept in localStorage so a reload shows the same page.
 */
(function () {
  "use strict";

  var STORE_KEY = "wenke.chat.v1";
  var MAX_STORED_MESSAGES = 200;
  var REQUEST_TIMEOUT_MS = 30000;
  var BLOCK_ROLES = { body: true, source: true, related: true, hint: true };

  var MSG_NETWORK = "网络不太好，请稍后再试";
  var MSG_TOO_FAST = "发得太快了，请稍等一下再问";

  var els = {};
  var state = { userId: "", messages: [] };
  var busy = false;
  var storageOk = true;

  // ---------------------------------------------------------------- utils

  function randomId() {
    var c = window.crypto;
    if (c && typeof c.randomUUID === "function") {
      try {
        return c.randomUUID();
      } catch (e) {
        /* not a secure context: fall through */
      }
    }
    var bytes = new Uint8Array(16);
    if (c && typeof c.getRandomValues === "function") {
      c.getRandomValues(bytes);
    } else {
      for (var i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    var hex = [];
    for (var j = 0; j < 16; j++) hex.push((bytes[j] + 0x100).toString(16).slice(1));
    return (
      hex.slice(0, 4).join("") + "-" + hex.slice(4, 6).join("") + "-" +
      hex.slice(6, 8).join("") + "-" + hex.slice(8, 10).join("") + "-" +
      hex.slice(10, 16).join("")
    );
  }

  function str(value) {
    return typeof value === "string" ? value : value == null ? "" : String(value);
  }

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  function button(className, text) {
    var b = el("button", className, text);
    b.type = "button";
    return b;
  }

  function prefersReducedMotion() {
    return !!(window.matchMedia && window.matchMedia("(prefers-reduced-motion: reduce)").matches);
  }

  // -------------------------------------------------------------- storage

  function load() {
    var saved = null;
    try {
      saved = JSON.parse(window.localStorage.getItem(STORE_KEY) || "null");
    } catch (e) {
      saved = null;
    }
    if (saved && typeof saved === "object") {
      if (typeof saved.userId === "string" && saved.userId) state.userId = saved.userId;
      if (Array.isArray(saved.messages)) {
        state.messages = saved.messages.map(restoreMessage).filter(Boolean);
      }
    }
    if (!state.userId) {
      state.userId = randomId();
      save();
    }
  }

  function save() {
    if (!storageOk) return;
    if (state.messages.length > MAX_STORED_MESSAGES) {
      state.messages = state.messages.slice(-MAX_STORED_MESSAGES);
    }
    try {
      window.localStorage.setItem(
        STORE_KEY,
        JSON.stringify({ version: 1, userId: state.userId, messages: state.messages })
      );
    } catch (e) {
      // Private mode or full storage: the page still works, it just forgets.
      storageOk = false;
    }
  }

  function restoreMessage(m) {
    if (!m || typeof m !== "object") return null;
    if (m.role === "user" && typeof m.text === "string") {
      return { role: "user", text: m.text, turnId: str(m.turnId) };
    }
    if (m.role === "bot") return normaliseBot(m);
    return null;
  }

  // A bot message as stored: the server's reply (or a stored copy) cleaned up.
  function normaliseBot(data) {
    var blocks = Array.isArray(data.blocks) ? data.blocks : [];
    blocks = blocks
      .filter(function (b) { return b && typeof b.text === "string" && b.text.trim() !== ""; })
      .map(function (b) {
        var role = str(b.role);
        return { role: BLOCK_ROLES[role] ? role : "body", text: b.text };
      });
    if (!blocks.length && typeof data.reply === "string" && data.reply.trim() !== "") {
      blocks = [{ role: "body", text: data.reply }];
    }
    var suggestions = (Array.isArray(data.suggestions) ? data.suggestions : [])
      .map(str)
      .filter(function (s) { return s.trim() !== ""; });
    var rawQuick = Array.isArray(data.quick_replies) ? data.quick_replies
      : Array.isArray(data.quickReplies) ? data.quickReplies : [];
    var quickReplies = rawQuick
      .filter(function (q) { return q && (str(q.text).trim() || str(q.label).trim()); })
      .map(function (q) {
        var text = str(q.text).trim() ? str(q.text) : str(q.label);
        var label = str(q.label).trim() ? str(q.label) : text;
        return { label: label, text: text };
      });
    var citations = (Array.isArray(data.citations) ? data.citations : [])
      .filter(function (c) { return c && typeof c === "object"; })
      .map(function (c) {
        return {
          entry_id: str(c.entry_id),
          question: str(c.question),
          source: str(c.source),
          reviewer: c.reviewer == null ? null : str(c.reviewer),
          confidence: typeof c.confidence === "number" ? c.confidence : null
        };
      });
    var rating = data.rating === "up" || data.rating === "down" ? data.rating : null;
    return {
      role: "bot",
      kind: str(data.kind) || "answer",
      turnId: str(data.turnId != null ? data.turnId : data.turn_id),
      blocks: blocks,
      citations: citations,
      suggestions: suggestions,
      quickReplies: quickReplies,
      confidence: typeof data.confidence === "number" ? data.confidence : null,
      feedback: data.feedback === true,
      rating: rating
    };
  }

  // ------------------------------------------------------------ rendering

  var LIST_LINE = /^\s*(\d+)\s*[.．、)）]\s*(.+?)\s*$/;

  // The plain-text reply lists suggestions as "1. 问题" lines; the page shows
  // them as buttons instead, so those lines are taken out of the text. A
  // related block left with only its heading ("相关问题：") becomes the label
  // of the buttons.
  function layoutBlocks(m) {
    var wanted = {};
    m.suggestions.forEach(function (s) { wanted[s.trim()] = true; });
    var hasSuggestions = m.suggestions.length > 0;
    var label = "";
    var blocks = [];
    m.blocks.forEach(function (b) {
      if (!hasSuggestions || b.role === "source") {
        blocks.push(b);
        return;
      }
      var removed = 0;
      var kept = b.text.split("\n").filter(function (line) {
        var match = LIST_LINE.exec(line);
        if (match && wanted[match[2]]) {
          removed++;
          return false;
        }
        return true;
      });
      if (!removed) {
        blocks.push(b);
        return;
      }
      var text = kept.join("\n").replace(/\s+$/, "").replace(/^\s*\n/, "");
      if (b.role === "related") {
        var heading = text.trim();
        if (heading === "") return;
        if (heading.indexOf("\n") < 0 && heading.length <= 20) {
          if (!label) label = heading.replace(/[：:]\s*$/, "");
          return;
        }
      }
      if (text.trim() !== "") blocks.push({ role: b.role, text: text });
    });
    return { blocks: blocks, label: label };
  }

  // "来源：… ｜ 审核：…": each part on its own line on narrow screens; the
  // separator stays in the text.
  function renderSource(text) {
    var node = el("p", "block source");
    var parts = text.split(/\s*[｜|]\s*/);
    if (parts.length < 2) {
      node.textContent = text;
      return node;
    }
    parts.forEach(function (part, i) {
      if (i > 0) node.appendChild(el("span", "source-sep", " ｜ "));
      node.appendChild(el("span", "source-part", part));
    });
    return node;
  }

  function renderUser(m) {
    var node = el("div", "msg user");
    node.setAttribute("data-kind", "user");
    node.setAttribute("data-turn-id", m.turnId || "");
    node.appendChild(el("span", "visually-hidden", "我："));
    node.appendChild(el("div", "bubble", m.text));
    return node;
  }

  function renderBot(m) {
    var node = el("div", "msg bot");
    node.setAttribute("data-kind", m.kind);
    node.setAttribute("data-turn-id", m.turnId);

    var layout = layoutBlocks(m);
    node.appendChild(el("div", "sender", "问科"));
    var bubble = el("div", "bubble");
    layout.blocks.forEach(function (b) {
      bubble.appendChild(b.role === "source" ? renderSource(b.text)
        : el(b.role === "body" ? "div" : "p", "block " + b.role, b.text));
    });
    node.appendChild(bubble);

    if (m.suggestions.length || m.quickReplies.length) {
      var actions = el("div", "actions");
      if (m.suggestions.length) {
        var numbered = m.kind === "suggest";
        var groupLabel = layout.label || (numbered ? "点一下就能看答案" : "你可能还想问");
        var labelNode = el("p", "actions-label", groupLabel);
        labelNode.id = "sl-" + (m.turnId || randomId());
        actions.appendChild(labelNode);
        var list = el("div", "suggestions");
        list.setAttribute("role", "group");
        list.setAttribute("aria-labelledby", labelNode.id);
        m.suggestions.forEach(function (question, i) {
          var b = button("suggestion");
          if (numbered) b.appendChild(el("span", "num", (i + 1) + "."));
          b.appendChild(el("span", "q", question));
          b.setAttribute("data-text", question);
          list.appendChild(b);
        });
        actions.appendChild(list);
      }
      if (m.quickReplies.length) {
        var quick = el("div", "quick-replies");
        quick.setAttribute("role", "group");
        quick.setAttribute("aria-label", "快捷回复");
        m.quickReplies.forEach(function (q) {
          var b = button("quick-reply", q.label);
          b.setAttribute("data-text", q.text);
          if (q.label !== q.text) b.setAttribute("title", "发送：" + q.text);
          quick.appendChild(b);
        });
        actions.appendChild(quick);
      }
      node.appendChild(actions);
    }

    if (m.feedback && m.turnId) node.appendChild(renderFeedback(m));
    return node;
  }

  // 👍 / 👎 drawn as icons, so they look the same where no emoji font is.
  var THUMB_UP = "M1 21h4V9H1v12zm22-11c0-1.1-.9-2-2-2h-6.31l.95-4.57.03-.32c0-.41-.17-.79-.44-1.06L14.17 1 " +
    "7.59 7.59C7.22 7.95 7 8.45 7 9v10c0 1.1.9 2 2 2h9c.83 0 1.54-.5 1.84-1.22l3.02-7.05c.09-.23.14-.47.14-.73v-2z";
  var THUMB_DOWN = "M15 3H6c-.83 0-1.54.5-1.84 1.22l-3.02 7.05c-.09.23-.14.47-.14.73v2c0 1.1.9 2 2 2h6.31l-.95 " +
    "4.57-.03.32c0 .41.17.79.44 1.06L9.83 23l6.59-6.59c.36-.36.58-.86.58-1.41V5c0-1.1-.9-2-2-2zm4 0v12h4V3h-4z";

  function icon(path) {
    var ns = "http://www.w3.org/2000/svg";
    var svg = document.createElementNS(ns, "svg");
    svg.setAttribute("viewBox", "0 0 24 24");
    svg.setAttribute("width", "20");
    svg.setAttribute("height", "20");
    svg.setAttribute("aria-hidden", "true");
    svg.setAttribute("focusable", "false");
    var p = document.createElementNS(ns, "path");
    p.setAttribute("d", path);
    p.setAttribute("fill", "currentColor");
    svg.appendChild(p);
    return svg;
  }

  function feedbackButton(className, path, label, rating) {
    var b = button(className);
    b.appendChild(icon(path));
    b.appendChild(el("span", "feedback-text", label));
    b.setAttribute("data-rating", rating);
    return b;
  }

  function renderFeedback(m) {
    var box = el("div", "feedback");
    box.setAttribute("role", "group");
    box.setAttribute("aria-label", "这个回答有帮助吗");
    box.appendChild(el("span", "feedback-label", "有帮助吗？"));
    var up = feedbackButton("feedback-up", THUMB_UP, "有用", "up");
    var down = feedbackButton("feedback-down", THUMB_DOWN, "没用", "down");
    box.appendChild(up);
    box.appendChild(down);
    var thanks = el("span", "feedback-thanks", "谢谢反馈");
    box.appendChild(thanks);
    showRating(box, m.rating);
    return box;
  }

  function showRating(box, rating) {
    var up = box.querySelector(".feedback-up");
    var down = box.querySelector(".feedback-down");
    var thanks = box.querySelector(".feedback-thanks");
    up.setAttribute("aria-pressed", rating === "up" ? "true" : "false");
    down.setAttribute("aria-pressed", rating === "down" ? "true" : "false");
    up.disabled = !!rating;
    down.disabled = !!rating;
    thanks.hidden = !rating;
  }

  function render(m) {
    return m.role === "user" ? renderUser(m) : renderBot(m);
  }

  function renderAll() {
    els.messages.textContent = "";
    var frag = document.createDocumentFragment();
    state.messages.forEach(function (m) { frag.appendChild(render(m)); });
    els.messages.appendChild(frag);
    updateWelcome();
  }

  function updateWelcome() {
    els.welcome.hidden = els.messages.childElementCount > 0;
  }

  // -------------------------------------------------------------- scrolling

  function composerHeight() {
    return els.composer ? els.composer.offsetHeight : 0;
  }

  function scrollToBottom(smooth) {
    var top = document.documentElement.scrollHeight;
    window.scrollTo({ top: top, behavior: smooth && !prefersReducedMotion() ? "smooth" : "auto" });
  }

  // Shows the newest message; a long answer is shown from its beginning.
  function reveal(node, smooth) {
    var behavior = smooth && !prefersReducedMotion() ? "smooth" : "auto";
    var room = window.innerHeight - composerHeight() - 24;
    if (node && node.offsetHeight > room) {
      var top = node.getBoundingClientRect().top + window.pageYOffset - 12;
      window.scrollTo({ top: top, behavior: behavior });
    } else {
      scrollToBottom(smooth);
    }
  }

  // ----------------------------------------------------------- networking

  function setBusy(value) {
    busy = value;
    els.send.disabled = value;
    els.typing.hidden = !value;
    document.body.classList.toggle("busy", value);
    els.messages.setAttribute("aria-busy", value ? "true" : "false");
  }

  function showError(text) {
    els.error.textContent = text;
    els.error.hidden = false;
  }

  function clearError() {
    els.error.hidden = true;
    els.error.textContent = "";
  }

  function postJson(url, body, timeoutMs) {
    var controller = typeof AbortController === "function" ? new AbortController() : null;
    var timer = controller ? setTimeout(function () { controller.abort(); }, timeoutMs) : null;
    return fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify(body),
      credentials: "same-origin",
      signal: controller ? controller.signal : undefined
    }).then(
      function (res) {
        if (timer) clearTimeout(timer);
        return res.text().then(function (raw) {
          var data = null;
          try {
            data = raw ? JSON.parse(raw) : null;
          } catch (e) {
            data = null;
          }
          return { status: res.status, ok: res.ok, data: data };
        });
      },
      function (err) {
        if (timer) clearTimeout(timer);
        throw err;
      }
    );
  }

  function send(text) {
    text = str(text);
    if (busy) return;
    if (text.trim() === "") {
      els.input.focus();
      return;
    }
    clearError();

    var userMsg = { role: "user", text: text, turnId: "" };
    var userNode = renderUser(userMsg);
    els.messages.appendChild(userNode);
    updateWelcome();
    if (els.input.value === text) {
      els.input.value = "";
      autoGrow();
    }
    setBusy(true);
    scrollToBottom(true);

    postJson("/api/chat", { user_id: state.userId, text: text }, REQUEST_TIMEOUT_MS)
      .then(function (res) {
        if (!res.ok || !res.data || typeof res.data !== "object") {
          var err = new Error("HTTP " + res.status);
          err.status = res.status;
          throw err;
        }
        var botMsg = normaliseBot(res.data);
        userMsg.turnId = botMsg.turnId;
        userNode.setAttribute("data-turn-id", botMsg.turnId);
        state.messages.push(userMsg, botMsg);
        save();
        setBusy(false);
        var botNode = renderBot(botMsg);
        els.messages.appendChild(botNode);
        reveal(botNode, true);
      })
      .catch(function (err) {
        setBusy(false);
        var message = err && err.status === 429 ? MSG_TOO_FAST : MSG_NETWORK;
        // The question was not answered. Give it back in the input box so it
        // can be sent again; if the user has started typing something else,
        // keep it on the list with a button to send it again instead.
        if (els.input.value.trim() === "") {
          if (userNode.parentNode) userNode.parentNode.removeChild(userNode);
          updateWelcome();
          els.input.value = text;
          autoGrow();
        } else {
          markFailed(userNode, text);
        }
        showError(message);
        scrollToBottom(false);
      });
  }

  function markFailed(node, text) {
    node.classList.add("failed");
    var row = el("div", "failed-row");
    row.appendChild(el("span", "failed-note", "没有发出去"));
    var retry = button("retry", "重新发送");
    retry.addEventListener("click", function () {
      if (busy) return;
      if (node.parentNode) node.parentNode.removeChild(node);
      send(text);
    });
    row.appendChild(retry);
    node.appendChild(row);
  }

  function rate(box, rating) {
    var node = box.closest(".msg.bot");
    if (!node) return;
    var turnId = node.getAttribute("data-turn-id");
    var m = null;
    for (var i = state.messages.length - 1; i >= 0; i--) {
      if (state.messages[i].role === "bot" && state.messages[i].turnId === turnId) {
        m = state.messages[i];
        break;
      }
    }
    if (!m || m.rating) return;
    m.rating = rating;
    save();
    showRating(box, rating);
    // A lost rating is not worth bothering the user about.
    postJson(
      "/api/feedback",
      { user_id: state.userId, turn_id: turnId, rating: rating },
      REQUEST_TIMEOUT_MS
    ).catch(function () {});
  }

  // --------------------------------------------------------------- input

  function autoGrow() {
    var input = els.input;
    input.style.height = "auto";
    var max = 168;
    input.style.height = Math.min(input.scrollHeight + 3, max) + "px";
  }

  function clearConversation() {
    state.messages = [];
    save();
    clearError();
    renderAll();
    window.scrollTo(0, 0);
  }

  function onMessagesClick(event) {
    var target = event.target.closest("button");
    if (!target || !els.messages.contains(target)) return;
    if (target.classList.contains("suggestion") || target.classList.contains("quick-reply")) {
      send(target.getAttribute("data-text"));
    } else if (target.classList.contains("feedback-up") || target.classList.contains("feedback-down")) {
      rate(target.closest(".feedback"), target.getAttribute("data-rating"));
    }
  }

  function init() {
    els.messages = document.getElementById("messages");
    els.welcome = document.getElementById("welcome");
    els.typing = document.getElementById("typing");
    els.form = document.getElementById("composer");
    els.composer = els.form;
    els.input = document.getElementById("chat-input");
    els.send = document.getElementById("send");
    els.clear = document.getElementById("clear");
    els.error = document.getElementById("error");

    load();
    renderAll();
    setBusy(false);

    els.form.addEventListener("submit", function (event) {
      event.preventDefault();
      send(els.input.value);
    });

    els.input.addEventListener("keydown", function (event) {
      if (event.key !== "Enter" || event.shiftKey) return;
      // Enter that confirms a pinyin (IME) candidate must not send.
      if (event.isComposing || event.keyCode === 229) return;
      event.preventDefault();
      send(els.input.value);
    });

    els.input.addEventListener("input", function () {
      autoGrow();
      if (!els.error.hidden) clearError();
    });

    els.messages.addEventListener("click", onMessagesClick);

    els.welcome.addEventListener("click", function (event) {
      var target = event.target.closest("button.example");
      if (target) send(target.getAttribute("data-text") || target.textContent);
    });

    els.clear.addEventListener("click", clearConversation);

    autoGrow();
    if (state.messages.length) {
      var last = els.messages.lastElementChild;
      // After layout, so the page height is known.
      window.requestAnimationFrame(function () { reveal(last, false); });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", init);
  } else {
    init();
  }
})();
