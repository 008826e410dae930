// Properties of the filter over generated domains (issue 6, "Properties"),
// run in-process with a fixed seed so every run checks the same domains.
// SEV_XFORM_PROPS_SEED and SEV_XFORM_PROPS_RUNS explore other ones.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { XMLParser } from 'fast-xml-parser';
import { runCli, type CliRun } from '../support/run-cli.js';
import { domainArb, type GeneratedDomain } from '../support/gen-domain.js';

const HOST = ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml', '--firmware-dirs', 'fixtures/hosts/firmware-sev'];
const SEED = Number(process.env['SEV_XFORM_PROPS_SEED'] ?? 20261126);
const RUNS = Number(process.env['SEV_XFORM_PROPS_RUNS'] ?? 200);

/** Runs a property with the fixed seed; a failure names the seed and the shrunk domain. */
async function check(name: string, property: (g: GeneratedDomain) => Promise<void>): Promise<void> {
  const details = await fc.check(fc.asyncProperty(domainArb, property), { seed: SEED, numRuns: RUNS });
  if (!details.failed) return;
  const example = details.counterexample?.[0];
  const e = details.errorInstance as { message?: string; actual?: unknown; expects?: unknown } | undefined;
  let error = e?.message ?? String(e);
  // uvu's assertion messages leave the compared values out.
  if (e && 'actual' in e) error += `\nactual: ${JSON.stringify(e.actual)}\nexpected: ${JSON.stringify(e.expects)}`;
  assert.unreachable(
    `${name} fails (seed ${SEED}, path "${details.counterexamplePath}", after ${details.numRuns} runs and ${details.numShrinks} shrinks)\n` +
      `${error}\noptions: ${JSON.stringify(example?.options)}\ninput:\n${example?.xml}`,
  );
}

function convert(g: GeneratedDomain, input = g.xml): Promise<CliRun> {
  return runCli([...HOST, ...g.options], { stdin: input });
}

/** exit 0 with XML, or exit 1 with one stderr line and nothing on stdout: never 2, never an internal error. */
function assertWellBehaved(r: CliRun): void {
  assert.not.match(r.stderr, /internal error/, r.stderr);
  if (r.code === 0) {
    assert.ok(r.stdout.length > 0, 'exit 0 prints the domain');
    for (const line of r.stderr.split('\n').filter(Boolean)) assert.match(line, /^sev-xform: warning: /, 'stderr on success carries warnings only');
    return;
  }
  assert.is(r.code, 1, `exit ${r.code}: ${r.stderr}`);
  assert.is(r.stdout, '', 'stdout stays empty on refusal');
  assert.ok(r.stderr.endsWith('\n') && r.stderr.split('\n').length === 2, `exactly one stderr line:\n${r.stderr}`);
  assert.match(r.stderr, /^sev-xform: (refused|host|bad input): /);
}

test('the filter never crashes', async () => {
  await check('never crashes', async (g) => {
    assertWellBehaved(await convert(g));
    assertWellBehaved(await convert(g, g.untagged));
  });
});

test('the output is a fixed point', async () => {
  await check('fixed point', async (g) => {
    const first = await convert(g);
    if (first.code !== 0) return;
    const second = await convert(g, first.stdout);
    assert.is(second.code, 0, second.stderr);
    assert.is(second.stdout, first.stdout, 'a second run changes nothing');
  });
});

test('an untagged domain comes back byte for byte', async () => {
  await check('untagged passthrough', async (g) => {
    const r = await convert(g, g.untagged);
    assert.is(r.code, 0, r.stderr);
    assert.is(r.stdout, g.untagged);
    assert.is(r.stderr, '');
  });
});

test('a converted domain passes `check`', async () => {
  await check('check after transform', async (g) => {
    // --policy overrides the tag, so `check` (which reads the tag) would rightly disagree.
    if (g.options.includes('--policy')) return;
    const first = await convert(g);
    if (first.code !== 0 || first.stdout === g.xml) return;
    const r = await runCli(['check', ...HOST], { stdin: first.stdout });
    assert.is(r.code, 0, `check: ${r.stdout}${r.stderr}`);
    assert.is(r.stdout, 'a correct SEV guest\n');
  });
});

// ------------------------------------------------------------------ nothing is lost
//
// What the rules (src/rules/*.ts) may change in a domain, read from their code;
// everything else in the input must be in the output unchanged. Paths are
// element names from the root, without indexes.

