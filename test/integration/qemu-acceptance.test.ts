// QEMU acceptance, per stack: every golden output the stack's libvirt takes, and every generated
// domain of generated.test.ts's sample, converted, must start in QEMU and stay
// up with its guest RAM resident inside a memory cgroup at the converted
// hard_limit, as libvirt would run it. There is no SEV (nor maybe KVM) here, so
// QEMU runs a TCG copy, paused; support/qemu-run.ts lists every change.
//
// What "resident" means: SEV pins guest RAM at launch, so QEMU gets
// -mem-prealloc; SEV also pins every other RAM block (video memory, ROM space)
// at its full size, which a paused TCG QEMU never touches, so those bytes are
// added to the measured peak. Pass: QEMU answers QMP query-status after it has
// allocated everything, it was not OOM-killed, and peak + those blocks fit
// under the limit.
//
// Guest RAM above SEVX_QEMU_RAM_CAP_MIB (default 1024; 0 = no cap) is cut to
// it and the limit lowered by the same plus the 1/256 of it the converter gives page tables
// take (qemu-run.ts scaledLimit): the headroom for QEMU is what is tested, and
// preallocating every guest's full RAM would take many minutes here.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { createMemoryCgroup, memoryCgroupVersion } from '../support/cgroup.js';
import { SEED, generatedConversions } from '../support/generated-sample.js';
import { caseSkip, integrationStacks, libvirtCases, requirePrerequisites } from '../support/libvirt.js';
import type { Stack } from '../support/stack.js';
import {
  MiB, VIRTIOFS_NO_ACCESS_PLATFORM, acceptanceCommand, hasVirtiofs, missingPrograms, renderArgv, runQemu, tcgCopy, virtiofsdLacksAccessPlatform, type QemuOutcome, type TcgCopy,
} from '../support/qemu-run.js';

const capMiB = Number(process.env['SEVX_QEMU_RAM_CAP_MIB'] ?? 1024);
const RAM_CAP = capMiB > 0 ? capMiB * MiB : Number.POSITIVE_INFINITY;
/** Generated domains run two at a time (2 cores here); goldens one at a time. */
const PARALLEL = 2;

const mib = (bytes: number): string => (bytes / MiB).toFixed(0);

interface Verdict {
  ok: boolean;
  line: string;
  problems: string[];
  /** Limit minus what the guest needs (peak + blocks SEV pins), when it has a limit and came up. */
  spareBytes: number | undefined;
  /** QEMU's own refusal (its first error line, without timestamp or device JSON), when it exited before it was up. */
  qemuError?: string;
  /** The -device argument QEMU's error line names, verbatim, if it names one. */
  qemuErrorDevice?: string;
  /** The QEMU argv that ran. */
  argv: string[];
}

/** QEMU's first error line, without the timestamp, the program name and the -device argument it names. */
function qemuErrorOf(stderr: string): string | undefined {
  const line = stderr.split('\n').find((l) => /qemu-system-[^:]*: /.test(l) && !/warning:/.test(l));
  return line?.replace(/^.*?qemu-system-[^:]*: /, '').replace(/^-device \{.*?\}: /, '-device: ').replace(/"id":"[^"]*"/g, '');
}

const virtiofsLimited = new Map<string, boolean>();

/**
 * A guest with a virtiofs share on a stack whose virtiofsd lacks ACCESS_PLATFORM (Debian 12's C one): QEMU
 * must refuse it. Debian 13's Rust virtiofsd offers it, so there the share must start.
 */
function expectsVirtiofsRefusal(converted: string, stack: Stack): boolean {
  if (!virtiofsLimited.has(stack.name)) virtiofsLimited.set(stack.name, virtiofsdLacksAccessPlatform(stack));
  return virtiofsLimited.get(stack.name)! && hasVirtiofs(converted);
}

/**
 * Starts the TCG copy of `converted` in its cgroup and judges it. On debian13 the argv is libvirt 11's and
 * QEMU 10 runs in the chroot (nsenter into its daemon's namespace, after joining the cgroup on the host).
 */
