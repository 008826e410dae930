// Reading a file that root's decisions rest on (the host cache, hook.conf, live
// status XML, reservations). The hook runs as root on every domain event and
// libvirt gives it no timeout, so a file there must not be able to hang it (a
// FIFO), exhaust its memory (/dev/zero) or be written by anyone but root.

import { closeSync, constants, fstatSync, openSync, readSync } from 'node:fs';
import { fail } from '../failure.js';

/** Why `path` cannot be trusted, from one fstat of the open file; undefined when it can. */
export function untrustedReason(st: { isFile(): boolean; uid: number; mode: number }): string | undefined {
  if (!st.isFile()) return 'is not a regular file';
  if (st.uid !== 0) return `is owned by uid ${st.uid}, not root`;
  if ((st.mode & 0o022) !== 0) return `is writable by ${(st.mode & 0o002) !== 0 ? 'other users' : 'its group'} (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')})`;
  return undefined;
}

/**
 * The text of a root-owned regular file that only root can write, read with at most `limit`
 * bytes; undefined when it does not exist. Opened non-blocking, so that a FIFO planted there
 * returns at once and is refused by the fstat, never waited on. `what` names the file's role.
 */
export function readTrustedFile(path: string, limit: number, what: string): string | undefined {
  let fd: number;
  try {
    fd = openSync(path, constants.O_RDONLY | constants.O_NONBLOCK | constants.O_NOCTTY);
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    fail({ kind: 'io', what: path, message: `cannot open the ${what} (${code ?? String(e)})` });
  }
  try {
    const why = untrustedReason(fstatSync(fd));
    if (why !== undefined) fail({ kind: 'io', what: path, message: `the ${what} ${why}; it is not trusted (it must be a regular file owned by root and writable only by root)` });
    const buf = Buffer.allocUnsafe(Math.min(limit + 1, 64 * 1024));
    let chunks: Buffer[] = [];
    let size = 0;
    for (;;) {
      const n = readSync(fd, buf, 0, buf.length, null);
      if (n === 0) break;
      size += n;
      if (size > limit) fail({ kind: 'io', what: path, message: `the ${what} is larger than ${limit} bytes; it is not trusted` });
      chunks.push(Buffer.from(buf.subarray(0, n)));
    }
    const text = Buffer.concat(chunks, size).toString('utf8');
    chunks = [];
    return text;
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === undefined) throw e;
    fail({ kind: 'io', what: path, message: `cannot read the ${what} (${code})` });
  } finally {
    closeSync(fd);
  }
}
