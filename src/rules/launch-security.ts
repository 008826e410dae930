import { createElement, insertOrdered } from '../xml/edit.js';
import type { XmlElement } from '../xml/xmlapi.js';
import { refuse, fail } from '../failure.js';
import { DOMAIN_ORDER, LAUNCH_SECURITY_ORDER, LAUNCH_SECURITY_SNP_ORDER } from '../domain/libvirt-order.js';
import {
  DEFAULT_SEV_ES_POLICY,
  DEFAULT_SEV_POLICY,
  DEFAULT_SNP_POLICY,
  POLICY_ES,
  POLICY_NODBG,
  POLICY_NOKS,
  SNP_POLICY_DEBUG,
  formatPolicy,
  formatSnpPolicy,
  parsePolicy,
  parseSnpPolicy,
} from '../domain/policy.js';
import { firmwareAutoSelected, snpFirmwareAutoSelected } from '../domain/firmware.js';
import { sevFirmware } from '../host/firmware.js';
import { parseVersion } from '../host/detect.js';
import { SEV_MODELS, type SevModel } from './types.js';
import type { Rule, RuleContext } from './types.js';

/** libvirt 10.5 added <launchSecurity type='sev-snp'> (and the domcapabilities <launchSecurity> element). */
export const LIBVIRT_SNP_MIN = [10, 5, 0] as const;

/** The SEV-SNP launch blobs libvirt passes to QEMU, and the size its formatdomain docs give each (SEV-SNP firmware ABI). */
export const SNP_BLOB_BYTES: ReadonlyArray<readonly [string, number, string]> = [
  ['guestVisibleWorkarounds', 16, 'guest-visible workarounds (GOSVW)'],
  ['idBlock', 96, 'ID block'],
  ['idAuth', 4096, 'ID authentication information structure'],
  ['hostData', 32, 'host data'],
];

interface Requested {
  /** undefined: not said; the policy then decides between SEV and SEV-ES. */
  model: SevModel | undefined;
  /** Where the model came from, for messages ('--model', 'the tag', 'the domain'). */
  source: string;
  /** The element or option to name when the request itself is at fault. */
  where: string;
}

/**
 * Which model is asked for: --model, else the tag's `model` (or its
 * `snp-policy`, which only SEV-SNP has), else an existing sev-snp
 * launchSecurity. SEV-SNP is never chosen any other way.
 */
function requestedModel(ctx: RuleContext, existing: XmlElement | undefined): Requested {
  const tag = ctx.tag;
  const tagModel = tag?.attr('model');
  if (tagModel !== undefined && !(SEV_MODELS as readonly string[]).includes(tagModel))
    refuse(tag!.path(), `model '${tagModel}' is not 'sev', 'sev-es' or 'sev-snp'`);
  const snpPolicy = tag?.attr('snp-policy');
  if (snpPolicy !== undefined && tagModel !== undefined && tagModel !== 'sev-snp')
    refuse(tag!.path(), `snp-policy asks for SEV-SNP, which conflicts with model '${tagModel}'`);
  if (snpPolicy !== undefined && tag?.attr('policy') !== undefined)
    refuse(tag!.path(), 'has both policy and snp-policy; give the SEV-SNP policy once, as snp-policy');
  if (snpPolicy !== undefined && ctx.options.model !== undefined && ctx.options.model !== 'sev-snp')
    refuse('--model', `'${ctx.options.model}' conflicts with the tag's snp-policy, which asks for SEV-SNP`);
  if (ctx.options.model !== undefined) return { model: ctx.options.model, source: '--model', where: '--model' };
  if (snpPolicy !== undefined) return { model: 'sev-snp', source: 'the tag', where: tag!.path() };
  if (tagModel !== undefined) return { model: tagModel as SevModel, source: 'the tag', where: tag!.path() };
  if (existing?.attr('type') === 'sev-snp') return { model: 'sev-snp', source: 'the domain', where: existing.path() };
  return { model: undefined, source: 'the default', where: tag?.path() ?? 'domain' };
}

interface Wanted {
  policy: number;
  /** Where the policy came from, for messages. */
  source: string;
  /** True when the policy is taken from the domain's own launchSecurity, whose text then stays as written. */
  fromDomain: boolean;
}

