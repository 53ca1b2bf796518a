"""Write Quiver transform plugins in Python.

A plugin is a subclass of :class:`Plugin` in ``app.py``, exported with
``Transformer = quiver.export(MyPlugin)``, and built with ``sdk/python/build.sh DIR`` (or
``quiver plugin build DIR``) into a WebAssembly component by componentize-py.

Columns arrive the way the bindings give them, without per-element conversion in this kit:

- ``bytes`` for bit-packed booleans and validity bitmaps (LSB first), for int8/uint8 values
  and for the concatenated values of utf8/binary columns;
- ``list`` of ``int``/``float`` for every other numeric layout and for utf8/binary offsets.

The helpers below slice, pack and unpack them with C-level loops (``map``, ``bytes``,
``int.from_bytes``, ``b"".join``, ``itertools.accumulate``) wherever the layout allows.

The component runs with every WASI import replaced by a trapping stub (``--stub-wasi``): a
plugin has no files, clocks, random source or sockets. During calls, ``print`` (stdout) and
``sys.stderr`` are sent to the host's log by this module. Import every module you need at the top level of ``app.py``:
nothing can be imported while the plugin runs.
"""

import sys
from array import array
from itertools import accumulate, islice, repeat
from operator import is_not

from componentize_py_types import Err
from wit_world import exports as _exports
from wit_world.imports import host as _host
from wit_world.imports import types as _t

__all__ = [
    "Plugin", "export", "Params", "param", "ParamError", "PluginError",
    "Plan", "Batch", "Column", "Output", "Field",
    "find_field", "expect_type", "type_name", "pack_bits", "unpack_bits", "count_bits",
    "get_bit", "log", "debug", "info", "warn", "error", "Level", "TimeUnit", "timestamp",
    "BOOLEAN", "INT8", "INT16", "INT32", "INT64", "UINT8", "UINT16", "UINT32", "UINT64",
    "FLOAT32", "FLOAT64", "UTF8", "BINARY", "DATE32", "INTEGERS", "FLOATS", "NUMERIC",
]

# ---------------------------------------------------------------------------------------------
# Data types

Field = _t.Field
TimeUnit = _t.TimeUnit
Level = _host.Level

BOOLEAN = _t.DataType_Boolean()
INT8 = _t.DataType_Int8()
INT16 = _t.DataType_Int16()
INT32 = _t.DataType_Int32()
INT64 = _t.DataType_Int64()
UINT8 = _t.DataType_Uint8()
UINT16 = _t.DataType_Uint16()
UINT32 = _t.DataType_Uint32()
UINT64 = _t.DataType_Uint64()
FLOAT32 = _t.DataType_Float32()
FLOAT64 = _t.DataType_Float64()
UTF8 = _t.DataType_Utf8()
BINARY = _t.DataType_Binary()
DATE32 = _t.DataType_Date32()

INTEGERS = (INT8, INT16, INT32, INT64, UINT8, UINT16, UINT32, UINT64)
FLOATS = (FLOAT32, FLOAT64)
NUMERIC = INTEGERS + FLOATS


def timestamp(unit=TimeUnit.MICROSECOND, timezone=None):
    """The data type of a timestamp column (values are int64 in ``unit``)."""
    return _t.DataType_Timestamp(_t.TimestampType(unit, timezone))


_NAMES = {
    _t.DataType_Boolean: "Boolean", _t.DataType_Int8: "Int8", _t.DataType_Int16: "Int16",
    _t.DataType_Int32: "Int32", _t.DataType_Int64: "Int64", _t.DataType_Uint8: "UInt8",
    _t.DataType_Uint16: "UInt16", _t.DataType_Uint32: "UInt32", _t.DataType_Uint64: "UInt64",
    _t.DataType_Float32: "Float32", _t.DataType_Float64: "Float64", _t.DataType_Utf8: "Utf8",
    _t.DataType_Binary: "Binary", _t.DataType_Date32: "Date32",
}


def type_name(data_type):
    """Arrow's name of a data type: ``Utf8``, ``Float64``, ``Timestamp(Millisecond, UTC)``…"""
    if isinstance(data_type, _t.DataType_Timestamp):
        unit = data_type.value.unit.name.capitalize()
        tz = data_type.value.timezone
        return f"Timestamp({unit}, {tz})" if tz is not None else f"Timestamp({unit})"
    return _NAMES.get(type(data_type), repr(data_type))


