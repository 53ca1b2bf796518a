"""`{{name}}`: multiplies a float64 column by a factor.

Build: `quiver plugin build .`   Test: `quiver plugin test .`
"""

import math

import quiver
from quiver import FLOAT64, Plan, param


class Scale(quiver.Plugin):
    name = "{{name}}"
    version = "0.1.0"
    description = "x → x · factor"
    params = [
        param.text("column", "the float64 column to scale", required=True),
        param.float("factor", "the multiplier", default=2.0),
    ]

    def __init__(self, params):
        self.column = params.text("column")
        self.factor = params.float("factor")
        if not math.isfinite(self.factor):
            raise params.invalid("factor", "must be a finite number")

    def prepare(self, schema):
        field = quiver.expect_type(schema, self.column, [FLOAT64])
        # Only this column crosses into the plugin; the others pass through untouched.
        return Plan.passthrough(schema).compute(self.column, FLOAT64, field.nullable)

    def transform(self, batch):
        column = batch.columns[0]
        factor = self.factor
        # `values` is a list of floats (values under nulls are kept, and stay hidden).
        column.values = [x * factor for x in column.values]
        return batch.output([column])


# componentize-py exports the `transformer` interface from this name.
Transformer = quiver.export(Scale)