function wantedPolicy(ctx: RuleContext, existing: XmlElement | undefined, requested: Requested): Wanted {
  const tag = ctx.tag;
  const model = requested.model;
  let wanted: Wanted;
  const existingPolicy = existing?.first('policy');
  if (ctx.options.policy !== undefined) {
    wanted = { policy: parsePolicy(ctx.options.policy, '--policy'), source: '--policy', fromDomain: false };
  } else if (tag?.attr('policy') !== undefined) {
    wanted = { policy: parsePolicy(tag.attr('policy')!, `${tag.path()} policy`), source: 'the tag', fromDomain: false };
  } else if (existingPolicy) {
    wanted = { policy: parsePolicy(existingPolicy.text(), existingPolicy.path()), source: 'the domain', fromDomain: true };
  } else {
    const policy = model === 'sev-es' ? DEFAULT_SEV_ES_POLICY : DEFAULT_SEV_POLICY;
    wanted = { policy, source: 'the default', fromDomain: false };
  }
  const es = (wanted.policy & POLICY_ES) !== 0;
  if (model === 'sev' && es)
    refuse(requested.where, `model 'sev' conflicts with policy ${formatPolicy(wanted.policy)} from ${wanted.source}, which sets the SEV-ES bit 0x4`);
  if (model === 'sev-es' && !es)
    refuse(requested.where, `model 'sev-es' conflicts with policy ${formatPolicy(wanted.policy)} from ${wanted.source}, which lacks the SEV-ES bit 0x4`);
  return wanted;
}

/** SEV-ES needs ES slots on the host and, with auto-selection, an ES-capable firmware. */
function checkHostCanRun(ctx: RuleContext, policy: number): void {
  const sev = ctx.host.caps().sev;
  const es = (policy & POLICY_ES) !== 0;
  if (es) {
    // AMD's fix for CVE-2025-48514 turns SEV-ES off in the firmware once SEV-SNP is initialised.
    if (ctx.host.snpActive?.() === true)
      fail({ kind: 'host', message: `policy ${formatPolicy(policy)} asks for SEV-ES, but this host runs SEV-SNP (kvm_amd sev_snp is on), and AMD firmware with the CVE-2025-48514 fix disables SEV-ES while SEV-SNP is enabled; use model 'sev-snp' (or 'sev'), or boot with kvm_amd.sev_snp=0` });
    if (sev.maxESGuests === undefined)
      fail({ kind: 'host', message: `policy ${formatPolicy(policy)} asks for SEV-ES, but domcapabilities do not report <maxESGuests> (libvirt < 8.0), so SEV-ES support cannot be confirmed` });
    if (sev.maxESGuests === 0)
      fail({ kind: 'host', message: `policy ${formatPolicy(policy)} asks for SEV-ES, but the host has no SEV-ES slots (domcapabilities <maxESGuests>0</maxESGuests>); use model 'sev' or enable SEV-ES in the BIOS` });
  } else if (sev.maxGuests === 0) {
    // A warning, not a refusal: CPUID reports 0 slots on hosts that only emulate SEV for testing.
    ctx.warn('domcapabilities report <maxGuests>0</maxGuests>: no SEV guest can start until the host has SEV slots (ASIDs)');
  }
  if (!firmwareAutoSelected(ctx.domain, ctx.options)) return;
  const all = ctx.host.firmware();
  const needed = es ? ['amd-sev', 'amd-sev-es'] : ['amd-sev'];
  const broken = ctx.host.brokenFirmware?.() ?? [];
  if (sevFirmware(all, needed).length > 0) {
    if (broken.length > 0) ctx.warn(`firmware descriptor(s) ${broken.join(', ')} cannot be read or are not JSON; libvirt skips them`);
    return;
  }
  // A broken descriptor may be the SEV firmware: say so rather than that none exists.
  if (broken.length > 0)
    fail({ kind: 'host', message: `no usable firmware descriptor lists '${needed.join("' and '")}', and ${broken.join(', ')} cannot be read or is not JSON; fix or remove it, or pass --firmware PATH` });
  const where = ctx.host.firmwareDirs.join(', ');
  if (es)
    fail({ kind: 'host', message: `SEV-ES needs a UEFI firmware descriptor listing 'amd-sev-es' for libvirt to pick, and none is in ${where}; install one or pass --firmware PATH` });
  if (all.length > 0)
    fail({ kind: 'host', message: `no UEFI firmware descriptor in ${where} lists 'amd-sev'; libvirt could not pick an SEV firmware; install OVMF with SEV support or pass --firmware PATH` });
  ctx.warn(`no firmware descriptors found in ${where}: cannot confirm that libvirt will find an 'amd-sev' firmware on this host`);
}

