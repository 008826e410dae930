// Concurrent starts: libvirt writes a domain's live status XML only after its
// `prepare` hook, so two SEV guests started together each saw the other as not
// running and both were accepted past the host's memory or slots. The prepare
// check therefore runs under an exclusive lock, and an accepted prepare leaves a
// reservation that the next prepare counts until the guest's status XML exists
// (`started` drops it), the guest stops (`stopped`/`release` drop it), or it
// goes stale: a start that failed without `release` (libvirtd crashed) expires
// after RESERVATION_TTL_MS, so it never blocks the host for good.
//
// The folder (/run/sev-xform) must be root's alone: it is created 0700, and a
// symlink, another owner or group/other write access is refused, because root
// creates and deletes files in it.

import { closeSync, constants, fstatSync, lstatSync, mkdirSync, openSync, readdirSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { fail } from '../failure.js';
import { readTrustedFile, untrustedReason } from '../host/trusted-file.js';
import type { Io } from '../io.js';

export const DEFAULT_LOCK_DIR = '/run/sev-xform';

/**
 * How long a reservation counts without the guest's status XML appearing.
 * libvirt's qemuProcessLaunch writes that XML ("early domain status") right
 * after forking QEMU, before exec and before guest memory is allocated;
 * between the prepare hook and that, it only starts external helpers (swtpm,
 * virtiofsd), builds the command line and runs the `start` hook: seconds.
 */
export const RESERVATION_TTL_MS = 120_000;

/** How long a prepare waits for another one's check (each takes milliseconds); then it refuses. */
export const LOCK_WAIT_SECONDS = 30;

export interface Reservation {
  name: string;
  uuid: string | undefined;
  es: boolean;
  pinnedKiB: number;
  file: string;
}

const LOCK_FILE = 'prepare.lock';
const PREFIX = 'reserved-';

/** Reservation file of a domain: named by a hash, since a domain name may be 250 bytes of anything. */
function reservationFile(dir: string, name: string): string {
  return join(dir, `${PREFIX}${createHash('sha256').update(name, 'utf8').digest('hex')}.json`);
}

/** Refuses a lock folder that is not a real directory owned by root and writable only by it; false when it is missing. */
function checkDir(dir: string): boolean {
  let st;
  try {
    st = lstatSync(dir);
  } catch (e: unknown) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return false;
    fail({ kind: 'io', what: dir, message: `cannot inspect the lock folder (${code ?? String(e)})` });
  }
  if (st.isSymbolicLink()) fail({ kind: 'io', what: dir, message: 'the lock folder is a symbolic link; it must be a folder owned by root (remove it)' });
  if (!st.isDirectory()) fail({ kind: 'io', what: dir, message: 'the lock folder is not a folder (remove it)' });
  if (st.uid !== 0) fail({ kind: 'io', what: dir, message: `the lock folder is owned by uid ${st.uid}, not root (remove it)` });
  if ((st.mode & 0o022) !== 0) fail({ kind: 'io', what: dir, message: `the lock folder is writable by others (mode ${(st.mode & 0o777).toString(8).padStart(4, '0')}); it must be 0700` });
  return true;
}

/**
 * Takes the exclusive prepare lock: flock(2) on DIR/prepare.lock, held by this process's open file
 * until it closes the returned descriptor or exits (a crash releases it; no stale lock can remain).
 */
export function lockPrepare(dir: string, io: Io): number {
  if (!checkDir(dir)) {
    try {
      mkdirSync(dir, { mode: 0o700 });
    } catch (e: unknown) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code !== 'EEXIST') fail({ kind: 'io', what: dir, message: `cannot create the lock folder (${code ?? String(e)})` });
    }
    checkDir(dir);
  }
  const path = join(dir, LOCK_FILE);
  let fd: number;
  try {
    // O_NOFOLLOW and O_NONBLOCK: only root can plant anything here, but a link or FIFO must still never be followed or waited on.
    fd = openSync(path, constants.O_RDWR | constants.O_CREAT | constants.O_NOFOLLOW | constants.O_NONBLOCK | constants.O_NOCTTY, 0o600);
  } catch (e: unknown) {
    fail({ kind: 'io', what: path, message: `cannot open the lock file (${(e as NodeJS.ErrnoException).code ?? String(e)})` });
  }
  try {
    const why = untrustedReason(fstatSync(fd));
    if (why !== undefined) fail({ kind: 'io', what: path, message: `the lock file ${why}; remove it` });
    if (!io.lockExclusive) fail({ kind: 'io', what: path, message: 'no way to lock it here' });
    const error = io.lockExclusive(fd, LOCK_WAIT_SECONDS);
    if (error !== undefined) fail({ kind: 'io', what: path, message: `cannot lock it: ${error}` });
    return fd;
  } catch (e: unknown) {
    closeSync(fd);
    throw e;
  }
}

