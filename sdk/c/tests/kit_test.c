/*
 * Native unit tests of the C kit (run by tests/run.sh): the kit is compiled for the host with
 * the generated bindings, and the plugin functions and the host import are stubbed. Checks the
 * formatter against libc's snprintf, and the helpers, builders, parameter checks and plans.
 */
#include "quiver.c"

#include <stdio.h>

/* Stubs for what the component would provide. */
static char last_log[256];
void __wasm_import_quiver_plugin_host_log(int32_t level, uint8_t *p, size_t n) {
    snprintf(last_log, sizeof last_log, "%d:%.*s", level, (int)n, (const char *)p);
}
void __component_type_object_force_link_transform(void) {}

/* A plugin with every kind of parameter. */
void qv_describe(qv_info *info) {
    static const char *const dl[] = {"a", "b"};
    qv_info_set(info, "t", "1", "test");
    qv_spec_required(info, "col", QV_KIND_TEXT, "");
    qv_spec_float(info, "f", "", 1.5);
    qv_spec_int(info, "i", "", 7);
    qv_spec_bool(info, "b", "", true);
    qv_spec_text_list(info, "l", "", dl, 2);
    qv_spec_optional(info, "m", QV_KIND_TEXT_MAP, "");
}
static const qv_params *seen;
bool qv_init(const qv_params *p, qv_param_error *err) {
    seen = p;
    if (qv_param_int(p, "i", 0) < 0) return qv_param_invalid(err, "i", "negative: %lld", (long long)qv_param_int(p, "i", 0));
    return true;
}
bool qv_prepare(const qv_fields *input, qv_plan *plan, qv_error *err) { return true; }
bool qv_transform(qv_batch *input, qv_outputs *out, qv_error *err) { return true; }

