// Every command shown in docs/*.md, and every example in the --help of every
// command (which the man page shows too), is run or checked here.
//
// Convention for fenced blocks in docs/*.md:
//   ```sh            run; the block must exit 0
//   ```sh exit=1     run; must exit 1 (a refusal that is the point of the example)
//   ```sh exit=any   run; 0 or 1 are both right: the answer depends on the machine (`sev-xform host`)
//   ```sh host       needs a real SEV host, a real libvirtd, or changes this machine (dpkg, systemctl,
//                    grub, ansible against real hosts): not run, only checked (see below)
//   ```text output   right after a run block: its lines must be consecutive lines of what that block
//                    printed (stdout, then stderr), starting anywhere; a line `...` skips any number
//   ```text, ```ini, ```yaml, ```xml, ```json: shown, not run
// Any other shell-like fence (bash, shell, console, sh with other words) is an error, so that no
// command can slip into the docs unchecked.
//
// Checked for every sh block (run or host): bash -n accepts it; every `sev-xform ...` command line
// parses with sev-xform's own command definitions (an unknown command or option fails); every
// `virsh CMD --option` exists in the installed virsh (`virsh help CMD`); `ansible ... -a "CMD"`
// is checked as CMD.
//
// Run blocks run in document order, each in its own `bash -o pipefail` (with -e when it must exit
// 0; exit=1 and exit=any blocks run to their end and their last command's exit counts), in a
// sandbox shared by the blocks of one document. Its cwd holds caps.xml (examples/domcaps.xml:
// SEV, 15 slots, no SEV-ES), in.xml and domains/*.xml; PATH starts with the built dist/sev-xform
// and a fake virsh whose domains are web1, web2 (tagged, unconverted) and db1 (untagged), plus VM
// (tagged) for the --help examples. The fake virsh keeps domains as files, validates what it
// defines with virt-xml-validate when installed, runs the hook shim (hooks/qemu, pointed at
// dist/sev-xform) on `start` as libvirt does, and answers domcapabilities with caps.xml.
// Running needs root: the blocks run in a private mount namespace where /var/lib is a sandbox
// folder, so the host cache, apply's backups and the hook's reads never touch this machine's
// /var/lib/sev-xform. Without root only the checks run (one line says so).
//
// The Ansible playbook docs/ansible/site.yml is syntax-checked, and as root run for real against
// localhost (with the built .deb and the fake virsh), then the package is purged.
import { shellWords } from '../support/shell.js';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join, resolve } from 'node:path';
import yargs from 'yargs';
import { COMMANDS } from '../../src/commands/index.js';
import { BIN } from '../support/bin.js';

const DOCS = 'docs';
const IS_ROOT = process.getuid?.() === 0;
const CAN_RUN = IS_ROOT && spawnSync('unshare', ['--mount', '--propagation', 'private', 'true']).status === 0;
if (!CAN_RUN) console.log('docs: sh blocks and --help examples only checked, not run: running them needs root (a private mount namespace)');

// ---- fenced blocks

interface Block {
  file: string;
  line: number;
  info: string;
  text: string;
}

function blocks(file: string): Block[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out: Block[] = [];
  for (let i = 0; i < lines.length; i++) {
    const open = /^(\s*)```(.*)$/.exec(lines[i]!);
    if (!open) continue;
    const indent = open[1]!.length;
    const body: string[] = [];
    let j = i + 1;
    for (; j < lines.length && !/^\s*```\s*$/.test(lines[j]!); j++) body.push(lines[j]!.slice(Math.min(indent, lines[j]!.search(/\S|$/))));
    out.push({ file, line: i + 1, info: open[2]!.trim(), text: body.join('\n') + '\n' });
    i = j;
  }
  return out;
}

const docFiles = readdirSync(DOCS)
  .filter((f) => f.endsWith('.md'))
  .sort()
  .map((f) => join(DOCS, f));

type Kind = { run: false } | { run: true; exit: number | 'any' };

function kindOf(b: Block): Kind | 'output' | 'shown' {
  if (b.info === 'sh') return { run: true, exit: 0 };
  const exit = /^sh exit=(\d+|any)$/.exec(b.info);
  if (exit) return { run: true, exit: exit[1] === 'any' ? 'any' : Number(exit[1]) };
  if (b.info === 'sh host') return { run: false };
  if (b.info === 'text output') return 'output';
  if (['text', 'ini', 'yaml', 'xml', 'json', ''].includes(b.info)) return 'shown';
  throw new Error(`${b.file}:${b.line}: fence '${b.info}' is not one of the conventions of test/cli/docs.test.ts`);
}

