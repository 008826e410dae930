// Runs the filter and the hook once on sample inputs while the single binary's code cache is made
// (scripts/sea/make-code-cache.cjs, never when the binary runs): V8 compiles a function on its first
// call, and the cache keeps what was compiled, so each run of the binary starts with the XML parser,
// the rules and the hook already compiled instead of compiling them again on every VM start. Paths
// are relative to the repository, where scripts/build.mjs makes the cache.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { main } from '../../src/cli.ts';
import { CACHE_VERSION, serializeHostCache } from '../../src/host/cache.ts';
import { loadFirmwareDescriptors } from '../../src/host/firmware.ts';

const DOMAIN = 'fixtures/virt-install-i440fx-bios-virtio-blk/in.xml';
const DOMCAPS = 'fixtures/hosts/sev-epyc-rome.xml';
const FIRMWARE = 'fixtures/hosts/firmware-sev';
const TAG = /^\s*<sev:sev xmlns:sev="urn:sev-xform:domain:1"\/>\n/m;

function sampleIo(stdin, env) {
  const out = { stdout: '', stderr: '' };
  const io = {
    readStdin: async () => Buffer.from(stdin),
    readFile: (path) => readFileSync(path),
    stdout: (text) => void (out.stdout += text),
    stderr: (text) => void (out.stderr += text),
    env,
    run: () => ({ status: null, stdout: '', stderr: '', error: 'no commands run while the snapshot is built' }),
    // One sample at a time: the prepare lock has nothing to wait for.
    lockExclusive: () => undefined,
  };
  return { io, out };
}

/** Runs one command line; a sample that no longer passes only costs start-up time, so it is reported, not fatal. */
async function sample(what, argv, stdin, env) {
  const { io, out } = sampleIo(stdin, env);
  const code = await main(argv, io);
  if (code !== 0) process.stderr.write(`warm-up: ${what} exited ${code} (${out.stderr.trim().split('\n')[0]}); the binary works, but that path starts slower\n`);
  return out.stdout;
}

/** Never rejects for a failed sample (see `sample`), only for a broken set-up. */
export async function warmUp() {
  const dir = mkdtempSync(join(tmpdir(), 'sev-xform-warm-up-'));
  try {
    const domain = readFileSync(DOMAIN, 'utf8');
    const stateDir = join(dir, 'state');
    const runDir = join(dir, 'run');
    mkdirSync(stateDir);
    mkdirSync(runDir);
    writeFileSync(
      join(stateDir, 'host.json'),
      serializeHostCache({
        version: CACHE_VERSION,
        written: new Date(0).toISOString(),
        domcaps: readFileSync(DOMCAPS, 'utf8'),
        firmware: loadFirmwareDescriptors([FIRMWARE]),
        firmwareDirs: [FIRMWARE],
        memTotalKiB: 64 * 1024 * 1024,
      }),
    );
    const env = { HOME: dir, SEV_XFORM_STATE_DIR: stateDir, SEV_XFORM_RUN_DIR: runDir, SEV_XFORM_HOOK_CONF: join(dir, 'hook.conf'), SEV_XFORM_LOCK_DIR: join(dir, 'lock') };
    const converted = await sample('the filter', ['--domcaps', DOMCAPS, '--firmware-dirs', FIRMWARE], domain, env);
    await sample('hook prepare (converted domain)', ['hook', 'web01', 'prepare', 'begin', '-'], converted, env);
    await sample('hook prepare (untagged domain)', ['hook', 'web01', 'prepare', 'begin', '-'], domain.replace(TAG, ''), env);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
