// quiver.js: the Quiver plugin kit for JavaScript (ComponentizeJS / StarlingMonkey).
//
// A plugin is an ES module `plugin.js` that imports this file as `./quiver.js` and exports the
// WIT interface `transformer` made from a class:
//
//     import { exportPlugin, param, Plan, DataType, OutputBatch, expectType } from './quiver.js';
//     class Negate {
//       static describe() {
//         return { name: 'negate', version: '0.1.0', description: 'x → −x',
//                  params: [param.text('column', 'the float64 column').required()] };
//       }
//       constructor(params) { this.column = params.text('column'); }
//       prepare(input) {
//         const field = expectType(input, this.column, [DataType.float64]);
//         return Plan.passthrough(input).compute(this.column, DataType.float64, field.nullable);
//       }
//       transform(batch) {
//         const column = batch.columns[0];
//         const x = column.dataAs('f64');
//         for (let i = 0; i < x.length; i++) x[i] = -x[i];
//         return OutputBatch.allRows(batch.rows, [column]);
//       }
//     }
//     export const transformer = exportPlugin(Negate);
//
// The build script (sdk/js/build.sh) copies this file next to the plugin's sources; it is not
// part of the plugin directory. Values cross the boundary as typed arrays (Float64Array,
// Int32Array, BigInt64Array for 64-bit integers, Uint8Array for bytes and bitmaps), copied in
// bulk by the bindings: use them directly.

import { log as hostLog } from 'quiver:plugin/host@0.1.0';

// ---------------------------------------------------------------------------------------------
// Logging

const LEVELS = ['trace', 'debug', 'info', 'warn', 'error'];

/** Writes `message` to the host's log at `level` ('trace' | 'debug' | 'info' | 'warn' | 'error'). */
export function log(level, message) {
  if (!LEVELS.includes(level)) level = 'info';
  hostLog(level, typeof message === 'string' ? message : show(message));
}

function show(value) {
  if (typeof value === 'string') return value;
  if (value instanceof Error) return value.stack ? `${value}\n${value.stack}` : String(value);
  try {
    return JSON.stringify(value, (_, v) =>
      typeof v === 'bigint'
        ? v.toString()
        : ArrayBuffer.isView(v)
          ? `${v.constructor.name}(${v.length}) [${Array.from(v.subarray(0, 16)).join(', ')}${v.length > 16 ? ', …' : ''}]`
          : v,
    ) ?? String(value);
  } catch {
    return String(value);
  }
}

// The component has no stdout/stderr (it imports no WASI at all): console goes to the host log.
if (typeof globalThis.console === 'object' && globalThis.console !== null) {
  const to = (level) => (...args) => log(level, args.map(show).join(' '));
  for (const [method, level] of [
    ['log', 'info'], ['info', 'info'], ['debug', 'debug'], ['trace', 'trace'],
    ['warn', 'warn'], ['error', 'error'],
  ]) {
    try {
      globalThis.console[method] = to(level);
    } catch {
      // a read-only console keeps its own (silent) methods
    }
  }
}

// ---------------------------------------------------------------------------------------------
// Data types

const t = (tag) => Object.freeze({ tag });

/**
 * The column types, as the bindings spell them: `DataType.float64` is `{ tag: 'float64' }`,
 * `DataType.timestamp('millisecond', 'UTC')` is `{ tag: 'timestamp', val: { unit, timezone } }`.
 */
export const DataType = Object.freeze({
  boolean: t('boolean'),
  int8: t('int8'),
  int16: t('int16'),
  int32: t('int32'),
  int64: t('int64'),
  uint8: t('uint8'),
  uint16: t('uint16'),
  uint32: t('uint32'),
  uint64: t('uint64'),
  float32: t('float32'),
  float64: t('float64'),
  utf8: t('utf8'),
  binary: t('binary'),
  date32: t('date32'),
  /** unit: 'second' | 'millisecond' | 'microsecond' | 'nanosecond'; timezone optional. */
  timestamp: (unit = 'millisecond', timezone = undefined) =>
    Object.freeze({ tag: 'timestamp', val: Object.freeze({ unit, timezone: timezone ?? undefined }) }),
});

