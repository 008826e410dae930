// The attacks of issue 12 through libvirt itself, on every stack
// (test/support/stack.ts): the hook installed by install.sh into the stack's
// real /etc/libvirt/hooks/qemu.d/ (support/hook-install.ts), libvirtd
// restarted to find it, and `virsh define` + `virsh start` of domains so named
// or shaped.
// Every virsh call names a domain by UUID, since virsh itself would read a
// domain called `--help` as an option. The suite uninstalls the hook and
// restarts libvirtd again, leaving the machine as it found it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { randomUUID } from 'node:crypto';
import { chmodSync, existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runBin } from '../support/bin.js';
import { HOOK, hookInstallation } from '../support/hook-install.js';
import { OPTION_LIKE_NAMES } from '../support/hostile-names.js';
import { addTag, integrationStacks, run, runnableVirtTypeOn, virsh, virshOk } from '../support/libvirt.js';

const URN = 'urn:sev-xform:domain:1';
const QEMU_NS = 'http://libvirt.org/schemas/domain/qemu/1.0';
const MiB = 1024 * 1024;
/** What a command in a domain name would create, relative to the hook's working folder (/ under libvirtd). */
const PWNED = 'hook12-pwned';

/** Names libvirt accepts (no '/' or newline) that look like options or shell; the shell-like ones carry this suite's prefix. */
const HOSTILE_NAMES = [
  ...OPTION_LIKE_NAMES,
  'hook12 two words',
  `hook12 it's "quoted"`,
  // No '/' (libvirt refuses it): the file would land in the hook's working folder, / under libvirtd.
  'hook12-$(touch hook12-pwned)',
  'hook12-`touch hook12-pwned`',
  'hook12-back\\cslash',
  'hook12-größe-名前',
  `hook12-${'x'.repeat(230)}`,
];

