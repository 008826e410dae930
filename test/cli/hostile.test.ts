// Hostile and broken input against the built binary (issue 6, "Bad input"):
// every case ends with exit 1 or 2, exactly one stderr line and no stack
// trace, nothing on stdout, in under 2 s and 200 MB. The time and memory
// bounds are generous ceilings for pathological input, not benchmarks.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BIN } from '../support/bin.js';
import { MAX_INPUT_BYTES } from '../../src/xml/read.js';

const HOST = ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml', '--firmware-dirs', 'fixtures/hosts/firmware-sev'];
const MAX_MS = 2000;
const MAX_RSS_KIB = 200 * 1024;
/** A hung case is killed after this long, so the suite itself never hangs. */
const KILL_MS = 30_000;
const GNU_TIME = '/usr/bin/time';

const TAGGED = readFileSync('examples/domain.xml', 'utf8');
const TMP = mkdtempSync(join(tmpdir(), 'sevx-hostile-'));

interface Measured {
  code: number | null;
  stdout: string;
  stderr: string;
  ms: number;
  /** Peak resident set of the sev-xform process. */
  rssKiB: number;
}

/** VmHWM of a live process, or 0 once it is gone. */
function vmHwmKiB(pid: number): number {
  try {
    const m = /^VmHWM:\s+(\d+) kB/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) : 0;
  } catch {
    return 0;
  }
}

/**
 * Runs dist/sev-xform with `args` and `input` on a stdin pipe. Peak memory comes
 * from GNU time (exact, from the kernel's rusage) when installed, else from
 * polling /proc/PID/status VmHWM (may miss a spike in the last milliseconds).
 */
function runMeasured(args: readonly string[], input: string | Buffer = ''): Promise<Measured> {
  const useTime = existsSync(GNU_TIME);
  const rssFile = join(TMP, `rss-${process.hrtime.bigint()}`);
  const [cmd, argv] = useTime ? [GNU_TIME, ['-f', '%M', '-o', rssFile, BIN, ...args]] : [BIN, [...args]];
  return new Promise((resolve, reject) => {
    const start = performance.now();
    // Its own process group, so a hung case is killed together with GNU time's child.
    const child = spawn(cmd, argv, { detached: true, env: { PATH: process.env['PATH'] ?? '', HOME: '/nonexistent', LC_ALL: 'C' } });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let polled = 0;
    const poll = useTime ? undefined : setInterval(() => (polled = Math.max(polled, vmHwmKiB(child.pid!))), 5);
    const killer = setTimeout(() => process.kill(-child.pid!, 'SIGKILL'), KILL_MS);
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    // The program may stop reading early (input over the limit); that is not an error here.
    child.stdin.on('error', () => undefined);
    child.stdin.end(input);
    child.on('error', reject);
    child.on('close', (code) => {
      const ms = performance.now() - start;
      clearTimeout(killer);
      if (poll) clearInterval(poll);
      let rssKiB = polled;
      if (useTime) {
        // GNU time adds "Command exited with non-zero status N" before the figure.
        const lines = readFileSync(rssFile, 'utf8').trim().split('\n');
        rssKiB = Number(lines[lines.length - 1]);
        rmSync(rssFile, { force: true });
      }
      resolve({ code, stdout: Buffer.concat(out).toString('utf8'), stderr: Buffer.concat(err).toString('utf8'), ms, rssKiB });
    });
  });
}

/** The contract for bad input: exit `code`, one clear stderr line matching `says`, nothing else. */
function assertRefused(r: Measured, says: RegExp, code: 1 | 2 = 1): void {
  const what = `stderr: ${r.stderr.slice(0, 2000)}`;
  assert.is(r.code, code, `exit code; ${what}`);
  assert.is(r.stdout, '', 'stdout stays empty');
  assert.ok(r.stderr.endsWith('\n'), `stderr ends with a newline; ${what}`);
  const lines = r.stderr.split('\n').slice(0, -1);
  assert.is(lines.length, 1, `exactly one stderr line; ${what}`);
  const line = lines[0]!;
  assert.not.match(r.stderr, /^\s+at /m, 'no stack trace');
  assert.not.match(line, /internal error/, what);
  assert.ok(line.startsWith('sev-xform: '), what);
  // Clear means short enough to read: hostile names and values are not echoed whole.
  assert.ok(line.length <= 300, `a readable line, not ${line.length} characters: ${line.slice(0, 300)}...`);
  assert.match(line, says);
  assert.ok(r.ms < MAX_MS, `took ${Math.round(r.ms)} ms (bound ${MAX_MS} ms)`);
  assert.ok(r.rssKiB > 0 && r.rssKiB < MAX_RSS_KIB, `peak RSS ${r.rssKiB} KiB (bound ${MAX_RSS_KIB} KiB)`);
}

