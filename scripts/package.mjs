// Builds dist/sev-xform_<version>_amd64.deb from the built binary (npm run build first):
// install.sh stages the binary, the hook shim and /var/lib/sev-xform (DESTDIR, PREFIX=/usr);
// this script adds the man page (generated from each command's --help), bash completion,
// the hook configuration, documentation and the maintainer scripts, then runs dpkg-deb.
//
//   node scripts/package.mjs [--out-dir DIR] [--compression xz|zstd|gzip|none]
//
// xz by default: every dpkg reads it. zstd builds in a second (Debian >= 12, Ubuntu >= 21.10).
import { spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, renameSync, rmSync, statSync, utimesSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { dirname, join, relative, resolve } from 'node:path';
import { tmpdir } from 'node:os';
import { fileURLToPath } from 'node:url';
import { gzipSync } from 'node:zlib';

// Paths given on the command line are relative to where the script was started.
const startedIn = process.cwd();
process.chdir(fileURLToPath(new URL('..', import.meta.url)));

class PackageError extends Error {}

function die(message) {
  throw new PackageError(message);
}

function parseArgs(argv) {
  const opts = { outDir: 'dist', compression: 'xz' };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const value = () => {
      const v = argv[++i];
      if (v === undefined) die(`${a} needs a value`);
      return v;
    };
    if (a === '--out-dir') opts.outDir = resolve(startedIn, value());
    else if (a === '--compression') opts.compression = value();
    else if (a === '-h' || a === '--help') {
      console.log('usage: node scripts/package.mjs [--out-dir DIR] [--compression xz|zstd|gzip|none]');
      process.exit(0);
    } else die(`unknown option '${a}' (see --help)`);
  }
  if (!['xz', 'zstd', 'gzip', 'none'].includes(opts.compression)) die(`--compression '${opts.compression}' is not xz, zstd, gzip or none`);
  return opts;
}

function run(cmd, args, options = {}) {
  const r = spawnSync(cmd, args, { encoding: 'utf8', maxBuffer: 64 * 1024 * 1024, ...options });
  if (r.error) die(`${cmd}: ${r.error.message}${r.error.code === 'ENOENT' && cmd.startsWith('dpkg-') ? ' (apt-get install dpkg-dev)' : ''}`);
  if (r.status !== 0) die(`${cmd} ${args.join(' ')} failed (exit ${r.status}): ${(r.stderr || r.stdout).trim()}`);
  return r.stdout;
}

// ---- the man page, from the built binary's --help

/** yargs' help text as sections of rows; columns are separated by two or more spaces (the parser uses wrap(null)). */
function parseHelp(text) {
  const lines = text.replace(/\n+$/, '').split('\n');
  const help = { usage: lines[0] ?? '', description: '', sections: {}, epilog: '' };
  let i = 1;
  const body = [];
  while (i < lines.length && !/^[A-Z][A-Za-z]*:$/.test(lines[i])) body.push(lines[i++]);
  help.description = body.join('\n').trim();
  let current = null;
  const epilog = [];
  for (; i < lines.length; i++) {
    const line = lines[i];
    if (/^[A-Z][A-Za-z]*:$/.test(line)) {
      current = line.slice(0, -1);
      help.sections[current] = [];
    } else if (current && /^ {2}\S|^ {6}--/.test(line)) {
      help.sections[current].push(line.trim().split(/ {2,}/));
    } else if (line.trim() === '') {
      if (current && epilog.length === 0) continue;
      epilog.push('');
    } else {
      current = null;
      epilog.push(line);
    }
  }
  help.epilog = epilog.join('\n').trim();
  return help;
}

