// The whole test suite: build, unit and golden tests, then (as root) the
// integration tests against a real libvirtd. Ends with "N passed, N failed".
import { spawnSync } from 'node:child_process';

const args = process.argv.slice(2);
const unitOnly = args.includes('--unit-only');
// Build, then only the integration suite (per stack, see integration()).
const integrationOnly = args.includes('--integration-only');
let passed = 0;
let failed = 0;
let skipped = 0;
let kvmNote = 'kvm: not used (integration tests not run)';

function run(cmd, argv, env = {}) {
  const r = spawnSync(cmd, argv, { encoding: 'utf8', env: { ...process.env, ...env }, maxBuffer: 256 * 1024 * 1024 });
  process.stdout.write(r.stdout ?? '');
  process.stderr.write(r.stderr ?? '');
  return r;
}

/**
 * Runs uvu over `dir` and adds its totals; a crash before totals counts as one
 * failure. Returns this run's own counts.
 */
function uvu(dir, env = {}) {
  const r = run(process.execPath, ['--import', 'tsx', 'node_modules/uvu/bin.js', dir, '\\.test\\.ts$'], env);
  // uvu colours the numbers (the skipped count starts with an escape sequence).
  const out = ((r.stdout ?? '') + (r.stderr ?? '')).replace(/\x1b\[[0-9;]*m/g, '');
  const total = /Total:\s+(\d+)/.exec(out);
  const pass = /Passed:\s+(\d+)/.exec(out);
  const skip = /Skipped:\s+(\d+)/.exec(out);
  const counts = { passed: 0, failed: 0, skipped: 0 };
  if (!total || !pass) {
    console.error(`test: uvu ${dir} ended without totals (exit ${r.status})`);
    counts.failed = 1;
  } else {
    counts.passed = Number(pass[1]);
    counts.failed = Number(total[1]) - Number(pass[1]);
    counts.skipped = skip ? Number(skip[1]) : 0;
    if (r.status !== 0 && counts.failed === 0) counts.failed = 1;
  }
  passed += counts.passed;
  failed += counts.failed;
  skipped += counts.skipped;
  return counts;
}

const seconds = (t0) => ((performance.now() - t0) / 1000).toFixed(0);

/**
 * The stacks the integration suite runs against, in order (test/support/stack.ts):
 * the machine's own libvirtd (Debian 12), then a Debian 13 chroot. Every file
 * registers its tests per stack (integrationStacks() in test/support/libvirt.ts).
 * SEV_XFORM_STACKS=debian12 leaves the second stack out (said in one line).
 */
const STACKS = [
  { name: 'debian12', setup: 'test/integration/host/setup.sh', teardown: 'test/integration/host/teardown.sh' },
  { name: 'debian13', setup: 'test/integration/host/trixie-setup.sh', teardown: 'test/integration/host/trixie-teardown.sh' },
];

/**
 * The libvirt integration tests need root (they install packages and run
 * libvirtd); without it they are skipped with one line. A failed set-up is a
 * failure, never a skip. Each stack reports what it added to the run's time.
 */
function integration() {
  if (process.getuid?.() !== 0) {
    console.log('integration: skipped: needs root to install and run libvirtd and QEMU');
    return;
  }
  const wanted = (process.env.SEV_XFORM_STACKS ?? STACKS.map((s) => s.name).join(',')).split(',').map((s) => s.trim()).filter(Boolean);
  for (const name of wanted) {
    if (!STACKS.some((s) => s.name === name)) {
      console.error(`integration: SEV_XFORM_STACKS names an unknown stack '${name}'`);
      failed += 1;
    }
  }
  const summaries = [];
  for (const stack of STACKS) {
    if (!wanted.includes(stack.name)) {
      console.log(`integration[${stack.name}]: not run (SEV_XFORM_STACKS=${wanted.join(',')})`);
      continue;
    }
    const t0 = performance.now();
    const setup = run('bash', [stack.setup]);
    const setupSeconds = seconds(t0);
    // Both stacks' set-ups print kvm=real|emulated; the machine has /dev/kvm or not for both alike.
    const kvm = /\bkvm=(real|emulated)\b/.exec(setup.stdout ?? '');
    if (kvm) kvmNote = `kvm: ${kvm[1]}${kvm[1] === 'emulated' ? ' (no /dev/kvm here: libvirt was made to offer KVM; guests the tests start ran under TCG)' : ' (/dev/kvm)'}`;
    else if (kvmNote.startsWith('kvm: not used')) kvmNote = `kvm: unknown (${stack.setup} printed no kvm= in its summary)`;
    let counts = { passed: 0, failed: 0, skipped: 0 };
    if (setup.status !== 0) {
      console.error(`integration[${stack.name}]: set-up failed (exit ${setup.status}): see above`);
      failed += 1;
      counts.failed = 1;
    } else {
      counts = uvu('test/integration', { SEV_XFORM_INTEGRATION: '1', SEV_XFORM_STACKS: stack.name });
    }
    const teardown = run('bash', [stack.teardown]);
    if (teardown.status !== 0) {
      console.error(`integration[${stack.name}]: teardown failed (exit ${teardown.status})`);
      failed += 1;
      counts.failed += 1;
    }
    summaries.push(`integration[${stack.name}]: ${counts.passed} passed, ${counts.failed} failed${counts.skipped ? `, ${counts.skipped} skipped` : ''} in ${seconds(t0)} s (set-up ${setupSeconds} s)`);
  }
  for (const line of summaries) console.log(line);
}

if (!unitOnly && process.getuid?.() === 0) {
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
  if (!integrationOnly) {
    // Type errors in tests are failures too (the build checks only src/).
    const typecheck = run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json', '--noEmit']);
    if (typecheck.status === 0) passed += 1;
    else {
      console.error('typecheck: tsc -p tsconfig.json failed (above)');
      failed += 1;
    }
    uvu('test/unit');
  }
  if (!unitOnly) {
    if (!integrationOnly) uvu('test/cli');
    integration();
  }
  console.log(`\n${kvmNote}`);
  console.log(`${passed} passed, ${failed} failed${skipped ? `, ${skipped} skipped` : ''}`);
  process.exitCode = failed > 0 ? 1 : 0;
}
