// The page script of a generated app (issue 6): what a visitor sees and uses.
//
// It reads the app's app.json (docs/spec.md), starts the model in a dedicated
// worker (runtime/worker.js, spoken to through runtime/protocol.js), shows the
// loader's progress, and runs the chat or form layout: streaming replies
// rendered by the escape-first Markdown renderer, stop / regenerate / edit /
// copy, conversations saved in IndexedDB, settings within the spec's bounds.
// The main thread only renders: Markdown is redrawn at most once per frame.

import { WorkerClient } from "../protocol.js";
import { MarkdownView } from "./markdown.js";
import { openStore, toMarkdown } from "./store.js";
import { fillTemplate } from "./template.js";
import { itemText, outputItems, parseOutput, renderOutput } from "./output.js";

/**
 * @typedef {import("./store.js").Conversation} Conversation
 * @typedef {import("./store.js").StoredMessage} StoredMessage
 * @typedef {Record<string, string>} Strings
 */

const $ = (/** @type {string} */ id) => /** @type {HTMLElement} */ (document.getElementById(id));
const root = $("app");

/**
 * A UI string with `{name}` placeholders filled.
 * @param {Strings} strings @param {string} key @param {Record<string, string | number>} [vars]
 */
function fmt(strings, key, vars = {}) {
  return (strings[key] ?? key).replace(/\{(\w+)\}/g, (m, k) => (k in vars ? String(vars[k]) : m));
}

/** @param {number} bytes */
const mb = (bytes) => (bytes / 2 ** 20).toFixed(bytes < 10 * 2 ** 20 ? 1 : 0);

/** The whole app, once app.json is read. */
class App {
  /** @param {any} config @param {URL} configUrl */
  constructor(config, configUrl) {
    this.config = config;
    this.configUrl = configUrl;
    /** @type {Strings} */
    this.strings = config.ui.strings;
    this.layout = config.ui.layout;
    this.form = config.prompts.form;
    /** Structured output (issue 17): replies as JSON data shown as cards or a table; null: text. */
    this.output = /** @type {import("./output.js").OutputConfig | null} */ (config.output ?? null);
    this.appKey = config.app.path;
    /** @type {WorkerClient | null} */
    this.client = null;
    this.ready = false;
    /** The engine's stats once loaded (GPU bytes, split tensors). @type {any} */
    this.stats = null;
    /** @type {ReturnType<WorkerClient["generate"]> | null} */
    this.stream = null;
    /** The reply that was streaming when the GPU device was lost. @type {ReturnType<WorkerClient["generate"]> | null} */
    this.lostStream = null;
    /** @type {Awaited<ReturnType<typeof openStore>> | null} */
    this.store = null;
    /** @type {Conversation} */
    this.conv = this.newConversation();
    this.settings = this.loadSettings();
    this.el = {
      status: $("status"), statusText: $("status-text"),
      statusProgress: /** @type {HTMLProgressElement} */ ($("status-progress")),
      welcome: document.getElementById("welcome"), starters: document.getElementById("starters"),
      conversation: $("conversation"), messages: $("messages"), announcer: $("announcer"),
      composer: /** @type {HTMLFormElement} */ ($("composer")),
      input: /** @type {HTMLTextAreaElement} */ ($("message")),
      send: /** @type {HTMLButtonElement} */ ($("send")), stop: /** @type {HTMLButtonElement} */ ($("stop")),
      form: /** @type {HTMLFormElement | null} */ (document.getElementById("app-form")),
      generate: /** @type {HTMLButtonElement | null} */ (document.getElementById("generate")),
      followups: document.getElementById("responses"),
      list: $("conversation-list"), listEmpty: $("conversation-empty"), history: $("history"),
    };
  }

  // --- start-up ------------------------------------------------------------------------------

  async start() {
    this.applyTheme(localStorage.getItem(this.key("theme")) ?? this.config.ui.theme);
    this.bindControls();
    this.render();
    try {
      this.store = await openStore(this.appKey);
      const [latest] = await this.store.list();
      if (latest) this.show(latest);
      await this.renderHistory();
    } catch (e) {
      this.showStorageError(/** @type {Error} */ (e));
    }
    this.loadModel();
  }