// ---- splitting shell into simple commands (enough for the docs: pipes, &&, ;, for loops, $(...))

/** Simple commands of a block, as argv arrays; `$(...)` contents count as commands of their own. */
export function commandsOf(script: string): string[][] {
  const joined = script.replace(/\\\n/g, ' ');
  const inner: string[] = [];
  const flat = joined.replace(/\$\(([^()]*)\)/g, (_m, body: string) => {
    inner.push(body);
    return 'SUBST';
  });
  const out: string[][] = [];
  for (const line of [...flat.split('\n'), ...inner]) {
    const code = line.replace(/(^|\s)#.*$/, '');
    for (const part of code.split(/\|\||&&|[|;]/)) {
      let argv = shellWords(part);
      // Redirections and their targets are not arguments.
      const cut = argv.findIndex((w) => /^(\d?>>?|&>|<)/.test(w));
      if (cut >= 0) argv = argv.slice(0, cut);
      while (['do', 'then', 'else', '!'].includes(argv[0] ?? '')) argv = argv.slice(1);
      if (argv.length === 0 || ['for', 'done', 'fi', 'if'].includes(argv[0]!)) continue;
      out.push(argv);
    }
  }
  return out;
}

// ---- checks without running

/** sev-xform's command definitions with no-op handlers: a usage error is returned, nothing runs. */
function sevXformUsageError(argv: readonly string[]): Promise<string | null> {
  let y = yargs().scriptName('sev-xform');
  for (const spec of COMMANDS) y = y.command(spec.command as string | string[], spec.describe, spec.builder, () => undefined);
  return new Promise((done) => {
    y.strict()
      .help()
      .version(false)
      .parse([...argv], {}, (err) => done(err ? err.message : null));
  });
}

const virshOptions = new Map<string, Set<string> | null>();
function virshCommandOptions(command: string): Set<string> | null {
  if (!virshOptions.has(command)) {
    const r = spawnSync('virsh', ['help', command], { encoding: 'utf8' });
    virshOptions.set(command, r.status === 0 ? new Set([...r.stdout.matchAll(/--([a-z][a-z0-9-]*)/g)].map((m) => m[1]!)) : null);
  }
  return virshOptions.get(command)!;
}
const HAVE_VIRSH = spawnSync('virsh', ['--version']).status === 0;

async function checkCommand(argv: string[], where: string): Promise<string[]> {
  const problems: string[] = [];
  const [cmd, ...args] = argv;
  if (cmd === 'sev-xform') {
    const err = await sevXformUsageError(args);
    if (err) problems.push(`${where}: \`${argv.join(' ')}\`: ${err}`);
  } else if (cmd === 'virsh' && HAVE_VIRSH) {
    const rest = args[0] === '--connect' || args[0] === '-c' ? args.slice(2) : args;
    const sub = rest[0] ?? '';
    const known = virshCommandOptions(sub);
    if (known === null) problems.push(`${where}: \`${argv.join(' ')}\`: virsh has no command '${sub}'`);
    else for (const o of rest.filter((w) => /^--[a-z]/.test(w))) if (!known.has(o.slice(2))) problems.push(`${where}: \`${argv.join(' ')}\`: virsh ${sub} has no option ${o}`);
  } else if (cmd === 'ansible') {
    const i = args.indexOf('-a');
    if (i >= 0 && args[i + 1]) for (const c of commandsOf(args[i + 1]!)) problems.push(...(await checkCommand(c, `${where} (ansible -a)`)));
  }
  return problems;
}

async function checkBlock(b: Block): Promise<string[]> {
  const where = `${b.file}:${b.line}`;
  const syntax = spawnSync('bash', ['-n'], { input: b.text, encoding: 'utf8' });
  const problems = syntax.status === 0 ? [] : [`${where}: bash -n: ${syntax.stderr.trim()}`];
  for (const argv of commandsOf(b.text)) problems.push(...(await checkCommand(argv, where)));
  return problems;
}

// ---- the sandbox

const FAKE_VIRSH = String.raw`
// A fake virsh over files in $FAKE_VIRSH_DIR: domains/NAME.xml, running/NAME, domcaps.xml, hooks/*.
const fs = require('node:fs');
const path = require('node:path');
const { spawnSync } = require('node:child_process');
const dir = process.env.FAKE_VIRSH_DIR;
const domains = path.join(dir, 'domains');
const running = path.join(dir, 'running');
let args = process.argv.slice(2);
if (args[0] === '--connect' || args[0] === '-c') args = args.slice(2);
const [cmd, ...rest] = args;
const flags = new Set(rest.filter((a) => a.startsWith('--')));
const valueOf = (flag) => { const i = rest.indexOf(flag); return i >= 0 ? rest[i + 1] : undefined; };
const VALUED = new Set(['--domain', '--file', '--uri', '--key', '--set', '--arch', '--machine', '--virttype', '--emulatortype']);
const positional = rest.filter((a, i) => !a.startsWith('--') && !VALUED.has(rest[i - 1]));
const die = (msg) => { process.stderr.write('error: ' + msg + '\n'); process.exit(1); };
const file = (name) => path.join(domains, name + '.xml');
const read = (name) => { if (!fs.existsSync(file(name))) die("failed to get domain '" + name + "'"); return fs.readFileSync(file(name), 'utf8'); };
const isRunning = (name) => fs.existsSync(path.join(running, name));
const list = () => fs.readdirSync(domains).filter((f) => f.endsWith('.xml')).map((f) => f.slice(0, -4)).sort();
const domainArg = () => valueOf('--domain') ?? positional[0];
switch (cmd) {
  case 'domcapabilities':
    process.stdout.write(fs.readFileSync(path.join(dir, 'domcaps.xml'), 'utf8'));
    break;
  case 'list':
    for (const n of list()) if (flags.has('--all') || isRunning(n)) process.stdout.write(n + '\n');
    process.stdout.write('\n');
    break;
  case 'dumpxml':
    process.stdout.write(read(domainArg()));
    break;
  case 'domstate':
    read(domainArg());
    process.stdout.write((isRunning(domainArg()) ? 'running' : 'shut off') + '\n\n');
    break;
  case 'define': {
    const from = valueOf('--file') ?? positional[0];
    const xml = fs.readFileSync(from, 'utf8');
    const name = /<name>([^<]+)<\/name>/.exec(xml);
    if (!/^\s*(<\?xml[^>]*>\s*)?<domain[\s>]/.test(xml) || !name) die('Failed to define domain from ' + from + ': not a domain XML with a <name>');
    const check = spawnSync('virt-xml-validate', ['-', 'domain'], { input: xml, encoding: 'utf8' });
    if (!check.error && check.status !== 0) die('Failed to define domain from ' + from + ': ' + (check.stderr || check.stdout).trim().split('\n')[0]);
    fs.writeFileSync(file(name[1]), xml);
    process.stdout.write("Domain '" + name[1] + "' defined from " + from + '\n\n');
    break;
  }
  case 'metadata': {
    const name = valueOf('--domain') ?? positional[0];
    const uri = valueOf('--uri') ?? positional[1];
    const key = valueOf('--key');
    let xml = read(name);
    const esc = uri.replace(/[.*+?^$()|[\]\\/]/g, '\\$&');
    const existing = new RegExp('\\n?[ \\t]*<[\\w-]+:[\\w-]+ xmlns:[\\w-]+="' + esc + '"[^>]*/>', 'g');
    if (flags.has('--remove')) xml = xml.replace(existing, '');
    else if (valueOf('--set') !== undefined) {
      const set = /^<([\w-]+)([^>]*?)\s*\/>$/.exec(valueOf('--set').trim());
      if (!set || !key) die('fake virsh: --set takes one empty element and needs --key');
      const element = '<' + key + ':' + set[1] + ' xmlns:' + key + '="' + uri + '"' + set[2] + '/>';
      xml = xml.replace(existing, '');
      if (/<metadata>/.test(xml)) xml = xml.replace(/<metadata>/, '<metadata>\n    ' + element);
      else xml = xml.replace(/(<\/uuid>|<\/name>)/, '$1\n  <metadata>\n    ' + element + '\n  </metadata>');
    } else {
      const m = new RegExp('<[\\w-]+:[\\w-]+ xmlns:[\\w-]+="' + esc + '"[^>]*/>').exec(xml);
      if (!m) die('metadata not found: Requested metadata element is not present');
      process.stdout.write(m[0] + '\n\n');
      break;
    }
    fs.writeFileSync(file(name), xml);
    process.stdout.write('Metadata modified\n\n');
    break;
  }
  case 'start': {
    const name = domainArg();
    const xml = read(name);
    if (isRunning(name)) die("Failed to start domain '" + name + "'\nerror: Requested operation is not valid: domain is already running");
    const hooks = path.join(dir, 'hooks', 'qemu.d');
    for (const h of fs.existsSync(hooks) ? fs.readdirSync(hooks).sort() : []) {
      const env = { LC_ALL: 'C', PATH: '/usr/sbin:/usr/bin:/sbin:/bin', HOME: '/', SEV_XFORM_RUN_DIR: running, SEV_XFORM_LOCK_DIR: path.join(dir, 'sev-xform-lock') };
      const r = spawnSync(path.join(hooks, h), [name, 'prepare', 'begin', '-'], { input: xml, encoding: 'utf8', env });
      if (r.status !== 0)
        die("Failed to start domain '" + name + "'\nerror: Hook script execution failed: internal error: Child process (LC_ALL=C " + path.join(hooks, h) + ' ' + name + ' prepare begin -) unexpected exit status ' + r.status + ': ' + r.stderr.trim());
    }
    fs.writeFileSync(path.join(running, name), xml);
    process.stdout.write("Domain '" + name + "' started\n\n");
    break;
  }
  case 'destroy':
  case 'shutdown':
    read(domainArg());
    fs.rmSync(path.join(running, domainArg()), { force: true });
    process.stdout.write("Domain '" + domainArg() + "' " + (cmd === 'destroy' ? 'destroyed' : 'is being shutdown') + '\n\n');
    break;
  default:
    die('fake virsh: ' + cmd + ' is not faked; add it to test/cli/docs.test.ts or mark the block sh host');
}
`;

interface Sandbox {
  root: string;
  work: string;
  varLib: string;
  env: Record<string, string>;
}

const sandboxes: Sandbox[] = [];

/** A domain XML under another name and uuid. */
function renamed(xml: string, name: string, n: number): string {
  return xml.replace(/<name>[^<]*<\/name>/, `<name>${name}</name>`).replace(/<uuid>[^<]*<\/uuid>/, `<uuid>3e3fce45-4f53-4fa7-bb32-${String(n).padStart(12, '0')}</uuid>`);
}

/** The sandbox; `VM`, the domain the --help examples name, only when asked for, so the docs' outputs show their own domains. */
function makeSandbox(withVM = false): Sandbox {
  const root = mkdtempSync(join(tmpdir(), 'sev-xform-docs-'));
  const work = join(root, 'work');
  const bin = join(root, 'bin');
  const libvirt = join(root, 'libvirt');
  const varLib = join(root, 'var-lib');
  const home = join(root, 'home');
  for (const d of [work, join(work, 'domains'), bin, join(libvirt, 'domains'), join(libvirt, 'running'), join(libvirt, 'hooks/qemu.d'), varLib, join(home, '.config/qemu/firmware')])
    mkdirSync(d, { recursive: true });
  writeFileSync(join(bin, 'virsh'), `#!${process.execPath}\n${FAKE_VIRSH}`);
  chmodSync(join(bin, 'virsh'), 0o755);
  writeFileSync(join(bin, 'sev-xform'), `#!/bin/sh\nexec ${BIN} "$@"\n`);
  chmodSync(join(bin, 'sev-xform'), 0o755);
  // The shim as install.sh installs it, calling the built binary.
  const shim = readFileSync('hooks/qemu', 'utf8').replace(/^SEV_XFORM=.*$/m, `SEV_XFORM=${BIN}`);
  writeFileSync(join(libvirt, 'hooks/qemu.d/sev-xform'), shim);
  chmodSync(join(libvirt, 'hooks/qemu.d/sev-xform'), 0o755);
  // QEMU's per-user firmware folder, so that the sandbox finds OVMF descriptors on any machine.
  for (const f of readdirSync('examples/firmware')) copyFileSync(join('examples/firmware', f), join(home, '.config/qemu/firmware', f));

  const example = readFileSync('examples/domain.xml', 'utf8');
  const q35 = readFileSync('test/fixtures-hook/tagged.xml', 'utf8');
  const untagged = readFileSync('test/fixtures-hook/plain.xml', 'utf8');
  const domains: Record<string, string> = {
    web1: renamed(example, 'web1', 1),
    web2: renamed(q35, 'web2', 2),
    db1: renamed(untagged, 'db1', 3),
    ...(withVM ? { VM: renamed(example, 'VM', 4) } : {}),
    // apply's --help shows how a name that starts with - is given.
    '--web': renamed(q35, '--web', 5),
  };
  for (const [name, xml] of Object.entries(domains)) writeFileSync(join(libvirt, 'domains', `${name}.xml`), xml);
  for (const name of ['web1', 'web2', 'db1']) writeFileSync(join(work, 'domains', `${name}.xml`), domains[name]!);
  copyFileSync('examples/domcaps.xml', join(libvirt, 'domcaps.xml'));
  copyFileSync('examples/domcaps.xml', join(work, 'caps.xml'));
  copyFileSync('examples/domain.xml', join(work, 'in.xml'));
  const sandbox = {
    root,
    work,
    varLib,
    env: { PATH: `${bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin`, HOME: home, LC_ALL: 'C', FAKE_VIRSH_DIR: libvirt, SEV_XFORM_RUN_DIR: join(libvirt, 'running'), SEV_XFORM_LOCK_DIR: join(libvirt, 'sev-xform-lock') },
  };
  sandboxes.push(sandbox);
  return sandbox;
}

test.after.each(() => {
  while (sandboxes.length) rmSync(sandboxes.pop()!.root, { recursive: true, force: true });
});

interface Ran {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs a script in the sandbox, in a private mount namespace whose /var/lib is the sandbox's.
 * A block that must exit 0 stops at its first failure (-e); the others run to their end.
 */
function runIn(s: Sandbox, script: string, stopOnFailure = true): Ran {
  const shell = stopOnFailure ? 'bash -eo pipefail' : 'bash -o pipefail';
  const r = spawnSync(
    'unshare',
    ['--mount', '--propagation', 'private', '--', 'sh', '-c', `mount --bind "$1" /var/lib && cd "$2" && exec ${shell} -c "$3"`, 'sh', s.varLib, s.work, script],
    { encoding: 'utf8', env: s.env, timeout: 120_000 },
  );
  return { code: r.status, stdout: r.stdout ?? '', stderr: (r.stderr ?? '') + (r.error ? `\n(${r.error.message})` : '') };
}

function outputMatches(expected: string, actual: string): string | null {
  const want = expected.replace(/\n$/, '').split('\n').map((l) => l.trimEnd());
  const got = actual.split('\n').map((l) => l.trimEnd());
  let at = 0;
  let skipping = true;
  for (const line of want) {
    if (line === '...') {
      skipping = true;
      continue;
    }
    const found = skipping ? got.indexOf(line, at) : got[at] === line ? at : -1;
    if (found < 0) return line;
    at = found + 1;
    skipping = false;
  }
  return null;
}

// ---- tests: the docs

test('every fence in docs/ follows the convention, and output blocks follow run blocks', () => {
  assert.ok(docFiles.includes('docs/guide.md') && docFiles.includes('docs/fleet.md'), docFiles.join(', '));
  for (const file of docFiles) {
    let previous: ReturnType<typeof kindOf> | undefined;
    for (const b of blocks(file)) {
      const kind = kindOf(b);
      if (kind === 'output') assert.ok(typeof previous === 'object' && previous.run, `${file}:${b.line}: a text output block must follow a run block`);
      previous = kind;
    }
  }
});

test('every sh block in docs/ passes bash -n, and its sev-xform and virsh commands parse', async () => {
  const problems: string[] = [];
  let count = 0;
  for (const file of docFiles)
    for (const b of blocks(file)) {
      const kind = kindOf(b);
      if (typeof kind !== 'object') continue;
      count++;
      problems.push(...(await checkBlock(b)));
    }
  assert.ok(count >= 20, `only ${count} sh blocks found`);
  assert.equal(problems, []);
});

test('the checks catch what they are for', async () => {
  const fake: Block = { file: 'fake.md', line: 1, info: 'sh', text: 'sev-xform plan --gusts 2\nvirsh dumpxml --inactiv web1\nvirsh strat web1\nsev-xform host extra\n' };
  const problems = await checkBlock(fake);
  assert.ok(problems.some((p) => p.includes('Unknown argument') && p.includes('gusts')), problems.join('\n'));
  assert.ok(problems.some((p) => p.includes('Unknown argument: extra')), problems.join('\n'));
  if (HAVE_VIRSH) {
    assert.ok(problems.some((p) => p.includes('has no option --inactiv')), problems.join('\n'));
    assert.ok(problems.some((p) => p.includes("no command 'strat'")), problems.join('\n'));
  }
  assert.equal(commandsOf('for vm in $(virsh list --all --name); do virsh dumpxml "$vm" > "defs/$vm.xml"; done\n'), [
    ['virsh', 'dumpxml', '$vm'],
    ['virsh', 'list', '--all', '--name'],
  ]);
  assert.is(outputMatches('a\n...\nc\n', 'a\nb\nc\n'), null);
  assert.is(outputMatches('a\nc\n', 'a\nb\nc\n'), 'c');
  assert.is(outputMatches('b\nc\n', 'a\nb\nc\n'), null, 'the first line may come anywhere');
});

test('the package file name in the docs is the one npm run package builds', () => {
  const version = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;
  for (const file of [...docFiles, 'docs/ansible/site.yml']) {
    const names = [...readFileSync(file, 'utf8').matchAll(/sev-xform_([^_\s]+)_amd64\.deb/g)].map((m) => m[1]);
    for (const v of names) assert.is(v, version, `${file} names sev-xform_${v}_amd64.deb`);
  }
});

for (const file of docFiles) {
  test(`${file}: the sh blocks run in the sandbox as the doc says`, () => {
    if (!CAN_RUN) return;
    const s = makeSandbox();
    const all = blocks(file);
    for (let i = 0; i < all.length; i++) {
      const b = all[i]!;
      const kind = kindOf(b);
      if (typeof kind !== 'object' || !kind.run) continue;
      const r = runIn(s, b.text, kind.exit === 0);
      if (process.env['DEBUG_DOCS']) console.log(`\n## ${file}:${b.line} exit ${r.code}\n${b.text}--\n${r.stdout}${r.stderr}`);
      const where = `${file}:${b.line}: exit ${r.code}\n--- stdout\n${r.stdout}--- stderr\n${r.stderr}`;
      if (kind.exit === 'any') assert.ok(r.code === 0 || r.code === 1, where);
      else assert.is(r.code, kind.exit, where);
      assert.not.match(r.stderr, /internal error: (?!Child process)|Unknown argument|see --help/, where);
      const next = all[i + 1];
      if (next && kindOf(next) === 'output') {
        const missing = outputMatches(next.text, r.stdout + r.stderr);
        assert.is(missing, null, `${file}:${next.line}: line not in the output of the block at line ${b.line}: ${missing}\n${where}`);
      }
    }
  });
}

test('docs: the sandbox is isolated: this machine has no host cache or backups from the doc runs', () => {
  if (!CAN_RUN) return;
  const before = existsSync('/var/lib/sev-xform');
  const s = makeSandbox();
  const r = runIn(s, 'sev-xform host --write-cache >/dev/null || true; sev-xform apply web2 >/dev/null; ls /var/lib/sev-xform/host.json /var/lib/sev-xform/backup/');
  assert.is(r.code, 0, r.stderr);
  assert.ok(existsSync(join(s.varLib, 'sev-xform/host.json')), 'the cache went to the sandbox');
  assert.is(existsSync('/var/lib/sev-xform'), before, 'this machine is untouched');
});

// ---- tests: the examples in --help (and so in the man page)

/** Every example of every command's --help, with the exit it must have in a fresh sandbox. */
const EXAMPLE_EXITS: Record<string, number | 'any'> = {
  'virsh dumpxml --inactive VM | sev-xform | virsh define /dev/stdin': 0,
  'sev-xform --domcaps caps.xml --diff in.xml': 0,
  'sev-xform --domcaps caps.xml --output-dir out/ domains/*.xml': 0,
  'virsh dumpxml VM | sev-xform check': 1, // VM is tagged, not converted
  'sev-xform host': 'any',
  'sev-xform host --write-cache': 'any',
  'sev-xform apply --dry-run web1': 0,
  'sev-xform apply web1 web2': 0,
  'sev-xform apply -- --web': 0,
  'sev-xform plan --guests 8 --memory 4GiB --mem-total 64GiB --domcaps caps.xml': 0,
  'sev-xform plan --domains domains/': 'any',
  'virsh dumpxml VM | sev-xform hook VM prepare begin -': 1, // refused: not converted
};

function helpOf(args: string[]): string {
  const r = spawnSync(BIN, [...args, '--help'], { encoding: 'utf8', env: { PATH: '/usr/bin:/bin', HOME: '/nonexistent', LC_ALL: 'C' } });
  assert.is(r.status, 0, r.stderr);
  return r.stdout;
}

function examplesOf(help: string): string[] {
  const at = help.indexOf('\nExamples:\n');
  if (at < 0) return [];
  const out: string[] = [];
  for (const line of help.slice(at + '\nExamples:\n'.length).split('\n')) {
    if (!line.startsWith('  ')) break;
    out.push(line.trim().split(/ {2,}/)[0]!);
  }
  return out;
}

test('every command has examples in --help, and each one is in the table of this test', () => {
  const top = helpOf([]);
  const commands = [...top.slice(0, top.indexOf('\n\n', top.indexOf('Commands:'))).matchAll(/^ {2}sev-xform (\S+)/gm)].map((m) => m[1]!);
  assert.ok(commands.includes('plan') && commands.includes('hook'), commands.join(' '));
  const seen: string[] = [];
  for (const c of ['', ...commands.filter((c) => c !== 'transform')]) {
    const examples = examplesOf(helpOf(c ? [c] : []));
    assert.ok(examples.length > 0, `sev-xform ${c} --help has no example`);
    seen.push(...examples);
  }
  for (const e of seen) assert.ok(e in EXAMPLE_EXITS, `example not in EXAMPLE_EXITS of test/cli/docs.test.ts: ${e}`);
  assert.equal([...new Set(seen)].sort(), Object.keys(EXAMPLE_EXITS).sort(), 'EXAMPLE_EXITS lists only live examples');
});

test('every --help example parses, and runs with the expected exit in a fresh sandbox', async () => {
  const problems: string[] = [];
  for (const [example, exit] of Object.entries(EXAMPLE_EXITS)) {
    problems.push(...(await checkBlock({ file: '--help', line: 0, info: 'sh', text: example + '\n' })));
    if (!CAN_RUN) continue;
    const r = runIn(makeSandbox(true), example);
    const ok = exit === 'any' ? r.code === 0 || r.code === 1 : r.code === exit;
    if (!ok) problems.push(`${example}: exit ${r.code}, expected ${exit}\n${r.stdout}${r.stderr}`);
    if (/Unknown argument|see --help/.test(r.stderr)) problems.push(`${example}: usage error: ${r.stderr}`);
    // The hook answers on stderr and by its exit; define and --output-dir write files.
    if (r.stdout === '' && !/ hook |virsh define|--output-dir/.test(example)) problems.push(`${example}: printed nothing on stdout`);
    if (r.stdout + r.stderr === '') problems.push(`${example}: printed nothing at all`);
  }
  assert.equal(problems, []);
});

test('the --help examples do what they say', () => {
  if (!CAN_RUN) return;
  const s = makeSandbox(true);
  const define = runIn(s, 'virsh dumpxml --inactive VM | sev-xform | virsh define /dev/stdin && virsh dumpxml VM | sev-xform check');
  assert.is(define.code, 0, define.stderr);
  assert.match(define.stdout, /a correct SEV guest/);
  const batch = runIn(s, 'sev-xform --domcaps caps.xml --output-dir out/ domains/*.xml && ls out && grep -l launchSecurity out/*.xml');
  assert.match(batch.stdout, /db1\.xml\nweb1\.xml\nweb2\.xml\n/);
  assert.match(batch.stdout, /\nout\/web1\.xml\nout\/web2\.xml\n$/, 'tagged converted, untagged db1 as it was');
  const cache = runIn(s, 'sev-xform host --write-cache >/dev/null 2>&1 || true; test -s /var/lib/sev-xform/host.json');
  assert.is(cache.code, 0, 'host --write-cache wrote the (sandboxed) cache');
});

// ---- the Ansible playbook

/** Ansible writes ~/.ansible; a throw-away HOME keeps it out of the real one. */
const ansibleHome = mkdtempSync(join(tmpdir(), 'sev-xform-ansible-home-'));
const ANSIBLE_ENV = { ...process.env, HOME: ansibleHome, LC_ALL: 'C.UTF-8', ANSIBLE_NOCOLOR: '1' };
test.after(() => rmSync(ansibleHome, { recursive: true, force: true }));
const HAVE_ANSIBLE = spawnSync('ansible-playbook', ['--version'], { env: ANSIBLE_ENV }).status === 0;

test('docs/ansible/site.yml passes ansible-playbook --syntax-check', () => {
  if (!HAVE_ANSIBLE) {
    console.log('docs: ansible-playbook missing (apt-get install ansible): site.yml not checked');
    return;
  }
  const dir = mkdtempSync(join(tmpdir(), 'sev-xform-ansible-'));
  try {
    writeFileSync(join(dir, 'hosts.ini'), '[sev_hosts]\nlocalhost ansible_connection=local\n');
    const r = spawnSync('ansible-playbook', ['-i', join(dir, 'hosts.ini'), '--syntax-check', 'docs/ansible/site.yml'], { encoding: 'utf8', env: ANSIBLE_ENV });
    assert.is(r.status, 0, r.stdout + r.stderr);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function dpkgInstalled(pkg: string): boolean {
  const r = spawnSync('dpkg-query', ['-W', '-f=${Status}', pkg], { encoding: 'utf8' });
  return r.status === 0 && r.stdout.includes('install ok installed');
}

test('docs/ansible/site.yml installs the built .deb on localhost and converts the tagged domains, twice idempotently', () => {
  if (!IS_ROOT || !HAVE_ANSIBLE || spawnSync('dpkg-deb', ['--version']).status !== 0) {
    console.log('docs: site.yml not run against localhost: needs root, ansible-playbook and dpkg-deb');
    return;
  }
  // Never disturb an installation that is not ours.
  const taken = ['/usr/bin/sev-xform', '/etc/libvirt/hooks/qemu.d/sev-xform', '/var/lib/sev-xform', '/etc/sev-xform'].filter((p) => existsSync(p));
  if (taken.length > 0 || dpkgInstalled('sev-xform')) {
    console.log(`docs: site.yml not run against localhost: sev-xform is already here (${taken.join(', ') || 'dpkg'})`);
    return;
  }
  const s = makeSandbox(true);
  const out = join(s.root, 'deb');
  const built = spawnSync(process.execPath, ['scripts/package.mjs', '--compression', 'zstd', '--out-dir', out], { encoding: 'utf8' });
  assert.is(built.status, 0, built.stderr);
  const deb = resolve(built.stdout.trim());
  writeFileSync(join(s.root, 'hosts.ini'), '[sev_hosts]\nlocalhost ansible_connection=local ansible_python_interpreter=/usr/bin/python3\n');
  const play = (extra: string[] = []): Ran => {
    const r = spawnSync(
      'ansible-playbook',
      ['-i', join(s.root, 'hosts.ini'), resolve('docs/ansible/site.yml'), '-e', `sev_xform_deb=${deb}`, '-e', 'sev_xform_restart_libvirt=false', '-e', 'ansible_become=false', ...extra],
      { encoding: 'utf8', cwd: s.work, env: { ...s.env, LC_ALL: 'C.UTF-8', ANSIBLE_NOCOLOR: '1', ANSIBLE_LOCAL_TEMP: join(s.root, 'ansible-tmp'), ANSIBLE_REMOTE_TEMP: join(s.root, 'ansible-tmp') }, timeout: 600_000 },
    );
    return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
  };
  try {
    // Check mode on a host without the package: nothing installed, nothing defined.
    const dry = play(['--check']);
    assert.is(dry.code, 0, dry.stdout + dry.stderr);
    assert.not.ok(dpkgInstalled('sev-xform'), 'check mode installed nothing');
    assert.not.match(readFileSync(join(s.env['FAKE_VIRSH_DIR']!, 'domains/web1.xml'), 'utf8'), /launchSecurity/, 'check mode defined nothing');
    const first = play();
    if (process.env['DEBUG_ANSIBLE']) console.log(first.stdout);
    assert.is(first.code, 0, first.stdout + first.stderr);
    assert.match(first.stdout, /localhost\s+: ok=\d+\s+changed=[1-9]/);
    assert.ok(dpkgInstalled('sev-xform'), 'the package is installed');
    assert.ok(existsSync('/etc/libvirt/hooks/qemu.d/sev-xform'), 'the hook is installed');
    const domains = join(s.env['FAKE_VIRSH_DIR']!, 'domains');
    for (const tagged of ['web1', 'web2', 'VM']) assert.match(readFileSync(join(domains, `${tagged}.xml`), 'utf8'), /<launchSecurity type='sev'>/, `${tagged} converted`);
    assert.not.match(readFileSync(join(domains, 'db1.xml'), 'utf8'), /launchSecurity/, 'untagged db1 left alone');
    const second = play();
    assert.is(second.code, 0, second.stdout + second.stderr);
    assert.match(second.stdout, /localhost\s+: ok=\d+\s+changed=0 /, 'a second run changes nothing');
    const check = play(['--check']);
    assert.match(check.stdout, /localhost\s+: ok=\d+\s+changed=0 /, 'check mode on a converted host: nothing to do');
  } finally {
    const purge = spawnSync('dpkg', ['--purge', 'sev-xform'], { encoding: 'utf8' });
    rmSync(join('/var/cache', basename(deb)), { force: true });
    assert.is(purge.status, 0, purge.stderr);
  }
  for (const p of ['/usr/bin/sev-xform', '/etc/libvirt/hooks/qemu.d/sev-xform', '/var/lib/sev-xform', '/etc/sev-xform']) assert.not.ok(existsSync(p), `${p} is gone after purge`);
});

test.run();