function setChild(ctx: RuleContext, ls: XmlElement, name: string, value: string, why: string, order: readonly string[] = LAUNCH_SECURITY_ORDER): void {
  const el = ls.first(name);
  if (!el) {
    insertOrdered(ls, createElement(name, [], value), order);
    ctx.change(`added <${name}>${value}</${name}> to <launchSecurity>: ${why}`);
  } else if (el.text().trim() !== value) {
    const old = el.text().trim();
    el.setText(value);
    ctx.change(`changed <launchSecurity><${name}> from ${old} to ${value}: ${why}`);
  }
}

/** What writeLaunchSecurity writes: the model's element, the host's bits and the policy as text. */
interface LaunchSecurityText {
  type: 'sev' | 'sev-snp';
  cbitpos: string;
  rpb: string;
  policy: string;
  /** where the policy came from, and whether it is the domain's own (then its text stays as written) */
  source: string;
  fromDomain: boolean;
  /** why the element is needed, for the change line */
  why: string;
  order: readonly string[];
}

/** Adds <launchSecurity>, or brings an existing one to the host's bits and the wanted policy. */
function writeLaunchSecurity(ctx: RuleContext, existing: XmlElement | undefined, ls: LaunchSecurityText): void {
  if (!existing) {
    const el = createElement('launchSecurity', [['type', ls.type]], [
      createElement('cbitpos', [], ls.cbitpos),
      createElement('reducedPhysBits', [], ls.rpb),
      createElement('policy', [], ls.policy),
    ]);
    insertOrdered(ctx.domain, el, DOMAIN_ORDER);
    ctx.change(`added <launchSecurity type='${ls.type}'> with policy ${ls.policy} (from ${ls.source}), cbitpos ${ls.cbitpos}, reducedPhysBits ${ls.rpb}: ${ls.why}`);
    return;
  }
  setChild(ctx, existing, 'cbitpos', ls.cbitpos, "the C-bit position is the host's (domcapabilities)", ls.order);
  setChild(ctx, existing, 'reducedPhysBits', ls.rpb, "the address-bit reduction is the host's (domcapabilities)", ls.order);
  if (!ls.fromDomain) setChild(ctx, existing, 'policy', ls.policy, `${ls.type === 'sev-snp' ? 'SEV-SNP policy' : 'policy'} from ${ls.source}`, ls.order);
}

/** cbitpos and reducedPhysBits are the host's; SEV and SEV-SNP both read them from domcapabilities <sev>. */
function hostEncryptionBits(ctx: RuleContext, what: string): { cbitpos: string; rpb: string } {
  const caps = ctx.host.caps();
  if (!caps.sev.supported)
    fail({ kind: 'host', message: `domcapabilities report <sev supported='no'>: this host cannot run ${what} guests (see \`sev-xform host\`)` });
  if (caps.sev.cbitpos === undefined || caps.sev.reducedPhysBits === undefined)
    fail({ kind: 'host', message: 'domcapabilities <sev> lacks <cbitpos> or <reducedPhysBits>' });
  return { cbitpos: String(caps.sev.cbitpos), rpb: String(caps.sev.reducedPhysBits) };
}

function kernelHashesNeedKernel(domain: XmlElement): void {
  const ls = domain.first('launchSecurity')!;
  if (ls.attr('kernelHashes') === 'yes' && !domain.first('os')?.first('kernel'))
    refuse(ls.path(), "kernelHashes='yes' needs direct kernel boot (<os><kernel>), which this domain does not use");
}

function versionBelow(version: string, min: readonly [number, number, number]): boolean {
  const v = parseVersion(version);
  if (!v) return false;
  for (let i = 0; i < 3; i++) if (v[i] !== min[i]) return v[i]! < min[i]!;
  return false;
}

/**
 * SEV-SNP needs libvirt >= 10.5 and QEMU >= 9.1 (QEMU's sev-snp-guest object):
 * domcapabilities list sev-snp only when both are there. A libvirt older than
 * 10.5 prints no <launchSecurity> at all; its version is named when known.
 */