/** The integer and float types. */
export const NUMERIC = Object.freeze([
  DataType.int8, DataType.int16, DataType.int32, DataType.int64,
  DataType.uint8, DataType.uint16, DataType.uint32, DataType.uint64,
  DataType.float32, DataType.float64,
]);

const ARROW_NAMES = {
  boolean: 'Boolean', int8: 'Int8', int16: 'Int16', int32: 'Int32', int64: 'Int64',
  uint8: 'UInt8', uint16: 'UInt16', uint32: 'UInt32', uint64: 'UInt64',
  float32: 'Float32', float64: 'Float64', utf8: 'Utf8', binary: 'Binary', date32: 'Date32',
};

/** Arrow's name of a data type: `Utf8`, `Float64`, `Timestamp(Millisecond, UTC)`, … */
export function typeName(dataType) {
  if (dataType.tag === 'timestamp') {
    const { unit, timezone } = dataType.val;
    const u = unit[0].toUpperCase() + unit.slice(1);
    return timezone == null ? `Timestamp(${u})` : `Timestamp(${u}, ${timezone})`;
  }
  return ARROW_NAMES[dataType.tag] ?? String(dataType.tag);
}

/** Whether two data types are the same (timestamps: same unit and time zone). */
export function sameType(a, b) {
  if (a.tag !== b.tag) return false;
  if (a.tag !== 'timestamp') return true;
  return a.val.unit === b.val.unit && (a.val.timezone ?? null) === (b.val.timezone ?? null);
}

const LAYOUTS = {
  boolean: 'bits', int8: 'i8', int16: 'i16', int32: 'i32', int64: 'i64',
  uint8: 'u8', uint16: 'u16', uint32: 'u32', uint64: 'u64', float32: 'f32', float64: 'f64',
  utf8: 'bytes', binary: 'bytes', date32: 'i32', timestamp: 'i64',
};

/** The physical layout (the `values` case) of a data type: 'f64', 'bytes', 'bits', … */
export function layoutOf(dataType) {
  return LAYOUTS[dataType.tag];
}

/** The typed array class of each layout. */
export const ARRAYS = Object.freeze({
  bits: Uint8Array, i8: Int8Array, i16: Int16Array, i32: Int32Array, i64: BigInt64Array,
  u8: Uint8Array, u16: Uint16Array, u32: Uint32Array, u64: BigUint64Array,
  f32: Float32Array, f64: Float64Array, bytes: Uint8Array,
});

// ---------------------------------------------------------------------------------------------
// Errors

/** Why a plugin cannot process a schema or a batch; names the column and row if given. */
export class PluginError extends Error {
  constructor(message, { column, row } = {}) {
    super(message);
    this.name = 'PluginError';
    this.column = column;
    this.row = row;
  }
  /** Names the column concerned. */
  inColumn(column) {
    this.column = column;
    return this;
  }
  /** Names the row concerned (0-based within the batch). */
  atRow(row) {
    this.row = row;
    return this;
  }
}

/** A parameter `init` cannot accept; build one with the static methods. */
export class ParamError extends Error {
  constructor(tag, val, message) {
    super(message);
    this.name = 'ParamError';
    this.tag = tag;
    this.val = val;
  }
  /** No parameter of this name exists. */
  static unknown(name) {
    return new ParamError('unknown', name, `unknown parameter \`${name}\``);
  }
  /** A required parameter is absent. */
  static missing(name) {
    return new ParamError('missing', name, `missing parameter \`${name}\``);
  }
  /** The value has the wrong kind (kinds: 'boolean' | 'int' | 'float' | 'text' | 'text-list' | 'text-map'). */
  static wrongKind(name, expected, found) {
    return new ParamError('wrong-kind', { name, expected, found },
      `parameter \`${name}\` must be ${expected}, not ${found}`);
  }
  /** The value has the right kind but cannot be used. */
  static invalid(name, reason) {
    return new ParamError('invalid', { name, reason }, `parameter \`${name}\`: ${reason}`);
  }
}

// ---------------------------------------------------------------------------------------------
// Parameters

const KINDS = ['boolean', 'int', 'float', 'text', 'text-list', 'text-map'];