function parseReservation(text: string, file: string): Reservation {
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch {
    fail({ kind: 'io', what: file, message: 'a reservation is not JSON (remove it)' });
  }
  const r = data as Partial<Reservation> | null;
  if (!r || typeof r !== 'object' || typeof r.name !== 'string' || typeof r.es !== 'boolean' || typeof r.pinnedKiB !== 'number' || !Number.isFinite(r.pinnedKiB) || r.pinnedKiB < 0)
    fail({ kind: 'io', what: file, message: 'a reservation is malformed (remove it)' });
  return { name: r.name, uuid: typeof r.uuid === 'string' ? r.uuid : undefined, es: r.es, pinnedKiB: r.pinnedKiB, file };
}

/**
 * Reservations of other domains that still count, under the lock: those whose guest has no status
 * XML yet (`running` holds the guests that have one) and that are younger than the TTL. Stale ones
 * are removed.
 */
export function liveReservations(
  dir: string,
  self: { name: string; uuid: string | undefined },
  running: ReadonlyArray<{ name: string }>,
  now: number,
): Reservation[] {
  const runningNames = new Set(running.map((g) => g.name));
  const out: Reservation[] = [];
  for (const entry of readdirSync(dir).sort()) {
    if (!entry.startsWith(PREFIX) || !entry.endsWith('.json')) continue;
    const file = join(dir, entry);
    // lstat, not stat: age from the reservation itself; readTrustedFile refuses a link's target anyway.
    let mtime: number;
    try {
      mtime = lstatSync(file).mtimeMs;
    } catch {
      continue;
    }
    const text = readTrustedFile(file, 64 * 1024, 'reservation');
    if (text === undefined) continue;
    const r = parseReservation(text, file);
    if (now - mtime > RESERVATION_TTL_MS) {
      removeQuietly(file);
      continue;
    }
    if (r.name === self.name || (self.uuid !== undefined && r.uuid === self.uuid)) continue;
    if (runningNames.has(r.name)) continue;
    out.push(r);
  }
  return out;
}

/** Records an accepted prepare, atomically (a temporary file renamed into place), under the lock. */
export function reserve(dir: string, r: Omit<Reservation, 'file'>): void {
  const file = reservationFile(dir, r.name);
  // One fixed name: only the lock holder writes.
  const temp = join(dir, '.reservation.tmp');
  try {
    removeQuietly(temp);
    const fd = openSync(temp, constants.O_WRONLY | constants.O_CREAT | constants.O_EXCL | constants.O_NOFOLLOW, 0o600);
    try {
      writeSync(fd, JSON.stringify({ name: r.name, uuid: r.uuid, es: r.es, pinnedKiB: r.pinnedKiB }) + '\n');
    } finally {
      closeSync(fd);
    }
    renameSync(temp, file);
  } catch (e: unknown) {
    removeQuietly(temp);
    fail({ kind: 'io', what: file, message: `cannot record the reservation (${(e as NodeJS.ErrnoException).code ?? String(e)})` });
  }
}

/** Drops a domain's reservation (started: its status XML now exists; stopped/release: it is gone). Never creates the folder. */
export function dropReservation(dir: string, name: string): void {
  if (!checkDir(dir)) return;
  removeQuietly(reservationFile(dir, name));
}

function removeQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch (e: unknown) {
    if ((e as NodeJS.ErrnoException).code !== 'ENOENT') throw e;
  }
}