function tmpFile(name: string, content: string | Buffer): string {
  const file = join(TMP, name);
  writeFileSync(file, content);
  return file;
}

/** Checks `content` on stdin and as a FILE argument; the message names the input where reading it failed. */
async function bothWays(name: string, content: string | Buffer, says: RegExp, namesInput: boolean): Promise<void> {
  const viaStdin = await runMeasured(HOST, content);
  assertRefused(viaStdin, says);
  if (namesInput) assert.match(viaStdin.stderr, /\bstdin\b/);
  const file = tmpFile(name, content);
  const viaFile = await runMeasured([...HOST, file]);
  assertRefused(viaFile, says);
  if (namesInput) assert.ok(viaFile.stderr.includes(file), `names ${file}: ${viaFile.stderr}`);
}

/** Deterministic bytes (xorshift32), so a failure can be reproduced. */
function pseudoRandomBytes(n: number, seed: number): Buffer {
  const b = Buffer.alloc(n);
  let x = seed;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    b[i] = x & 0xff;
  }
  return b;
}

// ------------------------------------------------------------------ bytes

test('empty and whitespace-only input', async () => {
  await bothWays('empty.xml', '', /is empty/, true);
  await bothWays('blank.xml', ' \n\t\n', /is not XML/, false);
});

test('binary garbage', async () => {
  await bothWays('garbage.bin', pseudoRandomBytes(64 * 1024, 0x5e7f0a11), /not valid UTF-8/, true);
  // An ELF-like header: valid UTF-8 up to the NUL bytes.
  await bothWays('elf.bin', Buffer.from('\x7fELF\x02\x01\x01\x00\x00\x00\x00\x00\x00\x00\x00\x00', 'latin1'), /NUL bytes|not valid UTF-8/, true);
  await bothWays('prose.txt', 'this is not a domain\n', /is not XML/, false);
});

test('invalid UTF-8', async () => {
  const cases: Array<[string, number[]]> = [
    ['bad continuation', [0xc3, 0x28]],
    ['overlong slash', [0xc0, 0xaf]],
    ['encoded surrogate', [0xed, 0xa0, 0x80]],
    ['beyond U+10FFFF', [0xf4, 0x90, 0x80, 0x80]],
  ];
  for (const [name, bytes] of cases) {
    const i = TAGGED.indexOf('vm1');
    const content = Buffer.concat([Buffer.from(TAGGED.slice(0, i)), Buffer.from(bytes), Buffer.from(TAGGED.slice(i))]);
    await bothWays(`${name.replace(/ /g, '-')}.xml`, content, /not valid UTF-8/, true);
  }
  // A multi-byte sequence cut off by the end of the input.
  await bothWays('cut-utf8.xml', Buffer.concat([Buffer.from(TAGGED.trimEnd()), Buffer.from([0xe2, 0x82])]), /not valid UTF-8/, true);
});

test('a UTF-8 byte-order mark', async () => {
  await bothWays('bom.xml', Buffer.concat([Buffer.from([0xef, 0xbb, 0xbf]), Buffer.from(TAGGED)]), /byte-order mark/, true);
});

test('UTF-16 input, with and without a byte-order mark', async () => {
  const le = Buffer.from(TAGGED, 'utf16le');
  const be = Buffer.from(le).swap16();
  await bothWays('utf16le-bom.xml', Buffer.concat([Buffer.from([0xff, 0xfe]), le]), /UTF-16/, true);
  await bothWays('utf16be-bom.xml', Buffer.concat([Buffer.from([0xfe, 0xff]), be]), /UTF-16/, true);
  await bothWays('utf16le.xml', le, /NUL bytes/, true);
});

