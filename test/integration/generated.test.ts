// A sample of generated domains (the property tests' generator): conversion
// keeps libvirt's schema valid. The generator also makes domains the schema
// rejects on purpose (unknown devices and attributes, to test that nothing is
// lost), so each input is validated first and only valid inputs count: every
// one of those the built binary converts must come out valid. Fixed seed, so a
// failure names a reproducible case.
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SAMPLE, SEED, generatedConversions } from '../support/generated-sample.js';
import { integrationEnabled, requirePrerequisites, validateSchema } from '../support/libvirt.js';

if (integrationEnabled('generated.test.ts')) {
  test('prerequisites: virt-xml-validate, dist/sev-xform', () => {
    requirePrerequisites();
  });

  test(`a sample of ${SAMPLE} generated domains (seed ${SEED}): a schema-valid input converts to a schema-valid output`, () => {
    const dir = mkdtempSync(join(tmpdir(), 'sevx-gen-'));
    const failures: string[] = [];
    const conversions = generatedConversions(dir);
    for (const g of conversions) {
      const v = validateSchema(g.file);
      if (v.code !== 0) failures.push(`sample ${g.index} (seed ${SEED}, options ${g.options.join(' ') || 'none'}): ${(v.stderr + v.stdout).trim().split('\n')[0]}\n--- input\n${g.input}`);
    }
    rmSync(dir, { recursive: true, force: true });
    assert.ok(conversions.length >= 20, `only ${conversions.length} of ${SAMPLE} samples were schema-valid and converted`);
    console.log(`generated: ${conversions.length} schema-valid conversions checked`);
    assert.equal(failures, [], failures.join('\n\n'));
  });

  test.run();
}
