#!/bin/busybox sh
# /init of the boot test's guest (test/integration/boot.test.ts). It prints proof
# lines, each starting "SEVX ", to the first serial port and powers off. It
# writes to /dev/ttyS0 itself rather than to the console, because a boot loader
# may replace the kernel command line and with it console=.
/bin/busybox --install -s /bin
export PATH=/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
exec >/dev/ttyS0 2>&1 </dev/null

say() { echo "SEVX $*"; }
say begin kernel=$(uname -r) cmdline=$(cat /proc/cmdline)

# virtio_pci first so that every driver loaded after it binds at once.
for m in virtio_pci virtio_scsi sd_mod sr_mod virtio_blk virtio_net virtio_balloon \
         virtio_console virtio_rng virtio_gpu virtio_input ahci efivarfs; do
  modprobe "$m" || say modprobe-failed "$m"
done

# The test attaches three block devices (boot disk, data disk, CD-ROM); SCSI
# scanning finishes after modprobe returns, so wait for them (bounded).
i=0
while [ "$i" -lt 200 ]; do
  n=0
  for b in /sys/block/sd* /sys/block/vd* /sys/block/sr*; do [ -e "$b" ] && n=$((n + 1)); done
  [ "$n" -ge 3 ] && break
  i=$((i + 1)); sleep 0.1
done
say waited-for-block-devices tenths=$i found=$n

for d in /sys/bus/virtio/devices/*; do
  [ -e "$d" ] || continue
  drv=none
  [ -e "$d/driver" ] && drv=$(basename "$(readlink "$d/driver")")
  # numa: the node of the PCI device under it (-1 without one), to prove a device kept its expander bus's node.
  numa=$(cat "$d/../numa_node" 2>/dev/null || echo none)
  say virtio "${d##*/}" device=$(cat "$d/device") driver=$drv features=$(cat "$d/features") numa=$numa
done

# Each disk, CD-ROM and partition: the virtio device it sits on and the text in
# its first 64 bytes (the test gives the data disk and CD-ROM known content; the
# ESP's boot sector carries its FAT label). first= comes last: it may hold spaces.
for b in /sys/block/* /sys/block/*/*; do
  [ -e "$b/dev" ] || continue
  n=${b##*/}
  case $n in loop*|ram*|zram*) continue ;; esac
  path=$(readlink -f "$b")
  on=$(echo "$path" | grep -o 'virtio[0-9][0-9]*' | tail -n 1)
  first=$(dd if="/dev/$n" bs=2048 count=1 2>/dev/null | head -c 64 | strings -n 4 | tr '\n' ' ')
  say block "$n" on=${on:-none} path=$path first=$first
done

if [ -d /sys/firmware/efi ]; then
  say efi yes
  vars=/sys/firmware/efi/efivars
  mount -t efivarfs efivarfs "$vars" || say efivarfs-mount-failed
  G=8be4df61-93ca-11d2-aa0d-00e098032b8c
  # Whole files through od: busybox od -j misreads efivarfs, so the test skips
  # the 4 attribute bytes itself.
  hexof() { od -An -tx1 -v "$1" | tr -s ' \n' '  '; }
  for v in BootCurrent SecureBoot BootOrder; do
    [ -e "$vars/$v-$G" ] && say efivar "$v" $(hexof "$vars/$v-$G")
  done
  set -- $(hexof "$vars/BootCurrent-$G")
  if [ $# -ge 6 ]; then
    entry=Boot$(echo "$6$5" | tr a-f A-F)
    [ -e "$vars/$entry-$G" ] && say efivar "$entry" $(hexof "$vars/$entry-$G")
  fi
else
  say efi no
fi

dmesg | grep -iE 'refuses features|virtio.*(fail|error)|SEV|Memory Encryption|iommu|secure ?boot|lockdown' |
  while read -r line; do say dmesg "$line"; done
say done
sync
poweroff -f
