// Starting a converted guest in QEMU on a machine without SEV: a TCG copy of
// the domain, the QEMU command line libvirt renders for it, and that QEMU run
// by the test itself inside a memory cgroup at the converted hard_limit, with
// all guest RAM preallocated (SEV pins it at launch, so it is resident).
//
// libvirt cannot start these domains here (no /dev/sev; and raising
// RLIMIT_MEMLOCK to hard_limit needs CAP_SYS_RESOURCE), so the test does what
// libvirt would: the argv from `virsh domxml-to-native`, the cgroup limit from
// <memtune><hard_limit>. Host resources a test machine lacks (disk images,
// kernels, bridges, host devices, sockets of daemons libvirt would start) are
// replaced by stand-ins; every replacement is listed in the result's notes.
import { spawn, spawnSync } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { basename, dirname, join } from 'node:path';
import type { MemoryCgroup } from './cgroup.js';
import { type El, libvirtCopy, parseXml, qemuProps, run, virsh } from './libvirt.js';
import { shellWords } from './shell.js';
import { DEBIAN12, compareVersions, type Stack } from './stack.js';
import { PAGE_TABLE_DIVISOR } from '../../src/domain/memory.js';

export const MiB = 1024 * 1024;

// ---------------------------------------------------------------- sizes

const UNIT_BYTES: Record<string, number> = {
  b: 1, bytes: 1,
  kb: 1e3, k: 1024, kib: 1024,
  mb: 1e6, m: 1024 ** 2, mib: 1024 ** 2,
  gb: 1e9, g: 1024 ** 3, gib: 1024 ** 3,
  tb: 1e12, t: 1024 ** 4, tib: 1024 ** 4,
};

/** A libvirt scaled integer in bytes; `unit` defaults to KiB as for <memory> and <memtune>. */
export function scaledBytes(el: El | undefined): number | undefined {
  if (!el) return undefined;
  const unit = (el.attrs['unit'] ?? 'KiB').toLowerCase();
  const factor = UNIT_BYTES[unit];
  if (factor === undefined) throw new Error(`unknown memory unit ${el.attrs['unit']} in <${el.name}>`);
  return Number(el.text.trim()) * factor;
}

/** Guest RAM: <memory>, or the sum of the NUMA cells when there is none. */
export function guestRamBytes(domain: El): number {
  const memory = scaledBytes(domain.child('memory'));
  if (memory !== undefined) return memory;
  const cells = domain.child('cpu')?.child('numa')?.all('cell') ?? [];
  const sum = cells.reduce((acc, c) => acc + (Number(c.attrs['memory'] ?? 0) * (UNIT_BYTES[(c.attrs['unit'] ?? 'KiB').toLowerCase()] ?? 1024)), 0);
  if (sum === 0) throw new Error('the domain has neither <memory> nor NUMA cells with memory');
  return sum;
}

export function hardLimitBytes(domain: El): number | undefined {
  return scaledBytes(domain.child('memtune')?.child('hard_limit'));
}

// ---------------------------------------------------------------- the TCG copy

export interface TcgCopy {
  /** The domain file libvirt renders. */
  file: string;
  /** The converted domain's hard_limit, if it has one. */
  hardLimitBytes: number | undefined;
  /** The converted domain's guest RAM. */
  ramBytes: number;
  /** Guest RAM of the copy: ramBytes, or less when capped (see scaledLimit). */
  runRamBytes: number;
  /** The cgroup limit for the copy: hard_limit, lowered as RAM was (see scaledLimit). */
  runLimitBytes: number | undefined;
  /** TPM emulators to start (swtpm), by version. */
  tpmVersions: string[];
  /** What was changed for this host, beyond making it a TCG guest. */
  notes: string[];
}

const IMAGE_FORMATS = new Set(['raw', 'qcow2', 'qed', 'vmdk', 'vdi', 'vpc', 'vhdx']);

/**
 * A minimal Linux boot image: a valid x86 boot-protocol header (2.15) and
 * nothing to run, so QEMU loads it as it would the domain's kernel. The guest
 * never runs it in a paused QEMU.
 */
function standInKernel(path: string): void {
  const image = Buffer.alloc(64 * 1024);
  image[0x1f1] = 4; // setup sectors
  image.writeUInt16LE(0xaa55, 0x1fe);
  image.write('HdrS', 0x202, 'latin1');
  image.writeUInt16LE(0x020f, 0x206); // boot protocol version
  image[0x211] = 0x01; // LOADED_HIGH
  image.writeUInt32LE(0x7fffffff, 0x22c); // initrd_addr_max
  image.writeUInt32LE(0x200000, 0x230); // kernel_alignment
  image[0x234] = 1; // relocatable
  image.writeUInt32LE(2048, 0x238); // cmdline_size
  writeFileSync(path, image);
}

function xmlstarletEdit(file: string, ops: string[]): void {
  if (ops.length === 0) return;
  const r = run('xmlstarlet', ['ed', '-P', ...ops, file]);
  if (r.code !== 0) throw new Error(`xmlstarlet ed ${file}: ${r.stderr.trim()}`);
  writeFileSync(file, r.stdout);
}

