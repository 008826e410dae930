// HMP `info ramblock` as QEMU 7.2 (Debian 12) and QEMU 10.0 (Debian 13, two more
// columns and \r\n) print it: the acceptance test's SEV-pinned block sizes come from it.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { parseRamBlocks } from '../support/qemu-run.js';

test('QEMU 7.2 info ramblock', () => {
  const text = [
    '              Block Name    PSize              Offset               Used              Total',
    '                  pc.ram    4 KiB  0x0000000000000000 0x0000000040000000 0x0000000040000000',
    '   0000:00:01.0/vga.vram    4 KiB  0x0000000040500000 0x0000000000800000 0x0000000000800000',
  ].join('\n');
  assert.equal(parseRamBlocks(text), [
    { name: 'pc.ram', usedBytes: 0x40000000, totalBytes: 0x40000000 },
    { name: '0000:00:01.0/vga.vram', usedBytes: 0x800000, totalBytes: 0x800000 },
  ]);
});

test('QEMU 10.0 info ramblock: HVA and RO columns, CRLF', () => {
  const text =
    '              Block Name    PSize              Offset               Used              Total                HVA  RO\r\n' +
    '                  pc.ram    4 KiB  0x0000000000000000 0x0000000040000000 0x0000000040000000 0x00007f20d3e00000  rw\r\n' +
    '    /rom@etc/acpi/tables    4 KiB  0x0000000040d40000 0x0000000000020000 0x0000000000200000 0x00007f20d1e00000  ro\r\n';
  assert.equal(parseRamBlocks(text), [
    { name: 'pc.ram', usedBytes: 0x40000000, totalBytes: 0x40000000 },
    { name: '/rom@etc/acpi/tables', usedBytes: 0x20000, totalBytes: 0x200000 },
  ]);
});

test.run();
