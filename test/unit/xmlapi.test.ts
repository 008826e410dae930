import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { test } from 'uvu';
import * as assert from 'uvu/assert';
import fc from 'fast-check';
import { XMLValidator } from 'fast-xml-parser';
import { parseXml } from '../../src/xml/xmlapi.js';
import { createElement, insertOrdered, removeElement } from '../../src/xml/edit.js';

test('an unchanged document serialises byte for byte', () => {
  const src = `<?xml version="1.0"?>\n<!-- c -->\n<domain type="kvm"  id='1'>\n\t<name>a &amp; b</name>\n  <x a = "1" b='2' />\n  <![CDATA[<raw>]]>\n</domain >\n`;
  assert.is(parseXml(src).toString(), src);
});

test('inserted elements take the indentation of their neighbours', () => {
  const doc = parseXml(`<domain type='kvm'>\n    <name>x</name>\n    <devices>\n        <disk/>\n    </devices>\n</domain>\n`);
  insertOrdered(doc.root, createElement('memtune', [], [createElement('hard_limit', [['unit', 'KiB']], '1')]), ['name', 'memtune', 'devices']);
  assert.is(
    doc.toString(),
    `<domain type='kvm'>\n    <name>x</name>\n    <memtune>\n        <hard_limit unit='KiB'>1</hard_limit>\n    </memtune>\n    <devices>\n        <disk/>\n    </devices>\n</domain>\n`,
  );
});

test('attributes added to a double-quoted document use double quotes', () => {
  const doc = parseXml(`<domain type="kvm">\n  <os>\n    <type>hvm</type>\n  </os>\n</domain>`);
  doc.root.first('os')!.setAttr('firmware', 'efi');
  insertOrdered(doc.root.first('os')!, createElement('loader', [['readonly', 'yes']], '/x'), ['type', 'loader']);
  assert.is(doc.toString(), `<domain type="kvm">\n  <os firmware="efi">\n    <type>hvm</type>\n    <loader readonly="yes">/x</loader>\n  </os>\n</domain>`);
});

test('a self-closing element that gains a child gets an end tag', () => {
  const doc = parseXml(`<domain>\n  <features/>\n</domain>`);
  insertOrdered(doc.root.first('features')!, createElement('acpi'), []);
  assert.is(doc.toString(), `<domain>\n  <features>\n    <acpi/>\n  </features>\n</domain>`);
});

test('removing an element takes its leading whitespace', () => {
  const doc = parseXml(`<domain>\n  <a/>\n  <b/>\n  <c/>\n</domain>`);
  removeElement(doc.root.first('b')!);
  assert.is(doc.toString(), `<domain>\n  <a/>\n  <c/>\n</domain>`);
});

test('comments inside an element without child elements survive an insertion', () => {
  const doc = parseXml(`<domain>\n  <features>\n    <!-- keep -->\n  </features>\n  <memballoon model='virtio'><!-- note --></memballoon>\n</domain>`);
  insertOrdered(doc.root.first('features')!, createElement('acpi'), []);
  insertOrdered(doc.root.first('memballoon')!, createElement('driver', [['iommu', 'on']]), []);
  assert.is(
    doc.toString(),
    `<domain>\n  <features>\n    <!-- keep -->\n    <acpi/>\n  </features>\n  <memballoon model='virtio'><!-- note -->\n    <driver iommu='on'/>\n  </memballoon>\n</domain>`,
  );
});

test('one-line documents stay on one line', () => {
  const doc = parseXml(`<domain><devices><disk/></devices></domain>`);
  insertOrdered(doc.root, createElement('memtune'), ['memtune', 'devices']);
  assert.is(doc.toString(), `<domain><memtune/><devices><disk/></devices></domain>`);
});

test('CRLF documents get CRLF line ends', () => {
  const doc = parseXml(`<domain>\r\n  <devices>\r\n    <disk/>\r\n  </devices>\r\n</domain>`);
  insertOrdered(doc.root.first('devices')!, createElement('controller', [['type', 'scsi']]), ['disk', 'controller']);
  assert.is(doc.toString(), `<domain>\r\n  <devices>\r\n    <disk/>\r\n    <controller type='scsi'/>\r\n  </devices>\r\n</domain>`);
});

for (const bad of ['<a>', '<a></b>', '<a x="1" x="2"/>', '<a/><b/>', 'text', '<a>&bogus;</a>', '<!DOCTYPE a><a/>']) {
  test(`malformed input is refused: ${bad}`, () => {
    assert.throws(() => parseXml(bad));
  });
}


// The parser must be at least as strict as fast-xml-parser's validator, which runs after it on
// operators' input (src/xml/read.ts): mutations of the golden inputs that the validator rejects
// must be rejected by the parser too. BENCHMARKS.md cites this property.
test('whatever the validator rejects, the parser rejects too (mutated golden inputs)', () => {
  const inputs = readdirSync('fixtures')
    .filter((d) => existsSync(`fixtures/${d}/in.xml`))
    .map((d) => readFileSync(`fixtures/${d}/in.xml`, 'utf8'));
  const token = fc.constantFrom('<', '>', '/', '"', "'", '=', ' ', '&', ';', '!', '?', '-', ':', 'a', '1', '\n', '\t', '<!--', '-->',
    '<![CDATA[', ']]>', '&amp;', '&#x41;', '\u00e9', '\u0000', '/>', '</', '.', '<a>', '</a>', 'x="1"');
  const edit = fc.record({ at: fc.nat(), kind: fc.constantFrom('delete', 'insert', 'replace'), length: fc.integer({ min: 1, max: 4 }), token });
  let validatorRejected = 0;
  fc.assert(
    fc.property(fc.nat(inputs.length - 1), fc.array(edit, { minLength: 1, maxLength: 3 }), (which, edits) => {
      let s = inputs[which]!;
      for (const e of edits) {
        const at = e.at % (s.length + 1);
        if (e.kind === 'delete') s = s.slice(0, at) + s.slice(at + e.length);
        else if (e.kind === 'insert') s = s.slice(0, at) + e.token + s.slice(at);
        else s = s.slice(0, at) + e.token + s.slice(at + 1);
      }
      if (XMLValidator.validate(s) === true) return;
      validatorRejected++;
      assert.throws(() => parseXml(s), undefined, `the validator rejects this, the parser accepts it:\n${s}`);
    }),
    { seed: 20261126, numRuns: 4000 },
  );
  assert.ok(validatorRejected > 2000, `only ${validatorRejected} of 4000 mutations were rejected by the validator: the mutations are too weak`);
});

test('every name XML 1.0 allows parses: non-ASCII, combining marks, supplementary characters', () => {
  const names = ['app:größe', 'x:名前', 'é', 'a·b', 'a\u0301', 'a\u203F', '_\u00B7', '\u{10000}x', 'x\u{EFFFF}', 'ǅ:x', 'Ω-1.2'];
  for (const name of names) {
    const src = `<domain><${name} ${name}b="1">t</${name}></domain>`;
    const doc = parseXml(src);
    assert.is(doc.root.elements()[0]?.name, name);
    assert.is(doc.root.elements()[0]?.attrs[0]?.name, `${name}b`);
    assert.is(doc.toString(), src);
  }
});

test('names XML 1.0 forbids are still refused', () => {
  for (const bad of ['<domain><1a/></domain>', '<domain><-a/></domain>', '<domain><·a/></domain>', '<domain><a\u00D7b/></domain>', '<domain><\u0301a/></domain>', '<domain><a\uD800/></domain>', '<domain><\uDB80\uDC00/></domain>'])
    assert.throws(() => parseXml(bad), undefined, bad);
});

test.run();