/** A parameter's declaration; made by `param.text(name, doc)` etc. */
export class ParamSpec {
  constructor(name, kind, doc = '') {
    if (!KINDS.includes(kind)) throw new TypeError(`unknown parameter kind ${kind}`);
    this.name = name;
    this.kind = kind;
    this.doc = doc;
    this.isRequired = false;
    this.defaultValue = undefined;
  }
  /** Marks the parameter as required. */
  required() {
    this.isRequired = true;
    return this;
  }
  /** The value used when the pipeline gives none, as a plain JS value of the spec's kind
   * (boolean, number or bigint, string, string[], or for text-map an object, Map or [k, v] list). */
  default(value) {
    this.defaultValue = toParamValue(this.kind, value);
    return this;
  }
  /** The WIT `param-spec`. */
  toWit() {
    return {
      name: this.name,
      kind: this.kind,
      required: this.isRequired,
      default: this.defaultValue,
      doc: this.doc,
    };
  }
}

/** Parameter declarations: `param.float('factor', 'the multiplier').default(2.0)`. */
export const param = Object.freeze({
  boolean: (name, doc) => new ParamSpec(name, 'boolean', doc),
  int: (name, doc) => new ParamSpec(name, 'int', doc),
  /** Integers are accepted too. */
  float: (name, doc) => new ParamSpec(name, 'float', doc),
  text: (name, doc) => new ParamSpec(name, 'text', doc),
  /** A single text is accepted as a list of one. */
  textList: (name, doc) => new ParamSpec(name, 'text-list', doc),
  textMap: (name, doc) => new ParamSpec(name, 'text-map', doc),
});

function toParamValue(kind, value) {
  switch (kind) {
    case 'boolean':
      return { tag: 'boolean', val: Boolean(value) };
    case 'int':
      return { tag: 'int', val: BigInt(value) };
    case 'float':
      return { tag: 'float', val: Number(value) };
    case 'text':
      return { tag: 'text', val: String(value) };
    case 'text-list':
      return { tag: 'text-list', val: (typeof value === 'string' ? [value] : [...value]).map(String) };
    case 'text-map': {
      const entries = value instanceof Map || Array.isArray(value) ? [...value] : Object.entries(value);
      return { tag: 'text-map', val: entries.map(([k, v]) => [String(k), String(v)]) };
    }
  }
  throw new TypeError(`unknown parameter kind ${kind}`);
}

/** Checked parameters, as `init` (the plugin's constructor) receives them: every name is
 * declared, every value has its declared kind, required ones are present, defaults filled in. */
export class Params {
  constructor(values = new Map()) {
    /** name → WIT param-value ({ tag, val }) */
    this.values = values;
  }

  /** Checks the host's `given` params (WIT `list<param>`) against `specs`. Throws ParamError. */
  static check(specs, given) {
    const values = new Map();
    for (const p of given) {
      const spec = specs.find((s) => s.name === p.name);
      if (!spec) throw ParamError.unknown(p.name);
      let v = p.value;
      if (spec.kind === 'float' && v.tag === 'int') v = { tag: 'float', val: Number(v.val) };
      else if (spec.kind === 'text-list' && v.tag === 'text') v = { tag: 'text-list', val: [v.val] };
      else if (spec.kind !== v.tag) throw ParamError.wrongKind(p.name, spec.kind, v.tag);
      values.set(p.name, v);
    }
    for (const spec of specs) {
      if (values.has(spec.name)) continue;
      const d = spec instanceof ParamSpec ? spec.defaultValue : spec.default;
      const required = spec instanceof ParamSpec ? spec.isRequired : spec.required;
      if (d != null) values.set(spec.name, d);
      else if (required) throw ParamError.missing(spec.name);
    }
    return new Params(values);
  }

