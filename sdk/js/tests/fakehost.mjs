// A tiny stand-in for the Quiver host, to run a plugin's `transformer` export in Node:
// rows (objects) → columns of declared types → init / prepare / transform → rows.
import { readFileSync } from 'node:fs';

const LAYOUT = { utf8: 'bytes', float64: 'f64', int64: 'i64', boolean: 'bits' };

export function readJsonl(path) {
  return readFileSync(path, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l));
}

function bitsOf(flags) {
  const b = new Uint8Array((flags.length + 7) >> 3);
  flags.forEach((f, i) => { if (f) b[i >> 3] |= 1 << (i & 7); });
  return b;
}

export function toColumn(name, type, values) {
  const valid = values.map((v) => v != null);
  const validity = valid.every(Boolean) ? undefined : bitsOf(valid);
  let offsets; let val;
  if (type === 'utf8') {
    const enc = new TextEncoder();
    const parts = values.map((v) => enc.encode(v ?? ''));
    offsets = new Int32Array(values.length + 1);
    parts.forEach((p, i) => { offsets[i + 1] = offsets[i] + p.length; });
    val = new Uint8Array(offsets[values.length]);
    parts.forEach((p, i) => val.set(p, offsets[i]));
  } else if (type === 'float64') val = Float64Array.from(values, (v) => v ?? 0);
  else if (type === 'int64') val = BigInt64Array.from(values, (v) => BigInt(v ?? 0));
  else if (type === 'boolean') val = bitsOf(values);
  return { name, dataType: { tag: type }, validity, offsets, values: { tag: LAYOUT[type], val } };
}

function fromColumn(c, rows) {
  const out = [];
  const dec = new TextDecoder();
  for (let i = 0; i < rows; i++) {
    if (c.validity && !((c.validity[i >> 3] >> (i & 7)) & 1)) { out.push(null); continue; }
    const v = c.values.val;
    switch (c.values.tag) {
      case 'bytes': out.push(dec.decode(v.subarray(c.offsets[i], c.offsets[i + 1]))); break;
      case 'bits': out.push(((v[i >> 3] >> (i & 7)) & 1) === 1); break;
      case 'i64': out.push(Number(v[i])); break;
      default: out.push(v[i]);
    }
  }
  return out;
}

/** Runs `transformer` on `rows` (with `types`: name → 'utf8' | 'float64' | 'int64' | 'boolean')
 * and returns { rows } or { error: { stage, val } }. */
export function run(transformer, rows, types, params) {
  const wparams = Object.entries(params).map(([name, v]) => ({
    name,
    value: typeof v === 'string' ? { tag: 'text', val: v }
      : typeof v === 'boolean' ? { tag: 'boolean', val: v }
      : Array.isArray(v) ? { tag: 'text-list', val: v }
      : Number.isInteger(v) ? { tag: 'int', val: BigInt(v) } : { tag: 'float', val: v },
  }));
  const init = transformer.init(wparams);
  if (init.tag === 'err') return { error: { stage: 'init', val: init.val } };
  const fields = Object.entries(types).map(([name, t]) => ({ name, dataType: { tag: t }, nullable: true }));
  const planR = transformer.prepare(fields);
  if (planR.tag === 'err') return { error: { stage: 'prepare', val: planR.val } };
  const plan = planR.val;
  const input = Object.fromEntries(Object.entries(types).map(([n, t]) => [n, toColumn(n, t, rows.map((r) => r[n] ?? null))]));
  const out = transformer.transform({ rows: rows.length, columns: plan.reads.map((n) => input[n]) });
  if (out.tag === 'err') return { error: { stage: 'transform', val: out.val } };
  const result = [];
  for (const ob of out.val) {
    const keep = [];
    for (let i = 0; i < rows.length; i++) if (!ob.selection || ((ob.selection[i >> 3] >> (i & 7)) & 1)) keep.push(i);
    if (keep.length !== ob.rows) throw new Error(`rows ${ob.rows} vs selection ${keep.length}`);
    const computed = Object.fromEntries(ob.columns.map((c) => [c.name, fromColumn(c, ob.rows)]));
    keep.forEach((src, j) => {
      const row = {};
      for (const f of plan.output) {
        row[f.name] = f.source.tag === 'computed' ? computed[f.name][j] : rows[src][f.source.val] ?? null;
      }
      result.push(row);
    });
  }
  return { rows: result, plan };
}