/**
 * The TCG copy of a converted domain (`converted`, an out.xml), named `name`,
 * with its stand-in files in `work`:
 * - type qemu, launchSecurity and the sev-xform tag removed: no SEV, no KVM here;
 * - memtune removed: libvirt would set RLIMIT_MEMLOCK to it, which needs
 *   CAP_SYS_RESOURCE; its hard_limit becomes the test's own cgroup limit;
 * - <memoryBacking> <hugepages/> and <locked/> removed: this host reserves no
 *   huge pages, and mlock beyond 8 MiB needs CAP_SYS_RESOURCE too;
 * - a host-passthrough/host-model CPU becomes mode maximum (TCG's "max");
 * - disks get empty images of their format, kernels a stand-in, shares a
 *   scratch folder, a loader this host lacks Debian's OVMF; host devices and
 *   vsock (no /dev/vhost-vsock) are dropped.
 */
export function tcgCopy(converted: string, name: string, work: string, ramCapBytes = Number.POSITIVE_INFINITY, stack: Stack = DEBIAN12): TcgCopy {
  mkdirSync(work, { recursive: true });
  // `work` is a host path inside the stack's root: the stack's libvirtd and QEMU see it as `inner(...)`.
  const inner = (hostPath: string): string => stack.innerPath(hostPath);
  const file = join(work, `${name}.tcg.xml`);
  libvirtCopy(converted, name, file);
  const domain = parseXml(readFileSync(file, 'utf8'));
  const original = parseXml(readFileSync(converted, 'utf8'));
  const ramBytes = guestRamBytes(original);
  const limit = hardLimitBytes(original);
  const notes: string[] = [];
  const ops: string[] = [
    '-u', '/domain/@type', '-v', 'qemu',
    '-d', '/domain/launchSecurity',
    '-d', "/domain/metadata/*[namespace-uri()='urn:sev-xform:domain:1']",
    '-d', '/domain/memtune',
  ];
  const backing = domain.child('memoryBacking');
  for (const what of ['hugepages', 'locked'])
    if (backing?.child(what)) {
      ops.push('-d', `/domain/memoryBacking/${what}`);
      notes.push(`<memoryBacking><${what}/> removed (${what === 'hugepages' ? 'no huge pages reserved here' : 'mlock needs CAP_SYS_RESOURCE'})`);
    }
  if (domain.child('features')?.child('hyperv')) {
    ops.push('-d', '/domain/features/hyperv');
    notes.push('Hyper-V enlightenments removed (QEMU has some, e.g. vpindex, only with KVM)');
  }
  const cpuMode = domain.child('cpu')?.attrs['mode'];
  if (cpuMode === 'host-passthrough' || cpuMode === 'host-model') {
    ops.push('-u', '/domain/cpu/@mode', '-v', 'maximum', '-d', '/domain/cpu/model');
    notes.push(`cpu ${cpuMode} -> maximum (TCG)`);
  }

  const os = domain.child('os');
  for (const what of ['kernel', 'initrd', 'dtb']) {
    if (!os?.child(what)) continue;
    const standIn = join(work, `${name}.${what}`);
    if (what === 'kernel') standInKernel(standIn);
    else writeFileSync(standIn, Buffer.alloc(4096));
    ops.push('-u', `/domain/os/${what}`, '-v', inner(standIn));
    notes.push(`${what} -> stand-in file`);
  }
  const loader = os?.child('loader');
  const loaderPath = loader?.text.trim() ?? '';
  const debian = loader?.attrs['secure'] === 'yes' ? '/usr/share/OVMF/OVMF_CODE_4M.secboot.fd' : '/usr/share/OVMF/OVMF_CODE_4M.fd';
  if (loader?.attrs['stateless'] === 'yes' && (loaderPath === '' || !existsSync(stack.hostPath(loaderPath)))) {
    // An SNP guest's stateless firmware is the AmdSev OVMF build (a -bios ROM), auto-selected by a descriptor
    // that lists amd-sev-snp or named by path; Debian ships neither. The TCG copy gets the stack's OVMF code
    // as a read-only pflash without VARS (QEMU refuses the 4M code image as -bios), still stateless.
    ops.push(
      '-d', '/domain/os/@firmware', '-d', '/domain/os/firmware', '-u', '/domain/os/loader', '-v', debian,
      '-d', '/domain/os/loader/@type', '-d', '/domain/os/loader/@readonly', '-d', '/domain/os/loader/@format',
      '-s', '/domain/os/loader', '-t', 'attr', '-n', 'type', '-v', 'pflash',
      '-s', '/domain/os/loader', '-t', 'attr', '-n', 'readonly', '-v', 'yes',
    );
    notes.push(`stateless loader ${loaderPath || '(auto-selected)'} (no SNP firmware on ${stack.name}) -> ${debian} as stateless pflash`);
  } else if (loader && loaderPath !== '' && !existsSync(stack.hostPath(loaderPath))) {
    ops.push('-u', '/domain/os/loader', '-v', debian);
    notes.push(`loader ${loaderPath} (not on ${stack.name}) -> ${debian}`);
  }

  const devices = domain.child('devices');
  const disks = devices?.all('disk') ?? [];
  disks.forEach((disk, i) => {
    const at = `/domain/devices/disk[${i + 1}]`;
    const device = disk.attrs['device'] ?? 'disk';
    if (!disk.child('source') && (device === 'cdrom' || device === 'floppy')) return;
    let format = disk.child('driver')?.attrs['type'] ?? 'raw';
    if (!IMAGE_FORMATS.has(format)) {
      notes.push(`disk ${i + 1}: format ${format} -> raw`);
      ops.push('-u', `${at}/driver/@type`, '-v', 'raw');
      format = 'raw';
    }
    const image = join(work, `${name}.disk${i + 1}.${format}`);
    const size = device === 'cdrom' || device === 'floppy' ? '1M' : '64M';
    const made = run('qemu-img', ['create', '-q', '-f', format, image, size]);
    if (made.code !== 0) throw new Error(`qemu-img create -f ${format} ${image}: ${made.stderr.trim()}`);
    ops.push(
      '-d', `${at}/@type`, '-s', at, '-t', 'attr', '-n', 'type', '-v', 'file',
      '-d', `${at}/source`, '-d', `${at}/auth`, '-d', `${at}/encryption`, '-d', `${at}/backingStore`, '-d', `${at}/mirror`,
      '-s', at, '-t', 'elem', '-n', 'source', '-s', `${at}/source`, '-t', 'attr', '-n', 'file', '-v', inner(image),
    );
    if (device === 'lun') {
      ops.push('-u', `${at}/@device`, '-v', 'disk', '-d', `${at}/@sgio`, '-d', `${at}/@rawio`);
      notes.push(`disk ${i + 1}: lun -> disk (no SCSI device here)`);
    }
    if ((disk.attrs['type'] ?? 'file') !== 'file') notes.push(`disk ${i + 1}: ${disk.attrs['type']} source -> empty ${format} image`);
  });

  if ((devices?.all('filesystem') ?? []).length > 0) {
    const share = join(work, `${name}.share`);
    mkdirSync(share, { recursive: true });
    ops.push('-u', '/domain/devices/filesystem/source/@dir', '-v', inner(share));
    if ((devices?.all('filesystem') ?? []).some((f) => f.child('driver')?.attrs['type'] === 'handle')) {
      ops.push('-u', "/domain/devices/filesystem/driver[@type='handle']/@type", '-v', 'path');
      notes.push("9p driver handle -> path (QEMU 6.0 removed the handle backend: the input cannot start here either)");
    }
  }
  for (const [xpath, why] of [
    ['/domain/devices/hostdev', 'host device'],
    ["/domain/devices/interface[@type='hostdev']", 'host device interface'],
    ['/domain/devices/vsock', 'vsock (no /dev/vhost-vsock here)'],
  ] as const) {
    const count = run('xmlstarlet', ['sel', '-t', '-v', `count(${xpath})`, file]).stdout.trim();
    if (count !== '0') {
      ops.push('-d', xpath);
      notes.push(`${count} ${why} dropped`);
    }
  }
  // Guest RAM above the cap is cut in whole MiB, NUMA cells in proportion; <maxMemory> stays.
  let runRamBytes = ramBytes;
  if (ramBytes > ramCapBytes) {
    const cells = domain.child('cpu')?.child('numa')?.all('cell') ?? [];
    const cellBytes = cells.map((c) => Number(c.attrs['memory'] ?? 0) * (UNIT_BYTES[(c.attrs['unit'] ?? 'KiB').toLowerCase()] ?? 1024));
    const factor = ramCapBytes / ramBytes;
    const cellMiB = cellBytes.map((b) => Math.max(1, Math.floor((b * factor) / MiB)));
    runRamBytes = cells.length > 0 ? cellMiB.reduce((a, b) => a + b, 0) * MiB : Math.floor(ramCapBytes / MiB) * MiB;
    for (const what of ['memory', 'currentMemory']) if (domain.child(what)) ops.push('-d', `/domain/${what}/@unit`, '-u', `/domain/${what}`, '-v', String(runRamBytes / 1024));
    cellMiB.forEach((mib, i) => ops.push('-d', `/domain/cpu/numa/cell[${i + 1}]/@unit`, '-u', `/domain/cpu/numa/cell[${i + 1}]/@memory`, '-v', String(mib * 1024)));
    notes.push(`guest RAM ${ramBytes / MiB} -> ${runRamBytes / MiB} MiB, limit lowered by the same and 1/256 of it`);
  }
  xmlstarletEdit(file, ops);

  const tpmVersions = (devices?.all('tpm') ?? [])
    .map((t) => t.child('backend'))
    .filter((b): b is El => b?.attrs['type'] === 'emulator')
    .map((b) => b.attrs['version'] ?? '2.0');
  const runLimitBytes = limit === undefined ? undefined : scaledLimit(limit, ramBytes, runRamBytes);
  return { file, hardLimitBytes: limit, ramBytes, runRamBytes, runLimitBytes, tpmVersions, notes };
}