test(`input over the ${MAX_INPUT_BYTES / 1024 / 1024} MiB limit`, async () => {
  const head = Buffer.from("<domain type='kvm'>\n");
  const tail = Buffer.from('</domain>\n');
  const big = Buffer.alloc(MAX_INPUT_BYTES + 1, ' ');
  head.copy(big, 0);
  tail.copy(big, big.length - tail.length);
  await bothWays('big.xml', big, /larger than the 64 MiB limit/, true);
});

test('input far over the limit is refused without reading all of it', async () => {
  // 256 MiB: holding it all before checking the size would break the memory bound.
  const huge = Buffer.alloc(256 * 1024 * 1024, ' ');
  assertRefused(await runMeasured(HOST, huge), /stdin is larger than the 64 MiB limit/);
  const file = join(TMP, 'huge.xml');
  writeFileSync(file, '');
  truncateSync(file, huge.length); // sparse: costs no disk
  assertRefused(await runMeasured([...HOST, file]), /huge\.xml is larger than the 64 MiB limit/);
  rmSync(file);
});

// ------------------------------------------------------------------ XML

test('truncated XML', async () => {
  const cuts = [
    TAGGED.indexOf('<devices>') + '<devices>'.length, // between elements
    TAGGED.indexOf("<disk type='file'") + "<disk type='fi".length, // inside an attribute value
    TAGGED.indexOf('<memballoon') + 4, // inside an element name
    TAGGED.length - '</domain>\n'.length + 3, // inside the last end tag
  ];
  for (const [k, at] of cuts.entries()) await bothWays(`trunc-${k}.xml`, TAGGED.slice(0, at), /bad input: .*(never closed|unterminated|malformed)/, false);
});

test('mismatched tags', async () => {
  await bothWays('mismatch.xml', TAGGED.replace('</name>', '</nam>'), /end tag <\/nam> does not match <name>/, false);
  await bothWays('stray-end.xml', TAGGED.replace('</devices>', '</devices></os>'), /does not match/, false);
});

test('duplicate attributes', async () => {
  await bothWays('dup-root.xml', TAGGED.replace("<domain type='kvm'>", "<domain type='kvm' type='qemu'>"), /duplicate attribute type in <domain>/, false);
  await bothWays('dup-disk.xml', TAGGED.replace("<target dev='vda' bus='virtio'/>", "<target dev='vda' bus='virtio' bus=\"ide\"/>"), /duplicate attribute bus in <target>/, false);
});

test('a root other than <domain>', async () => {
  await bothWays('network.xml', "<network>\n  <name>default</name>\n</network>\n", /root element is <network>, not <domain>/, false);
  await bothWays('caps.xml', readFileSync('fixtures/hosts/sev-epyc-rome.xml'), /root element is <domainCapabilities>/, false);
  await bothWays('prefixed.xml', TAGGED.replace('<domain ', "<x:domain xmlns:x='http://libvirt.org/schemas/domain' ").replace('</domain>', '</x:domain>'), /root element is <x:domain>/, false);
  await bothWays('two-roots.xml', TAGGED + TAGGED, /more than one root element/, false);
});

test('a DOCTYPE with entity expansion ("billion laughs")', async () => {
  const levels = ['<!ENTITY lol0 "lol">'];
  for (let k = 1; k <= 9; k++) levels.push(`<!ENTITY lol${k} "${`&lol${k - 1};`.repeat(10)}">`);
  const lol = `<?xml version="1.0"?>\n<!DOCTYPE domain [\n${levels.join('\n')}\n]>\n${TAGGED.replace('<name>vm1</name>', '<name>&lol9;</name>')}`;
  await bothWays('lol.xml', lol, /DOCTYPE and entity declarations are refused/, false);
});

test('an external entity pointing at /etc/passwd', async () => {
  const xxe = `<?xml version="1.0"?>\n<!DOCTYPE domain [ <!ENTITY xxe SYSTEM "file:///etc/passwd"> ]>\n${TAGGED.replace('<name>vm1</name>', '<name>&xxe;</name>')}`;
  const dtd = `<?xml version="1.0"?>\n<!DOCTYPE domain SYSTEM "file:///etc/passwd">\n${TAGGED}`;
  const param = `<!DOCTYPE domain [ <!ENTITY % p SYSTEM "file:///etc/passwd"> %p; ]>\n${TAGGED}`;
  for (const [k, doc] of [xxe, dtd, param].entries()) {
    await bothWays(`xxe-${k}.xml`, doc, /DOCTYPE and entity declarations are refused/, false);
    const r = await runMeasured(HOST, doc);
    assert.not.match(r.stderr, /root:/, 'nothing of /etc/passwd leaks into the message');
  }
  // Without a declaration the reference is simply undefined.
  await bothWays('undeclared.xml', TAGGED.replace('<name>vm1</name>', '<name>&xxe;</name>'), /undefined entity '&xxe;'/, false);
});