  /** Whether the parameter was given or has a default. */
  has(name) {
    return this.values.has(name);
  }
  #get(name, tag) {
    const v = this.values.get(name);
    return v && v.tag === tag ? v.val : undefined;
  }
  /** A text parameter (undefined if absent). */
  text(name) {
    return this.#get(name, 'text');
  }
  /** A float parameter (undefined if absent). */
  float(name) {
    return this.#get(name, 'float');
  }
  /** An int parameter as a number (undefined if absent); beyond ±2^53 it is refused as invalid. */
  int(name) {
    const v = this.#get(name, 'int');
    if (v === undefined) return undefined;
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) {
      throw ParamError.invalid(name, `${v} is too large for this plugin (at most ±2^53)`);
    }
    return Number(v);
  }
  /** An int parameter as a BigInt (undefined if absent). */
  bigint(name) {
    return this.#get(name, 'int');
  }
  /** A boolean parameter (undefined if absent). */
  boolean(name) {
    return this.#get(name, 'boolean');
  }
  /** A text-list parameter ([] if absent). */
  textList(name) {
    return this.#get(name, 'text-list') ?? [];
  }
  /** A text-map parameter as a Map in file order (empty if absent). */
  textMap(name) {
    return new Map(this.#get(name, 'text-map') ?? []);
  }
  /** A text parameter that must be one of `choices` (absent: '' which is refused unless a choice). */
  choice(name, choices) {
    const v = this.text(name) ?? '';
    if (!choices.includes(v)) {
      throw ParamError.invalid(name, `\`${v}\` is not one of ${choices.join(', ')}`);
    }
    return v;
  }
}

// ---------------------------------------------------------------------------------------------
// Schemas and plans

/** The field (WIT `field`: { name, dataType, nullable }) called `name`, or a PluginError
 * listing the available columns. */
export function findField(input, name) {
  const field = input.find((f) => f.name === name);
  if (!field) {
    throw new PluginError(
      `column \`${name}\` not found; the input has: ${input.map((f) => f.name).join(', ')}`,
    ).inColumn(name);
  }
  return field;
}

/** The field called `name`, checked to have one of the `allowed` data types. */
export function expectType(input, name, allowed) {
  const field = findField(input, name);
  if (!allowed.some((a) => sameType(a, field.dataType))) {
    throw new PluginError(
      `column \`${name}\` has type ${typeName(field.dataType)}; expected ${allowed.map(typeName).join(', ')}`,
    ).inColumn(name);
  }
  return field;
}

/** What the plugin reads and the output schema (WIT `plan`); the builders return `this`. */
export class Plan {
  constructor(reads = [], output = []) {
    /** input column names the plugin reads; only these cross the boundary, in this order */
    this.reads = reads;
    /** the output schema: { name, dataType, nullable, source: {tag:'computed'} | {tag:'passthrough', val} } */
    this.output = output;
  }
  /** A plan that reads nothing and passes every input column through unchanged. */
  static passthrough(input) {
    return new Plan(
      [],
      input.map((f) => ({
        name: f.name,
        dataType: f.dataType,
        nullable: f.nullable,
        source: { tag: 'passthrough', val: f.name },
      })),
    );
  }
  /** Adds `name` to the columns the plugin reads (once). */
  read(name) {
    if (!this.reads.includes(name)) this.reads.push(name);
    return this;
  }
  /** Reads `name` and replaces its output column (or appends one) by a computed column. */
  compute(name, dataType, nullable) {
    return this.read(name).computed(name, dataType, nullable);
  }
  /** Declares a computed output column `name` (in place if it exists, else at the end)
   * without reading an input column of that name. */
  computed(name, dataType, nullable) {
    const field = { name, dataType, nullable, source: { tag: 'computed' } };
    const at = this.output.findIndex((f) => f.name === name);
    if (at >= 0) this.output[at] = field;
    else this.output.push(field);
    return this;
  }
  /** Declares a computed column `name` placed right after the output column `after` (at the
   * end if there is none); an existing output column `name` is removed first. */
  computedAfter(after, name, dataType, nullable) {
    this.drop(name);
    const i = this.output.findIndex((f) => f.name === after);
    const field = { name, dataType, nullable, source: { tag: 'computed' } };
    this.output.splice(i < 0 ? this.output.length : i + 1, 0, field);
    return this;
  }
  /** Removes the output column `name`. */
  drop(name) {
    this.output = this.output.filter((f) => f.name !== name);
    return this;
  }
}