/** Driver attributes a disk loses when it moves to virtio-scsi (devices.ts NOT_FOR_SCSI_DISKS). */
const NOT_FOR_SCSI_DISKS = ['queues', 'queue_size', 'iothread', 'event_idx', 'ioeventfd', 'iommu', 'ats', 'packed', 'page_per_vq'];

/** Attributes a rule may set, change or remove on an element at `path`. */
function mutableAttrs(path: string, attrs: Record<string, string>): string[] {
  // virtio-iommu: virtio-transitional becomes virtio-non-transitional wherever a device keeps its model.
  // So does a legacy-capable 'virtio' (or 'virtio-scsi') model whose address is off a PCIe port (the
  // attributes alone do not say where the device sits, so any such model may change).
  const transitional = Object.keys(attrs).filter(
    (a) => (a === 'model' || a === 'type') && ['virtio-transitional', 'virtio-non-transitional', 'virtio', 'virtio-scsi'].includes(attrs[a] ?? '') && path.startsWith('domain/devices/'),
  );
  return [...transitional, ...ruleAttrs(path, attrs)];
}

function ruleAttrs(path: string, attrs: Record<string, string>): string[] {
  switch (path) {
    case 'domain/os': // firmware-uefi: firmware='efi', or removed for --firmware PATH
      return ['firmware'];
    case 'domain/os/loader': // firmware-uefi with --firmware PATH
      return ['readonly', 'type'];
    case 'domain/os/type': // machine-q35
      return ['machine'];
    case 'domain/devices/controller': // machine-q35: pci-root -> pcie-root, PIIX USB -> qemu-xhci, pxb -> pxb-pcie
      return attrs['type'] === 'pci' || attrs['type'] === 'usb' ? ['model'] : [];
    case 'domain/devices/controller/model': // machine-q35: <model name='pxb'/> -> pxb-pcie
      return attrs['name'] === 'pxb' ? ['name'] : [];
    case 'domain/devices/controller/target': // machine-q35: a pxb's busNr outside 1-254
      return ['busNr'];
    case 'domain/devices/memballoon': // virtio-iommu: the balloon becomes model 'none', nothing else
      return ['model', 'autodeflate', 'freePageReporting'];
    case 'domain/devices/disk': // moved disks lose disk@model
      return ['model'];
    case 'domain/devices/disk/target': // moved disks: new sdX name on bus scsi
      return ['dev', 'bus'];
    case 'domain/devices/disk/driver': // moved disks lose virtio-blk options; virtio-iommu
      return NOT_FOR_SCSI_DISKS;
    case 'domain/devices/interface/rom': // sev-hygiene
      return ['enabled', 'bar', 'file'];
    case 'domain/memtune/hard_limit': // memory-pinning
    case 'domain/memtune/swap_hard_limit':
      return ['unit'];
  }
  // virtio-iommu merges iommu='on' into any device's <driver>.
  if (/^domain\/devices\/[^/]+\/driver$/.test(path)) return ['iommu'];
  return [];
}

/** Elements whose text a rule may rewrite. */
const MUTABLE_TEXT = new Set(['domain/os/loader', 'domain/memtune/hard_limit', 'domain/memtune/swap_hard_limit', 'domain/launchSecurity/cbitpos', 'domain/launchSecurity/reducedPhysBits', 'domain/launchSecurity/policy']);

interface Node {
  path: string;
  name: string;
  attrs: Record<string, string>;
  text: string;
  children: Node[];
  parent: Node | undefined;
  comment?: string;
}

type Ordered = Array<Record<string, unknown>>;

const parser = new XMLParser({
  preserveOrder: true,
  ignoreAttributes: false,
  attributeNamePrefix: '',
  parseTagValue: false,
  parseAttributeValue: false,
  commentPropName: '#comment',
  trimValues: true,
});

/** The document as a plain tree, read by fast-xml-parser (not by the code under test). */
function tree(xml: string): Node {
  const build = (items: Ordered, parent: Node | undefined): Node[] => {
    const out: Node[] = [];
    for (const item of items) {
      const name = Object.keys(item).find((k) => k !== ':@')!;
      if (name === '#text') {
        if (parent) parent.text += String(item[name]);
        continue;
      }
      const path = parent ? `${parent.path}/${name}` : name;
      if (name === '#comment') {
        const text = ((item[name] as Ordered)[0]?.['#text'] as string | undefined) ?? '';
        out.push({ path, name, attrs: {}, text: '', children: [], parent, comment: text });
        continue;
      }
      const node: Node = { path, name, attrs: (item[':@'] as Record<string, string> | undefined) ?? {}, text: '', children: [], parent };
      node.children = build(item[name] as Ordered, node);
      out.push(node);
    }
    return out;
  };
  const roots = build(parser.parse(xml) as Ordered, undefined).filter((n) => n.name === 'domain');
  assert.is(roots.length, 1, 'one <domain> root');
  return roots[0]!;
}

