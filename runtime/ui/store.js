// Conversations kept in the visitor's browser (issue 6, item 6): one
// IndexedDB database per app (named by the app's path, so two apps of a site
// never see each other's conversations), one record per conversation.
//
// Every failure rejects with a StoreError that says what failed; the page
// shows it and keeps the conversation in memory, so a refused write never
// silently drops a message.

/**
 * @typedef {{ role: "user" | "assistant", content: string, turn?: number, n?: number,
 *   stopped?: boolean, error?: string, errorMessage?: string, speed?: number, cachedTokens?: number, tokens?: number[],
 *   output?: boolean, chosen?: number | null, picked?: number[] }} StoredMessage  output: JSON data (issue 17), chosen/picked: its cards
 * @typedef {{ id: string, title: string, created: number, updated: number, messages: StoredMessage[],
 *   form?: Record<string, string> | null }} Conversation
 */

export class StoreError extends Error {
  /** @param {string} message */
  constructor(message) {
    super(message);
    this.name = "StoreError";
  }
}

const STORE = "conversations";

/**
 * @template T @param {IDBRequest<T>} req @param {string} what
 * @returns {Promise<T>}
 */
function done(req, what) {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(new StoreError(`${what}: ${req.error?.message ?? "unknown error"}`));
  });
}

/**
 * Open (or create) the app's conversation store.
 * @param {string} appKey  e.g. the app's path "/card/"
 */
export async function openStore(appKey) {
  const idb = globalThis.indexedDB;
  if (!idb) throw new StoreError("this browser offers no IndexedDB (private browsing?)");
  const req = idb.open(`sitegen-conversations:${appKey}`, 1);
  req.onupgradeneeded = () => {
    const store = req.result.createObjectStore(STORE, { keyPath: "id" });
    store.createIndex("updated", "updated");
  };
  /** @type {IDBDatabase} */
  let db;
  try {
    db = await done(req, "cannot open the conversation store");
  } catch (e) {
    throw e instanceof StoreError ? e : new StoreError(String(e));
  }

  /** @param {IDBTransactionMode} mode */
  const store = (mode) => db.transaction(STORE, mode).objectStore(STORE);

  return {
    /** Every conversation, newest first. @returns {Promise<Conversation[]>} */
    async list() {
      const all = /** @type {Conversation[]} */ (await done(store("readonly").getAll(), "cannot list conversations"));
      return all.sort((a, b) => b.updated - a.updated);
    },
    /** @param {string} id @returns {Promise<Conversation | undefined>} */
    get(id) {
      return done(store("readonly").get(id), "cannot read the conversation");
    },
    /** @param {Conversation} conv */
    async put(conv) {
      const tx = db.transaction(STORE, "readwrite");
      tx.objectStore(STORE).put(structuredClone(conv));
      await new Promise((resolve, reject) => {
        tx.oncomplete = () => resolve(undefined);
        tx.onerror = tx.onabort = () => reject(new StoreError(`cannot save the conversation: ${tx.error?.message ?? "aborted"}`));
      });
    },
    /** @param {string} id */
    async remove(id) {
      await done(store("readwrite").delete(id), "cannot delete the conversation");
    },
  };
}

/**
 * A conversation as Markdown, for export.
 * @param {Conversation} conv @param {{ user: string, assistant: string, response_n: string }} strings
 */
export function toMarkdown(conv, strings) {
  const parts = [`# ${conv.title}`];
  for (const m of conv.messages) {
    const who = m.role === "user" ? strings.user
      : m.n ? `${strings.assistant} · ${strings.response_n.replace("{n}", String(m.n))}` : strings.assistant;
    parts.push(`**${who}:**\n\n${m.content}`);
  }
  return `${parts.join("\n\n")}\n`;
}