async function accept(converted: string, name: string, label: string, work: string, stack: Stack): Promise<Verdict> {
  const copy: TcgCopy = tcgCopy(converted, name, work, RAM_CAP, stack);
  const cmd = acceptanceCommand(renderArgv(copy.file, stack), name, work, copy.tpmVersions, true, stack);
  const limit = copy.runLimitBytes;
  if (limit !== undefined && limit < copy.runRamBytes) {
    const hard = copy.hardLimitBytes!;
    const problem =
      hard < copy.ramBytes
        ? `hard_limit ${mib(hard)} MiB is below guest RAM ${mib(copy.ramBytes)} MiB: QEMU cannot even hold the RAM`
        : `hard_limit ${mib(hard)} MiB leaves ${mib(hard - copy.ramBytes)} MiB over guest RAM ${mib(copy.ramBytes)} MiB, less than the page tables mapping that RAM (1/512: ${mib(copy.ramBytes / 512)} MiB)`;
    return { ok: false, line: `qemu-acceptance[${stack.name}]: ${label}: ${problem} FAIL`, problems: [problem], spareBytes: limit - copy.runRamBytes, argv: cmd.argv };
  }
  const cg = createMemoryCgroup(name, limit);
  let o: QemuOutcome;
  try {
    o = await runQemu(cmd, cg, { timeoutMs: 60000 + (copy.runRamBytes / (1024 * MiB)) * 10000 });
  } finally {
    cg.remove();
  }
  const problems: string[] = [];
  if (expectsVirtiofsRefusal(converted, stack)) {
    // Known host limitation: this virtiofsd does not offer VIRTIO_F_ACCESS_PLATFORM, so QEMU must refuse the
    // converted share with exactly that message (the filter warns about it); anything else is a failure.
    const refused = o.status === undefined && o.stderr.includes(VIRTIOFS_NO_ACCESS_PLATFORM);
    if (!refused) problems.push(`expected QEMU to refuse the virtiofs share with "${VIRTIOFS_NO_ACCESS_PLATFORM}" (this virtiofsd lacks ACCESS_PLATFORM), got ${o.status ?? 'no status'}: ${o.stderr.split('\n').slice(0, 3).join(' | ') || 'no message'}`);
    const line = `qemu-acceptance[${stack.name}]: ${label}: known host limitation: QEMU refuses virtiofs ("${VIRTIOFS_NO_ACCESS_PLATFORM}": this virtiofsd does not offer VIRTIO_F_ACCESS_PLATFORM)${refused ? '' : ' FAIL'}`;
    return { ok: problems.length === 0, line, problems, spareBytes: undefined, argv: cmd.argv };
  }
  const needed = o.peakBytes + o.unpinnedBlockBytes;
  if (o.oomKills > 0) problems.push(`OOM-killed in the cgroup at limit ${limit === undefined ? 'none' : mib(limit)} MiB (peak ${mib(o.peakBytes)} MiB)`);
  if (o.status === undefined || !o.alive) {
    const how = o.exit ? (o.exit.signal ? `killed by ${o.exit.signal}` : `exited ${o.exit.code}`) : 'did not answer QMP';
    // QEMU's own lines first: a helper's (virtiofsd logs INFO/WARN lines) come before them in the capture.
    const lines = o.stderr.split('\n').filter((l) => !/warning:|\] (INFO|WARN) /.test(l) && l.trim() !== '');
    const ordered = [...lines.filter((l) => /qemu-system-|^qemu: /.test(l)), ...lines.filter((l) => !/qemu-system-|^qemu: /.test(l))];
    problems.push(`QEMU ${how} before it was up: ${ordered.slice(0, 3).join(' | ') || 'no message'}`);
  }
  if (limit !== undefined && o.status !== undefined && needed > limit)
    problems.push(`peak ${mib(o.peakBytes)} MiB + ${mib(o.unpinnedBlockBytes)} MiB of RAM blocks SEV pins = ${mib(needed)} MiB, over the limit ${mib(limit)} MiB`);
  const scaled = copy.runRamBytes !== copy.ramBytes ? ` [converted: RAM ${mib(copy.ramBytes)} MiB, hard_limit ${copy.hardLimitBytes === undefined ? 'none' : mib(copy.hardLimitBytes)} MiB]` : '';
  const line =
    `qemu-acceptance[${stack.name}]: ${label}: RAM ${mib(copy.runRamBytes)} MiB, peak ${mib(o.peakBytes)} MiB (+${mib(o.peakBytes - copy.runRamBytes)} MiB)` +
    `, +${mib(o.unpinnedBlockBytes)} MiB blocks SEV pins = +${mib(needed - copy.runRamBytes)} MiB over RAM` +
    `, limit ${limit === undefined ? 'none' : `${mib(limit)} MiB (headroom ${mib(limit - copy.runRamBytes)})`}${scaled}` +
    `${o.status ? `, ${o.status} in ${o.startMs} ms` : ''}${problems.length ? ' FAIL' : ''}`;
  const notes = [...copy.notes, ...cmd.notes];
  // Not o.exit: QEMU may still be exiting when its QMP connection closes.
  const refusedBy = o.status === undefined && o.oomKills === 0 ? qemuErrorOf(o.stderr) : undefined;
  const device = refusedBy !== undefined ? /qemu-system-[^:]*: -device (\{.*?\}): /.exec(o.stderr)?.[1] : undefined;
  return {
    ...(refusedBy !== undefined ? { qemuError: refusedBy } : {}),
    ...(device !== undefined ? { qemuErrorDevice: device } : {}),
    argv: cmd.argv,
    ok: problems.length === 0,
    line,
    problems: problems.map((p) => `${p}${notes.length ? ` (copy: ${notes.join('; ')})` : ''}`),
    spareBytes: limit !== undefined && o.status !== undefined ? limit - needed : undefined,
  };
}

