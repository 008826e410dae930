import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readFileBounded } from '../../src/read-bounded.js';

test('a /proc file, whose size fstat reports as 0, is read whole', () => {
  const text = Buffer.from(readFileBounded('/proc/meminfo', 1 << 20)).toString();
  assert.match(text, /^MemTotal:\s+\d+ kB$/m);
});

test('a regular file is read whole, and cut one byte past the limit', () => {
  const dir = mkdtempSync(join(tmpdir(), 'sevx-rb-'));
  const file = join(dir, 'f');
  writeFileSync(file, Buffer.alloc(300_000, 0x61));
  assert.is(readFileBounded(file, 1 << 20).length, 300_000);
  assert.is(readFileBounded(file, 1000).length, 1001);
  rmSync(dir, { recursive: true });
});

test('an endless device stops at the limit', () => {
  assert.is(readFileBounded('/dev/zero', 100_000).length, 100_001);
});

test.run();