# Per data type: (values variant, payload kind, array typecode for bytes payloads).
# Payload kinds: "bits" (bit-packed bytes), "bytes" (bytes, one byte per value, or the
# concatenated values of a utf8/binary column), "list" (a list of numbers).
_LAYOUT = {
    _t.DataType_Boolean: (_t.Values_Bits, "bits", None),
    _t.DataType_Int8: (_t.Values_I8, "bytes", "b"),
    _t.DataType_Int16: (_t.Values_I16, "list", None),
    _t.DataType_Int32: (_t.Values_I32, "list", None),
    _t.DataType_Int64: (_t.Values_I64, "list", None),
    _t.DataType_Uint8: (_t.Values_U8, "bytes", "B"),
    _t.DataType_Uint16: (_t.Values_U16, "list", None),
    _t.DataType_Uint32: (_t.Values_U32, "list", None),
    _t.DataType_Uint64: (_t.Values_U64, "list", None),
    _t.DataType_Float32: (_t.Values_F32, "list", None),
    _t.DataType_Float64: (_t.Values_F64, "list", None),
    _t.DataType_Utf8: (_t.Values_Bytes, "var", None),
    _t.DataType_Binary: (_t.Values_Bytes, "var", None),
    _t.DataType_Date32: (_t.Values_I32, "list", None),
    _t.DataType_Timestamp: (_t.Values_I64, "list", None),
}


def _layout(data_type):
    try:
        return _LAYOUT[type(data_type)]
    except KeyError:
        raise TypeError(f"not a Quiver data type: {data_type!r}") from None


# ---------------------------------------------------------------------------------------------
# Bitmaps (Arrow's layout: bit i of byte i // 8, least significant bit first)

_TO_DIGITS = bytes([48] + [49] * 255)  # 0 → b"0", anything else → b"1"
_FROM_DIGITS = bytes.maketrans(b"01", b"\x00\x01")


def pack_bits(flags):
    """Packs truth values into a bitmap (LSB first): ``bytes`` of ceil(n / 8) bytes.

    ``flags`` is ``bytes``/``bytearray`` (0 = false, anything else = true; the fast path) or any
    sequence of truth values (``bool``, ``None`` = false)."""
    if not isinstance(flags, (bytes, bytearray)):
        flags = bytes(map(bool, flags))
    n = len(flags)
    if n == 0:
        return b""
    # One digit per row, reversed so that row 0 is the least significant bit.
    return int(flags.translate(_TO_DIGITS)[::-1], 2).to_bytes((n + 7) >> 3, "little")


def unpack_bits(bits, n):
    """The first ``n`` bits of a bitmap as ``bytes`` of 0/1, one byte per row."""
    if n == 0:
        return b""
    nbytes = (n + 7) >> 3
    if len(bits) < nbytes:
        raise ValueError(f"a bitmap of {len(bits)} bytes cannot hold {n} rows")
    x = int.from_bytes(bits[:nbytes], "little")
    return format(x, f"0{nbytes * 8}b")[::-1][:n].encode().translate(_FROM_DIGITS)


def count_bits(bits, n):
    """Number of set bits among the first ``n`` bits of a bitmap."""
    if n == 0:
        return 0
    x = int.from_bytes(bits[: (n + 7) >> 3], "little") & ((1 << n) - 1)
    return x.bit_count()


def get_bit(bits, i):
    """Whether bit ``i`` of a bitmap is set."""
    return (bits[i >> 3] >> (i & 7)) & 1 == 1


# ---------------------------------------------------------------------------------------------
# Errors


class PluginError(Exception):
    """Raise from ``prepare`` or ``transform``: the host reports the message with the column
    and row (0-based within the batch) if given."""

    def __init__(self, message, column=None, row=None):
        super().__init__(message)
        self.message = str(message)
        self.column = column
        self.row = row

    def in_column(self, column):
        """Names the column concerned; returns the error (to chain)."""
        self.column = column
        return self

    def at_row(self, row):
        """Names the row concerned; returns the error (to chain)."""
        self.row = row
        return self

    def to_wit(self):
        row = None if self.row is None else int(self.row)
        column = None if self.column is None else str(self.column)
        return _t.PluginError(self.message, column, row)


