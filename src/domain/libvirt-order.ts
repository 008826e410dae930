// The order in which `virsh dumpxml` prints elements, so that what we insert
// lands where libvirt itself would put it (and a re-define changes nothing).

export const DOMAIN_ORDER = [
  'name', 'uuid', 'genid', 'title', 'description', 'metadata', 'maxMemory', 'memory', 'currentMemory',
  'blkiotune', 'memtune', 'memoryBacking', 'vcpu', 'vcpus', 'iothreads', 'iothreadids', 'defaultiothread',
  'cputune', 'numatune', 'resource', 'sysinfo', 'bootloader', 'bootloader_args', 'os', 'idmap', 'features',
  'cpu', 'clock', 'on_poweroff', 'on_reboot', 'on_crash', 'on_lockfailure', 'pm', 'perf', 'devices',
  'seclabel', 'keywrap', 'launchSecurity',
] as const;

export const OS_ORDER = [
  'type', 'firmware', 'loader', 'nvram', 'kernel', 'initrd', 'cmdline', 'shim', 'dtb', 'acpi', 'init',
  'initarg', 'initenv', 'initdir', 'inituser', 'initgroup', 'boot', 'bootmenu', 'smbios', 'bios',
] as const;

export const FEATURES_ORDER = [
  'acpi', 'apic', 'pae', 'hap', 'viridian', 'privnet', 'hyperv', 'kvm', 'xen', 'pvspinlock', 'pmu', 'vmport',
  'gic', 'smm', 'ioapic', 'hpt', 'htm', 'nested-hv', 'msrs', 'ccf-assist', 'cfpc', 'sbbc', 'ibs', 'tcg',
  'async-teardown', 'ras', 'ps2', 'vmcoreinfo',
] as const;

export const MEMTUNE_ORDER = ['hard_limit', 'soft_limit', 'swap_hard_limit', 'min_guarantee'] as const;

export const MEMORY_BACKING_ORDER = [
  'hugepages', 'nosharepages', 'locked', 'source', 'access', 'allocation', 'discard',
] as const;

export const LAUNCH_SECURITY_ORDER = ['cbitpos', 'reducedPhysBits', 'policy', 'dhCert', 'session'] as const;

/** Children of <launchSecurity type='sev-snp'>, as libvirt prints them. */
export const LAUNCH_SECURITY_SNP_ORDER = [
  'cbitpos', 'reducedPhysBits', 'policy', 'guestVisibleWorkarounds', 'idBlock', 'idAuth', 'hostData',
] as const;

export const DEVICES_ORDER = [
  'emulator', 'disk', 'controller', 'lease', 'filesystem', 'interface', 'smartcard', 'serial', 'parallel',
  'console', 'channel', 'input', 'tpm', 'graphics', 'sound', 'audio', 'video', 'hostdev', 'redirdev',
  'redirfilter', 'hub', 'watchdog', 'memballoon', 'rng', 'nvram', 'panic', 'shmem', 'memory', 'iommu',
  'vsock', 'crypto',
] as const;

/** Children every device may end with (libvirt's device info), in order. */
const DEVICE_INFO = ['boot', 'alias', 'master', 'rom', 'acpi', 'address'] as const;

/** Child order inside each kind of device, as far as sev-xform inserts into it. */
export const DEVICE_CHILD_ORDER: Record<string, readonly string[]> = {
  disk: [
    'driver', 'auth', 'source', 'backingStore', 'geometry', 'blockio', 'mirror', 'target', 'iotune',
    'readonly', 'shareable', 'transient', 'serial', 'wwn', 'vendor', 'product', 'encryption', ...DEVICE_INFO,
  ],
  interface: [
    'mac', 'source', 'vlan', 'virtualport', 'ip', 'route', 'script', 'downscript', 'backenddomain', 'target',
    'guest', 'model', 'driver', 'backend', 'filterref', 'tune', 'teaming', 'link', 'mtu', 'coalesce',
    'bandwidth', 'port', ...DEVICE_INFO,
  ],
  controller: ['model', 'target', 'driver', ...DEVICE_INFO],
  // libvirt prints the virtio <driver> of these after their address.
  memballoon: ['stats', ...DEVICE_INFO, 'driver'],
  rng: ['rate', 'backend', 'driver', ...DEVICE_INFO],
  video: ['driver', 'model', ...DEVICE_INFO],
  input: ['source', 'driver', ...DEVICE_INFO],
  filesystem: ['driver', 'binary', 'source', 'target', 'idmap', 'readonly', 'space_hard_limit', 'space_soft_limit', ...DEVICE_INFO],
  vsock: ['cid', ...DEVICE_INFO, 'driver'],
  crypto: ['backend', 'driver', ...DEVICE_INFO],
};
