// The Debian package: `npm run package` builds it from dist/sev-xform; as root it
// is installed with dpkg -i, used from /usr/bin, removed and purged, and nothing
// may be left behind. The install refuses to run when sev-xform is already on
// this machine (installed by someone else), so it never disturbs another setup.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';

const IS_ROOT = process.getuid?.() === 0;
const HAVE_TOOLS = ['dpkg-deb', 'dpkg-shlibdeps'].every((t) => spawnSync(t, ['--version']).status === 0);
const VERSION = (JSON.parse(readFileSync('package.json', 'utf8')) as { version: string }).version;
const INSTALLED = ['/usr/bin/sev-xform', '/etc/libvirt/hooks/qemu.d/sev-xform', '/usr/share/man/man1/sev-xform.1.gz', '/usr/share/bash-completion/completions/sev-xform', '/var/lib/sev-xform', '/etc/sev-xform'];

if (!HAVE_TOOLS) console.log('package: skipped: needs dpkg-deb and dpkg-shlibdeps (apt-get install dpkg-dev)');
else if (!IS_ROOT) console.log('package: dpkg -i / --purge skipped: needs root');

const work = mkdtempSync(join(tmpdir(), 'sev-xform-package-test-'));
let built: { deb: string; tree: string } | undefined;

/** Builds the package once (as `npm run package` does after its build) and unpacks it. */
function pkg(): { deb: string; tree: string } {
  if (built) return built;
  const r = spawnSync(process.execPath, ['scripts/package.mjs', '--out-dir', join(work, 'out')], { encoding: 'utf8', timeout: 600_000 });
  assert.is(r.status, 0, r.stderr);
  const deb = r.stdout.trim();
  assert.is(deb, join(work, 'out', `sev-xform_${VERSION}_amd64.deb`));
  const tree = join(work, 'tree');
  const x = spawnSync('dpkg-deb', ['-R', deb, tree], { encoding: 'utf8' });
  assert.is(x.status, 0, x.stderr);
  built = { deb, tree };
  return built;
}

function run(cmd: string, args: string[], env: Record<string, string> = {}): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', env: { PATH: '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C', HOME: '/root', ...env } });
  return { code: r.status, stdout: r.stdout ?? '', stderr: r.stderr ?? '' };
}

test.after(() => {
  rmSync(work, { recursive: true, force: true });
});

test('npm run package is the build followed by scripts/package.mjs', () => {
  const scripts = (JSON.parse(readFileSync('package.json', 'utf8')) as { scripts: Record<string, string> }).scripts;
  assert.match(scripts['package'] ?? '', /scripts\/build\.mjs.*&&.*scripts\/package\.mjs|npm run build.*&&.*scripts\/package\.mjs/);
});