/** Text for roff: backslashes and hyphens escaped, no line starting with a control character. */
function roff(text) {
  return text
    .replace(/\\/g, '\\e')
    .replace(/-/g, '\\-')
    .split('\n')
    .map((l) => (/^[.']/.test(l) ? `\\&${l}` : l))
    .join('\n');
}

function roffCommand(binary, name) {
  const help = parseHelp(run(binary, [...(name ? [name] : []), '--help'], { env: { PATH: '/usr/bin:/bin', HOME: '/nonexistent', LC_ALL: 'C' } }));
  const out = [];
  const usage = name ? help.usage : 'sev-xform [files..]';
  out.push(`.SS "${roff(usage)}"`);
  out.push(roff(name ? help.description : 'Convert domain XML (FILEs or standard input) to SEV guests; untagged domains pass through unchanged. Also available as sev-xform transform.'));
  for (const [section, rows] of Object.entries(help.sections)) {
    if (section === 'Commands') continue;
    if (section === 'Examples') {
      out.push('.PP', 'Examples:');
      for (const [cmd, what] of rows) out.push('.PP', roff(/[?.!:]$/.test(what ?? '') ? what : `${what ?? ''}:`), '.RS', '.nf', roff(cmd), '.fi', '.RE');
      continue;
    }
    // --help is on every command; the man page itself is the help.
    const shown = rows.filter(([flag]) => flag !== '--help');
    if (shown.length === 0) continue;
    out.push('.PP', `${section}:`);
    for (const [flag, what, meta] of shown) out.push('.TP', `.B ${roff(flag)}`, roff([what, meta].filter(Boolean).join(' ')));
  }
  if (help.epilog) out.push('.PP', roff(help.epilog).replace(/\n/g, ' '));
  return { usage, text: out.join('\n'), examples: (help.sections['Examples'] ?? []).length };
}

/** The man page: packaging/sev-xform.1.in with the SYNOPSIS and COMMANDS of this binary. */
function manPage(binary, version, date) {
  const top = parseHelp(run(binary, ['--help'], { env: { PATH: '/usr/bin:/bin', HOME: '/nonexistent', LC_ALL: 'C' } }));
  const names = (top.sections['Commands'] ?? []).map(([usage]) => usage.split(/\s+/)[1]).filter(Boolean);
  if (names.length === 0) die(`${binary} --help lists no commands`);
  // The default command (transform) comes first, under its short form.
  const commands = [roffCommand(binary, null), ...names.filter((n) => n !== 'transform').map((n) => roffCommand(binary, n))];
  const missing = commands.filter((c) => c.examples === 0).map((c) => c.usage);
  if (missing.length > 0) die(`commands without an example in their --help: ${missing.join(', ')}`);
  const synopsis = commands.map((c) => `.B ${roff(c.usage)}`).join('\n.br\n');
  return readFileSync('packaging/sev-xform.1.in', 'utf8')
    .replace('@DATE@', date)
    .replace('@VERSION@', roff(version))
    .replace('@SYNOPSIS@', synopsis)
    .replace('@COMMANDS@', commands.map((c) => c.text).join('\n'));
}

// ---- the staging tree

const CONFFILES = ['/etc/sev-xform/hook.conf'];

function install(src, dest, mode) {
  mkdirSync(dirname(dest), { recursive: true, mode: 0o755 });
  copyFileSync(src, dest);
  chmodSync(dest, mode);
}

function write(dest, text, mode) {
  mkdirSync(dirname(dest), { recursive: true, mode: 0o755 });
  writeFileSync(dest, text);
  chmodSync(dest, mode);
}

function walk(dir) {
  return readdirSync(dir, { recursive: true }).map((rel) => join(dir, rel));
}

function main() {
  const opts = parseArgs(process.argv.slice(2));
  const pkg = JSON.parse(readFileSync('package.json', 'utf8'));
  const version = pkg.version;
  if (!/^[0-9][A-Za-z0-9.+~-]*$/.test(version)) die(`package.json version '${version}' is not a Debian version`);
  if (!existsSync('dist/sev-xform')) die('dist/sev-xform is missing: build it first with `npm run build`');

  // Reproducible: file times and the man page date come from the last commit (or SOURCE_DATE_EPOCH).
  const git = spawnSync('git', ['log', '-1', '--format=%ct'], { encoding: 'utf8' });
  const epoch = Number(process.env.SOURCE_DATE_EPOCH ?? (git.status === 0 && git.stdout.trim() ? git.stdout.trim() : Math.floor(Date.now() / 1000)));
  const date = new Date(epoch * 1000).toISOString().slice(0, 10);

  const work = mkdtempSync(join(tmpdir(), 'sev-xform-package-'));
  const root = join(work, 'root');
  mkdirSync(root);
  try {
    // install.sh knows where the binary, the hook shim and the state folder go.
    run('sh', ['install.sh'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: '/nonexistent', DESTDIR: root, PREFIX: '/usr' } });
    // Its manifest is for `install.sh --uninstall`; dpkg keeps its own list.
    rmSync(join(root, 'var/lib/sev-xform/install-manifest'), { force: true });
    const binary = join(root, 'usr/bin/sev-xform');
    const hook = join(root, 'etc/libvirt/hooks/qemu.d/sev-xform');
    for (const f of [binary, hook]) if (!existsSync(f)) die(`install.sh did not stage ${relative(root, f)}`);
    if (!readFileSync(hook, 'utf8').includes('\nSEV_XFORM=/usr/bin/sev-xform\n')) die('the staged hook does not call /usr/bin/sev-xform');

    write(join(root, 'usr/share/man/man1/sev-xform.1.gz'), gzipSync(manPage(binary, version, date), { level: 9 }), 0o644);
    install('packaging/bash-completion/sev-xform', join(root, 'usr/share/bash-completion/completions/sev-xform'), 0o644);
    install('packaging/hook.conf', join(root, 'etc/sev-xform/hook.conf'), 0o644);
    const doc = join(root, 'usr/share/doc/sev-xform');
    install('packaging/debian/copyright', join(doc, 'copyright'), 0o644);
    for (const f of ['docs/guide.md', 'docs/fleet.md', 'docs/ansible/site.yml', 'hooks/README.md']) {
      const name = f === 'hooks/README.md' ? 'hook.md' : f.replace(/^docs\//, '');
      if (existsSync(f)) install(f, join(doc, name), 0o644);
    }

    // Control files.
    const debian = join(root, 'DEBIAN');
    mkdirSync(debian, { mode: 0o755 });
    const files = walk(root).filter((p) => !p.startsWith(debian) && statSync(p).isFile());
    const installedKiB = files.reduce((s, p) => s + Math.ceil(statSync(p).size / 1024), 0) + walk(root).length;
    // dpkg-shlibdeps wants a source package around it; a minimal one is enough.
    write(join(work, 'debian/control'), 'Source: sev-xform\n\nPackage: sev-xform\nArchitecture: amd64\n', 0o644);
    const shlibs = run('dpkg-shlibdeps', ['-O', binary], { cwd: work, env: { ...process.env, LC_ALL: 'C' } });
    const depends = /shlibs:Depends=(.*)/.exec(shlibs)?.[1]?.trim();
    if (!depends) die(`dpkg-shlibdeps printed no shlibs:Depends: ${shlibs}`);
    const maintainer = process.env.DEBFULLNAME && process.env.DEBEMAIL ? `${process.env.DEBFULLNAME} <${process.env.DEBEMAIL}>` : 'sev-xform maintainers <root@localhost>';
    write(
      join(debian, 'control'),
      readFileSync('packaging/debian/control.in', 'utf8')
        .replace('@VERSION@', version)
        .replace('@MAINTAINER@', maintainer)
        .replace('@INSTALLED_SIZE@', String(installedKiB))
        .replace('@DEPENDS@', depends),
      0o644,
    );
    // Only hook.conf is a conffile: the hook itself must go with the package, so dpkg -r may not keep it.
    write(join(debian, 'conffiles'), CONFFILES.join('\n') + '\n', 0o644);
    for (const script of ['postinst', 'postrm']) install(join('packaging/debian', script), join(debian, script), 0o755);
    const md5 = files
      .filter((p) => !CONFFILES.includes('/' + relative(root, p)))
      .map((p) => `${createHash('md5').update(readFileSync(p)).digest('hex')}  ${relative(root, p)}`)
      .sort();
    write(join(debian, 'md5sums'), md5.join('\n') + '\n', 0o644);

    for (const p of [...walk(root), root]) {
      if (statSync(p).isDirectory()) chmodSync(p, 0o755);
      utimesSync(p, epoch, epoch);
    }
    mkdirSync(opts.outDir, { recursive: true });
    const deb = join(opts.outDir, `sev-xform_${version}_amd64.deb`);
    // Finished in a private folder beside the .deb (mkdtemp: --out-dir may be a shared folder such as
    // /tmp), then renamed: atomic, and a symlink planted at the .deb's name is replaced, not written through.
    const outWork = mkdtempSync(join(opts.outDir, '.sev-xform-package-'));
    try {
      const partial = join(outWork, 'sev-xform.deb');
      run('dpkg-deb', ['--root-owner-group', `-Z${opts.compression}`, ...(opts.compression === 'xz' ? ['-z1'] : []), '--build', root, partial], {
        env: { ...process.env, SOURCE_DATE_EPOCH: String(epoch) },
      });
      chmodSync(partial, 0o644);
      renameSync(partial, deb);
    } finally {
      rmSync(outWork, { recursive: true, force: true });
    }
    console.log(deb);
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

try {
  main();
} catch (e) {
  if (!(e instanceof PackageError)) throw e;
  console.error(`package: ${e.message}`);
  process.exitCode = 1;
}
