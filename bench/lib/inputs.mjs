// The inputs every measured command reads, written to a scratch folder: the typical domain in its
// tagged, untagged and converted forms, generated domains with many devices, a host cache for the
// hook, the hook shim pointed at the binary under test, and the files of the batch run.
import { chmodSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { join, resolve } from 'node:path';

export const TYPICAL = 'fixtures/virt-install-i440fx-bios-virtio-blk/in.xml';
export const DOMCAPS = 'fixtures/hosts/sev-epyc-rome.xml';
export const FIRMWARE = 'fixtures/hosts/firmware-sev';
export const HOSTROOT = 'fixtures/hostroots/sev-host';
const TAG_LINE = /^\s*<sev:sev xmlns:sev="urn:sev-xform:domain:1"\/>\n/m;

/** Bijective base-26 suffix: 0 -> a, 25 -> z, 26 -> aa, as libvirt names disks beyond vdz. */
function letters(i) {
  let s = '';
  for (let n = i + 1; n > 0; n = Math.floor((n - 1) / 26)) s = String.fromCharCode(97 + ((n - 1) % 26)) + s;
  return s;
}

function pciAddress(i) {
  // Devices past the first few need more than one bus; the numbers only have to be well-formed,
  // since converting to q35 drops every PCI address and libvirt assigns new ones.
  return `<address type='pci' domain='0x0000' bus='0x${(1 + Math.floor(i / 31)).toString(16).padStart(2, '0')}' slot='0x${(1 + (i % 31)).toString(16).padStart(2, '0')}' function='0x0'/>`;
}

/** One generated device, rotating through what large libvirt domains carry: virtio and SATA disks, virtio NICs, virtio-serial channels. */
function device(i) {
  const pad = '    ';
  switch (i % 10) {
    case 0: case 1: case 2: case 3:
      return [
        `${pad}<disk type='file' device='disk'>`,
        `${pad}  <driver name='qemu' type='qcow2' cache='none'/>`,
        `${pad}  <source file='/var/lib/libvirt/images/data-${i}.qcow2'/>`,
        `${pad}  <target dev='vd${letters(i + 1)}' bus='virtio'/>`,
        `${pad}  ${pciAddress(i)}`,
        `${pad}</disk>`,
      ];
    case 4: case 5:
      return [
        `${pad}<disk type='block' device='disk'>`,
        `${pad}  <driver name='qemu' type='raw'/>`,
        `${pad}  <source dev='/dev/mapper/vol-${i}'/>`,
        `${pad}  <target dev='sd${letters(i + 2)}' bus='sata'/>`,
        `${pad}</disk>`,
      ];
    case 6: case 7: case 8:
      return [
        `${pad}<interface type='network'>`,
        `${pad}  <mac address='52:54:00:${[i >> 16, (i >> 8) & 255, i & 255].map((b) => b.toString(16).padStart(2, '0')).join(':')}'/>`,
        `${pad}  <source network='net${i % 7}'/>`,
        `${pad}  <model type='virtio'/>`,
        `${pad}  ${pciAddress(i)}`,
        `${pad}</interface>`,
      ];
    default:
      return [
        `${pad}<channel type='unix'>`,
        `${pad}  <target type='virtio' name='org.example.agent.${i}'/>`,
        `${pad}</channel>`,
      ];
  }
}

/** The typical domain with `n` more devices before </devices>. */
export function withDevices(xml, n) {
  const lines = [];
  for (let i = 0; i < n; i++) lines.push(...device(i));
  return xml.replace('  </devices>', `${lines.join('\n')}\n  </devices>`);
}

/**
 * Writes every input into `dir`. `bin` is the binary under test: the converted domain and the host
 * cache are made by it, so that the hook is measured on exactly what this build would accept.
 */
export function prepareInputs(dir, bin, deviceCounts, batchSize) {
  mkdirSync(dir, { recursive: true });
  const tagged = readFileSync(TYPICAL, 'utf8');
  if (!TAG_LINE.test(tagged)) throw new Error(`${TYPICAL}: no sev-xform tag line to remove for the untagged case`);
  const files = {
    typical: join(dir, 'typical.xml'),
    untagged: join(dir, 'untagged.xml'),
    converted: join(dir, 'converted.xml'),
    stateDir: join(dir, 'state'),
    runDir: join(dir, 'run'),
    hookConf: join(dir, 'hook.conf'),
    shim: join(dir, 'qemu-hook'),
    home: join(dir, 'home'),
    batchOut: join(dir, 'batch-out'),
    /** @type {Record<number, string>} */
    large: {},
    /** @type {string[]} */
    batch: [],
  };
  writeFileSync(files.typical, tagged);
  writeFileSync(files.untagged, tagged.replace(TAG_LINE, ''));
  mkdirSync(files.runDir, { recursive: true });
  mkdirSync(files.home, { recursive: true });
  for (const n of deviceCounts) {
    files.large[n] = join(dir, `devices-${n}.xml`);
    writeFileSync(files.large[n], withDevices(tagged, n));
  }
  const batchDir = join(dir, 'batch-in');
  mkdirSync(batchDir, { recursive: true });
  for (let i = 0; i < batchSize; i++) {
    const name = `vm${String(i).padStart(5, '0')}`;
    const file = join(batchDir, `${name}.xml`);
    writeFileSync(file, tagged.replace('<name>web01</name>', `<name>${name}</name>`).replace(/<uuid>[^<]*<\/uuid>/, `<uuid>977c4a14-84e3-4364-9dbf-${String(i).padStart(12, '0')}</uuid>`));
    files.batch.push(file);
  }

  const env = { PATH: '/usr/bin:/bin', HOME: files.home };
  const convert = spawnSync(bin, ['--domcaps', DOMCAPS, '--firmware-dirs', resolve(FIRMWARE), files.typical], { encoding: 'utf8', env });
  if (convert.status !== 0) throw new Error(`${bin} could not convert ${TYPICAL}: ${convert.stderr.trim()}`);
  writeFileSync(files.converted, convert.stdout);
  // The cache as `sev-xform host --write-cache` writes it, from the fake SEV host in fixtures.
  const host = spawnSync(
    bin,
    ['host', '--root', resolve(HOSTROOT), '--domcaps', DOMCAPS, '--firmware-dirs', resolve(FIRMWARE), '--write-cache', '--state-dir', files.stateDir],
    { encoding: 'utf8', env },
  );
  if (host.status !== 0) throw new Error(`${bin} host --write-cache failed: ${host.stderr.trim() || host.stdout.trim()}`);
  // The shim as install.sh installs it: the same file with its binary path rewritten.
  const shim = readFileSync('hooks/qemu', 'utf8');
  if (!/^SEV_XFORM=.*$/m.test(shim)) throw new Error('hooks/qemu: no SEV_XFORM= line to point at the binary under test');
  writeFileSync(files.shim, shim.replace(/^SEV_XFORM=.*$/m, `SEV_XFORM=${resolve(bin)}`));
  chmodSync(files.shim, 0o755);
  return files;
}
