'use strict';
// The single binary's main script. It runs the program bundle (asset sev-xform.js) with the V8 code
// cache that scripts/sea/make-code-cache.cjs wrote after running the filter and the hook once
// (asset sev-xform.cache): V8 then starts with those paths' bytecode instead of parsing and compiling
// the bundle again on every VM start. This costs about 2-3 ms; a V8 startup snapshot of the loaded
// program cost about 9 ms more per start, all of it in Node's own start-up (measured, 2026-11-26).
const { getRawAsset } = require('node:sea');
const { Script } = require('node:vm');

// getRawAsset: the assets as they lie in the executable, not copied (both are only read). The bundle
// is ASCII (esbuild escapes everything else), so latin1 decodes it byte for byte.
const script = new Script(Buffer.from(getRawAsset('sev-xform.js')).toString('latin1'), {
  filename: 'sev-xform.js',
  cachedData: Buffer.from(getRawAsset('sev-xform.cache')),
});
// V8 silently compiles from source when it rejects a cache (another V8 version or flags); the build
// and the tests ask for this line to prove the cache is used.
if (process.env.SEV_XFORM_TRACE_CODE_CACHE === '1')
  require('node:fs').writeSync(2, `sev-xform: code cache ${script.cachedDataRejected ? 'rejected' : 'accepted'}\n`);
const bundle = { exports: {} };
script.runInThisContext()(bundle.exports, require, bundle);
bundle.exports.run();
