import { createElement, ensureChild, insertOrdered, removeElement } from '../xml/edit.js';
import { DOMAIN_ORDER, FEATURES_ORDER, OS_ORDER } from '../domain/libvirt-order.js';
import { isStatelessLoader, isUefiLoader } from '../domain/firmware.js';
import { refuse } from '../failure.js';
import type { Rule, RuleContext } from './types.js';
import type { XmlElement } from '../xml/xmlapi.js';

const BIOS_WARNING =
  'the guest was set up for BIOS and now boots via UEFI: its OS must be able to boot via UEFI (a BIOS/MBR install will not boot)';

/** OVMF ships CODE and VARS files side by side: OVMF_CODE_4M.fd pairs with OVMF_VARS_4M.fd. */
function varsTemplateFor(code: string): string | undefined {
  const i = code.lastIndexOf('CODE');
  return i < 0 ? undefined : code.slice(0, i) + 'VARS' + code.slice(i + 4);
}

/**
 * `--firmware PATH` replaces libvirt's auto-selection: keeping `<os firmware>`
 * would let libvirt pick another loader. Returns whether the guest booted via
 * UEFI before.
 */
function leaveAutoSelection(ctx: RuleContext, os: XmlElement): boolean {
  const wasUefi = os.attr('firmware') === 'efi' || isUefiLoader(os.first('loader'));
  if (os.attr('firmware') !== undefined) {
    os.removeAttr('firmware');
    ctx.change('removed <os firmware>: --firmware gives the loader explicitly');
  }
  return wasUefi;
}

function explicitLoader(ctx: RuleContext, os: XmlElement, path: string): void {
  const wasUefi = leaveAutoSelection(ctx, os);
  const loader = os.first('loader');
  if (!loader) {
    insertOrdered(os, createElement('loader', [['readonly', 'yes'], ['type', 'pflash']], path), OS_ORDER);
    ctx.change(`added <loader readonly='yes' type='pflash'>${path}</loader>: SEV guests boot with OVMF`);
  } else {
    let changed = loader.setText(path);
    changed = loader.setAttr('readonly', 'yes') || changed;
    changed = loader.setAttr('type', 'pflash') || changed;
    if (changed) ctx.change(`<loader> set to read-only pflash ${path}: SEV guests boot with OVMF`);
  }
  if (!os.first('nvram')) {
    const name = ctx.domain.first('name')?.text().trim() || 'guest';
    const template = varsTemplateFor(path);
    const attrs: Array<[string, string]> = template ? [['template', template]] : [];
    insertOrdered(os, createElement('nvram', attrs, `/var/lib/libvirt/qemu/nvram/${name}_VARS.fd`), OS_ORDER);
    ctx.change('added <nvram>: a pflash OVMF keeps its UEFI variables there');
  }
  if (!wasUefi) ctx.warn(BIOS_WARNING);
}

/** libvirt refuses UEFI on x86 without ACPI ("UEFI requires ACPI on this architecture"). */
function ensureAcpi(ctx: RuleContext): void {
  const features = ensureChild(ctx.domain, 'features', DOMAIN_ORDER);
  if (features.first('acpi')) return;
  insertOrdered(features, createElement('acpi'), FEATURES_ORDER);
  ctx.change('added <features><acpi/>: libvirt boots UEFI guests only with ACPI');
}

const SNP_WHY = 'SEV-SNP measures the whole firmware at launch, so it boots only a stateless one (no NVRAM)';

function dropNvram(ctx: RuleContext, os: XmlElement): void {
  const nvram = os.first('nvram');
  if (!nvram) return;
  removeElement(nvram);
  ctx.change(`removed <nvram>: ${SNP_WHY}`);
}

/** Secure Boot lives in the UEFI variable store, which the stateless AmdSev build has none of. */
function refuseSecureBoot(os: XmlElement): void {
  for (const f of os.first('firmware')?.elements('feature') ?? []) {
    const name = f.attr('name');
    if (f.attr('enabled') === 'yes' && (name === 'secure-boot' || name === 'enrolled-keys'))
      refuse(f.path(), `${name} is enabled, but the stateless AmdSev firmware SEV-SNP boots has no UEFI variable store and no Secure Boot (its measured launch takes that place); disable it or ask for model 'sev'`);
  }
}

