// Reading input without ever holding more than the limit plus one byte, so
// that an endless or huge input (/dev/zero, a 1 GiB file) is refused in
// bounded memory instead of exhausting it.

import { closeSync, fstatSync, openSync, readSync } from 'node:fs';
import type { Readable } from 'node:stream';

/** Reads at most `limit + 1` bytes from a stream: one byte over tells the caller it was too large. */
export async function readStreamBounded(stream: Readable, limit: number): Promise<Uint8Array> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of stream) {
    const buf = chunk as Buffer;
    const room = limit + 1 - size;
    chunks.push(buf.length > room ? buf.subarray(0, room) : buf);
    size += Math.min(buf.length, room);
    if (size > limit) break;
  }
  return Buffer.concat(chunks, size);
}

/** Reads at most `limit + 1` bytes of a file; a regular file's size is known without reading it. */
export function readFileBounded(path: string, limit: number): Uint8Array {
  const fd = openSync(path, 'r');
  try {
    const st = fstatSync(fd);
    const cap = st.isFile() ? Math.min(st.size, limit + 1) : limit + 1;
    const buf = Buffer.allocUnsafe(cap);
    let size = 0;
    while (size < cap) {
      const n = readSync(fd, buf, size, cap - size, null);
      if (n === 0) break;
      size += n;
    }
    // A regular file that grew while being read is still cut at the limit.
    return buf.subarray(0, size);
  } finally {
    closeSync(fd);
  }
}