test('100,000 levels of nesting, closed and unclosed', async () => {
  const n = 100_000;
  const inner = TAGGED.indexOf('</metadata>');
  const deep = TAGGED.slice(0, inner) + '<a>'.repeat(n) + '</a>'.repeat(n) + TAGGED.slice(inner);
  await bothWays('deep.xml', deep, /nest deeper than 256 levels/, false);
  await bothWays('deep-open.xml', "<domain type='kvm'>" + '<a>'.repeat(n), /nest deeper than 256 levels/, false);
  await bothWays('deep-mixed.xml', "<domain type='kvm'>" + '<a x="1"><!-- c --><b/>'.repeat(n), /nest deeper than 256 levels/, false);
});

test('a stray ampersand', async () => {
  await bothWays('amp-text.xml', TAGGED.replace('<name>vm1</name>', '<name>a & b</name>'), /malformed entity reference '&'/, false);
  await bothWays('amp-attr.xml', TAGGED.replace("<source file='/var/lib/libvirt/images/vm1.qcow2'/>", "<source file='/images/a&b.qcow2'/>"), /malformed entity reference '&b'/, false);
});

test('a million sibling elements, and one element with 300,000 attributes', async () => {
  const inner = TAGGED.indexOf('</devices>');
  const wide = TAGGED.slice(0, inner) + "<disk><target dev='vda'/></disk>".repeat(1_000_000) + TAGGED.slice(inner);
  await bothWays('wide.xml', wide, /<devices> has more than 4096 child elements/, false);
  const attrs = Array.from({ length: 300_000 }, (_, k) => ` a${k}='${k}'`).join('');
  await bothWays('attrs.xml', TAGGED.replace("<domain type='kvm'>", `<domain type='kvm'${attrs}>`), /more than 200000 elements, attributes and text runs/, false);
});

test('one start tag with a megabyte-long name or value is reported, not echoed', async () => {
  const long = 'x'.repeat(4 * 1024 * 1024);
  await bothWays('long-name.xml', `<domain type='kvm'><${long}>`, /<x{64}\.\.\.> is never closed/, false);
  await bothWays('long-attr.xml', `<domain type='kvm' ${long}='1' ${long}='2'/>`, /duplicate attribute x{64}\.\.\. in <domain>/, false);
  await bothWays('long-value.xml', `<domain type='${long}`, /unterminated attribute type of <domain>/, false);
});

// ------------------------------------------------------------------ host facts

test('--domcaps missing, malformed, or saying SEV is unsupported', async () => {
  const run = (domcaps: string) => runMeasured(['--domcaps', domcaps, '--firmware-dirs', 'fixtures/hosts/firmware-sev'], TAGGED);
  const missing = join(TMP, 'no-such-domcaps.xml');
  const r1 = await run(missing);
  assertRefused(r1, /cannot read/);
  assert.ok(r1.stderr.includes(missing), r1.stderr);

  const caps = readFileSync('fixtures/hosts/sev-epyc-rome.xml', 'utf8');
  const malformed = tmpFile('malformed-caps.xml', caps.slice(0, caps.length / 2));
  const r2 = await run(malformed);
  assertRefused(r2, /not well-formed/);
  assert.ok(r2.stderr.includes(malformed), r2.stderr);

  assertRefused(await run(tmpFile('empty-caps.xml', '')), /empty-caps\.xml/);
  assertRefused(await run(tmpFile('garbage-caps.xml', pseudoRandomBytes(4096, 7))), /garbage-caps\.xml/);
  assertRefused(await run(tmpFile('lol-caps.xml', `<!DOCTYPE d [<!ENTITY a "aaaa">]>${caps}`)), /DOCTYPE and entity declarations are refused/);
  assertRefused(await run(tmpFile('not-caps.xml', TAGGED)), /not <domainCapabilities>/);
  assertRefused(await run('fixtures/hosts/no-sev.xml'), /sev supported='no'/);
});

