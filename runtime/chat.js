// Chat formatting from the compiled chat template in the manifest (issue 4 item 4).
// The twin of `format_conversation` in sitegen/convert/chat_template.py: keep the two in step.
// The compiled form is documented in docs/weights-format.md#chat-template.

/**
 * @typedef {{ prefix: string, suffix: string, trim?: boolean, final_prefix?: string | null,
 *             trim_merged?: boolean }} RoleSegments
 * @typedef {{
 *   version: number, bos: string | null, eos: string | null, add_bos: boolean,
 *   start: string, end: string,
 *   roles: { user: RoleSegments, assistant: RoleSegments, system: RoleSegments | null },
 *   system_position: "turn" | "first_user" | "last_user" | null,
 *   default_system: string | null, generation_prompt: string,
 *   alternating: boolean, prefill?: boolean
 * }} CompiledChatTemplate
 * @typedef {{ role: "system" | "user" | "assistant", content: string }} ChatMessage
 */

import { SitegenRuntimeError, registerErrorClass } from "./errors.js";

/** Thrown for a conversation the model's chat template does not accept. */
export class ChatFormatError extends SitegenRuntimeError {
  /** @param {string} message @param {Record<string, unknown>} [data] */
  constructor(message, data = {}) {
    super(message, data);
    this.name = "ChatFormatError";
  }
}
// Registered so that it crosses the worker boundary as itself (runtime/protocol.js imports this module).
registerErrorClass(ChatFormatError);

// Python's str.strip() whitespace (what Jinja's `trim` and `.strip()` remove); JS's trim() differs
// (it keeps \x1c-\x1f and \x85, and removes \ufeff).
const WS = "\\t\\n\\v\\f\\r\\x1c-\\x1f \\x85\\xa0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000";
const STRIP_RE = new RegExp(`^[${WS}]+|[${WS}]+$`, "g");

/** @param {string} s */
function strip(s) {
  return s.replace(STRIP_RE, "");
}

const ROLES = ["system", "user", "assistant"];

/**
 * @param {CompiledChatTemplate} c
 * @param {ChatMessage[]} messages
 */
function check(c, messages) {
  if (!Array.isArray(messages) || messages.length === 0) {
    throw new ChatFormatError("the conversation is empty");
  }
  messages.forEach((m, i) => {
    if (!ROLES.includes(m.role)) {
      throw new ChatFormatError(`messages[${i}].role: expected one of ${ROLES.join(", ")}, got ${JSON.stringify(m.role)}`);
    }
    if (typeof m.content !== "string") {
      throw new ChatFormatError(`messages[${i}].content: expected a string`);
    }
    if (m.role === "system") {
      if (i !== 0) throw new ChatFormatError(`messages[${i}]: a system message may only come first`);
      if (!c.roles.system) throw new ChatFormatError("this model's chat template has no system role");
    }
  });
  const offset = messages[0].role === "system" ? 1 : 0;
  const rest = messages.slice(offset);
  if (rest.length === 0) throw new ChatFormatError("the conversation has no user or assistant message");
  if (c.prefill === false && rest[rest.length - 1].role === "assistant") {
    throw new ChatFormatError("this model's chat template formats a final assistant message (a prefill) "
      + "in a way sitegen does not reproduce: end the conversation with a user message");
  }
  if (c.alternating) {
    rest.forEach((m, i) => {
      if (m.role !== (i % 2 === 0 ? "user" : "assistant")) {
        throw new ChatFormatError("this model's chat template needs the roles to alternate "
          + "user/assistant/user/... after the optional system message "
          + `(message ${i + offset} is ${JSON.stringify(m.role)})`);
      }
    });
  }
}

/**
 * A template without a system role gets the system prompt prepended to the first user
 * message, followed by a blank line (transformers' convention for such templates, e.g. Gemma).
 * @param {CompiledChatTemplate} c
 * @param {ChatMessage[]} messages
 * @returns {ChatMessage[]}
 */
function foldSystem(c, messages) {
  if (c.roles.system || !Array.isArray(messages) || messages[0]?.role !== "system"
      || typeof messages[0].content !== "string") return messages;
  const [sys, ...rest] = messages;
  if (sys.content === "") return rest;
  const k = rest.findIndex((m) => m?.role === "user" && typeof m.content === "string");
  if (k < 0) return messages; // check() says why
  rest[k] = { ...rest[k], content: sys.content + "\n\n" + rest[k].content };
  return rest;
}

/**
 * Format a conversation into the prompt text the model was trained on.
 * When `compiled.add_bos` is true the text already begins with the BOS token: do not add another.
 * @param {CompiledChatTemplate} compiled the manifest's `chat_template`
 * @param {ChatMessage[]} messages
 * @param {{ addGenerationPrompt?: boolean }} [options]
 * @returns {string}
 */
export function formatChat(compiled, messages, { addGenerationPrompt = true } = {}) {
  const c = compiled;
  messages = foldSystem(c, messages);
  check(c, messages);
  const roles = c.roles;
  /** @type {string | null} */
  let system = null;
  let rest = messages;
  if (messages[0].role === "system") {
    system = messages[0].content;
    rest = messages.slice(1);
  } else if (c.default_system != null) {
    system = c.default_system;
  }
  const position = c.system_position;
  let out = c.start ?? "";
  const sr = roles.system;
  if (system !== null && sr && position === "turn") {
    out += sr.prefix + (sr.trim ? strip(system) : system) + sr.suffix;
  }
  const last = rest.length - 1;
  rest.forEach((m, i) => {
    const r = m.role === "user" ? roles.user : roles.assistant;
    let content = m.content;
    let prefix = r.prefix;
    if (m.role === "assistant" && i === last && r.final_prefix != null) prefix = r.final_prefix;
    const merge = system !== null && sr && m.role === "user"
      && ((position === "first_user" && i === 0) || (position === "last_user" && i === last));
    if (merge && sr && system !== null) {
      const block = sr.prefix + (sr.trim ? strip(system) : system) + sr.suffix;
      // Llama 2 strips the concatenation (system block + user text), not the user text.
      content = r.trim && sr.trim_merged ? strip(block + content) : block + (r.trim ? strip(content) : content);
    } else if (r.trim) {
      content = strip(content);
    }
    out += prefix + content + r.suffix;
  });
  out += addGenerationPrompt ? c.generation_prompt : (c.end ?? "");
  return out;
}
