// How a domain chooses its firmware, as both the launch-security and the
// firmware-uefi rules need to know it.

import type { XmlElement } from '../xml/xmlapi.js';
import type { TransformOptions } from '../rules/types.js';

/** A `<loader>` that is UEFI (OVMF/edk2) rather than SeaBIOS. */
export function isUefiLoader(loader: XmlElement | undefined): boolean {
  if (!loader) return false;
  return loader.attr('type') === 'pflash' || /ovmf|edk2|uefi/i.test(loader.text());
}

/**
 * True when libvirt will pick the firmware from QEMU's descriptors (so one
 * with the SEV features must exist), false when a loader path is given.
 */
export function firmwareAutoSelected(domain: XmlElement, options: TransformOptions): boolean {
  if (options.firmware !== 'auto') return false;
  return !isUefiLoader(domain.first('os')?.first('loader'));
}

/** A `<loader stateless='yes'>`: firmware without NVRAM, the only kind SEV-SNP can launch (it is measured whole). */
export function isStatelessLoader(loader: XmlElement | undefined): boolean {
  return loader?.attr('stateless') === 'yes';
}

/**
 * For SEV-SNP: true when libvirt will pick the firmware from QEMU's
 * descriptors, so one listing `amd-sev-snp` must exist. A loader path that
 * libvirt itself filled in under `<os firmware='efi'>` does not count: the
 * firmware-uefi rule lets libvirt pick again, as a stateless one is needed.
 */
export function snpFirmwareAutoSelected(domain: XmlElement, options: TransformOptions): boolean {
  if (options.firmware !== 'auto') return false;
  const os = domain.first('os');
  const path = os?.first('loader')?.text().trim() ?? '';
  return path === '' || os?.attr('firmware') === 'efi';
}