/** The bus a disk is on, as devices.ts diskBus reads it. */
function diskBus(disk: Node): string | undefined {
  const target = disk.children.find((c) => c.name === 'target');
  const bus = target?.attrs['bus'];
  if (bus) return bus;
  const dev = target?.attrs['dev'] ?? '';
  return dev.startsWith('hd') ? 'ide' : dev.startsWith('sd') ? 'scsi' : dev.startsWith('vd') ? 'virtio' : undefined;
}

/** True for an input element that a rule may remove (with everything inside it). */
function removable(n: Node): boolean {
  const parent = n.parent;
  switch (n.path) {
    case 'domain/os/loader': // firmware-uefi drops a BIOS loader
      return !(n.attrs['type'] === 'pflash' || /ovmf|edk2|uefi/i.test(n.text));
    case 'domain/features/vmcoreinfo': // sev-hygiene
      return n.attrs['state'] !== 'off';
    case 'domain/devices/controller': // machine-q35 and ide-to-virtio-scsi; a pxb stays, as a pcie-expander-bus
      return n.attrs['type'] === 'ide' || (n.attrs['type'] === 'pci' && n.attrs['model'] !== 'pci-root' && n.attrs['model'] !== 'pci-expander-bus');
    case 'domain/devices/disk/address': // a disk that moves to virtio-scsi (IDE, or a virtio boot disk)
      return parent !== undefined && ['ide', 'virtio'].includes(diskBus(parent) ?? '');
    case 'domain/devices/disk/driver': // emptied by the move
      return parent !== undefined && ['ide', 'virtio'].includes(diskBus(parent) ?? '') && Object.keys(n.attrs).every((a) => NOT_FOR_SCSI_DISKS.includes(a)) && n.children.length === 0;
  }
  // virtio-iommu: a balloon of model 'none' has no children.
  if (n.path.startsWith('domain/devices/memballoon/')) return true;
  // machine-q35 drops i440fx PCI addresses anywhere under <devices>.
  return n.name === 'address' && n.path.startsWith('domain/devices/') && n.attrs['type'] === 'pci';
}

/** What must survive of an element: path, the attributes no rule may touch, and its text. */
function key(n: Node): string {
  if (n.comment !== undefined) return `${n.path}|${n.comment}`;
  const skip = mutableAttrs(n.path, n.attrs);
  const attrs = Object.entries(n.attrs)
    .filter(([k]) => !skip.includes(k))
    .sort(([a], [b]) => (a < b ? -1 : 1))
    .map(([k, v]) => `${k}=${JSON.stringify(v)}`)
    .join(' ');
  return `${n.path}|${attrs}|${MUTABLE_TEXT.has(n.path) ? '' : n.text.trim()}`;
}

function keys(root: Node, skipRemovable: boolean): Map<string, number> {
  const counts = new Map<string, number>();
  const walk = (n: Node): void => {
    if (skipRemovable && removable(n)) return;
    const k = key(n);
    counts.set(k, (counts.get(k) ?? 0) + 1);
    for (const c of n.children) walk(c);
  };
  walk(root);
  return counts;
}

test('nothing the rules do not target is lost', async () => {
  await check('nothing lost', async (g) => {
    const r = await convert(g);
    if (r.code !== 0) return;
    const before = keys(tree(g.xml), true);
    const after = keys(tree(r.stdout), false);
    const lost = [...before].filter(([k, n]) => (after.get(k) ?? 0) < n).map(([k]) => k);
    assert.equal(lost, [], `lost from the input:\n${lost.join('\n')}\noutput:\n${r.stdout}`);
    // The prolog (declaration, comments before the root) is untouched too.
    assert.is(r.stdout.slice(0, r.stdout.indexOf('<domain')), g.xml.slice(0, g.xml.indexOf('<domain')));
  });
});

test('the generator covers conversions and refusals', async () => {
  // Guards the properties above against a generator that only ever produces refusals.
  const sample = fc.sample(domainArb, { seed: SEED, numRuns: 100 });
  let converted = 0;
  let refused = 0;
  for (const g of sample) {
    const r = await convert(g);
    if (r.code === 0 && r.stdout !== g.xml) converted++;
    if (r.code === 1) refused++;
  }
  assert.ok(converted >= 40, `${converted} of 100 generated domains converted`);
  assert.ok(refused >= 5, `${refused} of 100 generated domains refused`);
});

test.run();