/**
 * The limit that tests the same headroom for QEMU when guest RAM is cut from
 * `ram` to `runRam` (preallocating every guest's full RAM would take minutes
 * per guest here, and some guests are larger than the host). The converter's
 * limit is pinned memory + a fixed QEMU part + 1/256 of RAM for page tables
 * (src/domain/memory.ts: QEMU's own 1/512, measured here +27 MiB over 1 GiB,
 * +31 over 4 GiB, +55..+77 over 16 GiB, and KVM's nested tables up to another
 * 1/512). So the limit drops by the removed RAM and the 1/256 the converter
 * gave it, which is the limit the converter writes for a guest of runRam: the
 * KVM half is never credited to a TCG QEMU.
 */
export function scaledLimit(limit: number, ram: number, runRam: number): number {
  const removed = ram - runRam;
  return limit - removed - Math.ceil(removed / PAGE_TABLE_DIVISOR);
}

/** `virsh domxml-to-native qemu-argv` of a domain file (not defined). */
export function renderArgv(file: string, stack: Stack = DEBIAN12): string {
  const r = virsh(['domxml-to-native', 'qemu-argv', '--xml', file], undefined, stack);
  if (r.code !== 0) throw new Error(`virsh domxml-to-native qemu-argv --xml ${basename(file)}: exit ${r.code}: ${r.stderr.trim()}`);
  return r.stdout;
}