  async loadModel() {
    // The spec's models.<name>.backend (issue 14): "auto" runs on WebGPU when it can, else on the CPU
    // (WebAssembly); "webgpu" needs an adapter: no worker and no download on a browser without one.
    const backend = this.config.model.backend ?? "auto";
    const gpu = /** @type {GPU | undefined} */ (/** @type {any} */ (navigator).gpu);
    const adapter = backend === "webgpu" && gpu ? await gpu.requestAdapter().catch(() => null) : null;
    if (backend === "webgpu" && !adapter) {
      this.fail({ name: "WebGPUUnavailableError",
        message: gpu ? "navigator.gpu.requestAdapter() gave no adapter" : "navigator.gpu is undefined" });
      return;
    }
    if (!this.client) {
      const worker = new Worker(new URL("../worker.js", import.meta.url), { type: "module", name: "sitegen-model" });
      this.client = new WorkerClient(worker);
      this.client.onLost = () => this.onDeviceLost();
    }
    this.setStatus("loading", this.strings.phase_check);
    const model = this.config.model;
    try {
      const ready = await this.client.load({
        manifestUrl: new URL(model.manifest, this.configUrl).href,
        shaderBase: new URL(this.config.runtime.shaders, this.configUrl).href,
        shardBase: new URL(model.base_url, this.configUrl).href,
        backend,
      }, (event) => this.onProgress(event));
      this.stats = ready.stats;
      this.ready = true;
      // Say where the model runs: the CPU is several times slower than a GPU.
      const cpu = ready.stats.backend === "wasm";
      this.el.status.dataset.backend = ready.stats.backend;
      if (cpu) this.el.status.dataset.threads = String(ready.stats.threads);
      this.setStatus("ready", cpu ? fmt(this.strings, ready.stats.threads > 1 ? "ready_cpu_threads" : "ready_cpu",
        { threads: ready.stats.threads }) : this.strings.ready);
      this.updateControls();
    } catch (e) {
      this.fail(/** @type {Error} */ (e));
    }
  }

  /** @param {any} e a loader/engine progress event */
  onProgress(e) {
    const s = this.strings;
    const bar = this.el.statusProgress;
    const total = e.bytesTotal || 0;
    bar.hidden = !total;
    if (total) { bar.max = total; bar.value = e.bytesDone || 0; }
    /** @type {Record<string, string | number>} */
    const vars = { done: mb(e.bytesDone || 0), total: mb(total) };
    let text;
    switch (e.phase) {
      case "download":
        vars.rate = e.rate ? (e.rate / 2 ** 20).toFixed(1) : "–";
        vars.eta = e.eta != null && Number.isFinite(e.eta) ? Math.ceil(e.eta) : "–";
        vars.source = e.source === "cache" ? s.cached : s.network;
        text = e.source === "network" ? fmt(s, "phase_download", vars)
          : `${fmt(s, "phase_verify", vars)} (${vars.source})`;
        break;
      case "verify": text = fmt(s, "phase_verify", vars); break;
      case "upload": text = fmt(s, "phase_upload", vars); break;
      case "compile": bar.hidden = true; text = s.phase_compile; break;
      case "ready": text = s.ready; break;
      default: text = s.phase_check;
    }
    this.el.statusText.textContent = text;
    this.el.status.dataset.phase = e.phase;
  }

  /** @param {string} state @param {string} text */
  setStatus(state, text) {
    this.el.status.dataset.state = state;
    this.el.statusText.textContent = text;
    if (state !== "loading") this.el.statusProgress.hidden = true;
  }

  /**
   * Show a load failure: the human message for its class, what to do, and the
   * runtime's own message under "Details".
   * @param {{ name: string, message: string }} e
   */
  fail(e) {
    this.ready = false;
    const s = this.strings;
    const human = s[`err_${e.name}`] ?? fmt(s, "error", { message: e.message });
    this.el.status.dataset.state = "error";
    this.el.status.dataset.error = e.name;
    this.el.statusProgress.hidden = true;
    const text = this.el.statusText;
    text.textContent = human;
    const details = document.createElement("details");
    const summary = document.createElement("summary");
    summary.textContent = s.details;
    const code = document.createElement("p");
    code.className = "error-detail";
    code.textContent = `${e.name}: ${e.message}`;
    details.append(summary, code);
    this.el.status.querySelector("details")?.remove();
    this.el.status.querySelector(".retry")?.remove();
    this.el.status.append(details);
    // Failures a second try can fix (network, storage freed, a reset GPU) get a button for it.
    if (!["WebGPUUnavailableError", "MissingFeatureError", "BufferTooLargeError"].includes(e.name) && this.client) {
      const retry = document.createElement("button");
      retry.type = "button";
      retry.className = "retry small";
      retry.textContent = s.retry;
      retry.addEventListener("click", () => {
        retry.remove();
        details.remove();
        delete this.el.status.dataset.error;
        this.loadModel();
      });
      this.el.status.append(retry);
    }
    this.updateControls();
  }

