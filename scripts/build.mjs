// Builds dist/sev-xform: type-check, then bundle src/bin.ts into one CommonJS file.
import { build } from 'esbuild';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { execFileSync } from 'node:child_process';

execFileSync(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.json', '--noEmit'], { stdio: 'inherit' });
mkdirSync('dist', { recursive: true });
// dist/sev-xform has no extension; this makes Node load it as CommonJS.
writeFileSync('dist/package.json', '{ "type": "commonjs" }\n');
await build({
  entryPoints: ['src/bin.ts'],
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  outfile: 'dist/sev-xform',
  // yargs' ESM build asks import.meta.url where it lives; in a CommonJS bundle that is this file.
  banner: { js: "#!/usr/bin/env node\nconst __importMetaUrl = require('node:url').pathToFileURL(__filename).href;" },
  define: { 'import.meta.url': '__importMetaUrl' },
  logLevel: 'warning',
});
chmodSync('dist/sev-xform', 0o755);
