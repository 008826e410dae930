// The filter's yargs-free fast path must mean exactly what yargs means.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { plainFilterArgs, transformCommand } from '../../src/commands/transform.js';
import { COMMANDS } from '../../src/commands/index.js';
import { SUBCOMMAND_NAMES } from '../../src/commands/names.js';
import { runCli } from '../support/run-cli.js';

const HOST = ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml', '--firmware-dirs', 'fixtures/hosts/firmware-sev'];
const IN = 'fixtures/virt-install-i440fx-bios-virtio-blk/in.xml';

test('anything but the plain form is left to yargs', () => {
  for (const argv of [['--help'], ['-h'], ['--domcaps=x', IN], ['--memory-pinning', 'sometimes', IN], ['--bogus', IN], ['--policy'], ['--policy', '--all'], ['--no-all', IN], ['--', IN]])
    assert.is(plainFilterArgs(argv), undefined, argv.join(' '));
});

test('the plain form is parsed with defaults, last value wins', () => {
  assert.equal(plainFilterArgs(['--policy', '0x33', '--explain', '--policy', '0x37', 'a.xml', '-']), {
    firmware: 'auto',
    all: false,
    diff: false,
    explain: true,
    policy: '0x37',
    files: ['a.xml', '-'],
  });
  assert.equal(plainFilterArgs(['transform'])?.['files'], []);
});

test('fast path and yargs give the same result for the same command line', async () => {
  const cases = [
    [...HOST, IN],
    [...HOST, '--explain', '--diff', IN],
    [...HOST, '--policy', '0x0003', '--memory-pinning', 'locked', IN],
    [...HOST, '--firmware', '/usr/share/OVMF/OVMF_CODE_4M.fd', IN],
    [...HOST, '--firmware', 'relative.fd', IN],
    [...HOST, '--all', 'fixtures/untagged-i440fx-passthrough/in.xml'],
    [...HOST, IN, IN],
    [...HOST, 'fixtures/refuse-pci-hostdev/in.xml'],
    [...HOST, '--qemu-overhead', '512MiB', IN],
    [...HOST, '--qemu-overhead', '1G', IN],
    [...HOST, '--qemu-overhead', '512', IN],
    [...HOST, '--qemu-overhead', 'lots', IN],
  ];
  for (const argv of cases) {
    assert.ok(plainFilterArgs(argv) !== undefined, argv.join(' '));
    const fast = await runCli(argv);
    // `--firmware=...` is not the plain form, so this run goes through yargs.
    const i = argv.indexOf('--firmware');
    const viaYargs = i >= 0 ? [...argv.slice(0, i), `--firmware=${argv[i + 1]}`, ...argv.slice(i + 2)] : ['--firmware=auto', ...argv];
    assert.is(plainFilterArgs(viaYargs), undefined);
    const slow = await runCli(viaYargs);
    assert.equal(fast, slow, argv.join(' '));
  }
});

test('--qemu-overhead sets the hard_limit above the pinned memory; a bare number is refused as a usage error', async () => {
  const hardLimit = (xml: string): number => Number(/<hard_limit unit='KiB'>(\d+)</.exec(xml)![1]);
  const byDefault = await runCli([...HOST, IN]);
  const bigger = await runCli([...HOST, '--qemu-overhead', '1GiB', IN]);
  assert.is(bigger.code, 0, bigger.stderr);
  assert.is(hardLimit(bigger.stdout) - hardLimit(byDefault.stdout), 1024 * 1024 - 256 * 1024);
  const bare = await runCli([...HOST, '--qemu-overhead', '512', IN]);
  assert.is(bare.code, 2);
  assert.is(bare.stdout, '');
  assert.is(bare.stderr, "sev-xform: --qemu-overhead '512' needs a unit, e.g. 256MiB (a bare number would be KiB)\n");
});

test('the fast path knows every sub-command name, so `sev-xform check FILE` is never read as a filter run', () => {
  const names = COMMANDS.filter((c) => c !== transformCommand).map((c) => String([c.command].flat()[0]).split(' ')[0]);
  assert.equal([...SUBCOMMAND_NAMES].sort(), names.sort());
});

test.run();