// ---------------------------------------------------------------- the QEMU command

/** QEMU options that take no value (those libvirt may render). */
const FLAG_OPTIONS = new Set([
  '-S', '-no-user-config', '-nodefaults', '-no-shutdown', '-no-acpi', '-no-hpet', '-enable-kvm', '-nographic', '-mem-prealloc',
  '-no-reboot', '-snapshot', '-enable-fips', '-full-screen', '-usb', '-daemonize', '-no-fd-bootchk', '-only-migratable', '-preconfig',
]);
/** Devices that need host hardware or a daemon this test does not run. */
const HOST_DEVICE_DRIVERS = /^(vfio-|vhost-vsock|vhost-scsi|vhost-user-(blk|scsi|gpu|input|i2c|gpio|rng|vsock)|usb-host|pci-assign|ivshmem-doorbell)/;

export interface Helper {
  kind: 'swtpm' | 'virtiofsd';
  /** The socket QEMU connects to (host path). */
  socket: string;
  /** The host argv that runs it in the stack. */
  argv: string[];
}

export interface QemuCommand {
  /** The host argv that runs QEMU in the stack (debian13: through nsenter into the chroot's namespace). */
  argv: string[];
  /** Ids of the guest RAM backends (-object memory-backend-*), which -mem-prealloc makes resident. */
  memoryBackends: Set<string>;
  helpers: Helper[];
  /** Host path of the QMP socket the test listens on. */
  qmpSocket: string;
  notes: string[];
}

function legacy(props: Record<string, unknown>, first: string): string {
  const esc = (v: unknown): string => String(v).replace(/,/g, ',,');
  const head = props[first];
  const rest = Object.entries(props)
    .filter(([k]) => k !== first)
    .map(([k, v]) => `${k}=${esc(typeof v === 'boolean' ? (v ? 'on' : 'off') : v)}`);
  return [esc(head), ...rest].join(',');
}

/**
 * The argv to run for `rendered` (domxml-to-native output): libvirt's monitor
 * replaced by the test's QMP socket, the master-key secret dropped, every
 * network backend made user-mode, character devices made null (except those of
 * a TPM emulator or virtiofs, which get real helpers), graphics on sockets in
 * `work`, the VARS pflash pointed at a copy of its template, guest RAM
 * preallocated (-mem-prealloc), and paused (-S) unless `paused` is false.
 */
