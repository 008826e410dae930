import { bootDisk, devicesOf, diskBus, moveDiskToVirtioScsi, pinBootDisk } from '../domain/devices.js';
import type { Rule } from './types.js';

export const bootDiskToVirtioScsi: Rule = {
  name: 'boot-disk-to-virtio-scsi',
  description: 'moves a virtio-blk boot disk to virtio-scsi',
  apply(ctx) {
    const devices = devicesOf(ctx.domain);
    const disk = bootDisk(devices);
    if (!disk || diskBus(disk) !== 'virtio') return;
    // virtio-blk's bounce buffers are too small to boot an SEV guest on kernels before 5.1.
    const moved = moveDiskToVirtioScsi(devices, disk, (what) => ctx.change(`${what}: the boot disk needs a virtio-scsi controller`));
    ctx.change(`boot disk ${moved}: an SEV guest cannot boot reliably from virtio-blk (bounce-buffer limits)`);
    const pinned = pinBootDisk(ctx.domain, devices, disk);
    if (pinned) ctx.change(pinned);
    ctx.warn(`the boot disk is now ${disk.first('target')?.attr('dev')} on virtio-scsi: the guest needs a virtio-scsi driver (Windows: vioscsi) and must not name it /dev/vdX in fstab or its boot loader`);
  },
};