// ---------------------------------------------------------------------------------------------
// Bitmaps

/** Bit `i` of an LSB-first bitmap. */
export function getBit(bits, i) {
  return ((bits[i >>> 3] >>> (i & 7)) & 1) === 1;
}

const POPCOUNT = new Uint8Array(256);
for (let i = 1; i < 256; i++) POPCOUNT[i] = (i & 1) + POPCOUNT[i >>> 1];

/** The number of set bits among the first `len` bits of `bits`. */
export function countSetBits(bits, len) {
  const full = len >>> 3;
  let n = 0;
  for (let i = 0; i < full; i++) n += POPCOUNT[bits[i]];
  const rest = len & 7;
  if (rest) n += POPCOUNT[bits[full] & ((1 << rest) - 1)];
  return n;
}

/** The first `len` bits of `bits` unpacked to one byte each (1 = set): cheap to test in a loop. */
export function unpackBits(bits, len) {
  const out = new Uint8Array(len);
  for (let i = 0; i < len; i++) out[i] = (bits[i >>> 3] >>> (i & 7)) & 1;
  return out;
}

/** Packs one flag per row (any array of truthy/falsy values, e.g. a Uint8Array of 0/1) into an
 * LSB-first bitmap of ceil(len / 8) bytes. */
export function packBits(flags, len = flags.length) {
  const out = new Uint8Array((len + 7) >>> 3);
  for (let i = 0; i < len; i++) if (flags[i]) out[i >>> 3] |= 1 << (i & 7);
  return out;
}

/** Builds an LSB-first bitmap (a boolean column's values, a validity, a row selection). */
export class BitmapBuilder {
  constructor(capacity = 0) {
    this.bytes = new Uint8Array(Math.max(8, (capacity + 7) >>> 3));
    this.length = 0;
  }
  /** A bitmap of `len` bits all set to `value`. */
  static filled(len, value) {
    const b = new BitmapBuilder(len);
    if (value) b.bytes.fill(0xff);
    b.length = len;
    return b;
  }
  #grow(bits) {
    const need = (bits + 7) >>> 3;
    if (need > this.bytes.length) {
      const bigger = new Uint8Array(Math.max(need, this.bytes.length * 2));
      bigger.set(this.bytes);
      this.bytes = bigger;
    }
  }
  /** Appends a bit. */
  push(value) {
    const i = this.length;
    if (i >>> 3 >= this.bytes.length) this.#grow(i + 1);
    if (value) this.bytes[i >>> 3] |= 1 << (i & 7);
    else this.bytes[i >>> 3] &= ~(1 << (i & 7));
    this.length = i + 1;
  }
  /** Sets bit `i` (growing the bitmap with clear bits if needed). */
  set(i, value) {
    if (i >= this.length) {
      this.#grow(i + 1);
      // bits past the old length may hold stale values from `filled`: clear them
      for (let k = this.length; k < i; k++) this.bytes[k >>> 3] &= ~(1 << (k & 7));
      this.length = i + 1;
    }
    if (value) this.bytes[i >>> 3] |= 1 << (i & 7);
    else this.bytes[i >>> 3] &= ~(1 << (i & 7));
  }
  /** Bit `i`. */
  get(i) {
    return i < this.length && getBit(this.bytes, i);
  }
  /** The number of set bits. */
  countSet() {
    return countSetBits(this.bytes, this.length);
  }
  /** The bitmap: ceil(length / 8) bytes. */
  finish() {
    return this.bytes.slice(0, (this.length + 7) >>> 3);
  }
}

// ---------------------------------------------------------------------------------------------
// Columns

const DECODER = new TextDecoder();
const ENCODER = new TextEncoder();

function toTyped(layout, data) {
  const A = ARRAYS[layout];
  if (data instanceof A) return data;
  if (layout === 'i64' || layout === 'u64') return A.from(data, (x) => BigInt(x));
  return A.from(data);
}

/**
 * One column (WIT `column`): `name`, `dataType`, `validity` (Uint8Array bitmap or undefined =
 * no nulls), `offsets` (Int32Array, rows + 1, for utf8/binary), `values` ({ tag, val }).
 * Input columns arrive as Columns; return them (modified in place) or new ones.
 */
