// Stop strings across token boundaries and the KV-reuse prefix rule
// (runtime/sampling.js). The oracle for streaming is the obvious batch rule:
// the whole text cut before the first occurrence of any stop string.
import { test } from "node:test";
import assert from "node:assert/strict";
import { StopStringMatcher, commonPrefixLength, createRng } from "../../runtime/sampling.js";

/** @param {string} text @param {string[]} stops */
function batchCut(text, stops) {
  let cut = -1;
  for (const s of stops) {
    const at = text.indexOf(s);
    if (at >= 0 && (cut < 0 || at < cut)) cut = at;
  }
  return cut < 0 ? { text, stopped: false } : { text: text.slice(0, cut), stopped: true };
}

/** @param {string[]} pieces @param {string[]} stops */
function stream(pieces, stops) {
  const m = new StopStringMatcher(stops);
  let out = "";
  let stopped = false;
  for (const p of pieces) {
    const r = m.push(p);
    out += r.text;
    if (r.stopped) { stopped = true; break; }
  }
  if (!stopped) out += m.flush();
  return { text: out, stopped };
}

test("a stop string split over several tokens is found and not emitted", () => {
  assert.deepEqual(stream(["Hello", " wor", "ld<", "|e", "nd|>", "tail"], ["<|end|>"]),
    { text: "Hello world", stopped: true });
});

test("a false start is released once it cannot be a stop string", () => {
  const m = new StopStringMatcher(["<|end|>"]);
  assert.deepEqual(m.push("a<|e"), { text: "a", stopped: false });
  assert.deepEqual(m.push("x"), { text: "<|ex", stopped: false });
  assert.equal(m.flush(), "");
});

test("text held back at the end is flushed", () => {
  assert.deepEqual(stream(["abc", "<|"], ["<|end|>"]), { text: "abc<|", stopped: false });
});

test("the earliest of several stop strings wins", () => {
  assert.deepEqual(stream(["one\n\nUser: two"], ["User:", "\n\n"]), { text: "one", stopped: true });
});

test("random splits agree with the batch rule", () => {
  const rng = createRng(42);
  const alphabet = "ab<|>\n";
  const stopsPool = [["<|>"], ["ab", "b<"], ["\n\n"], ["a|b|"], []];
  for (let trial = 0; trial < 2000; trial++) {
    const len = Math.floor(rng() * 20);
    let text = "";
    for (let i = 0; i < len; i++) text += alphabet[Math.floor(rng() * alphabet.length)];
    const pieces = [];
    for (let i = 0; i < text.length;) {
      const n = 1 + Math.floor(rng() * 4);
      pieces.push(text.slice(i, i + n));
      i += n;
    }
    const stops = stopsPool[trial % stopsPool.length];
    assert.deepEqual(stream(pieces, stops), batchCut(text, stops), JSON.stringify({ pieces, stops }));
  }
});

test("commonPrefixLength", () => {
  assert.equal(commonPrefixLength([1, 2, 3], [1, 2, 4, 5]), 2);
  assert.equal(commonPrefixLength([], [1]), 0);
  assert.equal(commonPrefixLength([1, 2], [1, 2]), 2);
  assert.equal(commonPrefixLength(Int32Array.from([7, 8, 9]), [7, 8, 9, 10]), 3);
});
