// The single binary's program bundle: bin.ts's `run`, called by the loader on every start, and the
// warm-up that only scripts/sea/make-code-cache.cjs calls, at build time.
export { run } from '../../src/bin.ts';
export { warmUp } from './warm-up.mjs';