class ParamError(Exception):
    """Raise from ``Plugin.__init__`` for a parameter that cannot be used. Build it with
    :meth:`invalid` (the usual case), :meth:`missing`, :meth:`unknown` or :meth:`wrong_kind`."""

    def __init__(self, wit_error):
        super().__init__(_describe_param_error(wit_error))
        self.wit = wit_error

    @classmethod
    def invalid(cls, name, reason):
        """The value has the right kind but cannot be used."""
        return cls(_t.ParamError_Invalid(_t.InvalidParam(name, str(reason))))

    @classmethod
    def missing(cls, name):
        return cls(_t.ParamError_Missing(name))

    @classmethod
    def unknown(cls, name):
        return cls(_t.ParamError_Unknown(name))

    @classmethod
    def wrong_kind(cls, name, expected, found):
        return cls(_t.ParamError_WrongKind(_t.WrongKind(name, expected, found)))


def _describe_param_error(e):
    if isinstance(e, _t.ParamError_Invalid):
        return f"`{e.value.name}` is invalid: {e.value.reason}"
    if isinstance(e, _t.ParamError_Missing):
        return f"`{e.value}` is required"
    if isinstance(e, _t.ParamError_Unknown):
        return f"`{e.value}` is unknown"
    w = e.value
    return f"`{w.name}` must be {w.expected.name.lower()}, not {w.found.name.lower()}"


# ---------------------------------------------------------------------------------------------
# Parameters

_K = _t.ParamKind


def _to_param_value(kind, value):
    if kind is _K.BOOLEAN:
        return _t.ParamValue_Boolean(bool(value))
    if kind is _K.INT:
        return _t.ParamValue_Int(int(value))
    if kind is _K.FLOAT:
        return _t.ParamValue_Float(float(value))
    if kind is _K.TEXT:
        return _t.ParamValue_Text(str(value))
    if kind is _K.TEXT_LIST:
        if isinstance(value, str):
            value = [value]
        return _t.ParamValue_TextList([str(v) for v in value])
    items = value.items() if isinstance(value, dict) else value
    return _t.ParamValue_TextMap([(str(k), str(v)) for k, v in items])


class _ParamSpecs:
    """Declares parameters in ``Plugin.params``: ``param.text("column", "doc", required=True)``,
    ``param.float("factor", "doc", default=2.0)``. Defaults are plain Python values."""

    @staticmethod
    def _spec(kind, name, doc, required, default):
        d = None if default is None else _to_param_value(kind, default)
        return _t.ParamSpec(name, kind, bool(required), d, doc)

    def boolean(self, name, doc, *, required=False, default=None):
        return self._spec(_K.BOOLEAN, name, doc, required, default)

    def int(self, name, doc, *, required=False, default=None):
        return self._spec(_K.INT, name, doc, required, default)

    def float(self, name, doc, *, required=False, default=None):
        """A float parameter (an integer is accepted too)."""
        return self._spec(_K.FLOAT, name, doc, required, default)

    def text(self, name, doc, *, required=False, default=None):
        return self._spec(_K.TEXT, name, doc, required, default)

    def text_list(self, name, doc, *, required=False, default=None):
        """A list of text (a single text is accepted as a list of one)."""
        return self._spec(_K.TEXT_LIST, name, doc, required, default)

    def text_map(self, name, doc, *, required=False, default=None):
        """A table of text values, in file order (a dict or a list of pairs as default)."""
        return self._spec(_K.TEXT_MAP, name, doc, required, default)


param = _ParamSpecs()


def _kind_of(value):
    return {
        _t.ParamValue_Boolean: _K.BOOLEAN, _t.ParamValue_Int: _K.INT,
        _t.ParamValue_Float: _K.FLOAT, _t.ParamValue_Text: _K.TEXT,
        _t.ParamValue_TextList: _K.TEXT_LIST, _t.ParamValue_TextMap: _K.TEXT_MAP,
    }[type(value)]