export function acceptanceCommand(rendered: string, name: string, work: string, tpmVersions: string[], paused = true, stack: Stack = DEBIAN12): QemuCommand {
  // `work` is a host path inside the stack's root; QEMU and its helpers run in the stack and see `inner(...)`.
  const inner = (hostPath: string): string => stack.innerPath(hostPath);
  const words = shellWords(rendered.trim());
  const start = words.findIndex((w) => /qemu-system-/.test(w));
  if (start < 0) throw new Error(`not a QEMU command line: ${rendered.slice(0, 200)}`);
  const opts: Array<[string, string | undefined]> = [];
  for (let i = start + 1; i < words.length; i++) {
    const flag = words[i]!;
    if (FLAG_OPTIONS.has(flag)) opts.push([flag, undefined]);
    else opts.push([flag, words[++i]]);
  }
  const notes: string[] = [];
  const helpers: Helper[] = [];
  const qmpPath = join(work, `${name}.qmp`);
  const qmpSocket = shortSocketPath(qmpPath);
  const monitorChardevs = new Set(opts.filter(([f]) => f === '-mon').map(([, v]) => String(qemuProps(v ?? '', 'chardev')['chardev'] ?? '')));
  const tpmChardevs = opts.filter(([f, v]) => f === '-tpmdev' && /^emulator|"type":"emulator"/.test(v ?? '')).map(([, v]) => String(qemuProps(v ?? '', 'type')['chardev']));
  const fsDevices = opts.filter(([f, v]) => f === '-device' && /vhost-user-fs/.test(v ?? ''));
  const fsChardevs = fsDevices.map(([, v]) => String(qemuProps(v ?? '', 'driver')['chardev']));
  const dropped = new Set<string>();
  const memoryBackends = new Set<string>();
  const out: string[] = [words[start]!];
  for (const [flag, value] of opts) {
    const v = value ?? '';
    switch (flag) {
      case '-S':
        if (paused) out.push('-S');
        continue;
      case '-mon':
        continue;
      case '-object': {
        const p = qemuProps(v, 'qom-type');
        const type = String(p['qom-type']);
        if (type === 'secret' || type.startsWith('tls-creds')) continue;
        if (type.startsWith('memory-backend-')) memoryBackends.add(String(p['id']));
        if (type === 'memory-backend-file' && typeof p['mem-path'] === 'string' && stack.run('test', ['-d', dirname(p['mem-path'])]).code !== 0) {
          notes.push(`${String(p['id'])}: mem-path ${p['mem-path']} -> /dev/shm`);
          p['mem-path'] = '/dev/shm';
          out.push('-object', JSON.stringify(p));
          continue;
        }
        out.push('-object', v);
        continue;
      }
      case '-chardev': {
        const p = qemuProps(v, 'backend');
        const id = String(p['id']);
        if (monitorChardevs.has(id)) continue;
        const tpm = tpmChardevs.indexOf(id);
        const fs = fsChardevs.indexOf(id);
        if (tpm >= 0 || fs >= 0) {
          const socket = join(work, `${name}.${tpm >= 0 ? `tpm${tpm}` : `fs${fs}`}.sock`);
          if (tpm >= 0) {
            const state = join(work, `${name}.tpm${tpm}`);
            mkdirSync(state, { recursive: true });
            const version = tpmVersions[tpm] ?? '2.0';
            helpers.push({
              kind: 'swtpm',
              socket,
              argv: stack.argv(['swtpm', 'socket', ...(version === '2.0' ? ['--tpm2'] : []), '--tpmstate', `dir=${inner(state)}`, '--ctrl', `type=unixio,path=${inner(socket)}`, '--terminate']),
            });
          } else {
            // The C virtiofsd (Debian 12) takes -o options, which the Rust one (Debian 13) deprecates.
            const share = inner(join(work, `${name}.share`));
            const options = virtiofsdLacksAccessPlatform(stack) ? ['-o', `source=${share}`, '-o', 'sandbox=chroot'] : [`--shared-dir=${share}`, '--sandbox=chroot'];
            helpers.push({ kind: 'virtiofsd', socket, argv: stack.argv([VIRTIOFSD, `--socket-path=${inner(socket)}`, ...options]) });
          }
          out.push('-chardev', `socket,id=${id},path=${inner(socket)}`);
          continue;
        }
        out.push('-chardev', `null,id=${id}`);
        continue;
      }
      case '-netdev': {
        const id = String(qemuProps(v, 'type')['id']);
        out.push('-netdev', `user,id=${id}`);
        continue;
      }
      case '-device': {
        const p = qemuProps(v, 'driver');
        const driver = String(p['driver']);
        if (HOST_DEVICE_DRIVERS.test(driver)) {
          dropped.add(driver);
          continue;
        }
        out.push('-device', v);
        continue;
      }
      case '-blockdev': {
        const p = qemuProps(v, 'driver');
        if (p['node-name'] === 'libvirt-pflash1-storage' && typeof p['filename'] === 'string') {
          const code = opts.map(([, x]) => x ?? '').find((x) => x.includes('libvirt-pflash0-storage') && x.includes('"filename"'));
          const template = varsTemplate(code ? String(qemuProps(code, 'driver')['filename']) : '', stack);
          const vars = join(work, `${name}_VARS.fd`);
          copyFileSync(stack.hostPath(template), vars);
          p['filename'] = inner(vars);
          out.push('-blockdev', JSON.stringify(p));
          continue;
        }
        out.push('-blockdev', v);
        continue;
      }
      case '-vnc': {
        const p = qemuProps(v, 'vnc');
        const keep = Object.fromEntries(Object.entries(p).filter(([k]) => ['audiodev', 'share', 'password', 'power-control'].includes(k)));
        out.push('-vnc', legacy({ vnc: `unix:${inner(join(work, `${name}.vnc`))}`, ...keep }, 'vnc'));
        continue;
      }
      case '-spice': {
        const p = qemuProps(v, 'spice');
        for (const k of ['port', 'tls-port', 'addr', 'x509-dir', 'tls-channel', 'plaintext-channel', 'password-secret', 'sasl', 'gl', 'rendernode', 'spice', 'ipv4', 'ipv6', 'unix']) delete p[k];
        const rest = Object.entries(p).map(([k, x]) => `,${k}=${String(x).replace(/,/g, ',,')}`).join('');
        out.push('-spice', `unix=on,addr=${inner(join(work, `${name}.spice`))},disable-ticketing=on${rest}`);
        continue;
      }
      case '-fw_cfg': {
        // <qemu:commandline> passes such files through; stand in for one this host lacks.
        const file = /(?:^|,)file=([^,]+)/.exec(v)?.[1];
        if (file !== undefined && !existsSync(stack.hostPath(file))) {
          const standIn = join(work, `${name}.fw_cfg${out.length}`);
          writeFileSync(standIn, '');
          notes.push(`-fw_cfg file ${file} -> empty stand-in`);
          out.push('-fw_cfg', v.replace(`file=${file}`, `file=${inner(standIn)}`));
          continue;
        }
        out.push('-fw_cfg', v);
        continue;
      }
      default:
        out.push(flag);
        if (value !== undefined) out.push(value);
    }
  }
  if (dropped.size > 0) notes.push(`devices needing host hardware dropped: ${[...dropped].join(', ')}`);
  out.push('-mem-prealloc', '-chardev', `socket,id=sevx-qmp,path=${inner(qmpPath)}`, '-mon', 'chardev=sevx-qmp,mode=control');
  // A guest without a memory backend object has its RAM in QEMU's default block.
  if (memoryBackends.size === 0) memoryBackends.add('pc.ram');
  return { argv: stack.argv(out), memoryBackends, helpers, qmpSocket, notes };
}

