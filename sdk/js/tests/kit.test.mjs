// Tests of the kit and of the JS plugins, run in Node (no component build):
//   node --import ./sdk/js/tests/register.mjs --test sdk/js/tests/
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { readJsonl, run, toColumn } from './fakehost.mjs';
import {
  BitmapBuilder, BooleanBuilder, Column, DataType, OutputBatch, ParamError, Params, Plan,
  PluginError, Utf8Builder, countSetBits, exportPlugin, expectType, param, typeName,
} from '../kit/quiver.js';

const here = (p) => fileURLToPath(new URL(p, import.meta.url));
const wit = (specs) => specs.map((s) => s.toWit());

test('params: kinds, coercions, defaults, errors', () => {
  const specs = wit([
    param.text('column', 'c').required(),
    param.float('factor', 'f').default(2),
    param.textList('names', 'n').default('a'),
    param.int('n', 'n'),
    param.textMap('m', 'm').default({ x: 'y' }),
    param.text('mode', 'm').default('fast'),
  ]);
  const p = Params.check(specs, [
    { name: 'column', value: { tag: 'text', val: 'x' } },
    { name: 'factor', value: { tag: 'int', val: 3n } },
  ]);
  assert.equal(p.text('column'), 'x');
  assert.equal(p.float('factor'), 3);
  assert.deepEqual(p.textList('names'), ['a']);
  assert.equal(p.int('n'), undefined);
  assert.deepEqual([...p.textMap('m')], [['x', 'y']]);
  assert.equal(p.choice('mode', ['slow', 'fast']), 'fast');
  assert.throws(() => p.choice('column', ['a']), (e) => e instanceof ParamError && e.tag === 'invalid');
  const err = (given) => { try { Params.check(specs, given); } catch (e) { return [e.tag, e.val]; } };
  assert.deepEqual(err([]), ['missing', 'column']);
  assert.deepEqual(err([{ name: 'zzz', value: { tag: 'text', val: '' } }]), ['unknown', 'zzz']);
  assert.deepEqual(err([{ name: 'column', value: { tag: 'int', val: 1n } }]),
    ['wrong-kind', { name: 'column', expected: 'text', found: 'int' }]);
  const big = Params.check(wit([param.int('n', '')]), [{ name: 'n', value: { tag: 'int', val: 1n << 60n } }]);
  assert.equal(big.bigint('n'), 1n << 60n);
  assert.throws(() => big.int('n'), ParamError);
  assert.deepEqual(param.int('k', '').default(5).toWit().default, { tag: 'int', val: 5n });
});

test('plan: passthrough, compute, computedAfter, drop', () => {
  const input = [
    { name: 'a', dataType: DataType.int64, nullable: true },
    { name: 'b', dataType: DataType.utf8, nullable: false },
    { name: 'c', dataType: DataType.float64, nullable: true },
  ];
  const plan = Plan.passthrough(input).compute('b', DataType.utf8, false)
    .computedAfter('b', 'flag', DataType.boolean, true).drop('c');
  assert.deepEqual(plan.reads, ['b']);
  assert.deepEqual(plan.output.map((f) => [f.name, f.source.tag]),
    [['a', 'passthrough'], ['b', 'computed'], ['flag', 'computed']]);
  assert.throws(() => expectType(input, 'a', [DataType.float64]),
    (e) => e instanceof PluginError && e.column === 'a' && e.message === 'column `a` has type Int64; expected Float64');
  assert.throws(() => expectType(input, 'zz', [DataType.float64]), /not found; the input has: a, b, c/);
  assert.equal(typeName(DataType.timestamp('millisecond', 'UTC')), 'Timestamp(Millisecond, UTC)');
});

test('bitmaps and builders', () => {
  const b = new BitmapBuilder();
  for (let i = 0; i < 21; i++) b.push(i % 3 === 0);
  assert.equal(b.countSet(), 7);
  assert.equal(b.finish().length, 3);
  assert.equal(countSetBits(new Uint8Array([0xff, 0xff]), 11), 11);
  const f = BitmapBuilder.filled(10, true);
  f.set(12, true);
  assert.deepEqual([10, 11, 12].map((i) => f.get(i)), [false, false, true]);

  const u = new Utf8Builder(1, 1);
  u.push('héllo');
  u.pushNull();
  u.push(new Uint8Array([0x61]));
  for (let i = 0; i < 100; i++) u.pushStr('x'.repeat(i));
  const c = u.finish('s');
  assert.equal(c.strAt(0), 'héllo');
  assert.equal(c.strAt(1), null);
  assert.equal(c.strAt(2), 'a');
  assert.equal(c.strAt(102), 'x'.repeat(99));
  assert.equal(c.nullCount(103), 1);
  assert.equal(c.offsets.length, 104);
  const none = new Utf8Builder();
  none.push('a');
  assert.equal(none.finish('t').validity, undefined);

  const bb = new BooleanBuilder();
  [true, null, false].forEach((v) => bb.push(v));
  const bc = bb.finish('f');
  assert.deepEqual([0, 1, 2].map((i) => bc.isValid(i) && bc.boolAt(i)), [true, false, false]);
  assert.equal(bc.isNull(1), true);

  const n = new Column('n', DataType.int64, [1, 2]);
  assert.ok(n.data instanceof BigInt64Array);
  assert.throws(() => n.dataAs('f64'), PluginError);
  const sel = new BitmapBuilder();
  [true, false, true].forEach((v) => sel.push(v));
  assert.equal(OutputBatch.selected(sel, []).rows, 2);
});

