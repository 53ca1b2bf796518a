"""Unit tests of the kit (quiver.py) on the host's CPython, against componentize-py's stub
bindings (its `bindings` command), with host.log captured.

    python3 sdk/python/tests/test_quiver.py      (or: python3 -m pytest sdk/python/tests)

componentize-py is looked up as build.sh installs it (under $QUIVER_TOOLS_DIR/python/), or on
PATH; the tests are skipped without it.
"""

import os
import random
import shutil
import subprocess
import sys
import tempfile
import unittest
from pathlib import Path

HERE = Path(__file__).resolve().parent
KIT = Path(os.environ.get("QUIVER_KIT_DIR", HERE.parent / "kit"))
WIT = Path(os.environ.get("QUIVER_WIT_DIR", HERE.parent.parent.parent / "wit"))
VERSION = "0.25.1"


def _componentize_py():
    tools = Path(os.environ.get("QUIVER_TOOLS_DIR", Path.home() / ".cache/quiver/tools"))
    exe = tools / "python" / f"componentize-py-{VERSION}" / "bin" / "componentize-py"
    return str(exe) if exe.exists() else shutil.which("componentize-py")


_BIND = None
LOGS = []


def setUpModule():
    global _BIND, quiver, t, Err
    exe = _componentize_py()
    if exe is None:
        raise unittest.SkipTest("componentize-py not installed (run sdk/python/build.sh once)")
    _BIND = tempfile.mkdtemp(prefix="quiver-py-bindings-")
    subprocess.run([exe, "-d", str(WIT), "-w", "transform", "bindings", _BIND], check=True,
                   stdout=subprocess.DEVNULL)
    sys.path[:0] = [_BIND, str(KIT)]
    from wit_world.imports import host

    host.log = lambda level, message: LOGS.append((level.name, message))
    import quiver as q
    from componentize_py_types import Err as E
    from wit_world.imports import types as tt

    quiver, t, Err = q, tt, E


def tearDownModule():
    if _BIND:
        shutil.rmtree(_BIND, ignore_errors=True)


