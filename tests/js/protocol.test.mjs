// The page ↔ worker protocol (runtime/protocol.js): replies are matched to
// requests by id, streams end with their result, and errors come back as
// instances of their own class (issue 6, item 1).
import { test } from "node:test";
import assert from "node:assert/strict";
import { WorkerClient, isMessage, REQUEST_KINDS, REPLY_KINDS } from "../../runtime/protocol.js";
import { ShardIntegrityError, DeviceLostError, errorToJSON } from "../../runtime/errors.js";
import { CorsError } from "../../runtime/loader/errors.js";

/** A worker whose replies the test scripts: `onRequest(msg, reply)`. */
class FakeWorker extends EventTarget {
  constructor(onRequest) {
    super();
    this.sent = [];
    this.onRequest = onRequest;
  }
  postMessage(msg) {
    this.sent.push(msg);
    queueMicrotask(() => this.onRequest(msg, (kind, payload, id = msg.id) =>
      this.dispatchEvent(Object.assign(new Event("message"), { data: { kind, id, payload } }))));
  }
}

test("messages are checked before they are acted on", () => {
  assert.ok(isMessage({ kind: "load", id: 1, payload: {} }, REQUEST_KINDS));
  assert.ok(!isMessage({ kind: "load", id: "1", payload: {} }, REQUEST_KINDS));
  assert.ok(!isMessage({ kind: "eval", id: 1, payload: {} }, REQUEST_KINDS));
  assert.ok(!isMessage({ kind: "chunk", id: 1, payload: null }, REPLY_KINDS));
  assert.ok(!isMessage("chunk", REPLY_KINDS));
});

test("load reports progress and resolves; a load error is rebuilt with its class", async () => {
  const worker = new FakeWorker((msg, reply) => {
    if (msg.payload.manifestUrl === "bad") {
      reply("error", { error: errorToJSON(new CorsError("no CORS header", { url: "https://w.example/x" })) });
      return;
    }
    reply("progress", { event: { phase: "download", bytesDone: 1, bytesTotal: 2 } });
    reply("ready", { stats: { weightsBytes: 2 }, contextLength: 256 });
  });
  const client = new WorkerClient(/** @type {any} */ (worker));
  const events = [];
  const ready = await client.load({ manifestUrl: "m.json" }, (e) => events.push(e.phase));
  assert.deepEqual(events, ["download"]);
  assert.equal(ready.contextLength, 256);
  await assert.rejects(client.load({ manifestUrl: "bad" }), (e) => {
    assert.ok(e instanceof CorsError);
    assert.equal(e.name, "CorsError");
    assert.deepEqual(e.data, { url: "https://w.example/x" });
    return true;
  });
});

test("generate streams chunks, abort sends the target id, errors reject the iterator", async () => {
  const worker = new FakeWorker((msg, reply) => {
    if (msg.kind === "generate" && msg.payload.messages[0].content === "fail") {
      reply("chunk", { text: "a", tokens: [1] });
      reply("error", { error: errorToJSON(new ShardIntegrityError("bad shard", { index: 3 })) });
    } else if (msg.kind === "generate") {
      reply("chunk", { text: "Hel", tokens: [1] });
      reply("chunk", { text: "lo", tokens: [2] });
      reply("done", { finishReason: "stop", usage: { completion_tokens: 2 } });
    }
  });
  const client = new WorkerClient(/** @type {any} */ (worker));
  const stream = client.generate({ messages: [{ role: "user", content: "hi" }], settings: {} });
  let text = "";
  for await (const c of stream) text += c.text;
  assert.equal(text, "Hello");
  assert.deepEqual(await stream.result, { finishReason: "stop", usage: { completion_tokens: 2 } });

  const failing = client.generate({ messages: [{ role: "user", content: "fail" }], settings: {} });
  failing.abort();
  assert.deepEqual(worker.sent.at(-1).payload, { target: failing.id });
  await assert.rejects((async () => { for await (const _ of failing); })(), ShardIntegrityError);
});

test("a lost device is reported to onLost as a DeviceLostError", async () => {
  const worker = new FakeWorker((msg, reply) => reply("lost", { error: errorToJSON(new DeviceLostError("gone")) }, 0));
  const client = new WorkerClient(/** @type {any} */ (worker));
  const lost = new Promise((resolve) => { client.onLost = resolve; });
  client.load({ manifestUrl: "m.json" });
  assert.ok((await lost) instanceof DeviceLostError);
});

test("every runtime error class crosses the worker boundary as itself", async () => {
  // The page imports protocol.js only; every class the worker can throw must be known there.
  const errors = await import("../../runtime/errors.js");
  const loaderErrors = await import("../../runtime/loader/errors.js");
  const chat = await import("../../runtime/chat.js");
  const { errorFromJSON } = errors;
  const classes = [...Object.values(errors), ...Object.values(loaderErrors), ...Object.values(chat)]
    .filter((v) => typeof v === "function" && v.prototype instanceof Error);
  assert.ok(classes.some((c) => c.name === "ChatFormatError"));
  for (const cls of classes) {
    const e = cls === errors.AbortError ? new cls() : new cls("boom", { k: 1 });
    const back = errorFromJSON(errorToJSON(e));
    assert.equal(back.constructor, cls, `${cls.name} was rebuilt as ${back.constructor.name}`);
    assert.equal(back.name, e.name);
  }
});
