// Every golden output passes libvirt's own schema (virt-xml-validate FILE domain).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { integrationEnabled, libvirtCases, requirePrerequisites, validateSchema } from '../support/libvirt.js';

if (integrationEnabled('schema.test.ts')) {
  test('prerequisites: virt-xml-validate, libvirtd, dist/sev-xform', () => {
    requirePrerequisites();
  });

  for (const c of libvirtCases()) {
    if (c.skip !== undefined) {
      test.skip(`schema ${c.name} (skip-libvirt.txt: ${c.skip})`, () => {});
      continue;
    }
    test(`schema ${c.name}`, () => {
      const r = validateSchema(c.out);
      assert.ok(r.code === 0, `virt-xml-validate ${c.out} domain: exit ${r.code}\n${r.stderr}${r.stdout}`);
    });
  }

  test.run();
}