class Params:
    """Checked parameters: every name is declared, every value has its declared kind, required
    ones are present and defaults are filled in. Values are plain Python values (``str``,
    ``int``, ``float``, ``bool``, ``list[str]``, ``list[tuple[str, str]]``)."""

    def __init__(self, values):
        self._values = dict(values)

    @classmethod
    def check(cls, specs, given):
        """Checks the host's ``given`` parameters against ``specs`` (raises :class:`ParamError`)."""
        by_name = {s.name: s for s in specs}
        values = {}
        for p in given:
            spec = by_name.get(p.name)
            if spec is None:
                raise ParamError.unknown(p.name)
            v, kind = p.value, _kind_of(p.value)
            if spec.kind is _K.FLOAT and kind is _K.INT:
                value = float(v.value)
            elif spec.kind is _K.TEXT_LIST and kind is _K.TEXT:
                value = [v.value]
            elif spec.kind is kind:
                value = list(v.value) if kind in (_K.TEXT_LIST, _K.TEXT_MAP) else v.value
            else:
                raise ParamError.wrong_kind(p.name, spec.kind, kind)
            values[p.name] = value
        for spec in specs:
            if spec.name in values:
                continue
            if spec.default is not None:
                d = spec.default.value
                values[spec.name] = list(d) if isinstance(d, list) else d
            elif spec.required:
                raise ParamError.missing(spec.name)
        return cls(values)

    def __contains__(self, name):
        return name in self._values

    def __getitem__(self, name):
        return self._values[name]

    def get(self, name, default=None):
        """The value, or ``default`` if the parameter was neither given nor defaulted."""
        return self._values.get(name, default)

    def text(self, name, default=None):
        return self._values.get(name, default)

    def int(self, name, default=None):
        return self._values.get(name, default)

    def float(self, name, default=None):
        return self._values.get(name, default)

    def boolean(self, name, default=None):
        return self._values.get(name, default)

    def text_list(self, name):
        """A list of text (empty if absent)."""
        return list(self._values.get(name, ()))

    def text_map(self, name):
        """A table of text as a list of ``(key, value)`` pairs in file order (empty if absent)."""
        return list(self._values.get(name, ()))

    def choice(self, name, choices):
        """A text parameter that must be one of ``choices`` (raises :class:`ParamError`)."""
        value = self._values.get(name, "")
        if value not in choices:
            raise ParamError.invalid(name, f"`{value}` is not one of {', '.join(choices)}")
        return value

    @staticmethod
    def invalid(name, reason):
        """A :class:`ParamError` to raise: parameter ``name`` cannot be used, because ``reason``."""
        return ParamError.invalid(name, reason)

    def __repr__(self):
        return f"Params({self._values!r})"


# ---------------------------------------------------------------------------------------------
# Schemas and plans


def find_field(schema, name):
    """The field called ``name``, or a :class:`PluginError` listing the available columns."""
    for f in schema:
        if f.name == name:
            return f
    names = ", ".join(f.name for f in schema)
    raise PluginError(f"column `{name}` not found; the input has: {names}", column=name)


def expect_type(schema, name, allowed):
    """The field called ``name``, checked to have one of the ``allowed`` data types."""
    f = find_field(schema, name)
    if f.data_type not in allowed:
        expected = ", ".join(type_name(t) for t in allowed)
        raise PluginError(
            f"column `{name}` has type {type_name(f.data_type)}; expected {expected}",
            column=name,
        )
    return f


class Plan:
    """What the plugin reads and the output schema. Start from :meth:`passthrough` (every
    input column passes through untouched) and chain :meth:`compute`, :meth:`computed`,
    :meth:`read` and :meth:`drop`."""

    def __init__(self, reads=None, output=None):
        self.reads = list(reads or [])
        self.output = list(output or [])

    @classmethod
    def passthrough(cls, schema):
        """Reads nothing; passes every input column through unchanged."""
        return cls([], [
            _t.OutputField(f.name, f.data_type, bool(f.nullable), _t.OutputSource_Passthrough(f.name))
            for f in schema
        ])

    def read(self, name):
        """Adds ``name`` to the columns the plugin reads (once); they cross in this order."""
        if name not in self.reads:
            self.reads.append(name)
        return self

    def compute(self, name, data_type, nullable=True, after=None):
        """Reads input column ``name`` and replaces its output column by a computed one."""
        return self.read(name).computed(name, data_type, nullable, after)

    def computed(self, name, data_type, nullable=True, after=None):
        """Declares a computed output column ``name``: it replaces an output column of that
        name in place, or is appended (right after output column ``after`` if given)."""
        field = _t.OutputField(name, data_type, bool(nullable), _t.OutputSource_Computed())
        for i, f in enumerate(self.output):
            if f.name == name:
                if after is None:
                    self.output[i] = field
                    return self
                del self.output[i]
                break
        if after is None:
            self.output.append(field)
        else:
            at = self._index(after)
            self.output.insert(at + 1, field)
        return self

    def drop(self, name):
        """Removes output column ``name``."""
        self.output = [f for f in self.output if f.name != name]
        return self

    def _index(self, name):
        for i, f in enumerate(self.output):
            if f.name == name:
                return i
        raise PluginError(f"the plan has no output column `{name}`", column=name)

    def to_wit(self):
        return _t.Plan(list(self.reads), list(self.output))

    def __repr__(self):
        return f"Plan(reads={self.reads!r}, output={[f.name for f in self.output]!r})"