function checkSnpStack(ctx: RuleContext): void {
  const types = ctx.host.caps().launchSecurityTypes;
  const version = types === undefined || !types.includes('sev-snp') ? ctx.host.libvirtVersion?.() : undefined;
  if (version !== undefined && versionBelow(version, LIBVIRT_SNP_MIN))
    fail({ kind: 'host', message: `SEV-SNP needs libvirt >= 10.5 for <launchSecurity type='sev-snp'>, and this host runs libvirt ${version}; upgrade libvirt (Debian 13 ships 11.3) or ask for model 'sev' or 'sev-es'` });
  if (types === undefined)
    fail({ kind: 'host', message: "SEV-SNP needs libvirt >= 10.5 for <launchSecurity type='sev-snp'>, and these domcapabilities have no <launchSecurity> element, so libvirt is older than 10.5; upgrade libvirt (Debian 13 ships 11.3) or ask for model 'sev' or 'sev-es'" });
  if (!types.includes('sev-snp'))
    fail({ kind: 'host', message: `domcapabilities do not list sev-snp under <launchSecurity><enum name='sectype'> (${types.length > 0 ? `only ${types.join(', ')}` : "supported='no'"}): QEMU is older than 9.1 or cannot launch SEV-SNP guests here (see \`sev-xform host\`)` });
}

function checkSnpFirmware(ctx: RuleContext): void {
  if (!snpFirmwareAutoSelected(ctx.domain, ctx.options)) return;
  const broken = ctx.host.brokenFirmware?.() ?? [];
  if (sevFirmware(ctx.host.firmware(), ['amd-sev-snp']).length > 0) {
    if (broken.length > 0) ctx.warn(`firmware descriptor(s) ${broken.join(', ')} cannot be read or are not JSON; libvirt skips them`);
    return;
  }
  const where = ctx.host.firmwareDirs.join(', ');
  const more = broken.length > 0 ? ` (${broken.join(', ')} cannot be read or is not JSON)` : '';
  fail({
    kind: 'host',
    message: `SEV-SNP needs a stateless UEFI firmware, OVMF's AmdSev build, and no firmware descriptor in ${where} lists 'amd-sev-snp'${more} (Debian ships none); build edk2's OvmfPkg/AmdSev/AmdSevX64.dsc and install OVMF.amdsev.fd with a descriptor listing amd-sev-snp in /etc/qemu/firmware, or pass --firmware PATH of such a build`,
  });
}

/** The blobs pass through as written; each must be base64 of the size libvirt documents, or QEMU refuses the launch. */
function checkSnpBlobs(ls: XmlElement): void {
  for (const [name, bytes, what] of SNP_BLOB_BYTES) {
    const el = ls.first(name);
    if (!el) continue;
    const text = el.text().replace(/\s+/g, '');
    if (text === '' || text.length % 4 !== 0 || !/^[A-Za-z0-9+/]+={0,2}$/.test(text))
      refuse(el.path(), `is not base64; libvirt takes the ${bytes}-byte ${what} base64-encoded`);
    const size = Buffer.from(text, 'base64').length;
    if (size !== bytes) refuse(el.path(), `decodes to ${size} bytes, but the ${what} is ${bytes} bytes (libvirt's formatdomain, SEV-SNP firmware ABI)`);
  }
  for (const sevOnly of ['dhCert', 'session']) {
    const el = ls.first(sevOnly);
    if (el) refuse(el.path(), `belongs to <launchSecurity type='sev'> (SEV attestation); SEV-SNP has no such element and libvirt rejects it`);
  }
  for (const attr of ['kernelHashes', 'authorKey', 'vcek']) {
    const v = ls.attr(attr);
    if (v !== undefined && v !== 'yes' && v !== 'no') refuse(ls.path(), `${attr}='${v}' is not 'yes' or 'no'`);
  }
}