  async onDeviceLost() {
    // The conversation is in memory and IndexedDB; only the model needs loading again.
    this.ready = false;
    // A reply cut off by the loss keeps its text and is marked interrupted, not "stopped".
    this.lostStream = this.stream;
    this.stream?.abort();
    this.updateControls();
    this.setStatus("loading", this.strings.reloading_model);
    await this.loadModel();
  }

  // --- controls ------------------------------------------------------------------------------

  bindControls() {
    const { input, composer, stop } = this.el;
    composer.addEventListener("submit", (ev) => {
      ev.preventDefault();
      this.sendText(input.value);
    });
    input.addEventListener("keydown", (ev) => {
      // Enter sends, Shift+Enter is a newline; an IME composing Chinese also uses Enter.
      if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
        ev.preventDefault();
        this.sendText(input.value);
      }
    });
    input.addEventListener("input", () => this.updateControls());
    stop.addEventListener("click", () => this.stop());
    document.addEventListener("keydown", (ev) => {
      if (ev.key === "Escape" && this.stream) { ev.preventDefault(); this.stop(); }
    });
    this.el.starters?.addEventListener("click", (ev) => {
      const b = /** @type {HTMLElement} */ (ev.target).closest(".starter");
      if (b instanceof HTMLElement && b.dataset.prompt) this.sendText(b.dataset.prompt);
    });
    // One listener for every message's buttons (copy, copy code, regenerate, edit).
    this.el.messages.addEventListener("click", (ev) => this.onMessageClick(ev));
    this.el.form?.addEventListener("submit", (ev) => { ev.preventDefault(); this.submitForm(); });
    this.el.followups?.addEventListener("click", (ev) => {
      const b = /** @type {HTMLElement} */ (ev.target).closest(".followup");
      if (b instanceof HTMLElement) this.followup(Number(b.dataset.followup));
    });
    $("new-chat").addEventListener("click", () => this.startNew());
    $("export").addEventListener("click", () => this.exportMarkdown());
    this.el.list.addEventListener("click", (ev) => this.onHistoryClick(ev));
    this.bindSettings();
  }

  updateControls() {
    const busy = this.stream !== null;
    const can = this.ready && !busy;
    const { input, send, stop } = this.el;
    input.disabled = !this.ready;
    send.disabled = !can || !input.value.trim();
    send.hidden = busy;
    stop.hidden = !busy;
    if (this.el.generate) this.el.generate.disabled = !can;
    for (const b of document.querySelectorAll(".starter, .followup")) /** @type {HTMLButtonElement} */ (b).disabled = !can;
    for (const b of this.el.messages.querySelectorAll(".regenerate, .edit")) /** @type {HTMLButtonElement} */ (b).disabled = !can;
    /** @type {HTMLButtonElement} */ ($("new-chat")).disabled = busy;
    /** @type {HTMLButtonElement} */ ($("export")).disabled = this.conv.messages.length === 0;
    root.dataset.busy = String(busy);
  }

  // --- settings ------------------------------------------------------------------------------

  /** @param {string} name */
  key(name) {
    return `sitegen:${this.appKey}:${name}`;
  }

  loadSettings() {
    const g = this.config.generation;
    const b = this.config.ui.settings_bounds;
    const saved = (() => {
      try { return JSON.parse(localStorage.getItem(this.key("settings")) ?? "{}"); } catch { return {}; }
    })();
    // Only values within the spec's bounds are taken back (a stored value may predate a new spec).
    const clamp = (/** @type {unknown} */ v, /** @type {number} */ lo, /** @type {number} */ hi, /** @type {number} */ d) =>
      (typeof v === "number" && v >= lo && v <= hi ? v : d);
    return {
      // The sliders' bounds come from app.json (sitegen/spec/schema.py SETTINGS_BOUNDS).
      temperature: clamp(saved.temperature, b.temperature[0], b.temperature[1], g.temperature),
      top_p: clamp(saved.top_p, b.top_p[0], b.top_p[1], g.top_p),
      max_new_tokens: clamp(saved.max_new_tokens, 1, g.max_new_tokens, g.max_new_tokens),
      // The visitor's own system prompt, only where the author allows it.
      system: this.config.prompts.system_editable && typeof saved.system === "string" ? saved.system
        : this.config.prompts.system,
    };
  }

  bindSettings() {
    const names = /** @type {const} */ (["temperature", "top_p", "max_new_tokens"]);
    const sync = () => {
      for (const n of names) {
        /** @type {HTMLInputElement} */ ($(`set-${n}`)).value = String(this.settings[n]);
        $(`out-${n}`).textContent = String(this.settings[n]);
      }
      if (system) system.value = this.settings.system;
    };
    const system = /** @type {HTMLTextAreaElement | null} */ (document.getElementById("set-system"));
    system?.addEventListener("input", () => {
      this.settings.system = system.value;
      localStorage.setItem(this.key("settings"), JSON.stringify(this.settings));
    });
    for (const n of names) {
      $(`set-${n}`).addEventListener("input", (ev) => {
        const input = /** @type {HTMLInputElement} */ (ev.target);
        const v = Number(input.value);
        const lo = Number(input.min), hi = Number(input.max);
        if (Number.isFinite(v)) this.settings[n] = Math.min(hi, Math.max(lo, v));
        $(`out-${n}`).textContent = String(this.settings[n]);
        localStorage.setItem(this.key("settings"), JSON.stringify(this.settings));
      });
    }
    $("reset-settings").addEventListener("click", () => {
      localStorage.removeItem(this.key("settings"));
      this.settings = this.loadSettings();
      sync();
    });
    const theme = /** @type {HTMLSelectElement} */ ($("set-theme"));
    theme.value = document.documentElement.dataset.theme ?? "auto";
    theme.addEventListener("change", () => {
      localStorage.setItem(this.key("theme"), theme.value);
      this.applyTheme(theme.value);
    });
    sync();
  }

  /** @param {string} theme */
  applyTheme(theme) {
    if (["auto", "light", "dark"].includes(theme)) document.documentElement.dataset.theme = theme;
  }

  /** The request's sampling settings: the spec's, with the visitor's changes. */
  /** @param {boolean} [structured] a reply constrained to `output.schema` (no stop strings then: they could cut the JSON) */
  requestSettings(structured = false) {
    const g = this.config.generation;
    return {
      temperature: this.settings.temperature, top_p: this.settings.top_p, top_k: g.top_k, min_p: g.min_p,
      repetition_penalty: g.repetition_penalty, max_tokens: this.settings.max_new_tokens, stop: structured ? [] : g.stop,
      ...(g.seed != null ? { seed: g.seed } : {}),
      ...(structured && this.output
        ? { response_format: { type: "json_schema", json_schema: { name: "output", schema: this.output.schema } } } : {}),
    };
  }

  // --- conversation --------------------------------------------------------------------------

  /** @returns {Conversation} */
  newConversation() {
    const now = Date.now();
    return { id: `${now.toString(36)}-${Math.random().toString(36).slice(2, 8)}`, title: "", created: now,
      updated: now, messages: [], form: null };
  }

  /**
   * What the model sees: the system prompt, then the turns. The several
   * responses of one form submission become one numbered assistant message,
   * so "merge drafts 1 and 3" refers to something the model has read.
   */
  modelMessages() {
    /** @type {{ role: "system" | "user" | "assistant", content: string }[]} */
    const out = [];
    const system = this.settings.system;
    if (system.trim()) out.push({ role: "system", content: system });
    for (const m of this.conv.messages) {
      if (m.error || (m.role === "assistant" && !m.content)) continue;
      const last = out[out.length - 1];
      if (m.role === "assistant" && m.n && last?.role === "assistant" && m.n > 1) {
        last.content += `\n\n${fmt(this.strings, "response_n", { n: m.n })}:\n${m.content}`;
      } else if (m.role === "assistant" && m.n) {
        out.push({ role: "assistant", content: `${fmt(this.strings, "response_n", { n: m.n })}:\n${m.content}` });
      } else {
        out.push({ role: m.role, content: m.content });
      }
    }
    return out;
  }

  /** @param {string} text */
  async sendText(text) {
    const content = text.trim();
    if (!content || !this.ready || this.stream) return;
    this.el.input.value = "";
    this.conv.messages.push({ role: "user", content });
    if (!this.conv.title) this.conv.title = content.slice(0, 60);
    this.render();
    await this.generateReplies(1, { structured: Boolean(this.output) && this.layout === "chat" });
  }

  /**
   * Generate `count` replies to the conversation as it is (each from the same history).
   * `structured`: replies follow `output.schema` (a chat app's replies, a form's submission).
   * @param {number} count @param {{ structured?: boolean }} [o]
   */
  async generateReplies(count, { structured = false } = {}) {
    const history = this.modelMessages();
    const turn = this.conv.messages.length;
    for (let n = 1; n <= count; n++) {
      /** @type {StoredMessage} */
      const msg = { role: "assistant", content: "", turn, ...(count > 1 ? { n } : {}), ...(structured ? { output: true } : {}) };
      this.conv.messages.push(msg);
      this.render();
      const ok = await this.streamInto(msg, history);
      if (!ok) break;
    }
    this.el.followups?.toggleAttribute("hidden", !this.conv.form || !this.conv.messages.some((m) => m.role === "assistant"));
    this.updateControls();
    await this.renderHistory();
  }

  /**
   * Stream one reply into `msg` (and its list item); returns false when the
   * visitor stopped it or it failed.
   * @param {StoredMessage} msg @param {{ role: any, content: string }[]} history
   */
  async streamInto(msg, history) {
    const client = /** @type {WorkerClient} */ (this.client);
    const li = /** @type {HTMLElement} */ (this.el.messages.lastElementChild);
    const body = /** @type {HTMLElement} */ (li.querySelector(".message-body"));
    const view = new MarkdownView(body, { strings: { copy: this.strings.copy } });
    li.dataset.streaming = "true";
    const stream = this.stream = client.generate({ messages: history, settings: this.requestSettings(Boolean(msg.output)) });
    this.updateControls();
    /** @type {number[]} */
    const tokens = [];
    msg.tokens = tokens;
    let frame = 0;
    let lastSave = performance.now();
    const draw = () => {
      frame = 0;
      if (msg.output && this.output) renderOutput(body, this.output, msg.content, { strings: this.strings, done: false });
      else view.update(msg.content);
    };
    let ok = true;
    try {
      for await (const chunk of this.stream) {
        msg.content += chunk.text;
        tokens.push(...chunk.tokens);
        if (!frame) frame = requestAnimationFrame(draw);
        // Save while streaming too, so a reload mid-reply loses at most a second or two.
        if (performance.now() - lastSave > 1500) { lastSave = performance.now(); this.save(); }
      }
      const { finishReason, usage } = await this.stream.result;
      if (finishReason === "abort" && this.lostStream === stream) {
        msg.error = "DeviceLostError";
        ok = false;
      } else if (finishReason === "abort") {
        msg.stopped = true;
        ok = false;
      }
      if (usage) {
        msg.speed = usage.timings?.decode_tokens_per_s;
        msg.cachedTokens = usage.prompt_tokens_details?.cached_tokens;
      }
    } catch (e) {
      const err = /** @type {Error} */ (e);
      // A failed request (context window full, device lost) is noted on its message; the model
      // stays loaded, except when the worker itself is gone.
      msg.error = err.name;
      msg.errorMessage = err.message;
      ok = false;
      if (err.name === "WorkerError") this.fail(err);
    } finally {
      if (frame) cancelAnimationFrame(frame);
      this.stream = null;
    }
    delete li.dataset.streaming;
    this.el.announcer.textContent = fmt(this.strings, "announce_reply", { text: msg.content });
    this.render();
    await this.save();
    return ok;
  }

  stop() {
    this.stream?.abort();
  }

  async regenerate() {
    if (!this.ready || this.stream) return;
    const msgs = this.conv.messages;
    let i = msgs.length;
    while (i > 0 && msgs[i - 1].role === "assistant") i--;
    const count = msgs.slice(i).filter((m) => m.n).length || 1;
    const structured = msgs.slice(i).some((m) => m.output);
    msgs.splice(i);
    this.render();
    await this.generateReplies(count, { structured });
  }

  /** Take the last user message back into the composer, dropping it and its replies. */
  editLast() {
    if (this.stream) return;
    const msgs = this.conv.messages;
    const i = msgs.map((m) => m.role).lastIndexOf("user");
    if (i < 0) return;
    this.el.input.value = msgs[i].content;
    msgs.splice(i);
    this.render();
    this.save();
    this.el.input.focus();
    this.updateControls();
  }

  // --- form layout ---------------------------------------------------------------------------

  /** The form's current values. */
  formValues() {
    const data = new FormData(/** @type {HTMLFormElement} */ (this.el.form));
    /** @type {Record<string, string>} */
    const values = {};
    for (const f of this.form.fields) values[f.name] = String(data.get(f.name) ?? "").trim();
    return values;
  }

  /**
   * Fill a parsed template (`parts` of app.json). Values are inserted as they
   * are, never parsed again (docs/spec.md "Prompt templates").
   * @param {import("./template.js").TemplatePart[]} parts @param {Record<string, string>} values
   */
  fill(parts, values) {
    return fillTemplate(parts, values);
  }

  async submitForm() {
    const form = /** @type {HTMLFormElement} */ (this.el.form);
    if (!form.reportValidity() || !this.ready || this.stream) return;
    const values = this.formValues();
    this.conv = this.newConversation();
    this.conv.form = values;
    const content = this.fill(this.form.parts, values);
    this.conv.title = content.slice(0, 60);
    this.conv.messages.push({ role: "user", content });
    this.render();
    await this.generateReplies(this.form.responses, { structured: Boolean(this.output) });
    await this.renderHistory();
  }

  /** @param {number} index */
  async followup(index) {
    const f = this.form?.followups?.[index];
    if (!f || !this.ready || this.stream) return;
    // A structured reply contributes its cards (those picked with "merge", else all of them).
    const output = this.output;
    const responses = this.conv.messages.filter((m) => m.role === "assistant" && m.content && !m.error)
      .flatMap((m) => {
        const data = m.output && output ? parseOutput(m.content) : null;
        if (!data || !output) return [m.content.trim()];
        const items = outputItems(output, data.value).map((it) => itemText(output, it).trim());
        return m.picked?.length ? items.filter((_, k) => m.picked?.includes(k)) : items;
      })
      .map((text, k) => `${k + 1}. ${text}`).join("\n\n");
    const content = this.fill(f.parts, { ...(this.conv.form ?? {}), responses });
    this.conv.messages.push({ role: "user", content });
    this.render();
    await this.generateReplies(1);
  }

  // --- rendering -----------------------------------------------------------------------------

  render() {
    const { messages } = this.el;
    const empty = this.conv.messages.length === 0;
    if (this.el.welcome) this.el.welcome.hidden = !empty && this.layout === "chat";
    if (this.el.starters) this.el.starters.hidden = !empty;
    if (this.layout === "form") {
      this.el.conversation.hidden = empty;
      this.el.followups?.toggleAttribute("hidden", !this.conv.form || !this.conv.messages.some((m) => m.role === "assistant"));
    }
    // Keep the node of a message being streamed (its MarkdownView owns the body).
    const streaming = messages.querySelector("[data-streaming]");
    const lastUser = this.conv.messages.map((m) => m.role).lastIndexOf("user");
    const lastAssistant = this.conv.messages.map((m) => m.role).lastIndexOf("assistant");
    const nodes = this.conv.messages.map((m, i) => {
      if (streaming && i === this.conv.messages.length - 1) return streaming;
      return this.renderMessage(m, { canEdit: i === lastUser, canRegenerate: i === lastAssistant });
    });
    messages.replaceChildren(...nodes);
    this.updateControls();
  }

  /**
   * @param {StoredMessage} m @param {{ canEdit: boolean, canRegenerate: boolean }} opts
   * @returns {HTMLElement}
   */
  renderMessage(m, { canEdit, canRegenerate }) {
    const s = this.strings;
    const li = document.createElement("li");
    li.className = `message role-${m.role}`;
    const who = document.createElement("p");
    who.className = "message-role";
    who.textContent = m.role === "user" ? s.user : m.n ? `${s.assistant} · ${fmt(s, "response_n", { n: m.n })}` : s.assistant;
    const body = document.createElement("div");
    body.className = "message-body";
    if (m.role === "user") {
      body.textContent = m.content; // the visitor's text is shown as typed
      body.classList.add("plain");
    } else if (m.output && this.output) {
      renderOutput(body, this.output, m.content, { strings: s, state: { chosen: m.chosen, picked: m.picked } });
    } else {
      new MarkdownView(body, { strings: { copy: s.copy } }).update(m.content);
    }
    const meta = document.createElement("div");
    meta.className = "message-meta";
    /** @param {string} cls @param {string} label */
    const button = (cls, label) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = `small ${cls}`;
      b.textContent = label;
      meta.append(b);
      return b;
    };
    if (m.content) button("copy", s.copy);
    if (canEdit) button("edit", s.edit);
    if (canRegenerate) button("regenerate", s.regenerate);
    const notes = [];
    if (m.stopped) notes.push(s.stopped);
    if (m.error === "DeviceLostError") notes.push(s.interrupted); // the model reloads by itself
    else if (m.error) notes.push(`${s.interrupted}: ${s[`err_${m.error}`] ?? m.errorMessage ?? m.error}`);
    if (m.speed) notes.push(fmt(s, "tokens_per_s", { rate: m.speed.toFixed(1) }));
    if (notes.length) {
      const span = document.createElement("span");
      span.className = "speed";
      span.textContent = notes.join(" · ");
      meta.append(span);
    }
    if (m.cachedTokens != null) li.dataset.cachedTokens = String(m.cachedTokens);
    if (m.tokens) li.dataset.tokens = JSON.stringify(m.tokens);
    li.append(who, body, meta);
    return li;
  }

  /** @param {MouseEvent} ev */
  async onMessageClick(ev) {
    const target = /** @type {HTMLElement} */ (ev.target);
    const b = target.closest("button");
    if (!b) return;
    if (b.classList.contains("copy-code")) {
      const code = b.closest(".code-block")?.querySelector("code")?.textContent ?? "";
      return this.copy(b, code);
    }
    const li = /** @type {HTMLElement} */ (b.closest("li.message"));
    const index = [...this.el.messages.children].indexOf(li);
    if (b.dataset.action && this.output) return this.onOutputAction(b, this.conv.messages[index]);
    if (b.classList.contains("copy")) return this.copy(b, this.conv.messages[index]?.content ?? "");
    if (b.classList.contains("edit")) return this.editLast();
    if (b.classList.contains("regenerate")) return this.regenerate();
  }

  /**
   * A card's button (docs/spec.md, Output `actions`): "use" marks the chosen card and copies its
   * text, "merge" picks it for the follow-ups' {responses}, "copy" copies its text.
   * @param {HTMLElement} b @param {StoredMessage | undefined} m
   */
  async onOutputAction(b, m) {
    const output = /** @type {import("./output.js").OutputConfig} */ (this.output);
    const data = m ? parseOutput(m.content) : null;
    if (!m || !data) return;
    const i = Number(b.dataset.index);
    const text = itemText(output, outputItems(output, data.value)[i]);
    if (b.dataset.action === "copy") return this.copy(b, text);
    if (b.dataset.action === "use") {
      m.chosen = m.chosen === i ? null : i;
      if (m.chosen === i) navigator.clipboard?.writeText(text).catch(() => {});
    } else if (b.dataset.action === "merge") {
      const picked = new Set(m.picked ?? []);
      if (picked.has(i)) picked.delete(i); else picked.add(i);
      m.picked = [...picked].sort((x, y) => x - y);
    }
    this.render();
    await this.save();
  }

  /** @param {HTMLElement} button @param {string} text */
  async copy(button, text) {
    try {
      await navigator.clipboard.writeText(text);
      const label = button.textContent;
      button.textContent = this.strings.copied;
      setTimeout(() => { button.textContent = label; }, 1500);
    } catch {
      // Clipboard refused (permissions, insecure context): select the text instead.
      const range = document.createRange();
      range.selectNodeContents(/** @type {Node} */ (button.closest("li, .code-block")));
      getSelection()?.removeAllRanges();
      getSelection()?.addRange(range);
    }
  }

  // --- persistence ---------------------------------------------------------------------------

  async save() {
    if (!this.store || this.conv.messages.length === 0) return;
    this.conv.updated = Date.now();
    try {
      await this.store.put(this.conv);
      document.getElementById("storage-error")?.remove();
    } catch (e) {
      this.showStorageError(/** @type {Error} */ (e));
    }
  }

  /** @param {Error} e */
  showStorageError(e) {
    let p = document.getElementById("storage-error");
    if (!p) {
      p = document.createElement("p");
      p.id = "storage-error";
      p.className = "notice warning";
      p.setAttribute("role", "alert");
      this.el.conversation.before(p);
    }
    p.textContent = fmt(this.strings, "storage_failed", { message: e.message });
  }

  async renderHistory() {
    if (!this.store) return;
    let all;
    try { all = await this.store.list(); } catch (e) { this.showStorageError(/** @type {Error} */ (e)); return; }
    const s = this.strings;
    this.el.listEmpty.hidden = all.length > 0;
    this.el.list.replaceChildren(...all.map((c) => {
      const li = document.createElement("li");
      li.dataset.id = c.id;
      if (c.id === this.conv.id) li.setAttribute("aria-current", "true");
      const open = document.createElement("button");
      open.type = "button";
      open.className = "open-conversation link";
      open.textContent = c.title || s.untitled;
      const rename = document.createElement("button");
      rename.type = "button";
      rename.className = "small rename";
      rename.textContent = s.rename;
      const del = document.createElement("button");
      del.type = "button";
      del.className = "small delete";
      del.textContent = s.delete;
      li.append(open, rename, del);
      return li;
    }));
  }

  /** @param {MouseEvent} ev */
  async onHistoryClick(ev) {
    const b = /** @type {HTMLElement} */ (ev.target).closest("button");
    const li = b?.closest("li");
    if (!b || !li || !this.store || this.stream) return;
    const id = /** @type {string} */ (li.dataset.id);
    try {
      if (b.classList.contains("open-conversation")) {
        const conv = await this.store.get(id);
        if (conv) this.show(conv);
        /** @type {HTMLDetailsElement} */ (this.el.history).open = false;
      } else if (b.classList.contains("delete")) {
        await this.store.remove(id);
        if (id === this.conv.id) { this.conv = this.newConversation(); this.render(); }
      } else if (b.classList.contains("rename")) {
        const conv = await this.store.get(id);
        if (!conv) return;
        const input = document.createElement("input");
        input.type = "text";
        input.value = conv.title;
        input.setAttribute("aria-label", this.strings.rename);
        li.querySelector(".open-conversation")?.replaceWith(input);
        input.focus();
        input.select();
        const commit = async () => {
          conv.title = input.value.trim() || conv.title;
          await this.store?.put(conv);
          if (conv.id === this.conv.id) this.conv.title = conv.title;
          await this.renderHistory();
        };
        input.addEventListener("keydown", (e) => {
          if (e.key === "Enter") { e.preventDefault(); input.blur(); }
          if (e.key === "Escape") { e.stopPropagation(); input.value = conv.title; input.blur(); }
        });
        input.addEventListener("blur", commit, { once: true });
        return;
      }
      await this.renderHistory();
    } catch (e) {
      this.showStorageError(/** @type {Error} */ (e));
    }
  }

  /**
   * Show a saved conversation (and, in the form layout, the form values that started it).
   * @param {Conversation} conv
   */
  show(conv) {
    this.conv = conv;
    const form = this.el.form;
    if (form && conv.form) {
      for (const [name, value] of Object.entries(conv.form)) {
        const input = /** @type {HTMLInputElement | null} */ (form.elements.namedItem(name));
        if (input && "value" in input) input.value = value;
      }
    }
    this.render();
  }

  async startNew() {
    if (this.stream) return;
    this.conv = this.newConversation();
    this.el.form?.reset();
    this.render();
    await this.renderHistory();
    /** @type {HTMLElement | null | undefined} */ (this.layout === "form"
      ? this.el.form?.querySelector("input, select, textarea") : this.el.input)?.focus();
  }

  exportMarkdown() {
    const text = toMarkdown({ ...this.conv, title: this.conv.title || this.config.app.title },
      /** @type {any} */ (this.strings));
    const url = URL.createObjectURL(new Blob([text], { type: "text/markdown;charset=utf-8" }));
    const a = document.createElement("a");
    a.href = url;
    a.download = `${(this.conv.title || this.config.app.title).replace(/[^\p{L}\p{N}]+/gu, "-").slice(0, 40) || "conversation"}.md`;
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 1000);
  }
}

async function main() {
  const configUrl = new URL(root.dataset.config ?? "app.json", location.href);
  let config;
  try {
    const response = await fetch(configUrl);
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    config = await response.json();
  } catch (e) {
    const text = document.getElementById("status-text");
    if (text) text.textContent = `${configUrl.pathname}: ${/** @type {Error} */ (e).message}`;
    document.getElementById("status")?.setAttribute("data-state", "error");
    return;
  }
  const app = new App(config, configUrl);
  /** @type {any} */ (window).sitegenApp = app; // for the browser console and tests
  await app.start();
}

main();