test('exportPlugin turns exceptions into WIT errors', () => {
  class P {
    static describe() { return { name: 'p', version: '1', description: 'd', params: [param.text('x', 'x').required()] }; }
    constructor(params) { if (params.text('x') === 'bad') throw ParamError.invalid('x', 'bad'); if (params.text('x') === 'oops') throw new Error('oops'); }
    prepare() { throw new PluginError('no').inColumn('x').atRow(3); }
    transform() { null.boom; }
  }
  const t = exportPlugin(P);
  assert.equal(t.describe().params[0].kind, 'text');
  assert.deepEqual(t.prepare([]).val.message, 'the plugin was not initialised (init failed or was not called)');
  assert.deepEqual(t.init([{ name: 'x', value: { tag: 'text', val: 'bad' } }]), { tag: 'err', val: { tag: 'invalid', val: { name: 'x', reason: 'bad' } } });
  assert.equal(t.init([{ name: 'x', value: { tag: 'text', val: 'oops' } }]).val.val.reason, 'Error: oops');
  assert.deepEqual(t.init([{ name: 'x', value: { tag: 'text', val: 'ok' } }]), { tag: 'ok', val: undefined });
  assert.deepEqual(t.prepare([]), { tag: 'err', val: { message: 'no', column: 'x', row: 3 } });
  const r = t.transform({ rows: 0, columns: [] });
  assert.equal(r.tag, 'err');
  assert.match(r.val.message, /^TypeError: /);
});

function sameRows(actual, expected) {
  const clean = (r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v != null));
  assert.deepEqual(actual.map(clean), expected.map(clean));
}

test('email-normalize gives expected.jsonl', async () => {
  const { transformer } = await import('../../../examples/email-normalize/js/plugin.js');
  const types = { id: 'int64', email: 'utf8', amount: 'int64' };
  const input = readJsonl(here('../../../examples/email-normalize/input.jsonl'));
  const expected = readJsonl(here('../../../examples/email-normalize/expected.jsonl'));
  const out = run(transformer, input, types, { column: 'email' });
  assert.equal(out.error, undefined, JSON.stringify(out.error));
  assert.deepEqual(out.plan.reads, ['email']);
  assert.deepEqual(out.plan.output.map((f) => f.name), ['id', 'email', 'is_free_mail', 'amount']);
  sameRows(out.rows, expected);
  // errors: missing column, wrong type, existing flag column
  assert.match(run(transformer, input, types, { column: 'nope' }).error.val.message, /not found/);
  assert.match(run(transformer, input, types, { column: 'id' }).error.val.message, /has type Int64; expected Utf8/);
  assert.match(run(transformer, input, types, { column: 'email', flag: 'amount' }).error.val.message, /already exists/);
  // other free domains, compared case-insensitively
  const custom = run(transformer, input, types, { column: 'email', 'free-domains': ['EXAMPLE.org'] });
  assert.deepEqual(custom.rows.map((r) => r.is_free_mail), [false, true, null, false, false, false, false, false, false, false, false, false]);
});

test('the template scales', async () => {
  const src = (await import('node:fs')).readFileSync(here('../template/plugin.js'), 'utf8');
  const { writeFileSync, mkdtempSync } = await import('node:fs');
  const dir = mkdtempSync('/tmp/quiver-js-template-');
  writeFileSync(`${dir}/plugin.js`, src.replaceAll('{{name}}', 'scale-test'));
  const { transformer } = await import(`${dir}/plugin.js`);
  assert.equal(transformer.describe().name, 'scale-test');
  const input = readJsonl(here('../template/tests/input.jsonl'));
  const expected = readJsonl(here('../template/tests/expected.jsonl'));
  const out = run(transformer, input, { id: 'int64', x: 'float64', label: 'utf8' }, { column: 'x', factor: 2.5 });
  sameRows(out.rows, expected);
  assert.equal(run(transformer, input, { x: 'utf8' }, { column: 'x' }).error.stage, 'prepare');
});

test('toColumn sanity', () => {
  const c = Column.wrap(toColumn('s', 'utf8', ['a', null, 'bc']));
  assert.deepEqual(c.strings(), ['a', null, 'bc']);
});
