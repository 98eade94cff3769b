// gentask web console: plain JavaScript, no library, no build step (docs/console.md).
//
// Safety rules kept throughout: nothing from the API (prompts, messages, errors) is ever parsed
// as HTML: every text goes in with textContent or an attribute; the key lives in sessionStorage
// (this tab only) and goes out in the Authorization header, never in a URL.
"use strict";

(() => {
  const API = new URL("../api/v1/ai/", location.href);
  const KEY_STORE = "gentask.console.key";
  const PAGE_SIZE = 24;
  const POLL_MS = 3000;               // the fallback when the event stream route is not there
  const RETRY_MS = 3000;              // reconnect/retry pace when the API cannot be reached
  const STALL_MS = 60000;             // an event stream silent this long (no event, no ping) is reopened
  const TYPES = ["image", "video", "text"];
  const UNFINISHED = new Set(["pending", "processing"]);
  const FLOAT_PARAMS = new Set(["temperature"]);
  const SIZE_CANDIDATES = ["64x64", "128x128", "256x256", "512x512", "768x768", "1024x1024", "1024x768", "768x1024",
    "1280x720", "720x1280", "1536x1024", "1024x1536", "1920x1080", "1080x1920", "2048x2048", "2560x1440",
    "1440x2560", "3840x2160", "2160x3840", "4096x4096"];

  const $ = (id) => document.getElementById(id);
  const state = {
    key: sessionStorage.getItem(KEY_STORE) || "",
    me: null,
    offset: 0,
    total: 0,
    page: [],                 // the gallery's tasks, in order
    cards: new Map(),         // task_id -> card element
    tasks: new Map(),         // task_id -> latest view seen
    streamed: new Set(),      // task_ids the event stream has told of since it (re)opened
    models: null,
    stream: null,
    poll: null,
    down: false,
    route: null,
    current: null,            // the task shown on the task page
  };

  // --- DOM helpers: text only ----------------------------------------------------------------

  // "0.4 CNY", or each currency's total; then each attempt when there were several
  function costText(cost) {
    const totals = (cost.totals || []).map((t) => `${t.amount} ${t.currency}`).join(" + ");
    const attempts = cost.attempts || [];
    if (attempts.length < 2) return totals;
    const each = attempts.map((a) => `${a.provider}/${a.model} ${a.outcome.toLowerCase()}: ${a.amount} ${a.currency}`);
    return `${totals} (${each.join("; ")})`;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children.flat()) {
      if (child === null || child === undefined || child === false) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  function announce(text) {
    const live = $("live");
    live.textContent = "";
    setTimeout(() => { live.textContent = text; }, 50);
  }

  function ago(iso) {
    if (!iso) return "";
    const seconds = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
    if (seconds < 45) return "just now";
    const units = [[86400 * 365, "year"], [86400 * 30, "month"], [86400, "day"], [3600, "hour"], [60, "minute"]];
    for (const [size, word] of units) {
      if (seconds >= size) {
        const n = Math.round(seconds / size);
        return `${n} ${word}${n === 1 ? "" : "s"} ago`;
      }
    }
    return "1 minute ago";
  }

  function when(iso) {
    return iso ? new Date(iso).toLocaleString() : "";
  }

  function timeEl(iso, relative) {
    return iso ? el("time", { datetime: iso, title: when(iso), "data-ago": relative ? iso : null },
      relative ? ago(iso) : when(iso)) : "";
  }

  // --- the banner: the API cannot be reached ---------------------------------------------------

  function showBanner(text) {
    const banner = $("banner");
    banner.textContent = text;
    banner.hidden = false;
  }

  function hideBanner() {
    $("banner").hidden = true;
    $("banner").textContent = "";
  }

  function apiDown(reason) {
    if (!state.down) {
      state.down = true;
      showBanner(`Cannot reach the API at ${API.origin} (${reason}). Retrying every ${RETRY_MS / 1000} s; ` +
        "the page updates by itself when it answers again.");
      setTimeout(retryUntilUp, RETRY_MS);
    }
  }

  async function retryUntilUp() {
    try {
      const r = await fetch(new URL("../../../healthz", API), { cache: "no-store" });
      if (r.ok) {
        state.down = false;
        hideBanner();
        if (state.key && state.me) route();           // the event stream reconnects by itself
        else if (state.key) resume();
        return;
      }
    } catch (e) { /* still down */ }
    setTimeout(retryUntilUp, RETRY_MS);
  }

  // --- the API -------------------------------------------------------------------------------

  class ApiError extends Error {
    constructor(status, body) {
      super((body && body.message) || `HTTP ${status}`);
      this.status = status;
      this.errors = (body && body.errors) || [];
    }
  }

  async function call(path, { method = "GET", body, query, key } = {}) {
    const url = new URL(path, API);
    for (const [k, v] of Object.entries(query || {})) if (v !== "" && v !== null && v !== undefined) url.searchParams.set(k, v);
    const headers = { Accept: "application/json", Authorization: `Bearer ${key || state.key}` };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    let response;
    try {
      response = await fetch(url, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: "no-store" });
    } catch (e) {
      apiDown("no answer");
      throw new ApiError(0, { message: `cannot reach the API at ${API.origin}` });
    }
    let doc = null;
    try { doc = await response.json(); } catch (e) { doc = null; }
    if (response.status === 502 || response.status === 504) {
      apiDown(`HTTP ${response.status} from a proxy`);
      throw new ApiError(response.status, doc);
    }
    if (state.down) { state.down = false; hideBanner(); }
    if (response.status === 401 && !key) {
      signOut("The API refused the key (401): it is missing, wrong or no longer configured. Sign in again.");
      throw new ApiError(401, doc);
    }
    if (!response.ok || !doc || doc.success === false) throw new ApiError(response.status, doc);
    return doc.data;
  }

  // --- sign in and out -----------------------------------------------------------------------

  async function signIn(event) {
    event.preventDefault();
    const key = $("key").value.trim();
    const error = $("signin-error");
    error.textContent = "";
    if (!key) { error.textContent = "Enter an API key."; $("key").focus(); return; }
    try {
      const me = await call("me", { key });
      state.key = key;
      state.me = me;
      sessionStorage.setItem(KEY_STORE, key);
      $("key").value = "";
      signedIn();
    } catch (e) {
      error.textContent = e.status === 401
        ? "The key was refused: the API does not know it. Check the key (GENTASK_API_KEYS on the server) and try again."
        : e.status === 0 ? `Cannot reach the API at ${API.origin}; it may be down. Try again in a moment.`
          : `Sign-in failed: ${e.message}`;
      $("key").setAttribute("aria-invalid", "true");
      $("key").focus();
    }
  }

  function signOut(why) {
    stopLive();
    sessionStorage.removeItem(KEY_STORE);
    state.key = ""; state.me = null; state.models = null;
    state.tasks.clear(); state.cards.clear(); state.page = [];
    $("cards").replaceChildren();
    $("nav").hidden = true;
    for (const id of ["gallery", "task"]) $(id).hidden = true;
    for (const d of ["create-dialog", "confirm-dialog"]) if ($(d).open) $(d).close();
    $("signin").hidden = false;
    $("signin-error").textContent = why || "";
    $("key").removeAttribute("aria-invalid");
    $("key").focus();
  }

  function signedIn() {
    $("signin").hidden = true;
    $("nav").hidden = false;
    const me = state.me;
    $("who").textContent = me.user_id ? `${me.user_id}${me.admin ? " (admin)" : ""}` : "authentication off (admin)";
    $("user-filter").hidden = !me.admin;
    $("c-user-field").hidden = !me.admin;
    // the first page before the stream: what the stream then sends is newer than what was listed
    Promise.resolve(route()).finally(() => { if (state.key) startLive(); });
  }

  // --- routing: #/ (gallery), #/task/<id> ----------------------------------------------------

  function route() {
    if (!state.key || !state.me) return;
    const match = location.hash.match(/^#\/task\/([^/?#]+)/);
    const previous = state.route;
    if (match) {
      state.route = { name: "task", id: decodeURIComponent(match[1]) };
      $("gallery").hidden = true;
      $("task").hidden = false;
      return showTask(state.route.id, previous && previous.name === "task" && previous.id === state.route.id);
    } else {
      state.route = { name: "gallery" };
      state.current = null;
      $("task").hidden = true;
      $("gallery").hidden = false;
      if (previous && previous.name === "task") $("main").focus();
      return loadGallery();
    }
  }

  // --- the gallery ---------------------------------------------------------------------------

  function filters() {
    const form = $("filters");
    return { type: form.elements.type.value, status: form.elements.status.value,
      user_id: state.me && state.me.admin ? form.elements.user_id.value.trim() : "" };
  }

  function matches(task) {
    const f = filters();
    return (!f.type || task.type === f.type) && (!f.status || task.status === f.status) &&
      (!f.user_id || task.user_id === f.user_id);
  }

  let loading = null;
  async function loadGallery() {
    const f = filters();
    const mine = loading = Symbol("load");
    try {
      const data = await call("tasks", { query: { ...f, limit: PAGE_SIZE, offset: state.offset } });
      if (loading !== mine) return;
      for (const t of data.tasks) remember(t, true);
      const late = state.offset === 0 ? notYetListed(data.tasks) : [];
      state.total = data.total + late.length;
      state.page = late.length ? [...late, ...data.tasks].sort(newestFirst).slice(0, PAGE_SIZE) : data.tasks;
      renderGallery();
      // the history lags the cluster, and a new stream tells only of tasks still unfinished when it
      // opened: an unfinished task of this page that the stream has not told of may have finished
      // already, so it is read once from the live result endpoint
      for (const t of data.tasks) {
        const known = state.tasks.get(t.task_id);
        if (known && !state.streamed.has(t.task_id) && (known.status === "pending" || known.status === "processing")) {
          refreshTask(t.task_id, true);
        }
      }
    } catch (e) {
      if (loading !== mine || e.status === 401 || e.status === 0) return;
      $("gallery-note").textContent = e.status === 503
        ? `The task history (MongoDB) is unavailable: ${e.message}. Retrying every ${POLL_MS / 1000} s.`
        : `Could not list the tasks: ${e.message}`;
      if (e.status === 503 || e.status === 429) setTimeout(() => { if (state.route?.name === "gallery") loadGallery(); }, POLL_MS);
    }
  }

  const made = (task) => Date.parse(task.created_at || task.created || "") || 0;
  const newestFirst = (a, b) => made(b) - made(a);

  // The history (MongoDB) lags the cluster: a task the stream has told of may not be listed yet. On
  // the first page, such tasks (matching the filters, and newer than the page's oldest when the page
  // is full) are shown anyway, so a page read while the history lags never hides a new task.
  function notYetListed(listed) {
    const ids = new Set(listed.map((t) => t.task_id));
    const full = listed.length >= PAGE_SIZE;
    const oldest = listed.length ? made(listed[listed.length - 1]) : 0;
    return [...state.tasks.values()].filter((t) => !ids.has(t.task_id) && state.streamed.has(t.task_id)
      && matches(t) && (!full || made(t) > oldest));
  }

  const RANK = { pending: 0, processing: 1, completed: 2, failed: 2, cancelled: 2 };

  // `listed`: the task comes from an answer that may be older than what the event stream has shown
  // (a page of the history, which lags; a result, cancel or create answer read just before a newer
  // event arrived): such a view never moves a task further back. Events themselves come in order.
  function remember(task, listed) {
    const known = state.tasks.get(task.task_id);
    if (listed && known && RANK[known.status] > RANK[task.status]) return;
    state.tasks.set(task.task_id, known ? { ...known, ...task } : task);
    if (task.user_id && state.me && state.me.admin) {
      const list = $("known-users");
      if (![...list.options].some((o) => o.value === task.user_id)) list.append(el("option", { value: task.user_id }));
    }
  }

  function renderGallery() {
    const list = $("cards");
    const seen = new Set();
    const nodes = state.page.map((task) => {
      seen.add(task.task_id);
      const view = state.tasks.get(task.task_id) || task;
      let card = state.cards.get(task.task_id);
      if (!card) { card = makeCard(view); state.cards.set(task.task_id, card); } else updateCard(card, view);
      return card;
    });
    for (const id of [...state.cards.keys()]) if (!seen.has(id)) state.cards.delete(id);
    list.replaceChildren(...nodes);
    const f = filters();
    const filtered = f.type || f.status || f.user_id;
    $("gallery-note").textContent = state.total === 0
      ? (filtered ? "No tasks match these filters." : "No tasks yet. Press “New task” to make one.") : "";
    const first = state.total ? state.offset + 1 : 0;
    $("page-info").textContent = `${first}–${state.offset + state.page.length} of ${state.total}`;
    $("prev").disabled = state.offset === 0;
    $("next").disabled = state.offset + state.page.length >= state.total;
  }

  function signed(url) {
    return typeof url === "string" && url.includes("signature=");
  }

  function mediaOf(task) {
    const artifacts = (task.result && task.result.artifacts) || [];
    const image = artifacts.find((a) => a.kind === "image" && signed(a.url));
    const video = artifacts.find((a) => a.kind === "video" && signed(a.url));
    return { image, video, artifacts, text: task.result ? task.result.text_result : null };
  }

  function thumbFor(task) {
    const m = mediaOf(task);
    const thumb = el("div", { class: "thumb" });
    if (task.status === "completed" && task.type === "image" && m.image) {
      thumb.append(el("img", { src: m.image.url, alt: `image for: ${task.prompt}`, loading: "lazy",
        "data-kind": "image" }));
    } else if (task.status === "completed" && task.type === "video" && m.video) {
      thumb.append(el("video", { src: m.video.url, controls: true, preload: "metadata", muted: true, playsinline: true,
        "aria-label": `video for: ${task.prompt}`, "data-kind": "video" }));
    } else if (task.status === "completed" && task.type === "text" && m.text) {
      thumb.append(el("pre", { class: "preview", "data-kind": "text" }, m.text.slice(0, 400)));
    } else {
      const words = { pending: "waiting to run", processing: "running…", failed: "failed", cancelled: "cancelled",
        completed: "loading the result…" };
      thumb.append(el("div", { class: "placeholder" }, `${task.type}: ${words[task.status] || task.status}`));
    }
    return thumb;
  }

  function mediaKey(task) {
    const m = mediaOf(task);
    return `${task.status}|${m.image ? m.image.name : ""}|${m.video ? m.video.name : ""}|${m.text ? m.text.length : ""}`;
  }

  function statusBadge(task) {
    return el("span", { class: `status ${task.status}`, "data-status": task.status }, task.status);
  }

  function progressText(task) {
    if (task.status === "failed") return task.error || task.message || task.reason || "";
    if (UNFINISHED.has(task.status)) return task.cancel_requested ? "cancel requested" : (task.message || "");
    return "";
  }

  function makeCard(task) {
    const card = el("li", { class: "card", tabindex: "0", "data-task": task.task_id, role: "link" });
    card.addEventListener("click", (e) => {
      if (e.target.closest("video")) return;       // the player's own controls
      open(card.dataset.task);
    });
    card.addEventListener("keydown", (e) => {
      if (e.target !== card) return;
      if (e.key === "Enter" || e.key === " ") { e.preventDefault(); open(card.dataset.task); }
    });
    fillCard(card, task);
    return card;
  }

  function fillCard(card, task) {
    card.dataset.media = mediaKey(task);
    card.dataset.status = task.status;
    card.setAttribute("aria-label", `${task.type} task ${task.status}, ${ago(task.updated || task.created)}: ${task.prompt}`);
    const meta = el("div", { class: "card-meta" }, statusBadge(task), el("span", {}, task.type),
      timeEl(task.updated || task.created, true), state.me && state.me.admin ? el("span", {}, task.user_id) : null);
    card.replaceChildren(thumbFor(task), el("div", { class: "card-body" },
      meta, el("p", { class: "card-prompt" }, task.prompt), el("p", { class: "progress" }, progressText(task))));
  }

  function updateCard(card, task) {
    if (card.dataset.media !== mediaKey(task)) { fillCard(card, task); return; }
    card.dataset.status = task.status;
    card.setAttribute("aria-label", `${task.type} task ${task.status}, ${ago(task.updated || task.created)}: ${task.prompt}`);
    const badge = card.querySelector(".status");
    badge.textContent = task.status;
    badge.className = `status ${task.status}`;
    card.querySelector(".progress").textContent = progressText(task);
    const t = card.querySelector("time");
    if (t) { t.dataset.ago = task.updated || task.created; t.textContent = ago(t.dataset.ago); }
  }

  function open(id) {
    location.hash = `#/task/${encodeURIComponent(id)}`;
  }

  // --- live updates: the event stream, read with fetch (EventSource cannot send the key) --------

  class EventStream {
    constructor(path, query, onEvent, onState) {
      this.path = path; this.query = query; this.onEvent = onEvent; this.onState = onState;
      this.lastId = ""; this.retry = RETRY_MS; this.stopped = false; this.controller = null;
    }

    stop() {
      this.stopped = true;
      if (this.controller) this.controller.abort();
    }

    async run() {
      while (!this.stopped) {
        this.controller = new AbortController();
        let stall = null;
        const alive = () => {
          clearTimeout(stall);
          stall = setTimeout(() => this.controller.abort(), STALL_MS);
        };
        try {
          const url = new URL(this.path, API);
          for (const [k, v] of Object.entries(this.query)) if (v) url.searchParams.set(k, v);
          const headers = { Accept: "text/event-stream", Authorization: `Bearer ${state.key}` };
          if (this.lastId) headers["Last-Event-ID"] = this.lastId;
          alive();
          const response = await fetch(url, { headers, signal: this.controller.signal, cache: "no-store" });
          if (response.status === 404 || response.status === 405) { this.onState("unsupported"); return; }
          if (response.status === 401) { this.onState("unauthorized"); return; }
          if (!response.ok || !response.body) {
            this.onState("refused", response.status);
          } else {
            this.onState("open");
            await this.read(response.body, alive);
            if (!this.stopped) this.onState("ended");
          }
        } catch (e) {
          if (this.stopped) return;
          this.onState("down");
        } finally {
          clearTimeout(stall);
        }
        if (!this.stopped) await new Promise((resolve) => setTimeout(resolve, this.retry));
      }
    }

    // text/event-stream as the HTML standard parses it: lines end with CRLF, LF or CR; `:` starts a
    // comment (a heartbeat); a blank line dispatches the event gathered so far.
    async read(body, alive) {
      const reader = body.getReader();
      const decoder = new TextDecoder("utf-8");
      let buffer = "";
      let data = [];
      let type = "";
      let id = null;
      const line = (text) => {
        if (text === "") {
          if (id !== null) this.lastId = id;
          if (data.length) this.onEvent(type || "message", data.join("\n"), this.lastId);
          data = []; type = ""; id = null;
          return;
        }
        if (text.startsWith(":")) return;                       // a comment: `: ping`
        const colon = text.indexOf(":");
        const field = colon < 0 ? text : text.slice(0, colon);
        let value = colon < 0 ? "" : text.slice(colon + 1);
        if (value.startsWith(" ")) value = value.slice(1);
        if (field === "data") data.push(value);
        else if (field === "event") type = value;
        else if (field === "id" && !value.includes("\0")) id = value;
        else if (field === "retry" && /^\d+$/.test(value)) this.retry = Math.max(1000, Number(value));
      };
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        alive();
        buffer += decoder.decode(value, { stream: true });
        let start = 0;
        for (let i = 0; i < buffer.length; i++) {
          const c = buffer[i];
          if (c === "\n" || c === "\r") {
            if (c === "\r" && i === buffer.length - 1) break;     // a CR whose LF may be in the next chunk
            line(buffer.slice(start, i));
            if (c === "\r" && buffer[i + 1] === "\n") i++;
            start = i + 1;
          }
        }
        buffer = buffer.slice(start);
      }
    }
  }

  // The stream is the fast path. A safety net beside it: every RECONCILE_MS, each task on screen
  // that is not finished is read again from the API (its live state), so a change the page missed
  // for any reason shows within seconds instead of never. Cheap: only unfinished, visible tasks.
  const RECONCILE_MS = 10000;
  let reconciler = null;
  function reconcile() {
    if (!state.key || state.down) return;
    const visible = new Set(state.cards.keys());
    if (state.route?.name === "task" && state.route.id) visible.add(state.route.id);
    for (const id of visible) {
      const task = state.tasks.get(id);
      if (task && (task.status === "pending" || task.status === "processing")) refreshTask(id, true);
    }
  }

  function startLive() {
    stopLive();
    reconciler = setInterval(reconcile, RECONCILE_MS);
    const f = state.me && state.me.admin ? filters() : {};
    const stream = new EventStream("events", { user_id: f.user_id || "" }, onStreamEvent, (what, status) => {
      if (what === "open") {
        state.streamed.clear();
        if (state.down) { state.down = false; hideBanner(); }
        // a new stream starts with the tasks still running: one that finished between the page read
        // and the stream's start would stay as the page showed it, so read each unfinished one once
        for (const [id, task] of state.tasks) {
          if (task.status === "pending" || task.status === "processing") refreshTask(id, true);
        }
      }
      else if (what === "down") apiDown("the event stream broke");
      else if (what === "unauthorized") signOut("The API refused the key (401). Sign in again.");
      else if (what === "unsupported") startPolling();
      else if (what === "refused" && status === 503) showBanner("The API answers but cannot reach the cluster (503); retrying.");
    });
    state.stream = stream;
    stream.run();
  }

  function stopLive() {
    if (reconciler) clearInterval(reconciler);
    reconciler = null;
    if (state.stream) state.stream.stop();
    state.stream = null;
    if (state.poll) clearInterval(state.poll);
    state.poll = null;
  }

  function startPolling() {                          // this API has no event stream: read again every 3 s
    if (state.poll) return;
    state.poll = setInterval(async () => {
      if (!state.key || state.down) return;
      if (state.route?.name === "gallery") loadGallery();
      else if (state.route?.name === "task" && state.current) refreshTask(state.current.task_id, false);
    }, POLL_MS);
  }

  const refreshing = new Map();
  function onStreamEvent(type, data) {
    let doc;
    try { doc = JSON.parse(data); } catch (e) { return; }
    if (!doc || !doc.task_id) return;
    if (type === "deleted") { forget(doc.task_id); return; }
    if (type !== "task") return;
    const before = state.tasks.get(doc.task_id);
    state.streamed.add(doc.task_id);
    remember(doc);
    const task = state.tasks.get(doc.task_id);
    if (before && before.status !== task.status) announce(`Task ${task.task_id} (${task.prompt.slice(0, 60)}) is now ${task.status}.`);
    // an event carries signed links (as a result read does); an older API's did not: read the result then
    if (task.status === "completed" && !mediaOf(task).image && !mediaOf(task).video && task.type !== "text") {
      refreshTask(task.task_id, true);
    } else if (task.status === "completed" && task.type === "text" && !(task.result && task.result.text_result)) {
      refreshTask(task.task_id, true);
    }
    if (state.route?.name === "gallery") {
      const card = state.cards.get(task.task_id);
      if (card) updateCard(card, task);
      else if (state.offset === 0 && matches(task) && !state.page.some((t) => t.task_id === task.task_id)) scheduleGallery();
    } else if (state.route?.name === "task" && state.route.id === task.task_id) {
      renderTask(task);
      scheduleTimeline(task.task_id);
    }
  }

  let galleryTimer = null;
  function scheduleGallery() {
    clearTimeout(galleryTimer);
    galleryTimer = setTimeout(loadGallery, 250);
  }

  // One read of a task at a time; a refresh asked for while one is under way is made after it (the
  // one under way may have been answered before the change that prompted the second).
  async function refreshTask(id, quiet) {
    if (refreshing.has(id)) { refreshing.set(id, "again"); return; }
    refreshing.set(id, "once");
    try {
      do {
        refreshing.set(id, "once");
        const task = await call(`task/result/${encodeURIComponent(id)}`);
        remember(task, true);              // an answer never moves a task back from a newer event
        const fresh = state.tasks.get(id);
        const card = state.cards.get(id);
        if (card) updateCard(card, fresh);
        if (state.route?.name === "task" && state.route.id === id) { renderTask(fresh); if (!quiet) scheduleTimeline(id); }
      } while (refreshing.get(id) === "again");
    } catch (e) {
      if (e.status === 404) forget(id);
    } finally {
      refreshing.delete(id);
    }
  }

  function forget(id) {
    state.tasks.delete(id);
    const card = state.cards.get(id);
    if (card) { card.remove(); state.cards.delete(id); state.page = state.page.filter((t) => t.task_id !== id); }
    if (state.route?.name === "task" && state.route.id === id) renderMissing(id, "This task was deleted.");
  }

  // --- the task page ---------------------------------------------------------------------------

  async function showTask(id, same) {
    const page = $("task");
    if (!same) page.replaceChildren(el("p", { class: "note" }, `Loading task ${id}…`));
    try {
      const task = await call(`task/result/${encodeURIComponent(id)}`);
      remember(task, true);              // an answer read before a newer event arrived never undoes it
      state.current = null;
      renderTask(state.tasks.get(id));
      loadTimeline(id);
      if (!same) { const h = $("task-title"); if (h) h.focus(); }
    } catch (e) {
      if (e.status === 404) renderMissing(id);
      else if (e.status !== 401 && e.status !== 0) {
        page.replaceChildren(backLink(), el("p", { class: "error", role: "alert" },
          `Could not read task ${id}: ${e.message}`));
      }
    }
  }

  function backLink() {
    return el("a", { href: "#/", class: "back" }, "← Back to the tasks");
  }

  function renderMissing(id, why) {
    state.current = null;
    $("task").replaceChildren(backLink(), el("h2", { id: "task-title", tabindex: "-1" }, "Task not found"),
      el("p", { role: "alert", class: "error" }, why || `Task ${id} was not found, or it is not yours. ` +
        "Tasks of other users are not shown; a task deleted or expired from the history is gone."),
      el("p", {}, el("a", { href: "#/" }, "Back to your tasks")));
    $("task-title").focus();
  }

  function renderTask(task) {
    const page = $("task");
    const first = !state.current || state.current.task_id !== task.task_id;
    state.current = task;
    if (first || !$("task-body")) {
      page.replaceChildren(backLink(),
        el("h2", { id: "task-title", tabindex: "-1" }, `Task ${task.task_id}`),
        el("div", { id: "task-body" }));
    }
    const m = mediaOf(task);
    const body = $("task-body");
    const key = mediaKey(task);
    let media = $("task-media");
    if (!media || media.dataset.key !== key) {
      media = el("div", { id: "task-media", class: "media", "data-key": key });
      if (task.status === "completed" && m.image) {
        const images = m.artifacts.filter((a) => a.kind === "image" && signed(a.url));
        for (const a of images) media.append(el("img", { src: a.url, alt: `image for: ${task.prompt}`, "data-kind": "image" }));
      } else if (task.status === "completed" && m.video) {
        media.append(el("video", { src: m.video.url, controls: true, preload: "metadata", playsinline: true,
          "aria-label": `video for: ${task.prompt}`, "data-kind": "video" }));
      } else if (task.status === "completed" && m.text) {
        media.append(el("pre", { "data-kind": "text" }, m.text));
      } else {
        media.append(el("p", { class: "note" }, task.status === "failed" ? "The task failed: nothing was produced."
          : task.status === "cancelled" ? "The task was cancelled." : "The result appears here when the task completes."));
      }
    }
    const facts = el("dl", { class: "facts", id: "task-facts" });
    const fact = (name, ...value) => { facts.append(el("dt", {}, name), el("dd", {}, ...value)); };
    fact("Status", statusBadge(task), " ", `${task.phase}${task.reason ? ` · ${task.reason}` : ""}`);
    const progress = progressText(task) || (task.status === "completed" ? "" : task.message || "");
    if (progress) fact(task.status === "failed" ? "Error" : "Progress", el("span", { id: "task-progress" }, progress));
    fact("Prompt", el("pre", { id: "task-prompt" }, task.prompt));
    fact("Type", task.type);
    fact("Model", `${task.provider} / ${task.model}`);
    if (task.served_by) fact("Served by", `${task.served_by.provider} / ${task.served_by.model}`);
    fact("Attempts", String(task.attempts));
    fact("Priority", task.priority);
    if (state.me && state.me.admin) fact("User", task.user_id);
    const params = Object.entries(task.params || {});
    if (params.length) fact("Parameters", params.map(([k, v]) => `${k}: ${v}`).join(", "));
    // usage and cost as the price table made them (docs/pricing.md); text nodes only, never markup
    const units = Object.entries(task.usage || {}).filter(([, v]) => v !== null && v !== undefined);
    const usage = units.length ? units : Object.entries((task.result && task.result.usage) || {});
    if (usage.length) fact("Usage", el("span", { id: "task-usage" }, usage.map(([k, v]) => `${k.replace(/_/g, " ")}: ${v}`).join(", ")));
    if (task.cost) fact("Cost", el("span", { id: "task-cost" }, costText(task.cost)));
    fact("Created", timeEl(task.created_at), task.created_at ? ` (${ago(task.created_at)})` : "");
    if (task.started_at) fact("Started", timeEl(task.started_at));
    if (task.completed_at) fact("Finished", timeEl(task.completed_at));

    const actions = el("div", { class: "actions", id: "task-actions" });
    for (const a of m.artifacts) {
      if (signed(a.url)) actions.append(el("a", { href: a.url, download: a.name, class: "download" }, `Download ${a.name}`));
    }
    if (UNFINISHED.has(task.status)) {
      actions.append(el("button", { type: "button", id: "cancel-task", disabled: task.cancel_requested,
        onclick: () => cancelTask(task.task_id) }, task.cancel_requested ? "Cancel requested" : "Cancel"));
    }
    actions.append(el("button", { type: "button", id: "again", onclick: (e) => openCreate(task, e.currentTarget) },
      "Make another like this"));
    actions.append(el("button", { type: "button", class: "danger", id: "delete-task",
      onclick: (e) => deleteTask(task, e.currentTarget) }, "Delete"));
    const note = el("p", { id: "task-note", class: "error", role: "alert" }, ($("task-note") || {}).textContent || "");
    const timeline = $("task-timeline") || el("section", { id: "task-timeline", "aria-labelledby": "timeline-title" },
      el("h3", { id: "timeline-title" }, "Timeline"), el("ol", { class: "timeline", id: "timeline-list" }));
    const side = el("div", {}, facts, actions, note);
    body.replaceChildren(el("div", { class: "task-layout" }, el("div", {}, media, timeline), side));
  }

  let timelineTimer = null;
  function scheduleTimeline(id) {
    clearTimeout(timelineTimer);
    timelineTimer = setTimeout(() => loadTimeline(id), 400);
  }

  async function loadTimeline(id) {
    let data;
    try { data = await call(`task/${encodeURIComponent(id)}/timeline`); } catch (e) {
      const list = $("timeline-list");
      if (list && e.status !== 401 && e.status !== 404) list.replaceChildren(el("li", {}, `The timeline could not be read: ${e.message}`));
      return;
    }
    const list = $("timeline-list");
    if (!list || !state.current || state.current.task_id !== id) return;
    const items = [];
    if (data.created_at) items.push({ at: data.created_at, what: "Created", msg: "" });
    for (const c of data.conditions) {
      items.push({ at: c.last_transition_time, what: `Condition ${c.type}=${c.status}`, reason: c.reason, msg: c.message });
    }
    for (const e of data.events) {
      items.push({ at: e.last_time || e.first_time, what: `Event ${e.reason}${e.count > 1 ? ` ×${e.count}` : ""}`,
        msg: e.message, warning: e.type === "Warning", source: e.source });
    }
    for (const f of data.provider_failures) items.push({ at: null, what: `${f.provider}/${f.model} failed: ${f.reason}`, msg: f.message, warning: true });
    if (!data.live) {
      if (data.started_at) items.push({ at: data.started_at, what: "Started", msg: "" });
      if (data.completed_at) items.push({ at: data.completed_at, what: `Finished: ${data.phase}`, msg: "" });
    }
    items.sort((a, b) => (a.at ? Date.parse(a.at) : Infinity) - (b.at ? Date.parse(b.at) : Infinity));
    const nodes = items.map((i) => el("li", { class: i.warning ? "warning" : "" },
      el("div", {}, i.at ? timeEl(i.at) : "", " ", el("strong", {}, i.what), i.reason ? ` (${i.reason})` : "",
        i.source ? el("span", { class: "what" }, ` · ${i.source}`) : ""),
      i.msg ? el("p", { class: "msg" }, i.msg) : ""));
    if (!data.live) nodes.push(el("li", {}, el("p", { class: "msg note" },
      "Only the history has this task now (its resource was removed after it finished): it keeps the times, not the conditions or events.")));
    if (data.events_note) nodes.push(el("li", {}, el("p", { class: "msg note" }, data.events_note)));
    list.replaceChildren(...nodes);
  }

  async function cancelTask(id) {
    const note = $("task-note");
    note.textContent = "";
    try {
      const task = await call(`task/${encodeURIComponent(id)}/cancel`, { method: "POST" });
      remember(task, true);              // the stream may have told "cancelled" before this answer came
      renderTask(state.tasks.get(id));
      announce(`Cancel requested for task ${id}.`);
      scheduleTimeline(id);
    } catch (e) {
      if (e.status === 409) { note.textContent = `${e.message}`; refreshTask(id, false); }
      else if (e.status === 404) renderMissing(id);
      else if (e.status !== 401 && e.status !== 0) $("task-note").textContent = `Could not cancel: ${e.message}. Try again.`;
    }
  }

  function deleteTask(task, opener) {
    const dialog = $("confirm-dialog");
    $("confirm-text").textContent = `Task ${task.task_id} and its files will be deleted for good` +
      (UNFINISHED.has(task.status) ? " (it is still running: it will be stopped)." : ".");
    dialog.returnValue = "";
    dialog.onclose = async () => {
      dialog.onclose = null;
      if (dialog.returnValue !== "yes") { opener.focus(); return; }
      try {
        await call(`task/${encodeURIComponent(task.task_id)}`, { method: "DELETE" });
        forget(task.task_id);
        announce(`Task ${task.task_id} deleted.`);
        location.hash = "#/";
      } catch (e) {
        if (e.status === 404) renderMissing(task.task_id);
        else if (e.status !== 401 && e.status !== 0) { $("task-note").textContent = `Could not delete: ${e.message}. Try again.`; opener.focus(); }
      }
    };
    dialog.showModal();
    $("confirm-no").focus();
  }

  // --- the create form, built from the model catalog --------------------------------------------

  // The catalog says what each parameter accepts in words (GET /api/v1/ai/models `parameters`);
  // these are the catalog's fixed shapes. Anything else becomes a plain text field (the API judges).
  function parseRule(words, name) {
    let m;
    if (words === "any text") return { kind: "text" };
    if ((m = words.match(/^WxH with each side (\d+)\.\.(\d+)$/))) return { kind: "size", test: (w, h) => w >= +m[1] && w <= +m[2] && h >= +m[1] && h <= +m[2], min: +m[1], max: +m[2] };
    if ((m = words.match(/^WxH with (\d+)\.\.(\d+) pixels and aspect ratio within 1:([\d.]+)\.\.([\d.]+):1$/))) {
      const lo = +m[1], hi = +m[2], r = +m[4];
      return { kind: "size", test: (w, h) => w * h >= lo && w * h <= hi && w / h <= r && h / w <= r, min: 1, max: hi };
    }
    if ((m = words.match(/^WxH, both multiples of (\d+), at most (\d+)x(\d+) either way$/))) {
      const step = +m[1], long = +m[2], short = +m[3];
      return { kind: "size", test: (w, h) => w % step === 0 && h % step === 0 && Math.max(w, h) <= long && Math.min(w, h) <= short, min: step, max: long, step };
    }
    if ((m = words.match(/^(-?[\d.]+)\.\.(-?[\d.]+)$/))) return { kind: "range", min: +m[1], max: +m[2], float: FLOAT_PARAMS.has(name) };
    const values = words.split(", ");
    if (values.length && values.every((v) => v.length && !v.includes(" "))) return { kind: "choice", values };
    return { kind: "free" };
  }

  async function catalog() {
    if (!state.models) state.models = (await call("models", { query: { include_retired: "false" } })).models.filter((m) => m.enabled);
    return state.models;
  }

  let createOpener = null;
  async function openCreate(like, opener) {
    createOpener = opener || document.activeElement;
    const form = $("create-form");
    clearErrors();
    try { await catalog(); } catch (e) {
      if (e.status !== 401 && e.status !== 0) { announce(`The model catalog could not be read: ${e.message}`); }
      return;
    }
    const type = like ? like.type : (form.elements.type.value || "image");
    form.elements.type.value = type;
    fillProviders(like ? like.provider : null);
    fillModels(like ? like.model : null);
    fillParams(like ? like.params : null);
    form.elements.prompt.value = like ? like.prompt : form.elements.prompt.value;
    form.elements.priority.value = like ? like.priority : "default";
    if (state.me.admin) form.elements.user_id.value = like ? like.user_id : "";
    $("create-title").textContent = like ? `New task like ${like.task_id}` : "New task";
    $("create-dialog").showModal();
    form.elements.prompt.focus();
  }

  function modelsOf(type, provider) {
    return (state.models || []).filter((m) => m.type === type && (!provider || m.provider === provider));
  }

  function fillProviders(want) {
    const form = $("create-form");
    const providers = [...new Set(modelsOf(form.elements.type.value).map((m) => m.provider))];
    form.elements.provider.replaceChildren(...providers.map((p) => el("option", { value: p }, p)));
    if (want && providers.includes(want)) form.elements.provider.value = want;
  }

  function fillModels(want) {
    const form = $("create-form");
    const models = modelsOf(form.elements.type.value, form.elements.provider.value);
    form.elements.model.replaceChildren(...models.map((m) => el("option", { value: m.model }, m.model)));
    if (want && models.some((m) => m.model === want)) form.elements.model.value = want;
    const chosen = currentModel();
    $("c-model-note").textContent = chosen ? chosen.note || "" : "No enabled model of this type.";
  }

  function currentModel() {
    const form = $("create-form");
    return modelsOf(form.elements.type.value, form.elements.provider.value).find((m) => m.model === form.elements.model.value);
  }

  function fieldBox(name, label, control, extra) {
    const id = `p-${name}`;
    control.id = control.id || id;
    control.setAttribute("aria-describedby", `err-${name}`);
    return el("div", { class: "field", "data-field": name },
      el("label", { for: control.id }, label), control, extra || "", el("p", { class: "field-error", id: `err-${name}` }));
  }

  function fillParams(values) {
    const box = $("c-params");
    const model = currentModel();
    const nodes = [el("legend", {}, "Parameters of this model")];
    if (model) {
      for (const [name, words] of Object.entries(model.parameters)) {
        const rule = parseRule(words, name);
        const given = values && values[name] !== undefined ? values[name] : model.defaults[name];
        const label = name.replace(/_/g, " ");
        if (rule.kind === "choice") {
          const select = el("select", { name, "data-param": name, "data-number": rule.values.every((v) => /^-?\d+(\.\d+)?$/.test(v)) ? "1" : null },
            rule.values.map((v) => el("option", { value: v }, v)));
          if (given !== undefined && rule.values.includes(String(given))) select.value = String(given);
          nodes.push(fieldBox(name, label, select, el("p", { class: "help" }, `one of: ${words}`)));
        } else if (rule.kind === "range") {
          const input = el("input", { type: "number", name, "data-param": name, "data-number": "1", min: rule.min, max: rule.max,
            step: rule.float ? "any" : "1", value: given !== undefined ? given : "", inputmode: rule.float ? "decimal" : "numeric" });
          nodes.push(fieldBox(name, label, input, el("p", { class: "help" }, `${rule.min} to ${rule.max}`)));
        } else if (rule.kind === "size") {
          const options = SIZE_CANDIDATES.filter((s) => { const [w, h] = s.split("x").map(Number); return rule.test(w, h); });
          if (given && !options.includes(String(given))) options.unshift(String(given));
          const select = el("select", { name, "data-param": name, "data-size": "1" },
            options.map((s) => el("option", { value: s }, s.replace("x", " × "))), el("option", { value: "custom" }, "custom…"));
          if (given) select.value = String(given);
          const w = el("input", { type: "number", name: `${name}_w`, min: rule.min, max: rule.max, step: rule.step || 1,
            "aria-label": `${label} width in pixels`, "aria-describedby": `err-${name}` });
          const h = el("input", { type: "number", name: `${name}_h`, min: rule.min, max: rule.max, step: rule.step || 1,
            "aria-label": `${label} height in pixels`, "aria-describedby": `err-${name}` });
          const custom = el("div", { class: "size-custom", hidden: true }, w, "×", h);
          select.addEventListener("change", () => { custom.hidden = select.value !== "custom"; if (!custom.hidden) w.focus(); });
          nodes.push(fieldBox(name, label, select, el("div", {}, custom, el("p", { class: "help" }, `accepted: ${words}`))));
        } else if (rule.kind === "text") {
          const area = el("textarea", { name, "data-param": name, rows: "2", maxlength: "8000" });
          area.value = given || "";
          nodes.push(fieldBox(name, label, area));
        } else {
          const input = el("input", { type: "text", name, "data-param": name, value: given !== undefined ? given : "" });
          nodes.push(fieldBox(name, label, input, el("p", { class: "help" }, `accepted: ${words}`)));
        }
      }
      if (!Object.keys(model.parameters).length) nodes.push(el("p", { class: "help" }, "This model takes no parameters."));
    }
    box.replaceChildren(...nodes);
  }

  function clearErrors() {
    const form = $("create-form");
    $("create-error").textContent = "";
    for (const p of form.querySelectorAll(".field-error")) p.textContent = "";
    for (const c of form.querySelectorAll("[aria-invalid]")) c.removeAttribute("aria-invalid");
  }

  function fieldError(name, text) {
    const form = $("create-form");
    const box = form.querySelector(`.field[data-field="${CSS.escape(name)}"]`);
    if (!box) return false;
    let p = box.querySelector(".field-error");
    if (!p) {
      p = el("p", { class: "field-error", id: `err-${name}` });
      box.append(p);
      const control = box.querySelector("select, input, textarea");
      if (control) control.setAttribute("aria-describedby", p.id);
    }
    p.textContent = text;
    for (const c of box.querySelectorAll("select, input, textarea")) c.setAttribute("aria-invalid", "true");
    return true;
  }

  function body() {
    const form = $("create-form");
    const out = { prompt: form.elements.prompt.value, provider: form.elements.provider.value, model: form.elements.model.value,
      priority: form.elements.priority.value };
    if (state.me.admin && form.elements.user_id.value.trim()) out.user_id = form.elements.user_id.value.trim();
    const problems = [];
    for (const control of form.querySelectorAll("[data-param]")) {
      const name = control.dataset.param;
      let value = control.value;
      if (control.dataset.size && value === "custom") {
        const w = form.elements[`${name}_w`].value, h = form.elements[`${name}_h`].value;
        if (!w || !h) { problems.push([name, "Enter a width and a height in pixels."]); continue; }
        value = `${w}x${h}`;
      }
      if (value === "") continue;
      if (control.dataset.number) {
        if (control.validity && !control.validity.valid) {
          problems.push([name, `Enter a number from ${control.min} to ${control.max}${control.step === "1" ? " (a whole number)" : ""}.`]);
          continue;
        }
        value = Number(value);
      }
      out[name] = value;
    }
    if (!out.prompt.trim()) problems.push(["prompt", "Write a prompt: what to generate."]);
    if (!out.model) problems.push(["model", "No model of this type is enabled on this server."]);
    return { out, problems };
  }

  async function submitCreate(event) {
    event.preventDefault();
    clearErrors();
    const form = $("create-form");
    const type = form.elements.type.value;
    const { out, problems } = body();
    if (problems.length) {
      for (const [name, text] of problems) fieldError(name, text);
      const first = form.querySelector("[aria-invalid=true]");
      if (first) first.focus();
      return;
    }
    const button = $("c-submit");
    button.disabled = true;
    try {
      const task = await call(`${type}/task`, { method: "POST", body: out });
      remember(task, true);
      $("create-dialog").close();
      announce(`Task ${task.task_id} created.`);
      state.offset = 0;
      open(task.task_id);
    } catch (e) {
      if (e.status === 401 || e.status === 0) {
        if (e.status === 0) $("create-error").textContent = `Cannot reach the API at ${API.origin}; the task was not created. Try again when it answers.`;
        return;
      }
      let placed = 0;
      for (const err of e.errors) {
        const text = `${err.message || "not accepted"}${err.accepted ? `; accepted: ${err.accepted}` : ""}`;
        if (fieldError(err.field, text)) placed++;
      }
      if (!placed || placed < e.errors.length) {
        $("create-error").textContent = e.status === 429 ? `${e.message} (wait a moment, then create again)`
          : e.status === 503 ? `${e.message} (the task was not created; try again shortly)` : e.message;
      }
      const first = form.querySelector("[aria-invalid=true]");
      if (first) first.focus();
    } finally {
      button.disabled = false;
    }
  }

  function resume() {                 // a key kept in this tab: ask who it is again
    call("me").then((me) => { state.me = me; signedIn(); }).catch((e) => {
      if (e.status === 0) { $("signin").hidden = false; $("signin-error").textContent = `Cannot reach the API at ${API.origin}; retrying.`; }
    });
  }

  // --- wiring ------------------------------------------------------------------------------------

  function init() {
    $("skip").addEventListener("click", (e) => { e.preventDefault(); $("main").focus(); });   // not a route
    $("signin-form").addEventListener("submit", signIn);
    $("sign-out").addEventListener("click", () => signOut("Signed out: the key is forgotten in this tab."));
    $("new-task").addEventListener("click", (e) => openCreate(null, e.currentTarget));
    $("filters").addEventListener("submit", (e) => e.preventDefault());
    $("filters").addEventListener("change", (e) => {
      state.offset = 0;
      if (e.target.name === "user_id") startLive();
      loadGallery();
    });
    $("prev").addEventListener("click", () => { state.offset = Math.max(0, state.offset - PAGE_SIZE); loadGallery(); });
    $("next").addEventListener("click", () => { state.offset += PAGE_SIZE; loadGallery(); });
    const form = $("create-form");
    form.addEventListener("submit", submitCreate);
    form.elements.type.addEventListener("change", () => { fillProviders(); fillModels(); fillParams(); });
    form.elements.provider.addEventListener("change", () => { fillModels(); fillParams(); });
    form.elements.model.addEventListener("change", () => fillParams());
    $("c-cancel").addEventListener("click", () => $("create-dialog").close());
    $("create-dialog").addEventListener("close", () => { if (createOpener && createOpener.isConnected) createOpener.focus(); });
    window.addEventListener("hashchange", route);
    setInterval(() => { for (const t of document.querySelectorAll("time[data-ago]")) t.textContent = ago(t.dataset.ago); }, 30000);
    if (state.key) {
      resume();
    } else {
      $("signin").hidden = false;
      $("key").focus();
    }
  }

  init();
})();
