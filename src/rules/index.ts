// The preset: every rule, in the order they run. Order matters: the machine
// becomes q35 before disks move off IDE, disks move before iommu is set on
// the controllers they land on.

import { launchSecurity } from './launch-security.js';
import { machineQ35 } from './machine-q35.js';
import { firmwareUefi } from './firmware-uefi.js';
import { bootDiskToVirtioScsi } from './boot-disk-to-virtio-scsi.js';
import { ideToVirtioScsi } from './ide-to-virtio-scsi.js';
import { virtioIommu } from './virtio-iommu.js';
import { memoryPinning } from './memory-pinning.js';
import { sevHygiene } from './sev-hygiene.js';
import type { Rule } from './types.js';

export const PRESET: readonly Rule[] = [
  launchSecurity,
  machineQ35,
  firmwareUefi,
  bootDiskToVirtioScsi,
  ideToVirtioScsi,
  virtioIommu,
  memoryPinning,
  sevHygiene,
];
