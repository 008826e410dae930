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