export class Column {
  /** A new column; `data` is a typed array of the type's layout (a plain array is converted). */
  constructor(name, dataType, data, { validity, offsets } = {}) {
    const layout = layoutOf(dataType);
    if (!layout) throw new TypeError(`unknown data type ${JSON.stringify(dataType)}`);
    this.name = name;
    this.dataType = dataType;
    this.validity = validity ?? undefined;
    this.offsets = offsets == null ? undefined : offsets instanceof Int32Array ? offsets : Int32Array.from(offsets);
    this.values = { tag: layout, val: toTyped(layout, data) };
  }

  /** Wraps a WIT column record (as the bindings give it) without copying. */
  static wrap(raw) {
    const c = Object.create(Column.prototype);
    c.name = raw.name;
    c.dataType = raw.dataType;
    c.validity = raw.validity;
    c.offsets = raw.offsets;
    c.values = raw.values;
    return c;
  }

  /** A boolean column from a bitmap (BitmapBuilder or LSB-first bytes). */
  static boolean(name, bits, validity) {
    const bytes = bits instanceof BitmapBuilder ? bits.finish() : bits;
    return new Column(name, DataType.boolean, bytes, {
      validity: validity instanceof BitmapBuilder ? validity.finish() : validity,
    });
  }

  /** A utf8 column from strings (null/undefined = null). */
  static utf8(name, strings) {
    const b = new Utf8Builder(strings.length);
    for (const s of strings) b.push(s);
    return b.finish(name);
  }

  /** The layout of the values: 'f64', 'bytes', 'bits', … */
  get layout() {
    return this.values.tag;
  }
  /** The values as a typed array (Float64Array, BigInt64Array, Uint8Array for bytes and bits…). */
  get data() {
    return this.values.val;
  }
  set data(array) {
    this.values = { tag: this.values.tag, val: toTyped(this.values.tag, array) };
  }
  /** The values, checked to have `layout` ('f64', 'i64', 'bytes', …): else a PluginError. */
  dataAs(layout) {
    if (this.values.tag !== layout) {
      throw new PluginError(
        `column \`${this.name}\` holds ${this.values.tag} values (${typeName(this.dataType)}); expected ${layout}`,
      ).inColumn(this.name);
    }
    return this.values.val;
  }
  /** Whether row `i` is not null. */
  isValid(i) {
    const v = this.validity;
    return v === undefined || ((v[i >>> 3] >>> (i & 7)) & 1) === 1;
  }
  /** One byte per row, 1 where the row is not null (all 1 without a validity): the cheap way to
   * test validity in a hot loop (`if (valid[i])`) rather than calling isValid(i). */
  validMask(rows) {
    return this.validity === undefined ? new Uint8Array(rows).fill(1) : unpackBits(this.validity, rows);
  }
  /** Whether row `i` is null. */
  isNull(i) {
    return !this.isValid(i);
  }
  /** The number of nulls among the first `rows` rows. */
  nullCount(rows) {
    return this.validity === undefined ? 0 : rows - countSetBits(this.validity, rows);
  }
  /** A boolean column's value at row `i` (ignores validity). */
  boolAt(i) {
    return getBit(this.values.val, i);
  }
  /** A utf8/binary column's bytes at row `i` (a view into the column, no copy; ignores validity). */
  bytesAt(i) {
    return this.values.val.subarray(this.offsets[i], this.offsets[i + 1]);
  }
  /** A utf8 column's text at row `i`, or null. */
  strAt(i) {
    if (!this.isValid(i)) return null;
    return DECODER.decode(this.values.val.subarray(this.offsets[i], this.offsets[i + 1]));
  }
  /** Every text of a utf8 column (null for nulls), decoded: convenient, one string per row. */
  strings() {
    const n = this.offsets ? this.offsets.length - 1 : 0;
    const out = new Array(n);
    for (let i = 0; i < n; i++) out[i] = this.strAt(i);
    return out;
  }
  /** A copy named `name`. */
  renamed(name) {
    const c = Column.wrap(this);
    c.name = name;
    return c;
  }
}

