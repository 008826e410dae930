// A sample of generated domains (the property tests' generator): conversion
// keeps libvirt's schema valid, on every stack (each with its own schema). The generator also makes domains the schema
// rejects on purpose (unknown devices and attributes, to test that nothing is
// lost), so each input is validated first and only valid inputs count: every
// one of those the built binary converts must come out valid. Fixed seed, so a
// failure names a reproducible case.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { domainModelArb, buildDomain, renderDomain } from '../support/gen-domain.js';
import { runBin } from '../support/bin.js';
import { integrationStacks, requirePrerequisites, validateSchema } from '../support/libvirt.js';

const SEED = Number(process.env['SEV_XFORM_PROPS_SEED'] ?? 20261126);
const SAMPLE = 400;
const HOST = ['--domcaps', 'fixtures/hosts/sev-epyc-rome.xml', '--firmware-dirs', 'fixtures/hosts/firmware-sev'];

const stacks = integrationStacks('generated.test.ts');
for (const stack of stacks) {
  test(stack.label('prerequisites: virt-xml-validate, dist/sev-xform'), () => {
    requirePrerequisites([], stack);
  });

  test(stack.label(`a sample of ${SAMPLE} generated domains (seed ${SEED}): a schema-valid input converts to a schema-valid output`), () => {
    const models = fc.sample(
      domainModelArb.map((m) => ({ ...m, unknownAttrs: [], unknownChildren: [] })),
      { seed: SEED, numRuns: SAMPLE },
    );
    const dir = mkdtempSync(join(tmpdir(), 'sevx-gen-'));
    let validated = 0;
    const failures: string[] = [];
    models.forEach((m, i) => {
      if (!m.tag) return;
      const xml = renderDomain(buildDomain(m), m.layout);
      const input = join(dir, `gen-${i}-in.xml`);
      writeFileSync(input, xml);
      if (validateSchema(input, stack).code !== 0) return;
      const r = runBin([...HOST, ...m.options], { input: xml });
      if (r.code !== 0) return; // a refusal: the property tests check it is a clean one
      const file = join(dir, `gen-${i}.xml`);
      writeFileSync(file, r.stdout);
      const v = validateSchema(file, stack);
      validated++;
      if (v.code !== 0) failures.push(`sample ${i} (seed ${SEED}, options ${m.options.join(' ') || 'none'}): ${(v.stderr + v.stdout).trim().split('\n')[0]}\n--- input\n${xml}`);
    });
    rmSync(dir, { recursive: true, force: true });
    assert.ok(validated >= 20, `only ${validated} of ${SAMPLE} samples were schema-valid and converted`);
    console.log(`${stack.label('generated')}: ${validated} schema-valid conversions checked`);
    assert.equal(failures, [], failures.join('\n\n'));
  });
}
if (stacks.length > 0) test.run();
