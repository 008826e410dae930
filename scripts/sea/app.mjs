// The single binary's program bundle: bin.ts's `run`, called by the loader on every start, and the
// warm-up that only scripts/sea/make-code-cache.cjs calls, at build time. The warm-up module is
// imported on that call only, so a run of the binary does not load what it uses (node:os).
export { run } from '../../src/bin.ts';

export async function warmUp() {
  const { warmUp: run } = await import('./warm-up.mjs');
  await run();
}
