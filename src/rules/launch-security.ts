import { createElement, insertOrdered } from '../xml/edit.js';
import type { XmlElement } from '../xml/xmlapi.js';
import { refuse, fail } from '../failure.js';
import { DOMAIN_ORDER, LAUNCH_SECURITY_ORDER } from '../domain/libvirt-order.js';
import {
  DEFAULT_SEV_ES_POLICY,
  DEFAULT_SEV_POLICY,
  POLICY_ES,
  POLICY_NODBG,
  POLICY_NOKS,
  formatPolicy,
  parsePolicy,
} from '../domain/policy.js';
import { firmwareAutoSelected } from '../domain/firmware.js';
import { sevFirmware } from '../host/firmware.js';
import type { Rule, RuleContext } from './types.js';

interface Wanted {
  policy: number;
  /** Where the policy came from, for messages. */
  source: string;
  /** True when the policy is taken from the domain's own launchSecurity, whose text then stays as written. */
  fromDomain: boolean;
}

function wantedPolicy(ctx: RuleContext, existing: XmlElement | undefined): Wanted {
  const tag = ctx.tag;
  const model = tag?.attr('model');
  if (model !== undefined && model !== 'sev' && model !== 'sev-es')
    refuse(tag!.path(), `model '${model}' is not 'sev' or 'sev-es'`);
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
    refuse(tag!.path(), `model 'sev' conflicts with policy ${formatPolicy(wanted.policy)} from ${wanted.source}, which sets the SEV-ES bit 0x4`);
  if (model === 'sev-es' && !es)
    refuse(tag!.path(), `model 'sev-es' conflicts with policy ${formatPolicy(wanted.policy)} from ${wanted.source}, which lacks the SEV-ES bit 0x4`);
  return wanted;
}

/** SEV-ES needs ES slots on the host and, with auto-selection, an ES-capable firmware. */
function checkHostCanRun(ctx: RuleContext, policy: number): void {
  const sev = ctx.host.caps().sev;
  const es = (policy & POLICY_ES) !== 0;
  if (es) {
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

function setChild(ctx: RuleContext, ls: XmlElement, name: string, value: string, why: string): void {
  const el = ls.first(name);
  if (!el) {
    insertOrdered(ls, createElement(name, [], value), LAUNCH_SECURITY_ORDER);
    ctx.change(`added <${name}>${value}</${name}> to <launchSecurity>: ${why}`);
  } else if (el.text().trim() !== value) {
    const old = el.text().trim();
    el.setText(value);
    ctx.change(`changed <launchSecurity><${name}> from ${old} to ${value}: ${why}`);
  }
}

export const launchSecurity: Rule = {
  name: 'launch-security',
  description: "adds <launchSecurity type='sev'> with the policy and the host's cbitpos and reducedPhysBits",
  apply(ctx) {
    const { domain } = ctx;
    const type = domain.attr('type');
    if (type !== 'kvm') refuse('domain', `type '${type ?? ''}' is not 'kvm': SEV memory encryption needs KVM`);
    const existing = domain.first('launchSecurity');
    const existingType = existing?.attr('type');
    if (existing && existingType !== 'sev')
      refuse(existing.path(), `type '${existingType ?? ''}' is not handled by sev-xform, which configures 'sev' (SEV and SEV-ES)`);
    const wanted = wantedPolicy(ctx, existing);
    const caps = ctx.host.caps();
    if (!caps.sev.supported)
      fail({ kind: 'host', message: "domcapabilities report <sev supported='no'>: this host cannot run SEV guests (see `sev-xform host`)" });
    if (caps.sev.cbitpos === undefined || caps.sev.reducedPhysBits === undefined)
      fail({ kind: 'host', message: 'domcapabilities <sev> lacks <cbitpos> or <reducedPhysBits>' });
    checkHostCanRun(ctx, wanted.policy);
    if ((wanted.policy & (POLICY_NODBG | POLICY_NOKS)) !== (POLICY_NODBG | POLICY_NOKS))
      ctx.warn(`policy ${formatPolicy(wanted.policy)} allows debugging or key sharing (bits 0x1/0x2 not both set): the host can then read guest memory`);
    const cbitpos = String(caps.sev.cbitpos);
    const rpb = String(caps.sev.reducedPhysBits);
    const policyText = formatPolicy(wanted.policy);

    if (!existing) {
      const ls = createElement('launchSecurity', [['type', 'sev']], [
        createElement('cbitpos', [], cbitpos),
        createElement('reducedPhysBits', [], rpb),
        createElement('policy', [], policyText),
      ]);
      insertOrdered(domain, ls, DOMAIN_ORDER);
      ctx.change(`added <launchSecurity type='sev'> with policy ${policyText} (from ${wanted.source}), cbitpos ${cbitpos}, reducedPhysBits ${rpb}: without it the guest's memory is not encrypted`);
    } else {
      setChild(ctx, existing, 'cbitpos', cbitpos, "the C-bit position is the host's (domcapabilities)");
      setChild(ctx, existing, 'reducedPhysBits', rpb, "the address-bit reduction is the host's (domcapabilities)");
      if (!wanted.fromDomain) setChild(ctx, existing, 'policy', policyText, `policy from ${wanted.source}`);
    }
    const ls = domain.first('launchSecurity')!;
    if (ls.attr('kernelHashes') === 'yes' && !domain.first('os')?.first('kernel'))
      refuse(ls.path(), "kernelHashes='yes' needs direct kernel boot (<os><kernel>), which this domain does not use");
  },
};