const shortDirs = new Map<string, string>();
/**
 * `path`, reached through a short symlink in /tmp when it is too long for a unix socket (108 bytes; Node
 * truncates the name it binds silently): a stack's work folder under the chroot is long. The socket is
 * still created in the folder, where the stack's QEMU finds it by its own (shorter) path.
 */
function shortSocketPath(path: string): string {
  if (path.length < 100) return path;
  const dir = dirname(path);
  let link = shortDirs.get(dir);
  if (link === undefined) {
    link = join(mkdtempSync('/tmp/sevx-test-ql-'), 'd');
    symlinkSync(dir, link);
    shortDirs.set(dir, link);
  }
  return join(link, basename(path));
}

/** The VARS template that goes with an OVMF CODE image (Debian's names), else the plain 4M one. */
function varsTemplate(code: string, stack: Stack): string {
  const dir = dirname(code);
  const base = basename(code);
  const candidates = [base.replace('CODE', 'VARS'), base.replace('CODE', 'VARS').replace('.secboot', ''), base.replace('CODE', 'VARS').replace('.secboot', '.ms')];
  for (const c of candidates) if (c !== base && existsSync(stack.hostPath(join(dir, c)))) return join(dir, c);
  return '/usr/share/OVMF/OVMF_VARS_4M.fd';
}

// ---------------------------------------------------------------- running it

export interface RamBlock {
  name: string;
  usedBytes: number;
  totalBytes: number;
}

export interface QemuOutcome {
  /** QMP query-status answer once QEMU finished starting, if it got that far. */
  status: string | undefined;
  /** Alive and in the cgroup when status was read. */
  alive: boolean;
  peakBytes: number;
  oomKills: number;
  /**
   * What SEV would pin on top of `peakBytes`: it registers (and so pins) every
   * RAM block at its full size, video memory and ROM space included, while a
   * paused TCG QEMU leaves all but the guest RAM it preallocated untouched.
   */
  unpinnedBlockBytes: number;
  ramBlocks: RamBlock[];
  exit: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  stderr: string;
  /** From spawning QEMU to its status answer. */
  startMs: number;
}