# ---------------------------------------------------------------------------------------------
# Columns


class Column:
    """One column, with its payload as the bindings give it:

    - ``values``: ``bytes`` for boolean (bit-packed), int8 (two's complement), uint8 and
      utf8/binary (concatenated) columns, ``list`` for every other type;
    - ``validity``: bit-packed ``bytes`` (bit set = valid) or ``None`` (no nulls);
    - ``offsets``: for utf8/binary, a ``list`` of rows + 1 ints into ``values`` (the first one
      need not be 0); ``None`` otherwise;
    - ``rows``: the number of rows (known for input columns and for columns built here).

    Modify ``values`` in place or assign a new one and return the column: it goes back as is.
    When assigning, a ``list`` for a ``bytes`` layout (or an ``array``) is accepted and packed
    on the way out."""

    __slots__ = ("name", "data_type", "values", "validity", "offsets", "rows")

    def __init__(self, name, data_type, values, validity=None, offsets=None, rows=None):
        self.name = name
        self.data_type = data_type
        self.values = values
        self.validity = validity
        self.offsets = offsets
        if rows is None:
            kind = _layout(data_type)[1]
            if kind == "var":
                rows = len(offsets) - 1 if offsets is not None else None
            elif kind != "bits":
                rows = len(values)
        self.rows = rows

    def __repr__(self):
        return f"Column({self.name!r}, {type_name(self.data_type)}, rows={self.rows})"

    def __len__(self):
        return self._rows()

    def _rows(self):
        if self.rows is None:
            raise ValueError(f"column `{self.name}`: number of rows unknown (set `rows`)")
        return self.rows

    # -- validity ---------------------------------------------------------------------------

    def is_valid(self, i):
        """Whether row ``i`` holds a value (is not null)."""
        v = self.validity
        return v is None or (v[i >> 3] >> (i & 7)) & 1 == 1

    def null_count(self):
        if self.validity is None:
            return 0
        n = self._rows()
        return n - count_bits(self.validity, n)

    def valid_flags(self):
        """Validity as ``bytes`` of 0/1, one per row, or ``None`` if the column has no nulls."""
        if self.validity is None:
            return None
        return unpack_bits(self.validity, self._rows())

    def _with_nulls(self, items):
        flags = self.valid_flags()
        if flags is None:
            return items
        return [v if f else None for v, f in zip(items, flags)]

    # -- typed views ------------------------------------------------------------------------

    def slices(self):
        """Bytes of every row of a utf8/binary column, nulls included (usually ``b""``)."""
        data, off = self.values, self.offsets
        if off is None:
            raise PluginError(f"column `{self.name}` has type {type_name(self.data_type)}, "
                              "not utf8 or binary", column=self.name)
        return [data[a:b] for a, b in zip(off, islice(off, 1, None))]

    def binaries(self):
        """Bytes of every row of a utf8/binary column; ``None`` for nulls."""
        return self._with_nulls(self.slices())

    def texts(self):
        """Text (``str``) of every row of a utf8 column; ``None`` for nulls."""
        data, off = self.values, self.offsets
        if off is None:
            raise PluginError(f"column `{self.name}` has type {type_name(self.data_type)}, "
                              "not utf8", column=self.name)
        if data.isascii():
            # Byte offsets are character offsets: decode once, slice the text.
            text = data.decode("ascii")
            items = [text[a:b] for a, b in zip(off, islice(off, 1, None))]
        else:
            items = list(map(bytes.decode, self.slices()))
        return self._with_nulls(items)

    def bits(self):
        """Values of a boolean column as ``bytes`` of 0/1, one per row (nulls: their bit)."""
        return unpack_bits(self.values, self._rows())

    def to_list(self):
        """The values as a Python list (``bool``, ``int``, ``float``, ``str`` for utf8,
        ``bytes`` for binary), ``None`` for nulls. Costs one object per row."""
        kind = _layout(self.data_type)[1]
        if kind == "var":
            return self.texts() if self.data_type == UTF8 else self.binaries()
        if kind == "bits":
            items = list(map(bool, self.bits()))
        elif kind == "bytes":
            items = self.numbers()
        else:
            items = self.values
        return self._with_nulls(items)

    def numbers(self):
        """Values of a numeric (or date/timestamp) column as a list of ``int``/``float``,
        ignoring validity; the payload list itself when it is one (no copy)."""
        _, kind, code = _layout(self.data_type)
        v = self.values
        if kind == "bytes" and isinstance(v, (bytes, bytearray)):
            return array(code, v).tolist()
        if kind in ("bits", "var"):
            raise PluginError(f"column `{self.name}` has type {type_name(self.data_type)}, "
                              "not a numeric type", column=self.name)
        return v if isinstance(v, list) else list(v)

    def floats(self):
        """Values of a numeric column as a list of ``float``, ignoring validity: the payload
        list itself for float32/float64 columns, converted otherwise."""
        if self.data_type in FLOATS and isinstance(self.values, list):
            return self.values
        if self.data_type not in NUMERIC:
            raise PluginError(f"column `{self.name}` has type {type_name(self.data_type)}, "
                              "not a numeric type", column=self.name)
        return list(map(float, self.numbers()))

    # -- builders ---------------------------------------------------------------------------

    @classmethod
    def of(cls, name, data_type, values, validity=None):
        """A fixed-width column from its payload (a ``list``, or ``bytes`` for int8 and uint8)
        and an optional validity bitmap. Boolean columns: use :meth:`boolean`."""
        return cls(name, data_type, values, validity)

    @classmethod
    def from_list(cls, name, data_type, items):
        """A column from Python values with ``None`` for nulls (any type; strings or bytes for
        utf8/binary, truth values for boolean)."""
        kind = _layout(data_type)[1]
        if kind == "var":
            return cls.strings(name, items, data_type)
        if kind == "bits":
            return cls.boolean(name, items)
        nulls = items.count(None)
        validity = None
        if nulls:
            validity = pack_bits(bytes(map(is_not, items, repeat(None))))
            items = [0 if v is None else v for v in items]
        if kind == "bytes":
            values = array(_layout(data_type)[2], items).tobytes()
        elif data_type in FLOATS:
            values = list(map(float, items))
        else:
            values = list(items)
        return cls(name, data_type, values, validity, rows=len(items))

    @classmethod
    def float64(cls, name, values, validity=None):
        """A float64 column from a list of floats and an optional validity bitmap."""
        return cls(name, FLOAT64, values, validity)

    @classmethod
    def boolean(cls, name, values, validity=None):
        """A boolean column from ``bytes`` of 0/1 (one per row; the fast path) or a sequence of
        truth values, ``None`` for nulls (unless ``validity`` is given)."""
        rows = len(values)
        if not isinstance(values, (bytes, bytearray)):
            if validity is None and None in values:
                validity = pack_bits(bytes(map(is_not, values, repeat(None))))
            values = bytes(map(bool, values))
        return cls(name, BOOLEAN, pack_bits(values), validity, rows=rows)

    @classmethod
    def strings(cls, name, items, data_type=UTF8, validity=None):
        """A utf8 (or binary) column from a sequence of ``bytes`` or ``str``, ``None`` for
        nulls. With ``validity`` given (e.g. the input column's), ``None`` may not occur and
        the value under a null row is kept as is."""
        if not isinstance(items, list):
            items = list(items)
        if validity is None and None in items:
            validity = pack_bits(bytes(map(is_not, items, repeat(None))))
            items = [b"" if v is None else v for v in items]
        try:
            data = b"".join(items)
        except TypeError:
            items = [v.encode() if isinstance(v, str) else v for v in items]
            data = b"".join(items)
        if len(data) > 0x7FFFFFFF:
            raise PluginError(f"column `{name}`: more than 2 GiB of text in one batch",
                              column=name)
        offsets = list(accumulate(map(len, items), initial=0))
        return cls(name, data_type, data, validity, offsets)

    @classmethod
    def utf8(cls, name, items, validity=None):
        """A utf8 column: see :meth:`strings`."""
        return cls.strings(name, items, UTF8, validity)

    @classmethod
    def binary(cls, name, items, validity=None):
        """A binary column: see :meth:`strings`."""
        return cls.strings(name, items, BINARY, validity)

    # -- conversion -------------------------------------------------------------------------

    @classmethod
    def _from_wit(cls, c, rows):
        return cls(c.name, c.data_type, c.values.value, c.validity, c.offsets, rows)

    def _to_wit(self):
        variant, kind, code = _layout(self.data_type)
        v = self.values
        if kind == "list":
            if type(v) is not list:
                v = v.tolist() if isinstance(v, array) else list(v)
        elif type(v) is not bytes:
            if kind == "bits" and not isinstance(v, (bytearray, memoryview, array)):
                v = pack_bits(v)  # truth values, one per row
            elif isinstance(v, (bytearray, memoryview)):
                v = bytes(v)
            elif isinstance(v, array):
                v = v.tobytes()
            elif kind == "bytes":
                v = array(code, v).tobytes()
            else:
                v = bytes(v)
        validity = self.validity
        if validity is not None and type(validity) is not bytes:
            validity = bytes(validity)
        offsets = self.offsets
        if offsets is not None and type(offsets) is not list:
            offsets = offsets.tolist() if isinstance(offsets, array) else list(offsets)
        return _t.Column(self.name, self.data_type, validity, offsets, variant(v))