test('tag attributes with invalid values', async () => {
  const withTag = (attrs: string) => TAGGED.replace('<sev:sev xmlns:sev="urn:sev-xform:domain:1"/>', `<sev:sev xmlns:sev="urn:sev-xform:domain:1" ${attrs}/>`);
  const cases: Array<[string, RegExp]> = [
    [`policy="zzz"`, /refused: domain\/metadata\/sev:sev policy: policy 'zzz' is not a hexadecimal number/],
    [`policy=""`, /refused: domain\/metadata\/sev:sev policy: policy '' is not a hexadecimal number/],
    [`policy="0x123456789"`, /not a hexadecimal number/],
    [`policy="0x0433"`, /reserved bits/],
    [`model="tdx"`, /refused: domain\/metadata\/sev:sev: model 'tdx' is not 'sev' or 'sev-es'/],
    [`model="sev" policy="0x0037"`, /model 'sev' conflicts with policy 0x0037/],
  ];
  for (const [attrs, says] of cases) await bothWays('tag.xml', withTag(attrs), says, false);
});

// ------------------------------------------------------------------ preservation

test('unknown elements and attributes anywhere in a tagged domain are preserved byte for byte', async () => {
  // Each snippet is something no rule targets; all must appear verbatim in the output.
  const kept: string[] = [];
  const keep = (s: string): string => (kept.push(s), s);
  let doc = TAGGED;
  const put = (anchor: string, insert: string, after = true): void => {
    assert.ok(doc.includes(anchor), anchor);
    doc = doc.replace(anchor, after ? anchor + insert : insert + anchor);
  };
  doc = doc.replace("<domain type='kvm'>", keep(`<domain type='kvm' xmlns:ext="urn:example:ext" ext:owner='ops &amp; "team"' future="1">`));
  put('<name>vm1</name>', `\n  ${keep(`<ext:annotation level="3">kept <![CDATA[<raw> & stuff]]> &#x263A;</ext:annotation>`)}`);
  put('<sev:sev', `${keep(`<app:state xmlns:app="urn:example:app"><app:item id='1'>x</app:item><!-- app note --></app:state>`)}\n    `, false);
  put('<boot dev=\'hd\'/>', `\n    ${keep(`<futureos mode="fast"/>`)}`);
  put('<apic/>', `\n    ${keep(`<futurefeature state='on'><sub a='b'/></futurefeature>`)}`);
  doc = doc.replace("<disk type='file' device='disk'>", keep(`<disk type='file' device='disk' future-disk='yes'>`));
  put("<source file='/var/lib/libvirt/images/vm1.qcow2'", ` ${keep(`ext:hint='fast'`)}`);
  put("<driver name='qemu' type='raw'", ` ${keep(`future-cache='wb'`)}`);
  put("<model type='virtio'", ` ${keep(`future-model='2'`)}`);
  // Not on the balloon: the conversion makes it <memballoon model='none'/>, dropping its attributes.
  put("<channel type='unix'", ` ${keep(`future='z'`)}`);
  put('<emulator>/usr/bin/qemu-system-x86_64</emulator>', `\n    ${keep(`<futuredevice model='virtio' bus="virtio"><driver queues='4'/><target dev='vdz' bus='virtio'/></futuredevice>`)}`);
  put('</devices>', `  ${keep(`<?future-pi some data?>`)}\n  `, false);
  put('</devices>', `\n  ${keep(`<!-- a comment after devices -->`)}`);
  put('</domain>', `\n${keep(`<!-- trailing comment -->`)}`);
  const file = tmpFile('unknown.xml', doc);
  const r = await runMeasured([...HOST, file]);
  assert.is(r.code, 0, r.stderr);
  assert.match(r.stdout, /<launchSecurity type='sev'>/, 'the domain was converted');
  for (const s of kept) assert.ok(r.stdout.includes(s), `kept verbatim: ${s}`);
  const again = await runMeasured(HOST, r.stdout);
  assert.is(again.code, 0, again.stderr);
  assert.is(again.stdout, r.stdout, 'a second run changes nothing');
});

test.after(() => rmSync(TMP, { recursive: true, force: true }));

test.run();
