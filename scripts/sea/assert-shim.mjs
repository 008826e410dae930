// Bundled in place of Node's `assert` module (esbuild alias, see scripts/build.mjs). yargs imports
// only strictEqual and notStrictEqual from it, for internal invariants; loading the real module also
// loads its error formatting, which builds process.stderr and the stream modules: about 16 ms of
// every command line that goes through yargs (check, host, plan, apply, --help), measured.

/** Throws when `actual` and `expected` differ (SameValue, as assert.strictEqual). */
export function strictEqual(actual, expected, message) {
  if (!Object.is(actual, expected)) throw new Error(message ?? `expected ${String(expected)}, got ${String(actual)}`);
}

/** Throws when `actual` and `expected` are the same (SameValue, as assert.notStrictEqual). */
export function notStrictEqual(actual, expected, message) {
  if (Object.is(actual, expected)) throw new Error(message ?? `expected a value other than ${String(expected)}`);
}
