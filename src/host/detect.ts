// What `sev-xform host` finds out: whether this host (or a host image mounted
// at `root`) can run SEV and SEV-ES guests, one check at a time, each failed
// check with its fix. Files are read under `root`; versions and domcapabilities
// come from commands run through `run`, so tests inject both.

import { accessSync, constants, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { userInfo } from 'node:os';
import { FailureError, type Failure } from '../failure.js';
import { parseDomainCaps, type SevCaps } from './domcaps.js';
import { defaultFirmwareDirs, loadFirmwareDescriptors, sevFirmware, type FirmwareDescriptor } from './firmware.js';
import { VIRSH_DOMCAPS, type CommandResult, type RunCommand } from './facts.js';

export const TRAIT_SEV = 'HW_CPU_X86_AMD_SEV';
export const TRAIT_SEV_ES = 'HW_CPU_X86_AMD_SEV_ES';
export const TRAIT_SEV_SNP = 'HW_CPU_X86_AMD_SEV_SNP';

type Version = readonly [number, number, number];
/** Kernel 4.16 added SEV to KVM; QEMU 2.12 the sev-guest object; libvirt 4.5 launchSecurity. */
const KERNEL_MIN: Version = [4, 16, 0];
const QEMU_MIN: Version = [2, 12, 0];
/** QEMU 6.0 is the first release that launches SEV-ES guests. */
const QEMU_ES_MIN: Version = [6, 0, 0];
const LIBVIRT_MIN: Version = [4, 5, 0];
/** SEV-SNP: KVM support merged in Linux 6.11, QEMU's sev-snp-guest in 9.1, libvirt's type='sev-snp' in 10.5. */
const KERNEL_SNP_MIN: Version = [6, 11, 0];
const QEMU_SNP_MIN: Version = [9, 1, 0];
const LIBVIRT_SNP_MIN: Version = [10, 5, 0];

const KERNEL_CMDLINE_FIX = 'add `kvm_amd.sev=1 mem_encrypt=on` to the kernel command line and reboot';

export type CheckStatus = 'ok' | 'warn' | 'missing' | 'info';

export interface HostCheck {
  /** Stable name for machines, e.g. `kvm-amd-sev`. */
  id: string;
  status: CheckStatus;
  title: string;
  detail: string;
  fix?: string;
  /** What this result rules out: SEV guests (and so SEV-ES and SEV-SNP too), SEV-ES guests only, SEV-SNP guests only, or nothing. */
  blocks?: 'sev' | 'sev-es' | 'sev-snp';
}

export interface HostReport {
  /** The root files were read under ('/' for this host). */
  root: string;
  checks: HostCheck[];
  /** SEV guests can run: no check blocks them. */
  sev: boolean;
  /** SEV-ES guests can run as well. */
  sevEs: boolean;
  /** SEV-SNP guests can run as well (SEV-SNP checks are 'info' when not: SEV does not need them). */
  sevSnp: boolean;
  traits: string[];
  versions: { kernel: string | null; qemu: string | null; libvirt: string | null };
  domcaps: { source: string; sev: SevCaps | null; launchSecurityTypes: string[] | null; error: string | null };
  /** domcapabilities text verbatim, when it could be read (the cache stores it). */
  domcapsXml: string | null;
  /** Folders searched for firmware descriptors (under root), and the descriptors in effect. */
  firmwareDirs: string[];
  firmware: FirmwareDescriptor[];
  memTotalKiB: number | null;
}

export interface DetectOptions {
  /** Where /proc, /sys, /dev and the default firmware folders are read; default '/'. */
  root?: string;
  run: RunCommand;
  /** The user's home, for ~/.config/qemu/firmware (under root). */
  home?: string;
  /** Firmware descriptor folders, taken as given (not under root); default QEMU's folders under root. */
  firmwareDirs?: readonly string[];
  /** domcapabilities XML file to read instead of running virsh. */
  domcapsFile?: string;
}

type FileRead = { text: string } | { error: string };

function readUnder(root: string, path: string): FileRead {
  try {
    return { text: readFileSync(join(root, path), 'utf8') };
  } catch (e: unknown) {
    return { error: (e as NodeJS.ErrnoException).code ?? String(e) };
  }
}

/** A path as the host itself sees it: `root` taken off the front. */
export function hostPath(root: string, path: string): string {
  if (root === '/' || !path.startsWith(root + '/')) return path;
  return path.slice(root.length);
}

/** kvm_amd's bool parameters read `Y`/`N`; kernels before 5.12 used ints reading `1`/`0`. */
export function paramEnabled(text: string): boolean {
  return /^(1|Y|y)$/.test(text.trim());
}

export function parseVersion(text: string): Version | undefined {
  const m = /(\d+)\.(\d+)(?:\.(\d+))?/.exec(text);
  return m ? [Number(m[1]), Number(m[2]), Number(m[3] ?? 0)] : undefined;
}

function atLeast(v: Version, min: Version): boolean {
  for (let i = 0; i < 3; i++) if (v[i] !== min[i]) return v[i]! > min[i]!;
  return true;
}

const show = (v: Version): string => (v[2] === 0 ? `${v[0]}.${v[1]}` : v.join('.'));

function commandFailure(cmd: string, r: CommandResult): string {
  const why = (r.error ?? r.stderr.trim().split('\n')[0]) || `exit status ${r.status}`;
  return `\`${cmd}\` failed (${why})`;
}

function failureText(f: Failure): string {
  return f.kind === 'refused' ? `${f.element}: ${f.reason}` : f.message;
}

/** Runs `cmd args` and finds a version in its first line that matches `pattern`. */
function commandVersion(run: RunCommand, cmd: string, args: readonly string[], pattern: RegExp): { version?: string; why: string } {
  const line = [cmd, ...args].join(' ');
  const r = run(cmd, args);
  if (r.error || r.status !== 0) return { why: commandFailure(line, r) };
  const m = pattern.exec(r.stdout);
  if (!m?.[1]) return { why: `\`${line}\` printed no version: '${r.stdout.trim().split('\n')[0] ?? ''}'` };
  return { version: m[1], why: '' };
}

function cpuinfoField(text: string, name: string): string | undefined {
  const m = new RegExp(`^${name}\\s*:\\s*(.*)$`, 'm').exec(text);
  return m?.[1]?.trim();
}

function versionCheck(
  id: string,
  title: string,
  found: { version?: string; why: string; from?: string },
  min: Version,
  fix: string,
  esMin?: Version,
): HostCheck {
  const v = found.version === undefined ? undefined : parseVersion(found.version);
  if (!v) return { id, title, status: 'missing', detail: `unknown: ${found.why}`, fix, blocks: 'sev' };
  const text = found.version + (found.from ? ` (from ${found.from})` : '');
  if (!atLeast(v, min)) return { id, title, status: 'missing', detail: `${text}, older than ${show(min)}`, fix, blocks: 'sev' };
  if (esMin && !atLeast(v, esMin))
    return { id, title, status: 'warn', detail: `${text}: enough for SEV, SEV-ES needs ${show(esMin)}`, fix, blocks: 'sev-es' };
  return { id, title, status: 'ok', detail: text };
}

function userName(): string {
  try {
    const u = userInfo();
    return `${u.username} (uid ${u.uid})`;
  } catch {
    return 'the current user';
  }
}

function devSevCheck(root: string): HostCheck {
  const id = 'dev-sev';
  const title = '/dev/sev';
  const path = join(root, 'dev/sev');
  const fix = 'load the ccp driver (`modprobe ccp`) with SEV enabled in the firmware (BIOS) setup; QEMU needs /dev/sev to launch SEV guests';
  let kind: string;
  try {
    const st = statSync(path);
    kind = st.isCharacterDevice() ? 'character device' : st.isFile() ? 'regular file, not a device node' : 'not a device node';
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    return { id, title, status: 'missing', detail: code === 'ENOENT' ? 'not present' : `cannot be read (${code ?? String(e)})`, fix, blocks: 'sev' };
  }
  const can = (mode: number): boolean => {
    try {
      accessSync(path, mode);
      return true;
    } catch {
      return false;
    }
  };
  const read = can(constants.R_OK);
  const write = can(constants.W_OK);
  const who = userName();
  if (read && write) return { id, title, status: 'ok', detail: `present (${kind}), read/write for ${who}` };
  const access = read ? 'read only' : write ? 'write only' : 'no access';
  // QEMU runs as another user than this command, so this is a hint, not a verdict.
  return {
    id,
    title,
    status: 'warn',
    detail: `present (${kind}), but ${who} has ${access}; QEMU opens it read/write`,
    fix: 'give the QEMU user read/write access, e.g. a udev rule `KERNEL=="sev", GROUP="kvm", MODE="0660"`',
  };
}

function kvmParamCheck(root: string, name: 'sev' | 'sev_es' | 'sev_snp', moduleLoaded: boolean): HostCheck {
  const id = `kvm-amd-${name.replace('_', '-')}`;
  const title = `kvm_amd ${name} parameter`;
  const file = `/sys/module/kvm_amd/parameters/${name}`;
  const r = readUnder(root, file);
  const value = 'text' in r ? r.text.trim() : undefined;
  const on = value !== undefined && paramEnabled(value);
  const detail = !moduleLoaded
    ? 'kvm_amd module not loaded'
    : value === undefined
      ? 'error' in r && r.error !== 'ENOENT'
        ? `${file} cannot be read (${r.error})`
        : 'absent (this kernel has no such parameter)'
      : value;
  if (on) return { id, title, status: 'ok', detail };
  if (name === 'sev')
    return { id, title, status: 'missing', detail, fix: moduleLoaded ? KERNEL_CMDLINE_FIX : `load kvm_amd (\`modprobe kvm_amd\`) and ${KERNEL_CMDLINE_FIX}`, blocks: 'sev' };
  if (name === 'sev_es')
    return {
      id,
      title,
      status: 'warn',
      detail,
      fix: 'add `kvm_amd.sev_es=1` to the kernel command line (kernel >= 5.11) and leave SEV-ES ASIDs in the firmware setup',
      blocks: 'sev-es',
    };
  // SEV and SEV-ES do not need it: its absence is information, not a warning.
  return {
    id,
    title,
    status: 'info',
    detail: `${detail}; needed for SEV-SNP guests only`,
    fix: 'for SEV-SNP: enable SEV-SNP (and SMEE, SNP memory coverage) in the firmware (BIOS) setup and boot a kernel >= 6.11 with `kvm_amd.sev_snp=1`',
    blocks: 'sev-snp',
  };
}

interface DomcapsRead {
  source: string;
  xml: string | null;
  sev: SevCaps | null;
  /** null: not read, or no <launchSecurity> (libvirt < 10.5). */
  launchSecurityTypes: string[] | null;
  error: string | null;
}

function readDomcaps(opts: DetectOptions): DomcapsRead {
  let source: string;
  let xml: string;
  if (opts.domcapsFile !== undefined) {
    source = opts.domcapsFile;
    try {
      xml = readFileSync(opts.domcapsFile, 'utf8');
    } catch (e: unknown) {
      return { source, xml: null, sev: null, launchSecurityTypes: null, error: `cannot read ${source} (${(e as NodeJS.ErrnoException).code ?? String(e)})` };
    }
  } else {
    source = `virsh ${VIRSH_DOMCAPS.join(' ')}`;
    const r = opts.run('virsh', VIRSH_DOMCAPS);
    if (r.error || r.status !== 0) return { source, xml: null, sev: null, launchSecurityTypes: null, error: commandFailure(source, r) };
    xml = r.stdout;
  }
  try {
    const caps = parseDomainCaps(xml, source);
    return { source, xml, sev: caps.sev, launchSecurityTypes: caps.launchSecurityTypes ?? null, error: null };
  } catch (e: unknown) {
    if (e instanceof FailureError) return { source, xml, sev: null, launchSecurityTypes: null, error: failureText(e.failure) };
    throw e;
  }
}

function domcapsChecks(d: DomcapsRead): HostCheck[] {
  const title = 'libvirt domcapabilities SEV';
  if (!d.sev)
    return [
      {
        id: 'domcaps-sev',
        title,
        status: 'missing',
        detail: `unknown: ${d.error ?? 'not read'}`,
        fix: d.source.startsWith('virsh ')
          ? 'start libvirtd (or virtqemud) so that `virsh domcapabilities` answers, or pass --domcaps FILE'
          : 'pass a domcapabilities XML saved from `virsh domcapabilities --arch x86_64 --machine q35`',
        blocks: 'sev',
      },
    ];
  const s = d.sev;
  if (!s.supported)
    return [
      {
        id: 'domcaps-sev',
        title,
        status: 'missing',
        detail: `<sev supported='no'> (from ${d.source})`,
        fix: 'libvirt found no SEV: fix the lines above, then restart libvirtd so that it probes QEMU again',
        blocks: 'sev',
      },
    ];
  const checks: HostCheck[] = [];
  // libvirt >= 6.9 fills cbitpos/reducedPhysBits into launchSecurity from here; the filter needs them too.
  if (s.cbitpos === undefined || s.reducedPhysBits === undefined)
    checks.push({
      id: 'domcaps-sev',
      title,
      status: 'missing',
      detail: `<sev supported='yes'> without ${s.cbitpos === undefined ? '<cbitpos>' : '<reducedPhysBits>'}`,
      fix: 'upgrade libvirt: its SEV report is incomplete',
      blocks: 'sev',
    });
  else
    checks.push({ id: 'domcaps-sev', title, status: 'ok', detail: `supported, cbitpos ${s.cbitpos}, reducedPhysBits ${s.reducedPhysBits}` });

  const slots = 'SEV guest slots (maxGuests)';
  if (s.maxGuests === undefined)
    checks.push({ id: 'domcaps-max-guests', title: slots, status: 'warn', detail: 'not reported (libvirt older than 8.0): the slot limit is unknown' });
  else if (s.maxGuests === 0)
    checks.push({
      id: 'domcaps-max-guests',
      title: slots,
      status: 'missing',
      detail: '0: no SEV guest can start',
      fix: 'leave SEV ASIDs in the firmware (BIOS) setup: lower the SEV-ES ASID Space Limit or raise the SEV ASID count',
      blocks: 'sev',
    });
  else checks.push({ id: 'domcaps-max-guests', title: slots, status: 'ok', detail: String(s.maxGuests) });

  const esSlots = 'SEV-ES guest slots (maxESGuests)';
  if (s.maxESGuests === undefined)
    checks.push({
      id: 'domcaps-max-es-guests',
      title: esSlots,
      status: 'warn',
      detail: 'not reported (libvirt older than 8.0)',
      fix: 'install libvirt >= 8.0 to run SEV-ES guests',
      blocks: 'sev-es',
    });
  else if (s.maxESGuests === 0)
    checks.push({
      id: 'domcaps-max-es-guests',
      title: esSlots,
      status: 'warn',
      detail: '0: no SEV-ES guest can start',
      fix: 'raise the SEV-ES ASID Space Limit in the firmware (BIOS) setup',
      blocks: 'sev-es',
    });
  else checks.push({ id: 'domcaps-max-es-guests', title: esSlots, status: 'ok', detail: String(s.maxESGuests) });
  return checks;
}

function firmwareCheck(root: string, feature: string, found: FirmwareDescriptor[], all: number, dirs: readonly string[], es: boolean): HostCheck {
  const id = `firmware-${feature}`;
  const title = `OVMF firmware descriptor with ${feature}`;
  if (found.length > 0) return { id, title, status: 'ok', detail: found.map((d) => hostPath(root, d.file)).join(', ') };
  const detail = `none of the ${all} descriptor(s) in ${dirs.map((d) => hostPath(root, d)).join(', ')} lists ${feature} for a UEFI x86_64 q35 guest`;
  return es
    ? {
        id,
        title,
        status: 'warn',
        detail,
        fix: 'add a descriptor listing amd-sev and amd-sev-es under /etc/qemu/firmware for an OVMF build with SEV-ES support (Debian 12 ships none)',
        blocks: 'sev-es',
      }
    : {
        id,
        title,
        status: 'missing',
        detail,
        fix: 'install OVMF built with SEV support and its descriptor (Debian: the ovmf package) in /usr/share/qemu/firmware or /etc/qemu/firmware',
        blocks: 'sev',
      };
}

/** Kernel, QEMU and libvirt against SEV-SNP's minimums, in one line: SEV does not need them. */
function snpVersionsCheck(kernel: string | undefined, qemu: string | undefined, libvirt: string | undefined): HostCheck {
  const id = 'snp-versions';
  const title = 'SEV-SNP versions (kernel >= 6.11, QEMU >= 9.1, libvirt >= 10.5)';
  const parts: string[] = [];
  const short: string[] = [];
  for (const [name, text, min] of [
    ['kernel', kernel, KERNEL_SNP_MIN],
    ['QEMU', qemu, QEMU_SNP_MIN],
    ['libvirt', libvirt, LIBVIRT_SNP_MIN],
  ] as const) {
    const v = text === undefined ? undefined : parseVersion(text);
    if (!v) {
      parts.push(`${name} unknown`);
      short.push(name);
    } else if (!atLeast(v, min)) {
      parts.push(`${name} ${text} < ${show(min)}`);
      short.push(`${name} >= ${show(min)}`);
    } else parts.push(`${name} ${text}`);
  }
  if (short.length === 0) return { id, title, status: 'ok', detail: parts.join(', ') };
  return { id, title, status: 'info', detail: `${parts.join(', ')}; needed for SEV-SNP guests only`, fix: `for SEV-SNP: ${short.join(', ')} (Debian 13 ships libvirt 11.3 and QEMU 10.0)`, blocks: 'sev-snp' };
}

function snpFirmwareCheck(root: string, found: FirmwareDescriptor[], all: number, dirs: readonly string[]): HostCheck {
  const id = 'firmware-amd-sev-snp';
  const title = 'OVMF firmware descriptor with amd-sev-snp';
  if (found.length > 0) return { id, title, status: 'ok', detail: found.map((d) => hostPath(root, d.file)).join(', ') };
  return {
    id,
    title,
    status: 'info',
    detail: `none of the ${all} descriptor(s) in ${dirs.map((d) => hostPath(root, d)).join(', ')} lists amd-sev-snp (Debian ships none); needed for SEV-SNP guests only`,
    fix: "for SEV-SNP: build OVMF's AmdSev variant (edk2 OvmfPkg/AmdSev/AmdSevX64.dsc, a stateless OVMF.amdsev.fd) and add a descriptor listing amd-sev-snp in /etc/qemu/firmware, or convert with --firmware PATH",
    blocks: 'sev-snp',
  };
}

/** libvirt >= 10.5 lists what it can launch under <launchSecurity><enum name='sectype'>; sev-snp needs QEMU >= 9.1 too. */
function domcapsSnpCheck(d: DomcapsRead): HostCheck {
  const id = 'domcaps-sev-snp';
  const title = 'libvirt domcapabilities SEV-SNP';
  const fix = 'for SEV-SNP: libvirt >= 10.5 and QEMU >= 9.1 (restart libvirtd after upgrading so that it probes QEMU again)';
  if (!d.sev) return { id, title, status: 'info', detail: `unknown: ${d.error ?? 'not read'}`, fix, blocks: 'sev-snp' };
  const types = d.launchSecurityTypes;
  if (types === null) return { id, title, status: 'info', detail: `no <launchSecurity> element (from ${d.source}): libvirt older than 10.5`, fix, blocks: 'sev-snp' };
  if (!types.includes('sev-snp'))
    return { id, title, status: 'info', detail: `<launchSecurity> lists ${types.length > 0 ? types.join(', ') : "nothing (supported='no')"}, not sev-snp (from ${d.source})`, fix, blocks: 'sev-snp' };
  // SEV-SNP guests take their ASIDs from the SEV-ES range.
  const es = d.sev.maxESGuests;
  if (es === 0)
    return {
      id,
      title,
      status: 'info',
      detail: 'sev-snp listed, but <maxESGuests> is 0: SEV-SNP guests take their slots from the SEV-ES range, so none can start',
      fix: 'for SEV-SNP: raise the SEV-ES ASID Space Limit in the firmware (BIOS) setup',
      blocks: 'sev-snp',
    };
  return { id, title, status: 'ok', detail: `sev-snp listed${es === undefined ? '' : `; ${es} slot(s) in the SEV-ES range, shared with SEV-ES guests`}` };
}

export function detectHost(opts: DetectOptions): HostReport {
  const root = resolve(opts.root ?? '/');
  const checks: HostCheck[] = [];

  // CPU: SEV is an AMD EPYC feature; the kernel lists sev/sev_es only when the firmware enabled them.
  const cpuinfo = readUnder(root, '/proc/cpuinfo');
  if ('error' in cpuinfo) {
    const detail = `cannot read /proc/cpuinfo (${cpuinfo.error})`;
    checks.push({ id: 'cpu-vendor', title: 'CPU vendor', status: 'missing', detail, fix: 'run on the host itself, or point --root at a host image', blocks: 'sev' });
  } else {
    const vendor = cpuinfoField(cpuinfo.text, 'vendor_id') ?? 'unknown';
    const model = cpuinfoField(cpuinfo.text, 'model name');
    const flags = new Set((cpuinfoField(cpuinfo.text, 'flags') ?? '').split(/\s+/));
    const amd = vendor === 'AuthenticAMD';
    checks.push(
      amd
        ? { id: 'cpu-vendor', title: 'CPU vendor', status: 'ok', detail: `${vendor}${model ? ` (${model})` : ''}` }
        : {
            id: 'cpu-vendor',
            title: 'CPU vendor',
            status: 'missing',
            detail: `${vendor}${model ? ` (${model})` : ''}: SEV is an AMD EPYC feature`,
            fix: 'run SEV guests on an AMD EPYC host',
            blocks: 'sev',
          },
    );
    // The flags are absent when the firmware did not enable the feature (or the CPU lacks it).
    const flagCheck = (flag: string, missing: HostCheck['status'], fix: string, blocks: HostCheck['blocks']): HostCheck => {
      const id = `cpu-flag-${flag.replace('_', '-')}`;
      const title = `CPU flag ${flag}`;
      return flags.has(flag)
        ? { id, title, status: 'ok', detail: 'present' }
        : { id, title, status: missing, detail: 'absent from /proc/cpuinfo', fix, blocks };
    };
    checks.push(
      flagCheck('sev', 'missing', amd ? 'enable SME and SEV in the firmware (BIOS) setup (AMD EPYC only)' : 'run SEV guests on an AMD EPYC host', 'sev'),
      flagCheck(
        'sev_es',
        'warn',
        amd ? 'enable SEV-ES in the firmware (BIOS) setup (EPYC Rome or later) and boot a kernel >= 5.11' : 'run SEV-ES guests on an AMD EPYC Rome or later host',
        'sev-es',
      ),
      // Only SEV-SNP needs it, so its absence is 'info', not a warning.
      flagCheck(
        'sev_snp',
        'info',
        amd ? 'for SEV-SNP: an EPYC Milan or later, with SEV-SNP enabled in the firmware (BIOS) setup' : 'run SEV-SNP guests on an AMD EPYC Milan or later host',
        'sev-snp',
      ),
    );
  }

  let kvmAmdLoaded = true;
  try {
    statSync(join(root, 'sys/module/kvm_amd'));
  } catch {
    kvmAmdLoaded = false;
  }
  const snpParam = kvmParamCheck(root, 'sev_snp', kvmAmdLoaded);
  checks.push(kvmParamCheck(root, 'sev', kvmAmdLoaded), kvmParamCheck(root, 'sev_es', kvmAmdLoaded), snpParam);
  // AMD's fix for CVE-2025-48514 has the firmware refuse SEV-ES guests once SEV-SNP is initialised.
  if (snpParam.status === 'ok')
    checks.push({
      id: 'sev-es-on-snp-host',
      title: 'SEV-ES beside SEV-SNP',
      status: 'warn',
      detail: 'kvm_amd sev_snp is on: AMD firmware with the CVE-2025-48514 fix disables SEV-ES while SEV-SNP is enabled, so SEV-ES guests cannot start',
      fix: "run those guests as SEV-SNP (tag model='sev-snp') or SEV, or boot with `kvm_amd.sev_snp=0` to run SEV-ES instead of SEV-SNP",
      blocks: 'sev-es',
    });
  checks.push(devSevCheck(root));

  const osrelease = readUnder(root, '/proc/sys/kernel/osrelease');
  let kernel: { version?: string; why: string };
  if ('text' in osrelease) kernel = { version: osrelease.text.trim(), why: '' };
  else if (root === '/') kernel = commandVersion(opts.run, 'uname', ['-r'], /^(\S+)/);
  else kernel = { why: `cannot read /proc/sys/kernel/osrelease under ${root} (${osrelease.error})` };
  checks.push(versionCheck('kernel', 'kernel', kernel, KERNEL_MIN, 'boot a kernel >= 4.16 (SEV-ES needs >= 5.11)'));

  const qemu = commandVersion(opts.run, 'qemu-system-x86_64', ['--version'], /QEMU emulator version (\d+\.\d+(?:\.\d+)?)/);
  checks.push(versionCheck('qemu', 'QEMU', qemu, QEMU_MIN, 'install QEMU >= 2.12 (SEV-ES needs >= 6.0)', QEMU_ES_MIN));

  // Monolithic libvirtd first, then the modular daemon, then the client library as a last resort.
  let libvirt: { version?: string; why: string; from?: string } = { why: '' };
  const whys: string[] = [];
  for (const cmd of ['libvirtd', 'virtqemud', 'virsh']) {
    const found = commandVersion(opts.run, cmd, ['--version'], /(\d+\.\d+\.\d+)/);
    if (found.version) {
      libvirt = { ...found, from: `${cmd} --version` };
      break;
    }
    whys.push(found.why);
  }
  if (!libvirt.version) libvirt = { why: whys.join('; ') };
  checks.push(versionCheck('libvirt', 'libvirt', libvirt, LIBVIRT_MIN, 'install libvirt >= 4.5'));
  checks.push(snpVersionsCheck(kernel.version, qemu.version, libvirt.version));

  const firmwareDirs = opts.firmwareDirs ? [...opts.firmwareDirs] : defaultFirmwareDirs(opts.home).map((d) => join(root, d));
  const firmware = loadFirmwareDescriptors(firmwareDirs);
  checks.push(firmwareCheck(root, 'amd-sev', sevFirmware(firmware, ['amd-sev']), firmware.length, firmwareDirs, false));
  checks.push(firmwareCheck(root, 'amd-sev-es', sevFirmware(firmware, ['amd-sev', 'amd-sev-es']), firmware.length, firmwareDirs, true));
  checks.push(snpFirmwareCheck(root, sevFirmware(firmware, ['amd-sev-snp']), firmware.length, firmwareDirs));

  const domcaps = readDomcaps(opts);
  checks.push(...domcapsChecks(domcaps));
  checks.push(domcapsSnpCheck(domcaps));

  const meminfo = readUnder(root, '/proc/meminfo');
  const memMatch = 'text' in meminfo ? /^MemTotal:\s+(\d+) kB$/m.exec(meminfo.text) : null;

  const sev = !checks.some((c) => c.blocks === 'sev');
  const sevEs = sev && !checks.some((c) => c.blocks === 'sev-es');
  const sevSnp = sev && !checks.some((c) => c.blocks === 'sev-snp');
  return {
    root,
    checks,
    sev,
    sevEs,
    sevSnp,
    traits: [...(sev ? [TRAIT_SEV] : []), ...(sevEs ? [TRAIT_SEV_ES] : []), ...(sevSnp ? [TRAIT_SEV_SNP] : [])],
    versions: { kernel: kernel.version ?? null, qemu: qemu.version ?? null, libvirt: libvirt.version ?? null },
    domcaps: { source: domcaps.source, sev: domcaps.sev, launchSecurityTypes: domcaps.launchSecurityTypes, error: domcaps.error },
    domcapsXml: domcaps.xml,
    firmwareDirs,
    firmware,
    memTotalKiB: memMatch ? Number(memMatch[1]) : null,
  };
}
