// Constrained output (issue 17): JSON Schema subset → grammar (schema.js, regex.js) → byte-level
// matcher (matcher.js) → per-step token masks over the model's vocabulary (mask.js).
export { compileSchema, responseFormatGrammar, SUPPORTED_KEYWORDS, INT_DIGITS, FRAC_DIGITS } from "./schema.js";
export { GrammarMatcher, TokenIndex } from "./mask.js";