# ---------------------------------------------------------------------------------------------
# Batches


class Output:
    """One output batch: the plan's computed columns and, optionally, a selection of input rows
    (bit-packed; passthrough columns keep the rows whose bit is set)."""

    __slots__ = ("rows", "columns", "selection")

    def __init__(self, rows, columns, selection=None):
        self.rows = rows
        self.columns = list(columns)
        self.selection = selection

    def _to_wit(self):
        cols = [c._to_wit() if isinstance(c, Column) else c for c in self.columns]
        sel = self.selection
        if sel is not None and type(sel) is not bytes:
            sel = bytes(sel)
        return _t.OutputBatch(int(self.rows), cols, sel)


class Batch:
    """The input batch: ``rows`` and the plan's ``reads`` columns, in that order
    (``batch.columns[0]``, or ``batch["name"]``)."""

    __slots__ = ("rows", "columns")

    def __init__(self, rows, columns):
        self.rows = rows
        self.columns = columns

    def __getitem__(self, name):
        if isinstance(name, int):
            return self.columns[name]
        for c in self.columns:
            if c.name == name:
                return c
        raise PluginError(f"column `{name}` is not in the batch (is it in the plan's reads?)",
                          column=name)

    def __iter__(self):
        return iter(self.columns)

    def output(self, columns):
        """An output keeping every input row."""
        return Output(self.rows, columns)

    def select(self, keep, columns=()):
        """An output keeping the input rows where ``keep`` is true (``bytes`` of 0/1 or truth
        values, one per input row). ``columns`` must hold only the kept rows. (To pass a
        ready bitmap, build ``Output(rows, columns, selection)`` yourself.)"""
        if len(keep) != self.rows:
            raise PluginError(f"selection of {len(keep)} rows for a batch of {self.rows}")
        bits = pack_bits(keep)
        return Output(count_bits(bits, self.rows), columns, bits)