function escapeXml(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/**
 * A small domain (no disk: it starts in a fraction of a second). Tagged domains
 * are kvm, as an SEV guest must be (both stacks' set-ups make libvirt offer it);
 * one that must really start takes runnableVirtTypeOn(stack).
 */
function smallDomain(name: string, uuid: string, mib: number, extra = '', type: 'kvm' | 'qemu' = 'kvm'): string {
  return `<domain type='${type}'>
  <name>${escapeXml(name)}</name>
  <uuid>${uuid}</uuid>
  <memory unit='MiB'>${mib}</memory>
  <os>
    <type arch='x86_64'>hvm</type>
  </os>
  <features>
    <acpi/>
  </features>
  <devices>
    <memballoon model='virtio'/>
  </devices>
${extra}</domain>
`;
}

const stacks = integrationStacks('hook-attacks.test.ts');
const cleanups: Array<() => void> = [];

for (const stack of stacks) {
  const work = mkdtempSync(join(tmpdir(), `hook12-attacks-${stack.name}-`));
  const hook = hookInstallation(stack, work);
  const defined = new Set<string>();
  let capsFile = '';
  let runnable: 'kvm' | 'qemu' = 'qemu';
  const virshS = (args: string[]): ReturnType<typeof virsh> => virsh(args, undefined, stack);
  const virshOkS = (args: string[]): string => virshOk(args, undefined, stack);

  /** Defines a domain from XML; returns its UUID, or libvirt's refusal. */
  const define = (xml: string, uuid: string): { ok: true } | { ok: false; error: string } => {
    const file = join(work, `${uuid}.xml`);
    writeFileSync(file, xml);
    const r = virshS(['define', file]);
    rmSync(file);
    if (r.code !== 0) return { ok: false, error: r.stderr.trim() };
    defined.add(uuid);
    return { ok: true };
  };
  const defineOk = (xml: string, uuid: string): void => {
    const r = define(xml, uuid);
    if (!r.ok) throw new Error(`[${stack.name}] virsh define ${uuid}: ${r.error}`);
  };
  const remove = (uuid: string): void => {
    virshS(['destroy', uuid]);
    virshS(['undefine', uuid, '--nvram', '--managed-save']);
    defined.delete(uuid);
  };
  /** `virsh start` by UUID: the error libvirt reports, or undefined when it started (then it is destroyed). */
  const start = (uuid: string): string | undefined => {
    const r = virshS(['start', uuid]);
    if (r.code === 0) {
      virshOkS(['destroy', uuid]);
      return undefined;
    }
    return r.stderr.trim();
  };
  const assertRefusedByHook = (err: string | undefined, what: string, ...mentions: string[]): void => {
    assert.ok(err !== undefined, `${what}: virsh start succeeded; the hook must refuse it`);
    assert.match(err!, /Hook script execution failed/, `${what}: ${err}`);
    for (const m of mentions) assert.ok(err!.includes(m), `${what}: the refusal mentions '${m}': ${err}`);
  };
  /**
   * An untagged domain must really start: the hook let it through and QEMU ran it.
   * One failure is libvirt's own, not the hook's: it names the domain's private
   * folder after the first 20 bytes of the name, which can end inside a UTF-8
   * character: libvirt 9.0 then fails to encode QEMU's JSON arguments, libvirt
   * 11.3 passes them and QEMU refuses the path.
   */
  const assertStarts = (err: string | undefined, what: string, name: string): void => {
    if (err === undefined) return;
    assert.not.match(err, /Hook script|sev-xform/, `${what}: the hook refused it: ${err}`);
    const cutInsideCharacter = Buffer.byteLength(name) > 20 && Buffer.from(name).subarray(0, 20).toString('utf8').includes('\uFFFD');
    assert.ok(cutInsideCharacter && /invalid UTF-8 sequence|failed to convert virJSONValue to yajl data/.test(err), `${what}: virsh start failed: ${err}`);
    console.log(`hook-attacks[${stack.name}]: ${what} got past the hook; libvirt itself cannot start it (its short name ends inside a UTF-8 character): ${err.split('\n').pop()}`);
  };

  test(stack.label('install.sh installs the hook; libvirtd restarts and finds it'), () => {
    capsFile = hook.install();
    runnable = runnableVirtTypeOn(stack);
  });

  test(stack.label('hostile names through libvirt: tagged unconverted refused with our message, untagged starts'), () => {
    const notDefinable: string[] = [];
    // Never touch another suite's domain that happens to have one of these names.
    const existing = new Set(virshOkS(['list', '--all', '--name']).split('\n'));
    for (const name of HOSTILE_NAMES) {
      if (name !== '' && existing.has(name)) {
        console.log(`hook-attacks[${stack.name}]: a domain called ${JSON.stringify(name)} already exists; skipped`);
        continue;
      }
      const tagged = randomUUID();
      const r = define(addTag(smallDomain(name, tagged, 128)), tagged);
      if (!r.ok) {
        notDefinable.push(`${JSON.stringify(name)} (${r.error.split('\n').pop()})`);
        continue;
      }
      assertRefusedByHook(start(tagged), `tagged ${JSON.stringify(name)}`, `sev-xform: refusing to start ${name} unencrypted: `);
      remove(tagged);
      const plain = randomUUID();
      defineOk(smallDomain(name, plain, 64, '', runnable), plain);
      assertStarts(start(plain), `untagged ${JSON.stringify(name)}`, name);
      remove(plain);
    }
    for (const where of [stack.hostPath(`/${PWNED}`), PWNED]) assert.not.ok(existsSync(where), `a domain name was run as a command (${where} exists)`);
    console.log(`hook-attacks[${stack.name}]: ${HOSTILE_NAMES.length - notDefinable.length} hostile names went through the hook in libvirtd; libvirt itself refused to define ${notDefinable.join(', ') || 'none'}`);
    assert.ok(notDefinable.length <= 1, `libvirt refused more names than the empty one: ${notDefinable.join('; ')}`);
  });

  test(stack.label('over 64 MiB of metadata: the tag after the limit is refused, an untagged domain starts'), () => {
    const uuid = randomUUID();
    defineOk(smallDomain('hook12-big', uuid, 64, '', runnable), uuid);
    // libvirt takes XML of a few MiB per call (virsh reads at most 10 MiB of a file, RPC strings are
    // limited), so the padding goes in by `virsh metadata --edit` in several namespaces, the editor
    // being a copy of a prepared file.
    const chunk = 3 * MiB;
    const line = `<p>${'p'.repeat(1000)}</p>\n`;
    const body = line.repeat(Math.ceil(chunk / line.length));
    let total = 0;
    for (let i = 0; total < 70 * MiB; i++) {
      const file = join(work, `pad${i}.xml`);
      writeFileSync(file, `<pad${i}>\n${body}</pad${i}>\n`);
      const editor = join(work, 'editor.sh');
      writeFileSync(editor, `#!/bin/sh\ncat '${file}' >"$1"\n`);
      chmodSync(editor, 0o755);
      const r = run('virsh', ['-c', stack.uri, 'metadata', uuid, `urn:hook12:pad${i}`, '--key', `pad${i}`, '--edit', '--config'], { env: { EDITOR: editor, VISUAL: editor } });
      assert.is(r.code, 0, `virsh metadata --edit pad${i}: ${r.stderr}`);
      rmSync(file);
      total += body.length;
    }
    assertStarts(start(uuid), 'untagged, over 64 MiB', 'hook12-big');
    virshOkS(['metadata', uuid, URN, '--key', 'sev', '--set', '<sev/>', '--config']);
    assertRefusedByHook(start(uuid), 'tag after 64 MiB', 'sev-xform: refusing to start hook12-big: ', '64 MiB');
    remove(uuid);
  });

  test(stack.label('a near-miss tag (sev-es, an unknown attribute) set with virsh metadata is refused naming it'), () => {
    for (const [what, set, mention] of [
      ['sev-es element', '<sev-es/>', 'sev-es'],
      ['misspelt attribute', "<sev polciy='0x33'/>", 'polciy'],
    ] as const) {
      const uuid = randomUUID();
      defineOk(smallDomain('hook12-near', uuid, 128), uuid);
      virshOkS(['metadata', uuid, URN, '--key', 'sev', '--set', set, '--config']);
      assert.ok(virshOkS(['dumpxml', uuid]).includes(URN), `${what}: libvirt kept it`);
      assertRefusedByHook(start(uuid), what, 'sev-xform: refusing to start hook12-near', mention);
      remove(uuid);
    }
  });

  test(stack.label('non-ASCII metadata element names and the URN in a metadata comment do not block an untagged domain'), () => {
    const uuid = randomUUID();
    const metadata = `  <metadata>\n    <app:größe xmlns:app="urn:hook12:app"><!-- ${URN} <launchSecurity> -->3<app:名前/></app:größe>\n  </metadata>\n`;
    defineOk(smallDomain('hook12-nonascii', uuid, 64, '', runnable).replace('  <memory', `${metadata}  <memory`), uuid);
    const dumped = virshOkS(['dumpxml', uuid]);
    assert.ok(dumped.includes('größe'), 'libvirt kept the element');
    assertStarts(start(uuid), 'non-ASCII metadata', 'hook12-nonascii');
    remove(uuid);
  });

  test(stack.label("launchSecurity of another vendor (s390-pv; tdx where libvirt knows it) gets past the hook"), () => {
    for (const type of ['s390-pv', 'tdx']) {
      const uuid = randomUUID();
      const xml = smallDomain(`hook12-${type}`, uuid, 64, `  <launchSecurity type='${type}'/>\n`, runnable);
      const r = define(xml, uuid);
      if (!r.ok) {
        // A libvirt without this type will not define it: the same XML goes through the installed shim as libvirt would call it.
        console.log(`hook-attacks[${stack.name}]: libvirt refuses to define launchSecurity type='${type}' (${r.error.split('\n').pop()}); checked through the installed shim instead`);
        const shim = stack.run(HOOK, [`hook12-${type}`, 'prepare', 'begin', '-'], { input: xml });
        assert.is(shim.code, 0, `${type} through the installed shim: ${shim.stderr}`);
        assert.is(shim.stderr, '', `${type}: no stderr`);
        continue;
      }
      // Neither type can run on this x86 host without its hardware; what matters is that the hook let it by.
      const err = start(uuid);
      if (err !== undefined) assert.not.match(err, /Hook script|sev-xform/, `${type}: the hook refused it: ${err}`);
      remove(uuid);
    }
  });

  test(stack.label('a converted SEV domain with qemu:commandline -machine confidential-guest-support= is refused naming it'), () => {
    const base = addTag(smallDomain('hook12-qemucmd', randomUUID(), 256));
    const conv = runBin(['--domcaps', capsFile, '-'], { input: base });
    assert.is(conv.code, 0, conv.stderr);
    for (const args of [['-machine', 'confidential-guest-support='], ['-object', 'sev-guest,id=x,policy=0,cbitpos=47,reduced-phys-bits=1']]) {
      const uuid = randomUUID();
      const xml = conv.stdout
        .replace(/<uuid>[^<]*<\/uuid>/, `<uuid>${uuid}</uuid>`)
        .replace(/^<domain type='(\w+)'>/, `<domain type='$1' xmlns:qemu='${QEMU_NS}'>`)
        .replace('</domain>', `  <qemu:commandline>\n${args.map((a) => `    <qemu:arg value='${a}'/>\n`).join('')}  </qemu:commandline>\n</domain>`);
      defineOk(xml, uuid);
      assert.ok(virshOkS(['dumpxml', uuid]).includes('qemu:commandline'), 'libvirt kept qemu:commandline');
      assertRefusedByHook(start(uuid), args.join(' '), 'sev-xform: refusing to start hook12-qemucmd', `'${args[0]}'`);
      remove(uuid);
    }
  });

  test(stack.label('install.sh --uninstall removes the hook'), () => {
    for (const uuid of [...defined]) remove(uuid);
    assert.equal(hook.uninstall(), []);
    assert.not.ok(existsSync(stack.hostPath(HOOK)), `${stack.hostPath(HOOK)} is still there`);
  });

  // Also after a failure half-way: no test domain, hook or daemon restart is left behind.
  cleanups.push(() => {
    for (const uuid of [...defined]) remove(uuid);
    rmSync(work, { recursive: true, force: true });
    rmSync(stack.hostPath(`/${PWNED}`), { force: true });
    rmSync(PWNED, { force: true });
    const problems = hook.uninstall();
    if (problems.length > 0) console.error(`[${stack.name}] hook-attacks.test.ts clean-up: ${problems.join('; ')}`);
  });
}

test.after(() => {
  for (const cleanup of cleanups) cleanup();
});
if (stacks.length > 0) test.run();
