// Every golden output passes the libvirt schema of every stack it is run
// against (virt-xml-validate FILE domain, that stack's own copy).
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import { caseSkip, integrationStacks, libvirtCases, requirePrerequisites, validateSchema } from '../support/libvirt.js';

const stacks = integrationStacks('schema.test.ts');
for (const stack of stacks) {
  test(stack.label('prerequisites: virt-xml-validate, libvirtd, dist/sev-xform'), () => {
    requirePrerequisites([], stack);
  });

  for (const c of libvirtCases()) {
    test(stack.label(`schema ${c.name}`), () => {
      const skip = caseSkip(c, stack);
      if (skip !== undefined) {
        // The schema must really reject what this libvirt lacks, else the min-libvirt.txt is stale.
        const r = validateSchema(c.out, stack);
        assert.ok(r.code !== 0, `${c.name} validates on ${stack.name} although min-libvirt.txt says ${skip}`);
        console.log(`${stack.label(`schema ${c.name}`)}: rejected as expected (${skip})`);
        return;
      }
      const r = validateSchema(c.out, stack);
      assert.ok(r.code === 0, `virt-xml-validate ${c.out} domain: exit ${r.code}\n${r.stderr}${r.stdout}`);
    });
  }
}
if (stacks.length > 0) test.run();
