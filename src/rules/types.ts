import type { XmlElement } from '../xml/xmlapi.js';
import type { DomainCaps } from '../host/domcaps.js';
import type { FirmwareDescriptor } from '../host/firmware.js';

export type MemoryPinning = 'hard-limit' | 'locked';

/** What `--model` and the tag's `model` may ask for. */
export const SEV_MODELS = ['sev', 'sev-es', 'sev-snp'] as const;
export type SevModel = (typeof SEV_MODELS)[number];

export interface TransformOptions {
  /** `--policy`: overrides the tag's and the domain's policy (an SEV-SNP policy when the model is sev-snp). */
  policy?: string;
  /** `--model`: overrides the tag's model; SEV-SNP is only ever chosen by this, the tag or an existing sev-snp launchSecurity. */
  model?: SevModel;
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
  /**
   * The libvirt daemon's version (e.g. '11.3.0'), when it can be asked
   * (not when the host is described by a --domcaps file or a cache); only
   * asked to name the version in a refusal.
   */
  libvirtVersion?(): string | undefined;
  /**
   * True when the host's KVM runs SEV-SNP (kvm_amd parameter sev_snp on):
   * AMD firmware then disables SEV-ES (CVE-2025-48514). undefined: unknown.
   */
  snpActive?(): boolean | undefined;
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
