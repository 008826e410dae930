import { createElement, ensureChild, insertOrdered, removeElement } from '../xml/edit.js';
import { DOMAIN_ORDER, FEATURES_ORDER, OS_ORDER } from '../domain/libvirt-order.js';
import { isUefiLoader } from '../domain/firmware.js';
import type { Rule, RuleContext } from './types.js';
import type { XmlElement } from '../xml/xmlapi.js';

const BIOS_WARNING =
  'the guest was set up for BIOS and now boots via UEFI: its OS must be able to boot via UEFI (a BIOS/MBR install will not boot)';

/** OVMF ships CODE and VARS files side by side: OVMF_CODE_4M.fd pairs with OVMF_VARS_4M.fd. */
function varsTemplateFor(code: string): string | undefined {
  const i = code.lastIndexOf('CODE');
  return i < 0 ? undefined : code.slice(0, i) + 'VARS' + code.slice(i + 4);
}

function explicitLoader(ctx: RuleContext, os: XmlElement, path: string): void {
  const loader = os.first('loader');
  const wasUefi = os.attr('firmware') === 'efi' || isUefiLoader(loader);
  if (os.attr('firmware') !== undefined) {
    // An explicit loader replaces auto-selection; keeping both would let libvirt pick another one.
    os.removeAttr('firmware');
    ctx.change("removed <os firmware>: --firmware gives the loader explicitly");
  }
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

export const firmwareUefi: Rule = {
  name: 'firmware-uefi',
  description: 'boots the guest with UEFI (OVMF), the only firmware that can launch an SEV guest',
  apply(ctx) {
    const os = ctx.domain.first('os')!;
    ensureAcpi(ctx);
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