# ---------------------------------------------------------------------------------------------
# Logging; stdout and stderr go to the host's log (there is no WASI stdio in the component)


def log(message, level=Level.INFO):
    """Writes a message to the host's log, attributed to this plugin."""
    _host.log(level, str(message))


def debug(message):
    _host.log(Level.DEBUG, str(message))


def info(message):
    _host.log(Level.INFO, str(message))


def warn(message):
    _host.log(Level.WARN, str(message))


def error(message):
    _host.log(Level.ERROR, str(message))


class _LogStream:
    """A text stream that sends each line to ``host.log``."""

    encoding = "utf-8"
    errors = "replace"

    def __init__(self, level):
        self._level = level
        self._buf = []

    def write(self, s):
        s = str(s)
        if "\n" in s:
            *lines, rest = "".join(self._buf + [s]).split("\n")
            self._buf = [rest] if rest else []
            for line in lines:
                _host.log(self._level, line)
        elif s:
            self._buf.append(s)
        return len(s)

    def writelines(self, lines):
        for line in lines:
            self.write(line)

    def flush(self):
        if self._buf:
            line, self._buf = "".join(self._buf), []
            _host.log(self._level, line)

    def isatty(self):
        return False

    def writable(self):
        return True

    def readable(self):
        return False


_stdout = _LogStream(Level.INFO)
_stderr = _LogStream(Level.WARN)


def _enter():
    # Installed at each call rather than at import: while componentize-py snapshots app.py at
    # build time, host.log does not exist yet and errors must reach the build's own stderr.
    sys.stdout = _stdout
    sys.stderr = _stderr


def _flush():
    try:
        _stdout.flush()
        _stderr.flush()
    except Exception:  # noqa: BLE001 - logging must never fail a call
        pass


# ---------------------------------------------------------------------------------------------
# The plugin and its export