/** Builds a utf8 (or binary) column: offsets and one byte buffer, validity only if a null comes. */
export class Utf8Builder {
  constructor(rows = 0, bytes = 0) {
    this.buf = new Uint8Array(Math.max(16, bytes));
    this.len = 0;
    this.offsets = new Int32Array(Math.max(2, rows + 1));
    this.rows = 0;
    this.validity = null; // BitmapBuilder once a null is pushed
  }
  /** Makes room for `extra` more bytes. */
  reserve(extra) {
    const need = this.len + extra;
    if (need > this.buf.length) {
      if (need > 0x7fffffff) throw new PluginError('a utf8 column cannot hold more than 2 GiB');
      const bigger = new Uint8Array(Math.min(0x7fffffff, Math.max(need, this.buf.length * 2)));
      bigger.set(this.buf.subarray(0, this.len));
      this.buf = bigger;
    }
  }
  #endRow(valid) {
    if (this.rows + 1 >= this.offsets.length) {
      const bigger = new Int32Array(this.offsets.length * 2);
      bigger.set(this.offsets);
      this.offsets = bigger;
    }
    this.rows++;
    this.offsets[this.rows] = this.len;
    if (this.validity) this.validity.push(valid);
    else if (!valid) {
      this.validity = BitmapBuilder.filled(this.rows - 1, true);
      this.validity.push(false);
    }
  }
  /** Appends a row: a string, bytes (Uint8Array), or null/undefined for a null. */
  push(value) {
    if (value == null) this.pushNull();
    else if (typeof value === 'string') this.pushStr(value);
    else this.pushBytes(value);
  }
  /** Appends a string, UTF-8 encoded straight into the buffer. */
  pushStr(s) {
    this.reserve(s.length * 3);
    const { written } = ENCODER.encodeInto(s, this.buf.subarray(this.len));
    this.len += written;
    this.#endRow(true);
  }
  /** Appends `src[start..end]` as one row; returns the copy (a view into the builder's buffer,
   * valid until the next push) so it can be changed in place. */
  pushBytes(src, start = 0, end = src.length) {
    const n = end - start;
    this.reserve(n);
    const at = this.len;
    this.buf.set(n === src.length ? src : src.subarray(start, end), at);
    this.len += n;
    this.#endRow(true);
    return this.buf.subarray(at, at + n);
  }
  /** Appends a null row. */
  pushNull() {
    this.#endRow(false);
  }
  /** The column (utf8 unless `dataType` says binary). */
  finish(name, dataType = DataType.utf8) {
    const c = Object.create(Column.prototype);
    c.name = name;
    c.dataType = dataType;
    c.validity = this.validity ? this.validity.finish() : undefined;
    c.offsets = this.offsets.slice(0, this.rows + 1);
    c.values = { tag: 'bytes', val: this.buf.slice(0, this.len) };
    return c;
  }
}

/** Builds a nullable boolean column: push(true | false | null). */
export class BooleanBuilder {
  constructor(rows = 0) {
    this.bits = new BitmapBuilder(rows);
    this.validity = null;
  }
  push(value) {
    if (value == null) {
      if (!this.validity) this.validity = BitmapBuilder.filled(this.bits.length, true);
      this.validity.push(false);
      this.bits.push(false);
    } else {
      if (this.validity) this.validity.push(true);
      this.bits.push(value);
    }
  }
  finish(name) {
    return Column.boolean(name, this.bits.finish(), this.validity ? this.validity.finish() : undefined);
  }
}

// ---------------------------------------------------------------------------------------------
// Batches

/** One input batch: `rows`, and `columns` (the plan's `reads`, in that order). */
export class Batch {
  constructor(rows, columns) {
    this.rows = rows;
    this.columns = columns;
  }
  /** The column called `name`, or a PluginError. */
  column(name) {
    const c = this.columns.find((c) => c.name === name);
    if (!c) throw new PluginError(`column \`${name}\` is not in the batch (is it in the plan's reads?)`).inColumn(name);
    return c;
  }
}