class Qmp {
  private buffer = '';
  private waiters: Array<(msg: Record<string, unknown>) => void> = [];
  private closed = false;
  constructor(private readonly socket: net.Socket) {
    socket.setEncoding('utf8');
    socket.on('data', (chunk: string) => {
      this.buffer += chunk;
      let nl: number;
      while ((nl = this.buffer.indexOf('\n')) >= 0) {
        const line = this.buffer.slice(0, nl).trim();
        this.buffer = this.buffer.slice(nl + 1);
        if (!line) continue;
        const msg = JSON.parse(line) as Record<string, unknown>;
        if ('event' in msg) continue;
        this.waiters.shift()?.(msg);
      }
    });
    // A QEMU killed mid-answer resets the connection; that is reported as its exit.
    socket.on('error', () => socket.destroy());
    socket.on('close', () => {
      this.closed = true;
      for (const w of this.waiters.splice(0)) w({ error: { desc: 'QMP connection closed' } });
    });
  }
  next(): Promise<Record<string, unknown>> {
    if (this.closed) return Promise.resolve({ error: { desc: 'QMP connection closed' } });
    return new Promise((resolve) => this.waiters.push(resolve));
  }
  async execute(command: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> {
    const reply = this.next();
    this.socket.write(JSON.stringify(args ? { execute: command, arguments: args } : { execute: command }) + '\n');
    return reply;
  }
}

/** Parses HMP `info ramblock` (QEMU 7.2; QEMU 10 adds HVA and RO): name, page size, offset, used, total. */
export function parseRamBlocks(text: string): RamBlock[] {
  const blocks: RamBlock[] = [];
  for (const line of text.split('\n')) {
    // QEMU 10 adds HVA and RO columns (and ends lines with \r\n).
    const m = /^\s*(\S+)\s+\d+\s+\S+\s+0x[0-9a-f]+\s+(0x[0-9a-f]+)\s+(0x[0-9a-f]+)(?:\s+0x[0-9a-f]+\s+\S+)?\s*$/i.exec(line);
    if (m) blocks.push({ name: m[1]!, usedBytes: Number(BigInt(m[2]!)), totalBytes: Number(BigInt(m[3]!)) });
  }
  return blocks;
}

/**
 * Bytes of RAM blocks that SEV would pin but that are not resident in a
 * paused TCG QEMU: guest RAM backends (`backends`, preallocated) count
 * nothing; ROMs, firmware flash and ACPI tables had their used part loaded,
 * so only the rest of them (resizable blocks are pinned at their maximum);
 * everything else, video memory above all, at its full size.
 */
export function unpinnedBlockBytes(blocks: RamBlock[], backends: Set<string>): number {
  return blocks.reduce((sum, b) => {
    if (backends.has(b.name)) return sum;
    const loaded = /rom|bios|flash|acpi|table-loader|rsdp|smbios/i.test(b.name) ? b.usedBytes : 0;
    return sum + Math.max(0, b.totalBytes - loaded);
  }, 0);
}

/** Waits until `path` exists, up to `ms`; false on timeout. */
async function waitForPath(path: string, ms: number, alive: () => boolean): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (existsSync(path)) return true;
    if (!alive()) return false;
    await new Promise((r) => setTimeout(r, 20));
  }
  return existsSync(path);
}

/** Spawns argv with its process put into the cgroup before it execs. */
function spawnInCgroup(argv: string[], cg: MemoryCgroup) {
  return spawn('sh', ['-c', 'echo $$ > "$0" || exit 125; exec "$@"', cg.procsFile, ...argv], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/**
 * Runs `cmd` in `cg` (helpers first, in the same cgroup: libvirt puts swtpm
 * and virtiofsd into the domain's cgroup as well), waits for QMP to answer
 * query-status, which QEMU does only once it has built the machine and
 * preallocated all guest RAM, then reads the cgroup's peak and OOM count and
 * what SEV pinning would add. With `runMs`, QEMU runs (no -S) that long first.
 */
export async function runQemu(cmd: QemuCommand, cg: MemoryCgroup, opts: { timeoutMs: number; runMs?: number }): Promise<QemuOutcome> {
  const helperProcs = [];
  let stderr = '';
  try {
    for (const h of cmd.helpers) {
      rmSync(h.socket, { force: true });
      const p = spawnInCgroup(h.argv, cg);
      let exited = false;
      p.on('exit', () => (exited = true));
      p.stderr.on('data', (d: Buffer) => (stderr += `${h.kind}: ${d.toString()}`));
      helperProcs.push(p);
      if (!(await waitForPath(h.socket, 10000, () => !exited))) throw new Error(`${h.kind} did not create ${h.socket}: ${stderr.trim()}`);
    }
    rmSync(cmd.qmpSocket, { force: true });
    const server = net.createServer();
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(cmd.qmpSocket, resolve);
    });
    const t0 = Date.now();
    const qemu = spawnInCgroup(cmd.argv, cg);
    let exit: QemuOutcome['exit'];
    const exited = new Promise<void>((resolve) =>
      qemu.on('exit', (code, signal) => {
        exit = { code, signal };
        resolve();
      }),
    );
    qemu.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    const connection = new Promise<net.Socket>((resolve) => server.once('connection', resolve));
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<'timeout'>((resolve) => (timer = setTimeout(() => resolve('timeout'), opts.timeoutMs)));
    const outcome = (status: string | undefined, alive: boolean, blocks: RamBlock[], unpinned: number, startMs: number): QemuOutcome => ({
      status,
      alive,
      peakBytes: cg.peakBytes(),
      oomKills: cg.oomKills(),
      unpinnedBlockBytes: unpinned,
      ramBlocks: blocks,
      exit,
      stderr: stderr.trim(),
      startMs,
    });
    try {
      const first = await Promise.race([connection, exited.then(() => 'exited' as const), timeout]);
      if (first === 'exited' || first === 'timeout') return outcome(first === 'timeout' ? 'timeout before QMP connected' : undefined, false, [], 0, Date.now() - t0);
      const qmp = new Qmp(first);
      const ask = async (command: string, args?: Record<string, unknown>): Promise<Record<string, unknown>> => {
        const r = await Promise.race([qmp.execute(command, args), exited.then(() => ({ error: { desc: 'QEMU exited' } })), timeout.then(() => ({ error: { desc: 'timeout' } }))]);
        return r as Record<string, unknown>;
      };
      const greeting = await Promise.race([qmp.next(), exited.then(() => ({ error: { desc: 'QEMU exited' } })), timeout.then(() => ({ error: { desc: 'timeout' } }))]);
      if (!('QMP' in greeting)) {
        // The connection closed: QEMU is exiting (killed, or it refused its command line); report how.
        await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
        return outcome(undefined, false, [], 0, Date.now() - t0);
      }
      await ask('qmp_capabilities');
      let status = await ask('query-status');
      const startMs = Date.now() - t0;
      if (opts.runMs !== undefined && 'return' in status) {
        await new Promise((r) => setTimeout(r, opts.runMs));
        status = await ask('query-status');
      }
      const ret = status['return'] as { status?: string } | undefined;
      if (!ret?.status) return outcome(undefined, false, [], 0, startMs);
      const alive = exit === undefined && cg.pids().includes(qemu.pid ?? -1);
      const info = await ask('human-monitor-command', { 'command-line': 'info ramblock' });
      const blocks = parseRamBlocks(String(info['return'] ?? ''));
      if (blocks.length === 0) throw new Error(`info ramblock gave no blocks: ${JSON.stringify(info)}`);
      const result = outcome(ret.status, alive, blocks, unpinnedBlockBytes(blocks, cmd.memoryBackends), startMs);
      await ask('quit');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 10000))]);
      return result;
    } finally {
      clearTimeout(timer);
      if (exit === undefined) qemu.kill('SIGKILL');
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      server.close();
      rmSync(cmd.qmpSocket, { force: true });
    }
  } finally {
    for (const p of helperProcs) if (p.exitCode === null && p.signalCode === null) p.kill('SIGKILL');
  }
}