class Plugin:
    """Base class of a plugin. Set ``name``, ``version``, ``description`` and ``params`` (a list
    of ``param.*`` specs), then implement:

    - ``__init__(self, params)``: called once per instance with checked :class:`Params`;
      raise :class:`ParamError` (e.g. ``params.invalid(name, reason)``) to refuse them;
    - ``prepare(self, schema)``: a list of :class:`Field` → a :class:`Plan`;
    - ``transform(self, batch)``: a :class:`Batch` → an :class:`Output` (or a list of them).

    Raise :class:`PluginError` for data or schema problems."""

    name = "plugin"
    version = "0.1.0"
    description = ""
    params = []

    def __init__(self, params):
        self.params = params

    def prepare(self, schema):
        raise PluginError(f"plugin `{self.name}` does not implement prepare")

    def transform(self, batch):
        raise PluginError(f"plugin `{self.name}` does not implement transform")


def _where(exc):
    """Where an exception was raised: ``file:line in function`` of the last few frames (no
    source lines: there are no files to read them from)."""
    frames = []
    tb = exc.__traceback__
    while tb is not None:
        code = tb.tb_frame.f_code
        frames.append(f"{code.co_filename.rsplit('/', 1)[-1]}:{tb.tb_lineno} in {code.co_name}")
        tb = tb.tb_next
    frames = [f for f in frames if not f.startswith("quiver.py:")] or frames
    return " ← ".join(reversed(frames[-3:]))


def _unexpected(exc, call):
    where = _where(exc)
    message = f"{type(exc).__name__}: {exc}" + (f" (at {where})" if where else "")
    try:
        _host.log(Level.ERROR, f"{call} raised {message}")
    except Exception:  # noqa: BLE001
        pass
    return message


def export(plugin_class):
    """The class componentize-py exports for the ``transformer`` interface: write
    ``Transformer = quiver.export(MyPlugin)`` at the top level of ``app.py``."""

    specs = list(plugin_class.params)

    # componentize-py makes one instance of this class per exported function, so the plugin
    # lives here, shared by all of them (one Wasm instance = one plugin instance).
    state = [None]

    class Transformer(_exports.Transformer):
        def describe(self):
            cls = plugin_class
            return _t.PluginInfo(str(cls.name), str(cls.version), str(cls.description), specs)

        def init(self, params):
            _enter()
            try:
                state[0] = plugin_class(Params.check(specs, params))
            except ParamError as e:
                raise Err(e.wit) from None
            except Err:
                raise
            except Exception as e:  # noqa: BLE001 - a bug in __init__: say where
                reason = _unexpected(e, "__init__")
                raise Err(_t.ParamError_Invalid(_t.InvalidParam("(init)", reason))) from None
            finally:
                _flush()

        def _plugin(self):
            if state[0] is None:
                raise PluginError("the host called the plugin before init")
            return state[0]

        def prepare(self, input):
            _enter()
            try:
                plan = self._plugin().prepare(input)
                if isinstance(plan, Plan):
                    return plan.to_wit()
                if not isinstance(plan, _t.Plan):
                    raise PluginError(f"prepare returned {type(plan).__name__}, not a Plan")
                return plan
            except PluginError as e:
                raise Err(e.to_wit()) from None
            except Err:
                raise
            except Exception as e:  # noqa: BLE001
                raise Err(_t.PluginError(_unexpected(e, "prepare"), None, None)) from None
            finally:
                _flush()

        def transform(self, input):
            _enter()
            try:
                rows = input.rows
                batch = Batch(rows, [Column._from_wit(c, rows) for c in input.columns])
                out = self._plugin().transform(batch)
                if out is None:
                    raise PluginError("transform returned nothing; return batch.output([...])")
                if isinstance(out, (Output, _t.OutputBatch)):
                    out = [out]
                result = []
                for o in out:
                    if isinstance(o, Output):
                        o = o._to_wit()
                    elif not isinstance(o, _t.OutputBatch):
                        raise PluginError(f"transform returned a {type(o).__name__} where an "
                                          "Output belongs; return batch.output([columns])")
                    result.append(o)
                return result
            except PluginError as e:
                raise Err(e.to_wit()) from None
            except Err:
                raise
            except Exception as e:  # noqa: BLE001
                raise Err(_t.PluginError(_unexpected(e, "transform"), None, None)) from None
            finally:
                _flush()

    Transformer.__name__ = Transformer.__qualname__ = "Transformer"
    return Transformer
