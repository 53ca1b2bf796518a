/* kit-check: exercises the C kit beyond the template (a test of the kit, not an example).
 * Keeps the rows whose float64 `x` is above `threshold` (a row selection), and computes:
 *   x2    float64 = x * 2 (a new array)          len  int32 = byte length of `name` (null if null)
 *   name  utf8    = name + suffix (builder)      even bool  = `n` is even (int64 column, in place)
 * Every other column passes through (filtered by the selection). A `name` of "boom" fails with
 * an error naming the column and row. */
#include <stdlib.h>

#include "quiver.h"

static double threshold;
static const char *suffix;
static const char *name_col = "name";
static int mode;

void qv_describe(qv_info *info) {
    static const char *const none[] = {0};
    qv_info_set(info, "kit-check", "0.0.1", "tests the C kit");
    qv_spec_float(info, "threshold", "rows with x above it are kept", 0.0);
    qv_spec_text(info, "suffix", "appended to name", "");
    qv_spec_optional(info, "rename", QV_KIND_TEXT_MAP, "a map, logged in init");
    qv_spec_text_list(info, "tags", "unused list", none, 0);
    qv_spec_int(info, "limit", "must be positive", 10);
    qv_spec_bool(info, "verbose", "log more", false);
    qv_spec_text(info, "mode", "filter or all", "filter");
}

bool qv_init(const qv_params *params, qv_param_error *err) {
    static const char *const modes[] = {"filter", "all"};
    threshold = qv_param_float(params, "threshold", 0);
    suffix = qv_param_text(params, "suffix");
    if (qv_param_int(params, "limit", 0) <= 0)
        return qv_param_invalid(err, "limit", "must be positive, not %lld",
                                (long long)qv_param_int(params, "limit", 0));
    mode = qv_param_choice(params, "mode", modes, 2, err);
    if (mode < 0) return false;
    for (size_t i = 0; i < qv_param_map_len(params, "rename"); i++)
        qv_log(QV_INFO, "rename %s -> %s", qv_param_map_key(params, "rename", i),
               qv_param_map_value(params, "rename", i));
    if (qv_param_bool(params, "verbose", false))
        qv_log(QV_INFO, "threshold %g, %zu tags", threshold, qv_param_list_len(params, "tags"));
    return true;
}

bool qv_prepare(const qv_fields *input, qv_plan *plan, qv_error *err) {
    const qv_field *name = qv_expect_type(input, name_col, QV_MASK(QV_UTF8), err);
    if (!name || !qv_expect_type(input, "x", QV_MASK(QV_FLOAT64), err) ||
        !qv_expect_type(input, "n", QV_MASK(QV_INT64), err))
        return false;
    qv_plan_passthrough(plan, input);
    qv_plan_read(plan, "x");
    qv_plan_compute(plan, "n", QV_TYPE(QV_INT64), true);
    qv_plan_compute(plan, name_col, QV_TYPE(QV_UTF8), name->nullable);
    qv_plan_computed_after(plan, "x", "x2", QV_TYPE(QV_FLOAT64), true);
    qv_plan_computed(plan, "len", QV_TYPE(QV_INT32), true);
    qv_plan_computed(plan, "even", QV_TYPE(QV_BOOLEAN), true);
    qv_plan_drop(plan, "drop_me");
    return true;
}