static int passed, failed;
#define CHECK(cond)                                                                            \
    do {                                                                                       \
        if (cond) passed++;                                                                    \
        else {                                                                                 \
            failed++;                                                                          \
            printf("FAIL %s:%d: %s\n", __FILE__, __LINE__, #cond);                              \
        }                                                                                      \
    } while (0)

static void check_format(const char *fmt, ...) {
    char a[2048], b[2048];
    va_list ap, ap2;
    va_start(ap, fmt);
    va_copy(ap2, ap);
    int na = qv_vsnprintf(a, sizeof a, fmt, ap);
    int nb = vsnprintf(b, sizeof b, fmt, ap2);
    va_end(ap2);
    va_end(ap);
    if (na == nb && strcmp(a, b) == 0) {
        passed++;
    } else {
        failed++;
        if (failed < 20) printf("FAIL format \"%s\": ours [%s] libc [%s]\n", fmt, a, b);
    }
}

static qv_string S(const char *s) { return qv_string_from(s); }

static quiver_plugin_types_param_t P_text(const char *name, const char *v) {
    quiver_plugin_types_param_t p = {S(name), {.tag = QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT}};
    p.value.val.text = S(v);
    return p;
}
static quiver_plugin_types_param_t P_int(const char *name, int64_t v) {
    quiver_plugin_types_param_t p = {S(name), {.tag = QUIVER_PLUGIN_TYPES_PARAM_VALUE_INT}};
    p.value.val.int_ = v;
    return p;
}

/* Calls the init export with n params (moved into a malloc'd list, as the ABI would). */
static bool call_init(quiver_plugin_types_param_t *ps, size_t n, qv_param_error *err) {
    exports_quiver_plugin_transformer_list_param_t l = {NULL, n};
    if (n) {
        l.ptr = malloc(n * sizeof *ps);
        memcpy(l.ptr, ps, n * sizeof *ps);
    }
    return exports_quiver_plugin_transformer_init(&l, err);
}

int main(void) {
    /* Formatter. */
    static const double vals[] = {0, -0.0, 1, -1, 0.5, 1.5, 2.5, 0.1, 1.0 / 3, 123456789, 1e-5,
                                  0.00012345, 999999.5, 1e100, 1.7976931348623157e308, 5e-324,
                                  2.2250738585072014e-308, 1e21, 1e22, 1e23, 4.35, 0.125, 1e15};
    static const char *const ffmts[] = {"%g", "%f", "%e", "%.3g", "%.17g", "%.0f", "%.2f",
                                        "%12.4f|", "%-12.3e|", "%+g", "% g", "%#.0f", "%010.3f",
                                        "%G", "%E", "%.0e", "%.30f", "%.1f"};
    for (size_t i = 0; i < sizeof vals / sizeof *vals; i++)
        for (size_t j = 0; j < sizeof ffmts / sizeof *ffmts; j++) check_format(ffmts[j], vals[i]);
    uint64_t x = 88172645463325252ull;
    for (int k = 0; k < 20000; k++) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        double v;
        memcpy(&v, &x, sizeof v);
        check_format("%.17g %.4e %g %.3f", v, v, v, v);
    }
    check_format("%d %i %u %x %X %o %5d|%-5d|%05d %+d % d %ld %lld %zu %hhd %hd %.3d %c %s %.2s %10s|%-10s| %%",
                 -42, 7, 3000000000u, 255, 255, 8, 42, 42, 42, 42, 42, -5L, -9000000000LL,
                 (size_t)17, 300, 70000, 5, 'z', "hello", "hello", "hi", "hi");
    check_format("%lld %llu %llx %*d|%-*d|%.*f|%.*s", (long long)INT64_MIN,
                 (unsigned long long)UINT64_MAX, (unsigned long long)UINT64_MAX, 6, 1, 6, 2, 2,
                 3.14159, 3, "abcdef");
    char small[4];
    CHECK(qv_snprintf(small, sizeof small, "%s", "abcdef") == 6 && strcmp(small, "abc") == 0);
    char *f = qv_format("%s=%d", "k", 3);
    CHECK(strcmp(f, "k=3") == 0);
    free(f);

    /* Byte strings. */
    qv_str t = qv_str_trim_ascii(qv_cstr("\v\t A b\f\r\n "));
    CHECK(qv_str_eq(t, qv_cstr("A b")));
    CHECK(qv_str_trim_ascii(qv_cstr(" \t")).len == 0);
    uint8_t low[16];
    qv_ascii_lower(low, (const uint8_t *)"AbZ\xc3\x89@", 6);
    CHECK(memcmp(low, "abz\xc3\x89@", 6) == 0);
    CHECK(qv_str_rfind(qv_cstr("a@b@c"), '@') == 3 && qv_str_find(qv_cstr("a@b@c"), '@') == 1);
    CHECK(qv_str_rfind(qv_cstr(""), '@') == -1 && qv_str_find(qv_cstr("x"), '@') == -1);
    CHECK(qv_utf8_valid((const uint8_t *)"\xc3\x89t\xe2\x82\xac\xf0\x9f\x98\x80", 10));
    CHECK(!qv_utf8_valid((const uint8_t *)"\xc3", 1) && !qv_utf8_valid((const uint8_t *)"\xed\xa0\x80", 3));
    CHECK(!qv_utf8_valid((const uint8_t *)"\xc0\xaf", 2) && !qv_utf8_valid((const uint8_t *)"\xe0\x80\xaf", 3));

    /* Bitmaps. */
    qv_bitmap bm;
    qv_bitmap_init(&bm, 0);
    for (int i = 0; i < 70; i++) qv_bitmap_push(&bm, i % 3 == 0);
    CHECK(bm.len == 70 && qv_bitmap_count_set(&bm) == 24);
    qv_bitmap_set(&bm, 1, true);
    qv_bitmap_set(&bm, 0, false);
    CHECK(qv_bitmap_get(&bm, 1) && !qv_bitmap_get(&bm, 0) && qv_bitmap_count_set(&bm) == 24);
    qv_bitmap_free(&bm);
    qv_bitmap_filled(&bm, 9, true);
    CHECK(qv_bitmap_count_set(&bm) == 9);
    qv_column bc = qv_column_bool("b", &bm, NULL);
    CHECK(bm.bytes == NULL && bc.values.val.bits.len == 2 && !bc.validity.is_some);
    qv_column_free(&bc);

    /* utf8 builder. */
    qv_strings sb;
    qv_strings_init(&sb, 1, 0);
    qv_strings_push(&sb, "ab", 2);
    qv_strings_push_null(&sb);
    uint8_t *w = qv_strings_reserve(&sb, 100);
    memcpy(w, "xyz", 3);
    qv_strings_commit(&sb, 3);
    qv_strings_push(&sb, "", 0);
    qv_column sc = qv_strings_finish(&sb, "s", QV_TYPE(QV_UTF8));
    qv_error err = {0};
    CHECK(qv_expect_strings(&sc, 4, &err));
    CHECK(qv_str_eq(qv_str_at(&sc, 0), qv_cstr("ab")) && qv_str_at(&sc, 1).len == 0);
    CHECK(qv_str_eq(qv_str_at(&sc, 2), qv_cstr("xyz")) && qv_str_at(&sc, 3).len == 0);
    CHECK(qv_is_valid(&sc, 0) && !qv_is_valid(&sc, 1) && qv_null_count(&sc, 4) == 1);
    CHECK(qv_f64(&sc, NULL, &err) == NULL && err.column.is_some && err.message.len > 0);
    quiver_plugin_types_plugin_error_free(&err);
    memset(&err, 0, sizeof err);
    qv_column_free(&sc);
    qv_strings_init(&sb, 0, 0);
    sc = qv_strings_finish(&sb, "e", QV_TYPE(QV_UTF8));
    CHECK(sc.offsets.val.len == 1 && sc.values.val.bytes.len == 0 && !sc.validity.is_some);
    qv_column_free(&sc);

    /* Outputs and take. */
    qv_column cols[2];
    double *dv = qv_alloc(3 * sizeof *dv);
    dv[0] = 1, dv[1] = 2, dv[2] = 3;
    cols[0] = qv_column_f64("x", QV_TYPE(QV_FLOAT64), dv, 3, NULL);
    qv_strings_init(&sb, 3, 3);
    for (int i = 0; i < 3; i++) qv_strings_push(&sb, "q", 1);
    cols[1] = qv_strings_finish(&sb, "y", QV_TYPE(QV_UTF8));
    qv_batch batch = {3, {qv_alloc(sizeof cols), 2}};
    memcpy(batch.columns.ptr, cols, sizeof cols);
    qv_outputs outs = {0};
    qv_bitmap sel;
    qv_bitmap_filled(&sel, 3, false);
    qv_bitmap_set(&sel, 2, true);
    qv_output *o = qv_output_selected(&outs, &sel);
    CHECK(o->rows == 1 && o->selection.is_some);
    qv_output_add(o, qv_take(&batch, 0));
    CHECK(batch.columns.ptr[0].name.len == 0 && qv_column_named(&batch, "y") == &batch.columns.ptr[1]);
    size_t n;
    CHECK(qv_f64(&o->columns.ptr[0], &n, NULL)[2] == 3 && n == 3);
    quiver_plugin_types_batch_free(&batch);
    exports_quiver_plugin_transformer_list_output_batch_free(&outs);

    /* Parameters: defaults, coercions, errors. */
    qv_param_error perr = {0};
    quiver_plugin_types_param_t ps[3] = {P_text("col", "email"), P_int("f", 3), P_text("l", "one")};
    CHECK(call_init(ps, 3, &perr));
    CHECK(strcmp(qv_param_text(seen, "col"), "email") == 0 && qv_param_float(seen, "f", 0) == 3.0);
    CHECK(qv_param_int(seen, "i", 0) == 7 && qv_param_bool(seen, "b", false));
    CHECK(qv_param_list_len(seen, "l") == 1 && strcmp(qv_param_list_item(seen, "l", 0), "one") == 0);
    CHECK(!qv_param_has(seen, "m") && qv_param_map_len(seen, "m") == 0);
    static const char *const ch[] = {"email", "other"};
    CHECK(qv_param_choice(seen, "col", ch, 2, &perr) == 0);
    CHECK(qv_param_choice(seen, "l", ch, 2, &perr) == -1 && perr.tag == QUIVER_PLUGIN_TYPES_PARAM_ERROR_INVALID);
    quiver_plugin_types_param_error_free(&perr);
    memset(&perr, 0, sizeof perr);

    quiver_plugin_types_param_t p2[1] = {P_int("f", 1)};
    CHECK(!call_init(p2, 1, &perr) && perr.tag == QUIVER_PLUGIN_TYPES_PARAM_ERROR_MISSING);
    CHECK(qv_string_is(&perr.val.missing, "col"));
    quiver_plugin_types_param_error_free(&perr);
    quiver_plugin_types_param_t p3[2] = {P_text("col", "c"), P_text("i", "x")};
    CHECK(!call_init(p3, 2, &perr) && perr.tag == QUIVER_PLUGIN_TYPES_PARAM_ERROR_WRONG_KIND);
    CHECK(perr.val.wrong_kind.expected == QV_KIND_INT && perr.val.wrong_kind.found == QV_KIND_TEXT);
    quiver_plugin_types_param_error_free(&perr);
    quiver_plugin_types_param_t p4[2] = {P_text("col", "c"), P_text("zzz", "x")};
    CHECK(!call_init(p4, 2, &perr) && perr.tag == QUIVER_PLUGIN_TYPES_PARAM_ERROR_UNKNOWN);
    quiver_plugin_types_param_error_free(&perr);
    quiver_plugin_types_param_t p5[2] = {P_text("col", "c"), P_int("i", -2)};
    CHECK(!call_init(p5, 2, &perr) && perr.tag == QUIVER_PLUGIN_TYPES_PARAM_ERROR_INVALID);
    CHECK(qv_str_eq(qv_view(&perr.val.invalid.reason), qv_cstr("negative: -2")));
    quiver_plugin_types_param_error_free(&perr);

    /* Plans. */
    qv_field fields[3] = {{S("a"), QV_TYPE(QV_INT64), false},
                          {S("b"), QV_TYPE(QV_UTF8), true},
                          {S("ts"), {.tag = QV_TIMESTAMP}, true}};
    fields[2].data_type.val.timestamp.timezone.is_some = true;
    fields[2].data_type.val.timestamp.timezone.val = S("UTC");
    qv_fields input = {fields, 3};
    qv_plan plan = {0};
    CHECK(qv_expect_type(&input, "b", QV_MASK(QV_UTF8), &err) == &fields[1]);
    CHECK(qv_expect_type(&input, "a", QV_MASK(QV_UTF8), &err) == NULL);
    CHECK(strstr((const char *)qv_str_dup(qv_view(&err.message)), "has type Int64; expected Utf8") != NULL);
    CHECK(qv_find_field(&input, "nope", NULL) == NULL);
    qv_plan_passthrough(&plan, &input);
    qv_plan_compute(&plan, "b", QV_TYPE(QV_UTF8), true);
    qv_plan_compute(&plan, "b", QV_TYPE(QV_UTF8), true);
    qv_plan_computed_after(&plan, "b", "flag", QV_TYPE(QV_BOOLEAN), true);
    qv_plan_computed_after(&plan, "zz", "end", QV_TYPE(QV_BOOLEAN), true);
    qv_plan_drop(&plan, "a");
    CHECK(plan.reads.len == 1 && qv_string_is(&plan.reads.ptr[0], "b"));
    CHECK(plan.output.len == 4 && qv_string_is(&plan.output.ptr[0].name, "b") &&
          qv_string_is(&plan.output.ptr[1].name, "flag") && qv_string_is(&plan.output.ptr[2].name, "ts") &&
          qv_string_is(&plan.output.ptr[3].name, "end"));
    CHECK(plan.output.ptr[0].source.tag == QUIVER_PLUGIN_TYPES_OUTPUT_SOURCE_COMPUTED &&
          plan.output.ptr[2].source.tag == QUIVER_PLUGIN_TYPES_OUTPUT_SOURCE_PASSTHROUGH);
    CHECK(plan.output.ptr[2].data_type.val.timestamp.timezone.val.ptr !=
          fields[2].data_type.val.timestamp.timezone.val.ptr);
    quiver_plugin_types_plan_free(&plan);
    for (int i = 0; i < 3; i++) quiver_plugin_types_field_free(&fields[i]);

    /* Errors and log. */
    memset(&err, 0, sizeof err);
    qv_fail_row(&err, "c", 5, "bad %s at %u", "value", 5u);
    CHECK(err.row.is_some && err.row.val == 5 && qv_string_is(&err.column.val, "c") &&
          qv_string_is(&err.message, "bad value at 5"));
    qv_fail(&err, "again");
    CHECK(!err.row.is_some && !err.column.is_some && qv_string_is(&err.message, "again"));
    quiver_plugin_types_plugin_error_free(&err);
    CHECK(!qv_fail(NULL, "no error struct"));
    qv_log(QV_WARN, "n=%d", 3);
    CHECK(strcmp(last_log, "3:n=3") == 0);

    printf("%d passed, %d failed\n", passed, failed);
    return failed != 0;
}