def naive_pack(flags):
    out = bytearray((len(flags) + 7) // 8)
    for i, f in enumerate(flags):
        if f:
            out[i // 8] |= 1 << (i % 8)
    return bytes(out)


class Bits(unittest.TestCase):
    def test_pack_and_unpack_agree_with_a_naive_bitmap(self):
        rng = random.Random(7)
        for n in [0, 1, 7, 8, 9, 15, 16, 17, 63, 64, 65, 1000, 4099]:
            flags = bytes(rng.randrange(2) for _ in range(n))
            bits = quiver.pack_bits(flags)
            self.assertEqual(bits, naive_pack(flags), n)
            self.assertEqual(quiver.pack_bits([bool(f) for f in flags]), bits, n)
            self.assertEqual(quiver.unpack_bits(bits, n), flags, n)
            self.assertEqual(quiver.count_bits(bits, n), sum(flags), n)
            for i in range(0, n, 37):
                self.assertEqual(quiver.get_bit(bits, i), flags[i] == 1)

    def test_unpack_ignores_bits_past_the_rows_and_refuses_short_bitmaps(self):
        self.assertEqual(quiver.unpack_bits(b"\xff\xff", 3), b"\x01\x01\x01")
        self.assertEqual(quiver.count_bits(b"\xff", 3), 3)
        with self.assertRaises(ValueError):
            quiver.unpack_bits(b"\xff", 9)

    def test_any_nonzero_byte_is_true(self):
        self.assertEqual(quiver.pack_bits(b"\x00\x05\xff"), b"\x06")


class Columns(unittest.TestCase):
    def roundtrip(self, data_type, items):
        col = quiver.Column.from_list("c", data_type, items)
        wit = col._to_wit()
        back = quiver.Column._from_wit(wit, len(items))
        return wit, back.to_list()

    def test_every_type_roundtrips_with_nulls(self):
        cases = [
            (quiver.BOOLEAN, [True, None, False, True, True, False, None, True, False]),
            (quiver.INT8, [-128, 127, None, 0, -1]),
            (quiver.UINT8, [0, 255, None, 7]),
            (quiver.INT16, [-3, None, 300]),
            (quiver.INT64, [2**62, None, -(2**62)]),
            (quiver.UINT64, [2**64 - 1, None, 0]),
            (quiver.FLOAT64, [1.5, None, -0.0, 1e300]),
            (quiver.FLOAT32, [1.5, None, 2.0]),
            (quiver.DATE32, [0, 19000, None]),
            (quiver.timestamp(), [10**15, None]),
            (quiver.UTF8, ["a", None, "", "ünï", "xyz"]),
            (quiver.BINARY, [b"\x00\xff", None, b""]),
        ]
        for dt, items in cases:
            wit, back = self.roundtrip(dt, items)
            self.assertEqual(back, items, quiver.type_name(dt))
            v = wit.values.value
            if dt in (quiver.BOOLEAN, quiver.INT8, quiver.UINT8, quiver.UTF8, quiver.BINARY):
                self.assertIs(type(v), bytes)
            else:
                self.assertIs(type(v), list)
            self.assertIs(type(wit.validity), bytes)

    def test_strings_with_offsets_not_starting_at_zero(self):
        col = quiver.Column("s", quiver.UTF8, b"xxabcd", None, [2, 3, 3, 6])
        self.assertEqual(col.slices(), [b"a", b"", b"bcd"])
        self.assertEqual(col.texts(), ["a", "", "bcd"])
        col = quiver.Column("s", quiver.UTF8, "xxabcdé".encode(), b"\x05", [2, 3, 3, 8])
        self.assertEqual(col.texts(), ["a", None, "bcdé"])
        self.assertEqual(col.null_count(), 1)

    def test_strings_builder_keeps_a_given_validity_and_accepts_str_and_bytes(self):
        col = quiver.Column.utf8("s", [b"ab", "é", b""], validity=b"\x03")
        self.assertEqual(col.values, "abé".encode())
        self.assertEqual(col.offsets, [0, 2, 4, 4])
        self.assertEqual(col.validity, b"\x03")
        self.assertEqual(col.to_list(), ["ab", "é", None])

    def test_boolean_from_bytes_and_truth_values(self):
        a = quiver.Column.boolean("b", b"\x01\x00\x01")
        b = quiver.Column.boolean("b", [True, None, 1])
        self.assertEqual(a.values, b"\x05")
        self.assertEqual(b.values, b"\x05")
        self.assertIsNone(a.validity)
        self.assertEqual(b.validity, b"\x05")
        self.assertEqual(b.to_list(), [True, None, True])

    def test_outgoing_payloads_are_coerced_to_what_the_bindings_take(self):
        from array import array

        c = quiver.Column("f", quiver.FLOAT64, array("d", [1.0, 2.0]))
        self.assertIs(type(c._to_wit().values.value), list)
        c = quiver.Column("i", quiver.INT8, [-1, 2])
        self.assertEqual(c._to_wit().values.value, b"\xff\x02")
        c = quiver.Column("b", quiver.BOOLEAN, [True, False, True], rows=3)
        self.assertEqual(c._to_wit().values.value, b"\x05")
        c = quiver.Column("u", quiver.UINT8, bytearray(b"\x01"))
        self.assertIs(type(c._to_wit().values.value), bytes)


class Params(unittest.TestCase):
    specs = None

    def setUp(self):
        p = quiver.param
        self.specs = [
            p.text("column", "c", required=True),
            p.float("factor", "f", default=2),
            p.text_list("names", "n", default=["a"]),
            p.text_map("rename", "r", default={"x": "y"}),
            p.boolean("flag", "b"),
        ]

    def check(self, **given):
        values = {bool: t.ParamValue_Boolean, int: t.ParamValue_Int, float: t.ParamValue_Float,
                  str: t.ParamValue_Text, list: t.ParamValue_TextList}
        return quiver.Params.check(
            self.specs, [t.Param(k, values[type(v)](v)) for k, v in given.items()])

    def test_defaults_coercions_and_absent_optionals(self):
        p = self.check(column="x", factor=3, names="b")
        self.assertEqual(p.text("column"), "x")
        self.assertEqual(p.float("factor"), 3.0)
        self.assertIs(type(p.float("factor")), float)
        self.assertEqual(p.text_list("names"), ["b"])
        self.assertEqual(p.text_map("rename"), [("x", "y")])
        self.assertIsNone(p.boolean("flag"))
        self.assertNotIn("flag", p)

    def test_errors_name_the_parameter(self):
        cases = [
            (dict(), t.ParamError_Missing("column")),
            (dict(column="x", nope=1), t.ParamError_Unknown("nope")),
            (dict(column=1), t.ParamError_WrongKind(t.WrongKind("column", t.ParamKind.TEXT,
                                                                 t.ParamKind.INT))),
        ]
        for given, wit in cases:
            with self.assertRaises(quiver.ParamError) as e:
                self.check(**given)
            self.assertEqual(e.exception.wit, wit)
        p = self.check(column="x")
        with self.assertRaises(quiver.ParamError) as e:
            p.choice("column", ["a", "b"])
        self.assertEqual(str(e.exception), "`column` is invalid: `x` is not one of a, b")


class Plans(unittest.TestCase):
    def test_compute_in_place_and_computed_after(self):
        schema = [t.Field(n, quiver.INT64, True) for n in ["a", "b", "c"]]
        plan = (quiver.Plan.passthrough(schema)
                .compute("b", quiver.UTF8, False)
                .computed("flag", quiver.BOOLEAN, True, after="b")
                .computed("end", quiver.FLOAT64)
                .drop("c"))
        self.assertEqual(plan.reads, ["b"])
        self.assertEqual([f.name for f in plan.output], ["a", "b", "flag", "end"])
        kinds = [type(f.source).__name__ for f in plan.output]
        self.assertEqual(kinds, ["OutputSource_Passthrough", "OutputSource_Computed",
                                 "OutputSource_Computed", "OutputSource_Computed"])

    def test_expect_type_lists_what_it_expected(self):
        schema = [t.Field("a", quiver.INT64, True)]
        with self.assertRaises(quiver.PluginError) as e:
            quiver.expect_type(schema, "a", [quiver.UTF8, quiver.BINARY])
        self.assertEqual(e.exception.message, "column `a` has type Int64; expected Utf8, Binary")
        with self.assertRaises(quiver.PluginError) as e:
            quiver.find_field(schema, "z")
        self.assertEqual(e.exception.column, "z")


class Export(unittest.TestCase):
    def setUp(self):
        self.streams = sys.stdout, sys.stderr  # the calls send them to host.log

    def tearDown(self):
        sys.stdout, sys.stderr = self.streams

    def make(self):
        class Negate(quiver.Plugin):
            name = "negate"
            params = [quiver.param.text("column", "c", required=True)]

            def __init__(self, params):
                self.column = params.text("column")
                if self.column == "boom":
                    raise RuntimeError("boom")

            def prepare(self, schema):
                f = quiver.expect_type(schema, self.column, [quiver.FLOAT64])
                return quiver.Plan.passthrough(schema).compute(self.column, quiver.FLOAT64,
                                                               f.nullable)

            def transform(self, batch):
                c = batch[self.column]
                print("rows", batch.rows)
                if batch.rows == 2:
                    raise quiver.PluginError("two rows", row=1)
                if batch.rows == 3:
                    return [][0]
                c.values = [-x for x in c.values]
                return batch.output([c])

        return quiver.export(Negate)

    def test_state_is_shared_between_the_instances_componentize_py_makes(self):
        T = self.make()
        T().init([t.Param("column", t.ParamValue_Text("x"))])
        schema = [t.Field("x", quiver.FLOAT64, True)]
        plan = T().prepare(schema)
        self.assertEqual(plan.reads, ["x"])
        LOGS.clear()
        col = t.Column("x", quiver.FLOAT64, None, None, t.Values_F64([1.0]))
        out = T().transform(t.Batch(1, [col]))
        self.assertEqual(out[0].columns[0].values, t.Values_F64([-1.0]))
        self.assertEqual(LOGS, [("INFO", "rows 1")])

    def test_errors_become_results(self):
        T = self.make()
        with self.assertRaises(Err) as e:
            T().init([t.Param("column", t.ParamValue_Text("boom"))])
        self.assertIsInstance(e.exception.value, t.ParamError_Invalid)
        self.assertIn("RuntimeError: boom", e.exception.value.value.reason)
        T().init([t.Param("column", t.ParamValue_Text("x"))])
        with self.assertRaises(Err) as e:
            T().prepare([t.Field("x", quiver.UTF8, True)])
        self.assertEqual(e.exception.value.column, "x")
        col = t.Column("x", quiver.FLOAT64, None, None, t.Values_F64([1.0, 2.0]))
        with self.assertRaises(Err) as e:
            T().transform(t.Batch(2, [col]))
        self.assertEqual((e.exception.value.message, e.exception.value.row), ("two rows", 1))
        col = t.Column("x", quiver.FLOAT64, None, None, t.Values_F64([1.0, 2.0, 3.0]))
        with self.assertRaises(Err) as e:
            T().transform(t.Batch(3, [col]))
        self.assertTrue(e.exception.value.message.startswith("IndexError: list index out of range (at test_quiver.py:"))


if __name__ == "__main__":
    unittest.main()