const stacks = integrationStacks('qemu-acceptance.test.ts');
for (const stack of stacks) {
  // Disk images go where O_DIRECT works (cache='none' disks need it; /tmp may be tmpfs), inside the
  // stack's root: its libvirtd renders the paths and its QEMU opens them.
  const work = mkdtempSync(stack.hostPath('/var/tmp/sevx-test-qemu-'));
  let started = 0;

  test(stack.label('prerequisites: libvirtd, qemu-img, swtpm, virtiofsd, a memory cgroup controller'), () => {
    started = Date.now();
    requirePrerequisites(['qemu-img'], stack);
    assert.equal(missingPrograms(stack), [], `programs the QEMU runs need (${stack.name === 'debian12' ? 'setup.sh' : 'trixie-setup.sh'} installs them)`);
    const v = stack.versions();
    console.log(`qemu-acceptance[${stack.name}]: libvirt ${v.libvirt}, QEMU ${v.qemu}, virtiofsd ${virtiofsdLacksAccessPlatform(stack) ? 'without' : 'with'} ACCESS_PLATFORM, memory cgroup v${memoryCgroupVersion()}, guest RAM cap ${capMiB > 0 ? `${capMiB} MiB` : 'none'}`);
  });

  for (const c of libvirtCases()) {
    // Debian 12's libvirt renders the argv here; cases that need a newer libvirt are said so.
    // Cases that need a newer libvirt than the stack's are said so (SNP: libvirt >= 10.5, debian13 only).
    const skip = caseSkip(c, stack);
    if (skip !== undefined) {
      test.skip(stack.label(`qemu ${c.name} (${skip})`), () => {});
      continue;
    }
    test(stack.label(`qemu ${c.name}: the converted guest starts and stays up at its hard_limit`), async () => {
      const v = await accept(c.out, `sevx-test-qa-${c.name}`, c.name, work, stack);
      console.log(v.line);
      assert.ok(v.ok, `${c.name}: ${v.problems.join('; ')}`);
    });
  }

  test(stack.label(`qemu: every generated domain of the sample (seed ${SEED}) starts and stays up at its hard_limit`), async () => {
    const dir = mkdtempSync(join(work, 'generated-'));
    const conversions = generatedConversions(dir, stack);
    assert.ok(conversions.length >= 20, `only ${conversions.length} generated conversions`);
    const failures: string[] = [];
    // The generator makes schema-valid domains that libvirt still refuses
    // (e.g. <maxMemory> without NUMA cells); QEMU cannot be asked about those.
    // An output libvirt refuses is left out when libvirt refuses its input too.
    const refusedInputs = new Map<string, number>();
    let accepted = 0;
    let worst: { spare: number; line: string } | undefined;
    let next = 0;
    const worker = async (): Promise<void> => {
      while (next < conversions.length) {
        const g = conversions[next++]!;
        let v: Verdict;
        try {
          v = await accept(g.file, `sevx-test-qa-gen-${g.index}`, `generated ${g.index}`, work, stack);
        } catch (e) {
          const message = (e as Error).message;
          const what = `generated ${g.index} (seed ${SEED}, options ${g.options.join(' ') || 'none'})`;
          if (!message.startsWith('virsh domxml-to-native')) {
            failures.push(`${what}: ${message}`);
            continue;
          }
          // libvirt refuses the output: a failure if it takes the input, else the domain was never one libvirt runs.
          try {
            renderArgv(tcgCopy(join(dir, `gen-${g.index}-in.xml`), `sevx-test-qa-gen-${g.index}-in`, work, RAM_CAP, stack).file, stack);
          } catch {
            const reason = message.replace(/^.*?error: /s, '').replace(/'[^']*'/g, "'…'");
            refusedInputs.set(reason, (refusedInputs.get(reason) ?? 0) + 1);
            continue;
          }
          failures.push(`${what}: libvirt takes the input but not the converted output: ${message}`);
          continue;
        }
        if (!v.ok && v.qemuError !== undefined) {
          // QEMU refuses the output: a failure unless it refuses the unconverted input with the same
          // error (e.g. an empty USB CD-ROM, which QEMU 7.2's usb-storage cannot hold: "drive property not set").
          let inputRefusedByLibvirt: string | undefined;
          const input = await accept(join(dir, `gen-${g.index}-in.xml`), `sevx-test-qa-gen-${g.index}-in`, `generated ${g.index} input`, work, stack).catch((e: Error) => {
            if (e.message.startsWith('virsh domxml-to-native')) inputRefusedByLibvirt = e.message.replace(/^.*?error: /s, '').replace(/'[^']*'/g, "'…'");
            return undefined;
          });
          if (inputRefusedByLibvirt !== undefined) {
            // The input was never a domain libvirt runs (seen on debian13: an IDE controller on q35, which the
            // converter drops, next to a ccid controller with a PCI address that libvirt 11 renders as usb-ccid
            // on pcie.0 and QEMU 10 refuses). Left out and counted with both reasons.
            const reason = `libvirt: ${inputRefusedByLibvirt}, then QEMU: ${v.qemuError}`;
            refusedInputs.set(reason, (refusedInputs.get(reason) ?? 0) + 1);
            continue;
          }
          // Or refuses the input at all, and the output's error names a device the input's argv has verbatim
          // (libvirt 11 renders a generated <controller type='ccid'> with a PCI address as usb-ccid on pcie.0,
          // which QEMU 10 refuses; the input fails first on another device).
          const sameDevice = v.qemuErrorDevice !== undefined && input?.qemuError !== undefined && input.argv.includes(v.qemuErrorDevice);
          if (input?.qemuError !== undefined && (input.qemuError === v.qemuError || sameDevice)) {
            const reason = `QEMU: ${v.qemuError}`;
            refusedInputs.set(reason, (refusedInputs.get(reason) ?? 0) + 1);
            continue;
          }
        }
        accepted++;
        if (!v.ok) failures.push(`${v.line}\n  sample ${g.index} (seed ${SEED}, options ${g.options.join(' ') || 'none'}): ${v.problems.join('; ')}`);
        if (v.spareBytes !== undefined && (!worst || v.spareBytes < worst.spare)) worst = { spare: v.spareBytes, line: v.line };
      }
    };
    await Promise.all(Array.from({ length: PARALLEL }, worker));
    const refused = [...refusedInputs.values()].reduce((a, b) => a + b, 0);
    console.log(
      `qemu-acceptance[${stack.name}]: ${conversions.length} generated conversions; ${refused} left out, libvirt or QEMU refusing input and output alike (${[...refusedInputs.entries()].sort((a, b) => b[1] - a[1]).map(([r, n]) => `${n}x ${r}`).join('; ')})`,
    );
    assert.ok(accepted >= 20, `only ${accepted} generated domains are ones libvirt takes`);
    console.log(`qemu-acceptance[${stack.name}]: ${accepted} generated domains libvirt takes, ${accepted - failures.length} up at their hard_limit; least spare: ${worst ? `${mib(worst.spare)} MiB (${worst.line.replace(/^qemu-acceptance\[[^\]]*\]: /, '')})` : 'none limited'}`);
    assert.equal(failures.length, 0, `${failures.length} of ${accepted} generated domains failed:\n${failures.join('\n')}`);
  });

  test.after(() => {
    rmSync(work, { recursive: true, force: true });
    console.log(`qemu-acceptance[${stack.name}]: ${((Date.now() - started) / 1000).toFixed(0)} s in all`);
  });
}
if (stacks.length > 0) test.run();