/** One output batch (WIT `output-batch`): the computed columns and an optional row selection. */
export class OutputBatch {
  constructor(rows, columns, selection = undefined) {
    this.rows = rows;
    this.columns = columns;
    this.selection = selection;
  }
  /** Keeps every input row. */
  static allRows(rows, columns) {
    return new OutputBatch(rows, columns);
  }
  /** Keeps the input rows whose bit is set (a BitmapBuilder, or bytes plus the input's row
   * count); the computed columns hold only those rows. */
  static selected(selection, columns, inputRows = undefined) {
    if (selection instanceof BitmapBuilder) {
      return new OutputBatch(selection.countSet(), columns, selection.finish());
    }
    if (inputRows === undefined) throw new TypeError('OutputBatch.selected(bytes, columns, inputRows)');
    return new OutputBatch(countSetBits(selection, inputRows), columns, selection);
  }
}

// ---------------------------------------------------------------------------------------------
// Export

function pluginErrorOf(e) {
  if (e instanceof PluginError) {
    return { message: e.message, column: e.column ?? undefined, row: e.row ?? undefined };
  }
  if (e instanceof ParamError) return { message: e.message, column: undefined, row: undefined };
  if (e instanceof Error) {
    const stack = e.stack ? `\n${e.stack.trimEnd()}` : '';
    return { message: `${e.name}: ${e.message}${stack}`, column: undefined, row: undefined };
  }
  if (e && typeof e === 'object' && typeof e.message === 'string') {
    return { message: e.message, column: e.column ?? undefined, row: e.row ?? undefined };
  }
  return { message: String(e), column: undefined, row: undefined };
}

function paramErrorOf(e) {
  if (e instanceof ParamError) return { tag: e.tag, val: e.val };
  // Anything else thrown by the constructor: report it as an invalid parameter.
  const reason = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  return { tag: 'invalid', val: { name: e?.param ?? '(init)', reason } };
}

function infoOf(info) {
  return {
    name: String(info.name),
    version: String(info.version ?? '0.0.0'),
    description: String(info.description ?? ''),
    params: (info.params ?? []).map((p) => (p instanceof ParamSpec ? p.toWit() : p)),
  };
}

function outputOf(o) {
  return {
    rows: o.rows,
    columns: o.columns,
    selection: o.selection instanceof BitmapBuilder ? o.selection.finish() : (o.selection ?? undefined),
  };
}

/**
 * The `transformer` export for a plugin class:
 * - `static describe()` → { name, version, description, params: [param.text(…), …] };
 * - `constructor(params)` (a checked `Params`; throw a ParamError to refuse one);
 * - `prepare(input)` → a Plan (input: [{ name, dataType, nullable }]);
 * - `transform(batch)` → an OutputBatch or a list of them (batch: a Batch of Columns).
 * Throw a PluginError (or anything) from prepare/transform: it becomes the call's error.
 */
export function exportPlugin(PluginClass) {
  let instance = null;
  const specs = () => infoOf(PluginClass.describe()).params;
  const needInit = () => {
    if (!instance) throw new PluginError('the plugin was not initialised (init failed or was not called)');
  };
  return {
    describe() {
      try {
        return infoOf(PluginClass.describe());
      } catch (e) {
        log('error', `describe failed: ${pluginErrorOf(e).message}`);
        throw e;
      }
    },
    init(params) {
      try {
        instance = null;
        instance = new PluginClass(Params.check(specs(), params));
        return { tag: 'ok', val: undefined };
      } catch (e) {
        return { tag: 'err', val: paramErrorOf(e) };
      }
    },
    prepare(input) {
      try {
        needInit();
        const plan = instance.prepare(input);
        return { tag: 'ok', val: { reads: plan.reads, output: plan.output } };
      } catch (e) {
        return { tag: 'err', val: pluginErrorOf(e) };
      }
    },
    transform(input) {
      try {
        needInit();
        const batch = new Batch(input.rows, input.columns.map(Column.wrap));
        const out = instance.transform(batch);
        const list = out == null ? [] : Array.isArray(out) ? out : [out];
        return { tag: 'ok', val: list.map(outputOf) };
      } catch (e) {
        return { tag: 'err', val: pluginErrorOf(e) };
      }
    },
  };
}
