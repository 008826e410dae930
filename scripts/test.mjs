// The whole test suite: build, unit and golden tests, then (as root) the
// integration tests against a real libvirtd. Ends with "N passed, N failed" (the
// line before says how the integration tests had KVM). --unit-only: no CLI or
// integration tests; --integration-only: build, typecheck and integration only.
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit-only');
// Build, typecheck and the libvirt integration tests only (what test/integration/host/ changes touch).
const integrationOnly = args.includes('--integration-only');
let passed = 0;
let failed = 0;
let skipped = 0;
/** How the integration tests had KVM, from setup.sh's summary line (kvm=real or kvm=emulated). */
let kvmNote = 'kvm: not used (integration tests not run)';

function run(cmd, argv, env = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 256 * 1024 * 1024 });
  process.stdout.write(r.stdout ?? '');
  process.stderr.write(r.stderr ?? '');
  return r;
}

/** Runs uvu over `dir` and adds its totals; a crash before totals counts as one failure. */
function uvu(dir, env = {}) {
  const r = run(process.execPath, ['--import', 'tsx', 'node_modules/uvu/bin.js', dir, '\\.test\\.ts$'], env);
  // uvu colours its totals; "Skipped:   \x1b[33m6" would not match otherwise.
  const out = ((r.stdout ?? '') + (r.stderr ?? '')).replace(/\x1b\[[0-9;]*m/g, '');
  const total = /Total:\s+(\d+)/.exec(out);
  const pass = /Passed:\s+(\d+)/.exec(out);
  const skip = /Skipped:\s+(\d+)/.exec(out);
  if (!total || !pass) {
    console.error(`test: uvu ${dir} ended without totals (exit ${r.status})`);
    failed += 1;
    return;
  }
  passed += Number(pass[1]);
  failed += Number(total[1]) - Number(pass[1]);
  skipped += skip ? Number(skip[1]) : 0;
  if (r.status !== 0 && Number(total[1]) === Number(pass[1])) failed += 1;
}

/**
 * The libvirt integration tests need root (they install packages and run
 * libvirtd); without it they are skipped with one line. A failed set-up is a
 * failure, never a skip.
 */
function integration() {
  if (process.getuid?.() !== 0) {
    console.log('integration: skipped: needs root to install and run libvirtd and QEMU');
    return;
  }
  const setup = run('bash', ['test/integration/host/setup.sh']);
  const kvm = /\bkvm=(real|emulated)\b/.exec(setup.stdout ?? '');
  kvmNote = kvm ? `kvm: ${kvm[1]}${kvm[1] === 'emulated' ? ' (no /dev/kvm here: libvirt was made to offer KVM; guests the tests start ran under TCG)' : ' (/dev/kvm)'}` : 'kvm: unknown (setup.sh printed no kvm= in its summary)';
  if (setup.status !== 0) {
    console.error(`integration: set-up failed (exit ${setup.status}): see above`);
    failed += 1;
  } else {
    uvu('test/integration', { SEV_XFORM_INTEGRATION: '1' });
  }
  const teardown = run('bash', ['test/integration/host/teardown.sh']);
  if (teardown.status !== 0) {
    console.error(`integration: teardown failed (exit ${teardown.status})`);
    failed += 1;
  }
}

if (!unitOnly && !integrationOnly && process.getuid?.() === 0) {
  const deps = run('bash', ['scripts/test-deps.sh']);
  if (deps.status !== 0) {
    console.error(`test-deps: installing the tests' Debian packages failed (exit ${deps.status})`);
    failed += 1;
  }
}

const build = run('node', ['scripts/build.mjs']);
if (build.status !== 0) {
  console.log('build failed');
  console.log(`0 passed, 1 failed`);
  process.exitCode = 1;
} else {
  // Type errors in tests are failures too (the build checks only src/).
  const typecheck = run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json', '--noEmit']);
  if (typecheck.status === 0) passed += 1;
  else {
    console.error('typecheck: tsc -p tsconfig.json failed (above)');
    failed += 1;
  }
  if (!integrationOnly) uvu('test/unit');
  if (!unitOnly) {
    if (!integrationOnly) uvu('test/cli');
    integration();
  }
  console.log(`\n${kvmNote}`);
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exitCode = failed > 0 ? 1 : 0;
}
