import { bootDisk, devicesOf, diskBus, diskDevice, moveDiskToVirtioScsi, pinBootDisk, removeDevice } from '../domain/devices.js';
import type { Rule } from './types.js';

export const ideToVirtioScsi: Rule = {
  name: 'ide-to-virtio-scsi',
  description: 'moves IDE CD-ROMs and disks to virtio-scsi (q35 has no IDE)',
  apply(ctx) {
    const devices = devicesOf(ctx.domain);
    const boot = bootDisk(devices);
    let bootMoved = false;
    for (const disk of devices.elements('disk')) {
      if (diskBus(disk) !== 'ide') continue;
      bootMoved ||= disk === boot;
      const moved = moveDiskToVirtioScsi(devices, disk, (what) => ctx.change(`${what}: IDE devices need a new home`));
      ctx.change(`IDE ${diskDevice(disk)} ${moved}: q35 has no IDE bus`);
      if (diskDevice(disk) === 'disk')
        ctx.warn(`the IDE disk is now ${disk.first('target')?.attr('dev')} on virtio-scsi: the guest needs a virtio-scsi driver (Windows: vioscsi) to see it`);
    }
    const pinned = boot && bootMoved ? pinBootDisk(ctx.domain, devices, boot) : undefined;
    if (pinned) ctx.change(pinned);
    for (const ctrl of devices.elements('controller')) {
      if (ctrl.attr('type') !== 'ide') continue;
      removeDevice(ctrl, "<controller type='ide'>", ctx.warn);
      ctx.change('removed the IDE controller: q35 has none');
    }
  },
};
