// `{{name}}`: multiplies a float64 column by a factor, in place.
//
// Build: `quiver plugin build .`   Test: `quiver plugin test .`
// (`./quiver.js` is the kit: the build puts it next to this file.)

import { DataType, OutputBatch, Plan, ParamError, exportPlugin, expectType, param } from './quiver.js';

class Scale {
  static describe() {
    return {
      name: '{{name}}',
      version: '0.1.0',
      description: 'x → x · factor',
      params: [
        param.text('column', 'the float64 column to scale').required(),
        param.float('factor', 'the multiplier').default(2.0),
      ],
    };
  }

  constructor(params) {
    this.column = params.text('column');
    this.factor = params.float('factor');
    if (!Number.isFinite(this.factor)) throw ParamError.invalid('factor', 'must be a finite number');
  }

  prepare(input) {
    const field = expectType(input, this.column, [DataType.float64]);
    // Only this column crosses into the plugin; the others pass through untouched.
    return Plan.passthrough(input).compute(this.column, DataType.float64, field.nullable);
  }

  transform(batch) {
    const column = batch.columns[0];
    const x = column.dataAs('f64'); // a Float64Array, changed in place
    const factor = this.factor;
    for (let i = 0; i < x.length; i++) x[i] *= factor;
    return OutputBatch.allRows(batch.rows, [column]);
  }
}

export const transformer = exportPlugin(Scale);
