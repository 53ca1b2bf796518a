/* {{name}}: x → x * factor on a float64 column, in place. */
#include <math.h>

#include "quiver.h"

static const char *column; /* owned by the kit's parameters, valid for the instance */
static double factor;

void qv_describe(qv_info *info) {
    qv_info_set(info, "{{name}}", "0.1.0", "x → x * factor on a float64 column");
    qv_spec_required(info, "column", QV_KIND_TEXT, "the float64 column to scale");
    qv_spec_float(info, "factor", "the multiplier", 2.0);
}

bool qv_init(const qv_params *params, qv_param_error *err) {
    column = qv_param_text(params, "column"); /* required: never NULL here */
    factor = qv_param_float(params, "factor", 2.0);
    if (!isfinite(factor)) return qv_param_invalid(err, "factor", "must be a finite number");
    return true;
}

bool qv_prepare(const qv_fields *input, qv_plan *plan, qv_error *err) {
    const qv_field *field = qv_expect_type(input, column, QV_MASK(QV_FLOAT64), err);
    if (!field) return false;
    /* Read this column and send it back; every other column passes through untouched. */
    qv_plan_passthrough(plan, input);
    qv_plan_compute(plan, column, QV_TYPE(QV_FLOAT64), field->nullable);
    return true;
}

bool qv_transform(qv_batch *input, qv_outputs *out, qv_error *err) {
    size_t n;
    double *x = qv_f64(qv_column_at(input, 0), &n, err);
    if (!x) return false;
    for (size_t i = 0; i < n; i++) x[i] *= factor; /* values under nulls are ignored */
    /* Send the changed column back as it is: validity and name are kept. */
    qv_output_add(qv_output_all(out, input->rows), qv_take(input, 0));
    return true;
}
