'use strict';
// Usage: node [the binary's execArgv] make-code-cache.cjs BUNDLE CACHE
// Runs the program bundle the way scripts/sea/loader.cjs does, then its warm-up (the filter and the
// hook on sample inputs), and writes V8's code cache of everything compiled so far. It must run on
// the same Node binary, with the same V8 flags, as the single binary, or V8 rejects the cache.
const { readFileSync, writeFileSync } = require('node:fs');
const { Script } = require('node:vm');

const [bundlePath, cachePath] = process.argv.slice(2);
const script = new Script(readFileSync(bundlePath, 'latin1'), { filename: 'sev-xform.js' });
const bundle = { exports: {} };
script.runInThisContext()(bundle.exports, require, bundle);
bundle.exports.warmUp().then(
  () => writeFileSync(cachePath, script.createCachedData()),
  (e) => {
    process.stderr.write(`make-code-cache: ${e instanceof Error ? e.message : String(e)}\n`);
    process.exitCode = 1;
  },
);
