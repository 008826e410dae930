import type { XmlElement } from '../xml/xmlapi.js';
import type { DomainCaps } from '../host/domcaps.js';
import type { FirmwareDescriptor } from '../host/firmware.js';

export type MemoryPinning = 'hard-limit' | 'locked';

export interface TransformOptions {
  /** `--policy`: overrides the tag's and the domain's policy. */
  policy?: string;
  /** `--memory-pinning`; undefined means hard-limit unless the domain already locks memory. */
  memoryPinning?: MemoryPinning;
  /** `--firmware`: 'auto' (libvirt picks an SEV firmware) or the path of an OVMF code file. */
  firmware: string;
  /** `--qemu-overhead`: QEMU's own process memory above the pinned part, in KiB; undefined means DEFAULT_QEMU_OVERHEAD_KIB. */
  qemuOverheadKiB?: number;
}

/** What the rules may ask about the host; read lazily, so untagged domains never touch it. */
export interface HostFacts {
  caps(): DomainCaps;
  firmware(): readonly FirmwareDescriptor[];
  /** Where firmware() looked, for messages. */
  firmwareDirs: readonly string[];
  /** Descriptor files firmware() could not read or parse. */
  brokenFirmware?(): readonly string[];
}

export interface RuleContext {
  domain: XmlElement;
  /** The sev-xform tag, when the domain carries one. */
  tag: XmlElement | undefined;
  options: TransformOptions;
  host: HostFacts;
  /** Records one change, phrased "what: why". */
  change(what: string): void;
  /** Something the operator must know even when nothing is refused. */
  warn(message: string): void;
}

export interface Rule {
  name: string;
  description: string;
  apply(ctx: RuleContext): void;
}