bool qv_transform(qv_batch *input, qv_outputs *out, qv_error *err) {
    size_t rows = input->rows, nx, nn;
    qv_column *x = qv_column_named(input, "x");
    qv_column *n = qv_column_named(input, "n");
    qv_column *name = qv_column_named(input, name_col);
    const double *xs = qv_f64(x, &nx, err);
    int64_t *ns = qv_i64(n, &nn, err);
    if (!xs || !ns || !qv_expect_strings(name, rows, err)) return false;
    if (qv_f32(x, NULL, NULL) != NULL) return qv_fail(err, "x is not f32");

    qv_bitmap keep;
    qv_bitmap_init(&keep, 0);
    for (size_t i = 0; i < rows; i++)
        qv_bitmap_push(&keep, mode == 1 || (qv_is_valid(x, i) && xs[i] > threshold));
    size_t kept = qv_bitmap_count_set(&keep);

    double *x2 = qv_alloc(kept * sizeof *x2);
    int32_t *len = qv_alloc(kept * sizeof *len);
    int64_t *n_out = qv_alloc(kept * sizeof *n_out);
    qv_bitmap x_valid, len_valid, even, even_valid;
    qv_bitmap_init(&x_valid, kept);
    qv_bitmap_init(&len_valid, kept);
    qv_bitmap_init(&even_valid, kept);
    qv_bitmap_filled(&even, kept, false);
    qv_strings names;
    qv_strings_init(&names, kept, 0);
    size_t k = 0;
    for (size_t i = 0; i < rows; i++) {
        if (!qv_bitmap_get(&keep, i)) continue;
        qv_str s = qv_str_at(name, i);
        if (qv_is_valid(name, i) && qv_str_eq(s, qv_cstr("boom"))) {
            qv_bitmap_free(&keep);
            qv_bitmap_free(&x_valid);
            qv_bitmap_free(&len_valid);
            qv_bitmap_free(&even);
            qv_bitmap_free(&even_valid);
            qv_strings_free(&names);
            free(x2);
            free(len);
            free(n_out);
            return qv_fail_at(err, &name->name, (uint32_t)i, "row %zu says %.*s", i, (int)s.len,
                              (const char *)s.ptr);
        }
        x2[k] = xs[i] * 2;
        qv_bitmap_push(&x_valid, qv_is_valid(x, i));
        if (qv_is_valid(name, i)) {
            len[k] = (int32_t)s.len;
            qv_bitmap_push(&len_valid, true);
            uint8_t *dst = qv_strings_reserve(&names, s.len + strlen(suffix));
            memcpy(dst, s.ptr, s.len);
            memcpy(dst + s.len, suffix, strlen(suffix));
            qv_strings_commit(&names, s.len + strlen(suffix));
        } else {
            len[k] = 0;
            qv_bitmap_push(&len_valid, false);
            qv_strings_push_null(&names);
        }
        qv_bitmap_set(&even, k, ns[i] % 2 == 0);
        qv_bitmap_push(&even_valid, qv_is_valid(n, i));
        n_out[k] = ns[i] + 1000;
        k++;
    }
    if (!qv_utf8_valid(names.bytes, names.len)) return qv_fail(err, "invalid utf8 built");
    qv_log(QV_DEBUG, "kept %zu of %zu rows (%.1f%%)", kept, rows, rows ? 100.0 * kept / rows : 0);
    qv_bitmap n_valid = {0};
    bool n_nulls = qv_copy_validity(n, rows, &n_valid);
    /* n_out is a fresh array, so n's own validity (over all rows) cannot be reused when
     * filtering: rebuild it over the kept rows. */
    qv_bitmap n_kept = {0};
    if (n_nulls) {
        qv_bitmap_init(&n_kept, kept);
        for (size_t i = 0; i < rows; i++)
            if (qv_bitmap_get(&keep, i)) qv_bitmap_push(&n_kept, qv_bitmap_get(&n_valid, i));
        qv_bitmap_free(&n_valid);
    }
    qv_output *o = mode == 1 ? qv_output_all(out, (uint32_t)rows) : qv_output_selected(out, &keep);
    if (mode == 1) qv_bitmap_free(&keep);
    qv_output_add(o, qv_column_f64("x2", QV_TYPE(QV_FLOAT64), x2, kept, &x_valid));
    qv_output_add(o, qv_column_i32("len", QV_TYPE(QV_INT32), len, kept, &len_valid));
    qv_output_add(o, qv_column_i64("n", QV_TYPE(QV_INT64), n_out, kept, n_nulls ? &n_kept : NULL));
    qv_output_add(o, qv_column_bool("even", &even, &even_valid));
    qv_output_add(o, qv_strings_finish(&names, name_col, QV_TYPE(QV_UTF8)));
    return true;
}