test('npm ci is quiet: every dependency with an install script is allowed or denied in package.json (npm 11 allowScripts)', () => {
  const pkgJson = JSON.parse(readFileSync('package.json', 'utf8')) as { allowScripts?: Record<string, boolean> };
  const lock = JSON.parse(readFileSync('package-lock.json', 'utf8')) as { packages: Record<string, { version?: string; hasInstallScript?: boolean }> };
  const withScripts = Object.entries(lock.packages)
    .filter(([, p]) => p.hasInstallScript)
    .map(([path, p]) => ({ name: path.replace(/^.*node_modules\//, ''), version: p.version ?? '' }));
  assert.ok(withScripts.length > 0, 'esbuild has a postinstall');
  const decided = pkgJson.allowScripts ?? {};
  for (const { name, version } of withScripts) {
    const entry = Object.keys(decided).find((k) => k === name || k === `${name}@${version}`);
    assert.ok(entry !== undefined, `${name}@${version}'s install script is neither allowed nor denied in package.json allowScripts`);
  }
  // esbuild's postinstall only checks @esbuild/linux-x64 and hard-links its binary over the bin/esbuild
  // wrapper; scripts/build.mjs uses esbuild's JS API, which finds @esbuild/linux-x64 by itself.
  assert.is(decided['esbuild'], false);
});

test('the .deb holds the binary, the hook shim, man page, completion, hook.conf and the state folder', () => {
  if (!HAVE_TOOLS) return;
  const { deb, tree } = pkg();
  const list = run('dpkg-deb', ['-c', deb]).stdout;
  const expected: Array<[string, string]> = [
    ['-rwxr-xr-x', './usr/bin/sev-xform'],
    ['-rwxr-xr-x', './etc/libvirt/hooks/qemu.d/sev-xform'],
    ['-rw-r--r--', './usr/share/man/man1/sev-xform.1.gz'],
    ['-rw-r--r--', './usr/share/bash-completion/completions/sev-xform'],
    ['-rw-r--r--', './etc/sev-xform/hook.conf'],
    ['-rw-r--r--', './usr/share/doc/sev-xform/copyright'],
    ['-rw-r--r--', './usr/share/doc/sev-xform/guide.md'],
    ['-rw-r--r--', './usr/share/doc/sev-xform/fleet.md'],
    ['drwxr-xr-x', './var/lib/sev-xform/'],
  ];
  for (const [mode, path] of expected)
    assert.match(list, new RegExp(`^${mode.replace(/-/g, '\\-')} root/root .* ${path.replace(/\./g, '\\.')}$`, 'm'), `${mode} ${path} in:\n${list}`);
  assert.not.match(list, /install-manifest/, "install.sh's manifest is not packaged");
  assert.ok(readFileSync(join(tree, 'usr/bin/sev-xform')).equals(readFileSync('dist/sev-xform')), 'the binary is dist/sev-xform');
  assert.ok(readFileSync(join(tree, 'etc/libvirt/hooks/qemu.d/sev-xform'), 'utf8').includes('\nSEV_XFORM=/usr/bin/sev-xform\n'), 'the shim calls /usr/bin/sev-xform');
  const control = readFileSync(join(tree, 'DEBIAN/control'), 'utf8');
  assert.match(control, new RegExp(`^Package: sev-xform\nVersion: ${VERSION.replace(/\./g, '\\.')}\nArchitecture: amd64\n`));
  assert.match(control, /^Depends: libc6 \(>= [0-9.]+\)/m);
  assert.match(control, /^Installed-Size: \d{5,}$/m);
  // The hook is not a conffile: dpkg -r would keep it, and libvirt would go on running it.
  assert.is(readFileSync(join(tree, 'DEBIAN/conffiles'), 'utf8'), '/etc/sev-xform/hook.conf\n');
  for (const s of ['postinst', 'postrm']) {
    assert.is(statSync(join(tree, 'DEBIAN', s)).mode & 0o777, 0o755, s);
    const check = run('sh', ['-n', join(tree, 'DEBIAN', s)]);
    assert.is(check.code, 0, check.stderr);
  }
  const md5 = readFileSync(join(tree, 'DEBIAN/md5sums'), 'utf8');
  assert.match(md5, /  usr\/bin\/sev-xform\n/);
  assert.match(md5, /  etc\/libvirt\/hooks\/qemu\.d\/sev-xform\n/);
  // The packaged hook.conf sets nothing: the hook's defaults apply, and the hook accepts the file.
  const conf = readFileSync(join(tree, 'etc/sev-xform/hook.conf'), 'utf8');
  assert.not.match(conf, /^[^#\n]/m);
});

test('the man page renders cleanly and shows every command with an example', () => {
  if (!HAVE_TOOLS) return;
  const { tree } = pkg();
  const page = gunzipSync(readFileSync(join(tree, 'usr/share/man/man1/sev-xform.1.gz'))).toString('utf8');
  const groff = spawnSync('groff', ['-man', '-Tutf8', '-ww', '-z'], { input: page, encoding: 'utf8' });
  if (groff.error) console.log('package: groff missing: man page not rendered');
  else assert.is(groff.stderr, '', 'groff warnings');
  const help = run(resolve('dist/sev-xform'), ['--help']).stdout;
  const commands = [...help.slice(0, help.indexOf('\n\n', help.indexOf('Commands:'))).matchAll(/^ {2}sev-xform (\S+)/gm)].map((m) => m[1]!).filter((c) => c !== 'transform');
  assert.ok(commands.length >= 5, commands.join(' '));
  const sections = page.split('\n.SS ').slice(1);
  assert.is(sections.length, commands.length + 1, 'the default command, then one section per command');
  for (const c of commands) {
    const section = sections.find((s) => s.startsWith(`"sev\\-xform ${c.replace(/-/g, '\\-')}`));
    assert.ok(section, `a section for ${c}`);
    assert.match(section!, /\nExamples:\n/, `${c} has examples`);
    assert.match(section!, new RegExp(`\\.nf\\n.*sev\\\\-xform ${c}`), `${c}'s example runs it`);
  }
  for (const heading of ['NAME', 'SYNOPSIS', 'DESCRIPTION', 'COMMANDS', 'EXIT STATUS', 'FILES', 'ENVIRONMENT']) assert.match(page, new RegExp(`^\\.SH ${heading}$`, 'm'));
});

test('bash completion completes commands, options, choices and domain names', () => {
  if (!HAVE_TOOLS) return;
  const { tree } = pkg();
  const lib = '/usr/share/bash-completion/bash_completion';
  if (!existsSync(lib)) {
    console.log('package: bash-completion missing (apt-get install bash-completion): completion not exercised');
    return;
  }
  const bin = join(work, 'completion-bin');
  mkdirSync(bin, { recursive: true });
  writeFileSync(join(bin, 'sev-xform'), `#!/bin/sh\nexec ${resolve('dist/sev-xform')} "$@"\n`);
  writeFileSync(join(bin, 'virsh'), '#!/bin/sh\n[ "$*" = "list --all --name" ] && printf "web1\\nweb2\\ndb1\\n\\n"\n');
  chmodSync(join(bin, 'sev-xform'), 0o755);
  chmodSync(join(bin, 'virsh'), 0o755);
  const complete = (line: string): string[] => {
    const script = `source ${lib}; source ${join(tree, 'usr/share/bash-completion/completions/sev-xform')}
COMP_LINE=${JSON.stringify(line)}; COMP_POINT=\${#COMP_LINE}
read -ra COMP_WORDS <<< "$COMP_LINE"; [[ $COMP_LINE == *' ' ]] && COMP_WORDS+=('')
COMP_CWORD=$(( \${#COMP_WORDS[@]} - 1 ))
_sev_xform; printf '%s\\n' "\${COMPREPLY[@]}"`;
    const r = spawnSync('bash', ['-c', script], { encoding: 'utf8', cwd: work, env: { PATH: `${bin}:/usr/bin:/bin`, HOME: '/nonexistent', LC_ALL: 'C' } });
    assert.is(r.status, 0, r.stderr);
    return r.stdout.split('\n').filter(Boolean).sort();
  };
  assert.ok(complete('sev-xform pl').includes('plan'), 'a command');
  assert.equal(complete('sev-xform plan --gu'), ['--guests']);
  assert.ok(complete('sev-xform plan --').includes('--mem-total'));
  assert.not.ok(complete('sev-xform --').includes('--arch'), 'options named in descriptions are not offered');
  assert.equal(complete('sev-xform --memory-pinning '), ['hard-limit', 'locked']);
  assert.equal(complete('sev-xform apply w'), ['web1', 'web2']);
});

test('dpkg -i installs it; sev-xform runs from /usr/bin; dpkg -r removes the hook; dpkg --purge leaves nothing', () => {
  if (!HAVE_TOOLS || !IS_ROOT) return;
  const taken = INSTALLED.filter((p) => existsSync(p));
  const status = run('dpkg-query', ['-W', '-f=${Status}', 'sev-xform']);
  if (taken.length > 0 || status.stdout.includes('installed')) {
    console.log(`package: dpkg -i skipped: sev-xform is already on this machine (${taken.join(', ') || 'dpkg'})`);
    return;
  }
  const hooksBefore = existsSync('/etc/libvirt/hooks');
  const { deb } = pkg();
  // postinst asks virsh for the host's capabilities: a fake one makes the cache it writes predictable.
  const fake = join(work, 'fake-virsh');
  mkdirSync(fake, { recursive: true });
  writeFileSync(join(fake, 'virsh'), `#!/bin/sh\ncase "$1" in domcapabilities) cat ${resolve('examples/domcaps.xml')} ;; *) exit 1 ;; esac\n`);
  chmodSync(join(fake, 'virsh'), 0o755);
  const env = { PATH: `${fake}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` };
  try {
    const install = run('dpkg', ['-i', deb], env);
    assert.is(install.code, 0, install.stdout + install.stderr);
    assert.match(install.stdout, /restart libvirtd \(or virtqemud\)/, 'postinst says to restart libvirt');
    // This machine is no SEV host: a warning, not a failed install, and the facts are stored anyway.
    assert.match(install.stdout + install.stderr, /sev-xform: (warning: this host cannot run SEV guests yet|this host can run SEV guests)/);
    assert.ok(existsSync('/var/lib/sev-xform/host.json'), 'postinst wrote the host cache');

    const host = run('/usr/bin/sev-xform', ['host'], env);
    assert.ok(host.code === 0 || host.code === 1, host.stderr);
    assert.match(host.stdout, /^verdict  /m);
    const help = run('/usr/bin/sev-xform', ['--help']);
    assert.is(help.code, 0);
    assert.match(help.stdout, /sev-xform plan/);
    const hook = '/etc/libvirt/hooks/qemu.d/sev-xform';
    assert.is(statSync(hook).mode & 0o777, 0o755);
    // The installed hook answers libvirt: an untagged domain is never blocked.
    const untagged = spawnSync(hook, ['vm', 'prepare', 'begin', '-'], { input: readFileSync('test/fixtures-hook/plain.xml'), encoding: 'utf8' });
    assert.is(untagged.status, 0, untagged.stderr);
    for (const p of INSTALLED) assert.ok(existsSync(p), `${p} installed`);
    const man = run('man', ['-w', 'sev-xform']);
    if (man.code !== null && !man.stderr.includes('not found')) assert.is(man.stdout.trim(), '/usr/share/man/man1/sev-xform.1.gz');

    const remove = run('dpkg', ['-r', 'sev-xform'], env);
    assert.is(remove.code, 0, remove.stdout + remove.stderr);
    assert.not.ok(existsSync(hook), 'dpkg -r leaves no hook behind');
    assert.not.ok(existsSync('/usr/bin/sev-xform'));
    assert.ok(existsSync('/etc/sev-xform/hook.conf'), 'dpkg -r keeps the conffile');
  } finally {
    const purge = run('dpkg', ['--purge', 'sev-xform'], env);
    assert.is(purge.code, 0, purge.stdout + purge.stderr);
  }
  for (const p of INSTALLED) assert.not.ok(existsSync(p), `${p} is gone after purge`);
  assert.is(existsSync('/etc/libvirt/hooks'), hooksBefore, '/etc/libvirt/hooks as it was');
  assert.not.match(run('dpkg-query', ['-W', '-f=${Status}', 'sev-xform']).stdout, /installed|config-files/, 'dpkg forgets the package');
});

// ---- install.sh and the package on one machine: each knows of the other

const SCRIPT_BIN = '/usr/local/bin/sev-xform';
const MANIFEST = '/var/lib/sev-xform/install-manifest';
const HOOK = '/etc/libvirt/hooks/qemu.d/sev-xform';

/** True when neither the package nor install.sh has put anything on this machine; says why not otherwise. */
function machineIsClean(what: string): boolean {
  const taken = [...INSTALLED, SCRIPT_BIN, MANIFEST].filter((p) => existsSync(p));
  const status = run('dpkg-query', ['-W', '-f=${Status}', 'sev-xform']);
  if (taken.length === 0 && !/installed|config-files/.test(status.stdout)) return true;
  console.log(`package: ${what} skipped: sev-xform is already on this machine (${taken.join(', ') || 'dpkg'})`);
  return false;
}

/** A virsh that answers domcapabilities from examples/, so that the host cache both write is predictable. */
function fakeVirshPath(): Record<string, string> {
  const fake = join(work, 'fake-virsh');
  mkdirSync(fake, { recursive: true });
  writeFileSync(join(fake, 'virsh'), `#!/bin/sh\ncase "$1" in domcapabilities) cat ${resolve('examples/domcaps.xml')} ;; *) exit 1 ;; esac\n`);
  chmodSync(join(fake, 'virsh'), 0o755);
  return { PATH: `${fake}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin` };
}

/** Whatever a failed test left: the package purged, install.sh's installation uninstalled. */
function cleanUp(env: Record<string, string>): void {
  run('dpkg', ['--purge', 'sev-xform'], env);
  if (existsSync(MANIFEST)) run('sh', [resolve('install.sh'), '--uninstall'], env);
  // The machine was clean when the test began: a binary left now is this test's (a purge that lost the manifest).
  if (existsSync(SCRIPT_BIN) && readFileSync(SCRIPT_BIN).equals(readFileSync('dist/sev-xform'))) rmSync(SCRIPT_BIN);
}

test('a script install is taken over by dpkg -i (its binary removed, saying so); install.sh then refuses; purge leaves nothing of either', () => {
  if (!HAVE_TOOLS || !IS_ROOT || !machineIsClean('take-over')) return;
  const hooksBefore = existsSync('/etc/libvirt/hooks');
  const { deb } = pkg();
  const env = fakeVirshPath();
  try {
    const script = run('sh', [resolve('install.sh')], env);
    assert.is(script.code, 0, script.stderr);
    assert.ok(existsSync(SCRIPT_BIN) && existsSync(MANIFEST));

    const install = run('dpkg', ['-i', deb], env);
    assert.is(install.code, 0, install.stdout + install.stderr);
    assert.match(install.stdout, /sev-xform: taking over the installation made by install\.sh/);
    assert.match(install.stdout, /sev-xform: removed \/usr\/local\/bin\/sev-xform/);
    assert.not.ok(existsSync(SCRIPT_BIN), "install.sh's binary is gone");
    assert.not.ok(existsSync(MANIFEST), "install.sh's manifest is gone: the package owns the installation");
    assert.ok(readFileSync(HOOK, 'utf8').includes('\nSEV_XFORM=/usr/bin/sev-xform\n'), "the hook is the package's");
    assert.ok(existsSync('/var/lib/sev-xform/host.json'));

    const again = run('sh', [resolve('install.sh')], env);
    assert.is(again.code, 1, again.stdout);
    assert.match(again.stderr, /^install\.sh: the Debian package sev-xform is installed here \(dpkg status: installed\).*upgrade or remove it with apt or dpkg instead of install\.sh$/m, again.stderr);
    assert.is(again.stderr.trim().split('\n').length, 1, again.stderr);
    assert.not.ok(existsSync(SCRIPT_BIN) || existsSync(MANIFEST), 'the refused install.sh wrote nothing');

    const purge = run('dpkg', ['--purge', 'sev-xform'], env);
    assert.is(purge.code, 0, purge.stdout + purge.stderr);
    for (const p of [...INSTALLED, SCRIPT_BIN, MANIFEST]) assert.not.ok(existsSync(p), `${p} is gone after purge`);
    assert.is(existsSync('/etc/libvirt/hooks'), hooksBefore, '/etc/libvirt/hooks as it was');
  } finally {
    cleanUp(env);
  }
});

test('install.sh after dpkg -r: purge removes only what is the package\'s, and install.sh --uninstall then removes the rest', () => {
  if (!HAVE_TOOLS || !IS_ROOT || !machineIsClean('purge after install.sh')) return;
  const hooksBefore = existsSync('/etc/libvirt/hooks');
  const { deb } = pkg();
  const env = fakeVirshPath();
  try {
    assert.is(run('dpkg', ['-i', deb], env).code, 0);
    assert.is(run('dpkg', ['-r', 'sev-xform'], env).code, 0);
    // Removed, not purged: only the conffile is left, and install.sh may install.
    const script = run('sh', [resolve('install.sh')], env);
    assert.is(script.code, 0, script.stderr);
    const scriptHook = readFileSync(HOOK, 'utf8');
    assert.ok(scriptHook.includes('\nSEV_XFORM=/usr/local/bin/sev-xform\n'));

    const purge = run('dpkg', ['--purge', 'sev-xform'], env);
    assert.is(purge.code, 0, purge.stdout + purge.stderr);
    assert.match(purge.stdout, /sev-xform: left the installation install\.sh made \(\/var\/lib\/sev-xform\/install-manifest\) as it is/);
    assert.ok(existsSync(SCRIPT_BIN), "install.sh's binary stays");
    assert.ok(existsSync(MANIFEST), "install.sh's manifest stays");
    assert.is(readFileSync(HOOK, 'utf8'), scriptHook, "install.sh's hook stays");
    assert.ok(existsSync('/var/lib/sev-xform/host.json'), "install.sh's host cache stays");
    assert.not.match(run('dpkg-query', ['-W', '-f=${Status}', 'sev-xform']).stdout, /installed|config-files/);

    const uninstall = run('sh', [resolve('install.sh'), '--uninstall'], env);
    assert.is(uninstall.code, 0, uninstall.stderr);
    for (const p of [...INSTALLED, SCRIPT_BIN, MANIFEST]) assert.not.ok(existsSync(p), `${p} is gone after install.sh --uninstall`);
    assert.is(existsSync('/etc/libvirt/hooks'), hooksBefore, '/etc/libvirt/hooks as it was');
  } finally {
    cleanUp(env);
  }
});

test.run();
