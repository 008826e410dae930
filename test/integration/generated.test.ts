// A sample of generated domains (the property tests' generator): conversion
// keeps libvirt's schema valid, on every stack (each with its own schema). The generator also makes domains the schema
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
import { integrationStacks, requirePrerequisites, validateSchema } from '../support/libvirt.js';

const stacks = integrationStacks('generated.test.ts');
for (const stack of stacks) {
  test(stack.label('prerequisites: virt-xml-validate, dist/sev-xform'), () => {
    requirePrerequisites([], stack);
  });

  test(stack.label(`a sample of ${SAMPLE} generated domains (seed ${SEED}): a schema-valid input converts to a schema-valid output`), () => {
    const dir = mkdtempSync(join(tmpdir(), 'sevx-gen-'));
    const failures: string[] = [];
    try {
      const conversions = generatedConversions(dir, stack);
      for (const g of conversions) {
        const v = validateSchema(g.file, stack);
        if (v.code !== 0) failures.push(`sample ${g.index} (seed ${SEED}, options ${g.options.join(' ') || 'none'}): ${(v.stderr + v.stdout).trim().split('\n')[0]}\n--- input\n${g.input}`);
      }
      assert.ok(conversions.length >= 20, `only ${conversions.length} of ${SAMPLE} samples were schema-valid and converted`);
      console.log(`${stack.label('generated')}: ${conversions.length} schema-valid conversions checked`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    assert.equal(failures, [], failures.join('\n\n'));
  });
}
if (stacks.length > 0) test.run();