/** `--firmware PATH` for SEV-SNP: the AmdSev build is loaded whole as a ROM (`-bios`), with no NVRAM. */
function snpExplicitLoader(ctx: RuleContext, os: XmlElement, path: string): void {
  const wasUefi = leaveAutoSelection(ctx, os);
  const loader = os.first('loader');
  const features = os.first('firmware');
  if (features) {
    removeElement(features);
    ctx.change('removed <os><firmware>: its features only steer auto-selection, which --firmware replaces');
  }
  if (!loader) {
    insertOrdered(os, createElement('loader', [['type', 'rom'], ['stateless', 'yes']], path), OS_ORDER);
    ctx.change(`added <loader type='rom' stateless='yes'>${path}</loader>: ${SNP_WHY}`);
  } else {
    let changed = loader.setText(path);
    for (const attr of ['readonly', 'secure']) changed = loader.removeAttr(attr) || changed;
    changed = loader.setAttr('type', 'rom') || changed;
    changed = loader.setAttr('stateless', 'yes') || changed;
    if (changed) ctx.change(`<loader> set to the stateless ROM ${path}: ${SNP_WHY}`);
  }
  dropNvram(ctx, os);
  if (!wasUefi) ctx.warn(BIOS_WARNING);
}

/**
 * SEV-SNP with auto-selection: `<os firmware='efi'>` and `<loader stateless='yes'/>`,
 * so that libvirt picks a descriptor listing amd-sev-snp. A loader libvirt
 * filled in under firmware='efi' (a pflash OVMF with NVRAM) is dropped so it
 * picks again; a pflash loader chosen by hand is the operator's to replace.
 */
function snpAutoFirmware(ctx: RuleContext, os: XmlElement): void {
  const loader = os.first('loader');
  const path = loader?.text().trim() ?? '';
  const efi = os.attr('firmware') === 'efi';
  const wasUefi = efi || isUefiLoader(loader);
  refuseSecureBoot(os);
  if (!efi && path !== '') {
    if (isStatelessLoader(loader)) return;
    if (isUefiLoader(loader))
      refuse(loader!.path(), `${path} is a ${loader!.attr('type') ?? 'pflash'} firmware chosen by hand, and ${SNP_WHY}: pass --firmware PATH of OVMF's AmdSev build, or remove <loader> and <nvram> to let libvirt pick one listing amd-sev-snp`);
  }
  if (loader && !(efi && isStatelessLoader(loader))) {
    removeElement(loader);
    ctx.change(`removed <loader>${path}</loader>: ${SNP_WHY}; libvirt picks one listing amd-sev-snp`);
  }
  dropNvram(ctx, os);
  if (!efi) {
    os.setAttr('firmware', 'efi');
    ctx.change("set <os firmware='efi'>: SEV-SNP only works with OVMF; libvirt picks a firmware that lists 'amd-sev-snp'");
  }
  if (!os.first('loader')) {
    insertOrdered(os, createElement('loader', [['stateless', 'yes']]), OS_ORDER);
    ctx.change(`added <loader stateless='yes'/>: ${SNP_WHY}`);
  }
  if (!wasUefi) ctx.warn(BIOS_WARNING);
}

export const firmwareUefi: Rule = {
  name: 'firmware-uefi',
  description: 'boots the guest with UEFI (OVMF), the only firmware that can launch an SEV guest (for SEV-SNP a stateless one)',
  apply(ctx) {
    const os = ctx.domain.first('os')!;
    ensureAcpi(ctx);
    // launch-security ran first: its type says which model this domain became.
    if (ctx.domain.first('launchSecurity')?.attr('type') === 'sev-snp') {
      if (ctx.options.firmware !== 'auto') return snpExplicitLoader(ctx, os, ctx.options.firmware);
      return snpAutoFirmware(ctx, os);
    }
    if (ctx.options.firmware !== 'auto') return explicitLoader(ctx, os, ctx.options.firmware);
    const loader = os.first('loader');
    if (os.attr('firmware') === 'efi' || isUefiLoader(loader)) return;
    if (loader) {
      removeElement(loader);
      ctx.change(`removed the BIOS <loader>${loader.text().trim()}</loader>: SEV needs OVMF`);
    }
    os.setAttr('firmware', 'efi');
    ctx.change("set <os firmware='efi'>: SEV only works with OVMF; libvirt picks a firmware that lists 'amd-sev'");
    // Left alone, libvirt picks a Secure Boot OVMF with Microsoft keys (seen on Debian 12),
    // which refuses unsigned kernels a BIOS guest may boot today.
    if (!os.first('firmware')) {
      insertOrdered(os, createElement('firmware', [], [createElement('feature', [['enabled', 'no'], ['name', 'secure-boot']])]), OS_ORDER);
      ctx.change("added <firmware><feature enabled='no' name='secure-boot'/>: the guest had no Secure Boot under BIOS, so keep it off");
    }
    ctx.warn(BIOS_WARNING);
  },
};