function wantedSnpPolicy(ctx: RuleContext, existing: XmlElement | undefined): { policy: bigint; source: string; fromDomain: boolean } {
  const tag = ctx.tag;
  if (ctx.options.policy !== undefined) return { policy: parseSnpPolicy(ctx.options.policy, '--policy'), source: '--policy', fromDomain: false };
  for (const attr of ['snp-policy', 'policy']) {
    const text = tag?.attr(attr);
    if (text !== undefined) return { policy: parseSnpPolicy(text, `${tag!.path()} ${attr}`), source: 'the tag', fromDomain: false };
  }
  const el = existing?.first('policy');
  if (el) return { policy: parseSnpPolicy(el.text(), el.path()), source: 'the domain', fromDomain: true };
  return { policy: DEFAULT_SNP_POLICY, source: 'the default', fromDomain: false };
}

function applySnp(ctx: RuleContext, existing: XmlElement | undefined, requested: Requested): void {
  const { domain } = ctx;
  if (existing && existing.attr('type') !== 'sev-snp')
    refuse(existing.path(), `type '${existing.attr('type') ?? ''}' conflicts with SEV-SNP asked for by ${requested.source}; remove the <launchSecurity> element to convert this domain to SEV-SNP`);
  const wanted = wantedSnpPolicy(ctx, existing);
  checkSnpStack(ctx);
  const { cbitpos, rpb } = hostEncryptionBits(ctx, 'SEV-SNP');
  // SEV-SNP guests take their ASIDs from the SEV-ES range (the kernel's min_sev_asid - 1 slots).
  if (ctx.host.caps().sev.maxESGuests === 0)
    ctx.warn('domcapabilities report <maxESGuests>0</maxESGuests>: SEV-SNP guests take their slots (ASIDs) from the SEV-ES range, so none can start until the host has some');
  checkSnpFirmware(ctx);
  if (wanted.policy & SNP_POLICY_DEBUG)
    ctx.warn(`SEV-SNP policy ${formatSnpPolicy(wanted.policy)} allows debugging (bit 19, 0x80000): the host can then read and write guest memory`);
  writeLaunchSecurity(ctx, existing, {
    type: 'sev-snp', cbitpos, rpb, policy: formatSnpPolicy(wanted.policy), source: wanted.source, fromDomain: wanted.fromDomain,
    why: "without it the guest's memory is neither encrypted nor integrity-protected", order: LAUNCH_SECURITY_SNP_ORDER,
  });
  checkSnpBlobs(domain.first('launchSecurity')!);
  kernelHashesNeedKernel(domain);
}

export const launchSecurity: Rule = {
  name: 'launch-security',
  description: "adds <launchSecurity type='sev'> (or type='sev-snp' when asked for) with the policy and the host's cbitpos and reducedPhysBits",
  apply(ctx) {
    const { domain } = ctx;
    const type = domain.attr('type');
    if (type !== 'kvm') refuse('domain', `type '${type ?? ''}' is not 'kvm': SEV memory encryption needs KVM`);
    const existing = domain.first('launchSecurity');
    const existingType = existing?.attr('type');
    if (existing && existingType !== 'sev' && existingType !== 'sev-snp')
      refuse(existing.path(), `type '${existingType ?? ''}' is not handled by sev-xform, which configures 'sev' (SEV and SEV-ES) and 'sev-snp'`);
    const requested = requestedModel(ctx, existing);
    if (requested.model === 'sev-snp') return applySnp(ctx, existing, requested);
    if (existingType === 'sev-snp')
      refuse(existing!.path(), `type 'sev-snp' conflicts with model '${requested.model ?? 'sev'}' from ${requested.source}; remove the <launchSecurity> element to convert this domain to SEV or SEV-ES`);
    const wanted = wantedPolicy(ctx, existing, requested);
    const { cbitpos, rpb } = hostEncryptionBits(ctx, 'SEV');
    checkHostCanRun(ctx, wanted.policy);
    if ((wanted.policy & (POLICY_NODBG | POLICY_NOKS)) !== (POLICY_NODBG | POLICY_NOKS))
      ctx.warn(`policy ${formatPolicy(wanted.policy)} allows debugging or key sharing (bits 0x1/0x2 not both set): the host can then read guest memory`);
    writeLaunchSecurity(ctx, existing, {
      type: 'sev', cbitpos, rpb, policy: formatPolicy(wanted.policy), source: wanted.source, fromDomain: wanted.fromDomain,
      why: "without it the guest's memory is not encrypted", order: LAUNCH_SECURITY_ORDER,
    });
    kernelHashesNeedKernel(domain);
  },
};