/** Whether `qemu-img` and the helpers' programs are here (setup.sh installs them with qemu-system-x86 and swtpm). */
export function missingPrograms(stack: Stack = DEBIAN12): string[] {
  // qemu-img runs on the host (it makes the images); the rest run in the stack.
  return [
    ...['qemu-img'].filter((p) => spawnSync('sh', ['-c', `command -v ${p}`]).status !== 0),
    ...['swtpm', VIRTIOFSD, 'qemu-system-x86_64'].filter((p) => stack.run('sh', ['-c', `command -v ${p}`]).code !== 0),
  ];
}

/** The virtiofsd the acceptance runs start (QEMU's own, from qemu-system-common). */
export const VIRTIOFSD = '/usr/lib/qemu/virtiofsd';

/** What QEMU says when iommu_platform meets a vhost-user-fs backend that does not offer VIRTIO_F_ACCESS_PLATFORM. */
export const VIRTIOFS_NO_ACCESS_PLATFORM = 'iommu_platform=true is not supported by the device';

/**
 * Whether the stack's virtiofsd lacks VIRTIO_F_ACCESS_PLATFORM: QEMU's C
 * virtiofsd (QEMU <= 7.2; its --version names the FUSE kernel interface) never
 * offered it, and neither does the Rust virtiofsd 1.13.2 of Debian 13, so QEMU
 * refuses a converted virtiofs share on both stacks.
 */
/** The newest Rust virtiofsd seen here refusing iommu_platform (Debian 13's, with QEMU 10.0). */
const LAST_RUST_VIRTIOFSD_WITHOUT_ACCESS_PLATFORM = '1.13.2';
const lacksAccessPlatform = new Map<string, boolean>();
export function virtiofsdLacksAccessPlatform(stack: Stack = DEBIAN12): boolean {
  const known = lacksAccessPlatform.get(stack.name);
  if (known !== undefined) return known;
  const r = stack.run(VIRTIOFSD, ['--version']);
  const text = `${r.stdout}${r.stderr}`;
  // The Rust virtiofsd up to 1.13.2 (Debian 13's) lacks it too: measured here, QEMU 10.0 refuses a converted
  // share with the same message. A later one is expected to offer it (and the share then to start).
  const rust = /^virtiofsd (\d+\.\d+\.\d+)/m.exec(text)?.[1];
  const lacks = /using FUSE kernel interface/.test(text) || (rust !== undefined && compareVersions(rust, LAST_RUST_VIRTIOFSD_WITHOUT_ACCESS_PLATFORM) <= 0);
  lacksAccessPlatform.set(stack.name, lacks);
  return lacks;
}

/** Whether a domain file has a virtiofs share. */
export function hasVirtiofs(file: string): boolean {
  const domain = parseXml(readFileSync(file, 'utf8'));
  return (domain.child('devices')?.all('filesystem') ?? []).some((f) => f.child('driver')?.attrs['type'] === 'virtiofs');
}
