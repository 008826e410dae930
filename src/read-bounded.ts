// Reading input without ever holding more than the limit plus one byte, so
// that an endless or huge input (/dev/zero, a 1 GiB file) is refused in
// bounded memory instead of exhausting it.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { Readable } from 'node:stream';

/**
 * Reads at most `limit + 1` bytes from a stream: one byte over tells the caller
 * it was too large. Chunks are copied into one buffer of the cap as they come
 * (its untouched pages cost no memory), so the peak is the data once, not the
 * chunks plus their concatenation.
 */
export async function readStreamBounded(stream: Readable, limit: number): Promise<Uint8Array> {
  const buf = Buffer.allocUnsafe(limit + 1);
  let size = 0;
  for await (const chunk of stream) {
    size += (chunk as Buffer).copy(buf, size);
    if (size > limit) break;
  }
  return buf.subarray(0, size);
}

/**
 * Reads at most `limit + 1` bytes of a file. A regular file's size from fstat
 * sizes the buffer, but is not trusted: /proc files report 0, and a file may
 * grow while it is read, so reading goes on until end of file or the cap.
 */
export function readFileBounded(path: string, limit: number): Uint8Array {
  const cap = limit + 1;
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    const known = st.isFile() && st.size > 0 ? Math.min(st.size, cap) : 0;
    let buf = Buffer.allocUnsafe(known || 64 * 1024);
    let n = 0;
    for (;;) {
      if (n === buf.length) {
        if (n >= cap) break;
        // Probe before growing: most files end exactly where fstat said.
        const probe = Buffer.allocUnsafe(64 * 1024);
        const r = readSync(fd, probe, 0, Math.min(probe.length, cap - n), null);
        if (r === 0) break;
        const bigger = Buffer.allocUnsafe(Math.min(Math.max(buf.length * 2, n + r), cap));
        buf.copy(bigger, 0, 0, n);
        probe.copy(bigger, n, 0, r);
        buf = bigger;
        n += r;
        continue;
      }
      const r = readSync(fd, buf, n, buf.length - n, null);
      if (r === 0) break;
      n += r;
    }
    return buf.subarray(0, n);
  } finally {
    closeSync(fd);
  }
}
