// Filling form prompt templates (runtime/ui/template.js): `[[ ... ]]` optional parts vanish
// when a field they use is empty; values are inserted as they are.
import { test } from "node:test";
import assert from "node:assert/strict";
import { fillTemplate } from "../../runtime/ui/template.js";

// As sitegen/spec/template.py parses "Card for {name}.[[ Mention: {notes}]] Bye"
const parts = [
  { text: "Card for " }, { field: "name" }, { text: "." },
  { optional: [{ text: " Mention: " }, { field: "notes" }] }, { text: " Bye" },
];

test("an optional part is kept when its field has a value", () => {
  assert.equal(fillTemplate(parts, { name: "Ann", notes: "gardens" }),
    "Card for Ann. Mention: gardens Bye");
});

test("an optional part vanishes when its field is empty, blank or missing", () => {
  for (const notes of ["", "  \n", undefined]) {
    assert.equal(fillTemplate(parts, { name: "Ann", notes }), "Card for Ann. Bye");
  }
});

test("an optional part with two fields needs both", () => {
  const p = [{ optional: [{ field: "a" }, { text: "/" }, { field: "b" }] }];
  assert.equal(fillTemplate(p, { a: "x", b: "y" }), "x/y");
  assert.equal(fillTemplate(p, { a: "x", b: "" }), "");
  assert.equal(fillTemplate(p, { a: "", b: "y" }), "");
});

test("values are never parsed as template", () => {
  assert.equal(fillTemplate(parts, { name: "[[{notes}]]", notes: "{name}" }),
    "Card for [[{notes}]]. Mention: {name} Bye");
});
