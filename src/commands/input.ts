import { FailureError } from '../failure.js';
import { decodeInput } from '../xml/read.js';
import { XmlInputError } from '../xml/errors.js';
import type { Io } from '../io.js';

/** Reads a domain from FILE ('-' or none: stdin); problems are bad-input failures. */
export async function readInput(io: Io, file: string | undefined): Promise<string> {
  let bytes: Uint8Array;
  const what = file && file !== '-' ? file : 'stdin';
  if (file && file !== '-') {
    try {
      bytes = io.readFile(file);
    } catch (e: unknown) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new FailureError({ kind: 'io', what: file, message: `cannot read (${code ?? String(e)})` });
    }
  } else bytes = await io.readStdin();
  try {
    return decodeInput(bytes, what);
  } catch (e: unknown) {
    if (e instanceof XmlInputError) throw new FailureError({ kind: 'bad-input', message: e.message });
    throw e;
  }
}
