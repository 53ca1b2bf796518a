/*
 * quiver.h — the C kit for Quiver transform plugins.
 *
 * A plugin defines four functions (see "What a plugin defines" below); the kit implements the
 * component's exports on top of the bindings that `wit-bindgen c` generates for the
 * `quiver:plugin/transform` world (transform.h), and gives:
 *   - pointer + length access to the columns of a batch (no per-element conversion),
 *   - utf8 helpers (views, trimming, ASCII lowercasing) and a utf8 column builder,
 *   - a bitmap builder for boolean columns, validity and row selections,
 *   - parameters checked against the plugin's declared specs, with defaults filled in,
 *   - structured errors (message, column, row) and logging,
 *   - plan building (pass everything through, then compute some columns).
 *
 * Memory. The canonical ABI gives the plugin ownership of what it receives and takes ownership
 * of what it returns; the kit handles both ends:
 *   - the input batch of qv_transform belongs to the kit, which frees it after qv_transform
 *     returns. The plugin may change its buffers in place and move whole columns into its
 *     output with qv_take (which leaves an empty column behind, so nothing is freed twice);
 *   - everything put into a plan, an output or an error is copied or moved in by the kit's
 *     functions and freed by the generated post-return code after the host has read it. If you
 *     fill the generated structs yourself, every buffer must come from malloc (or be empty:
 *     len 0), and no buffer may appear twice;
 *   - a list of length 0 received from the host may hold a dummy non-NULL pointer: never free
 *     or realloc the pointer of an empty list (the kit's functions respect this).
 * Every allocation failure aborts (a trap the host reports as a plugin error).
 */
#ifndef QUIVER_H
#define QUIVER_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "transform.h"

#ifdef __cplusplus
extern "C" {
#endif

#if defined(__GNUC__) || defined(__clang__)
#define QV_PRINTF(f, a) __attribute__((format(printf, f, a)))
#else
#define QV_PRINTF(f, a)
#endif

/* ------------------------------------------------------------------------------------------ */
/* Types: the generated ones, under short names                                               */
/* ------------------------------------------------------------------------------------------ */

typedef transform_string_t qv_string;                  /* owned bytes (ptr, len), no NUL */
typedef quiver_plugin_types_data_type_t qv_data_type;  /* .tag is one of QV_BOOLEAN… */
typedef quiver_plugin_types_column_t qv_column;
typedef quiver_plugin_types_batch_t qv_batch;          /* .rows, .columns.ptr/.len */
typedef quiver_plugin_types_field_t qv_field;          /* .name, .data_type, .nullable */
typedef exports_quiver_plugin_transformer_list_field_t qv_fields; /* .ptr/.len */
typedef quiver_plugin_types_plan_t qv_plan;
typedef quiver_plugin_types_plugin_info_t qv_info;
typedef quiver_plugin_types_param_error_t qv_param_error;
typedef quiver_plugin_types_plugin_error_t qv_error;
typedef quiver_plugin_types_output_batch_t qv_output;
typedef exports_quiver_plugin_transformer_list_output_batch_t qv_outputs;

/* Logical types (data-type tags). */
enum {
    QV_BOOLEAN = QUIVER_PLUGIN_TYPES_DATA_TYPE_BOOLEAN,
    QV_INT8 = QUIVER_PLUGIN_TYPES_DATA_TYPE_INT8,
    QV_INT16 = QUIVER_PLUGIN_TYPES_DATA_TYPE_INT16,
    QV_INT32 = QUIVER_PLUGIN_TYPES_DATA_TYPE_INT32,
    QV_INT64 = QUIVER_PLUGIN_TYPES_DATA_TYPE_INT64,
    QV_UINT8 = QUIVER_PLUGIN_TYPES_DATA_TYPE_UINT8,
    QV_UINT16 = QUIVER_PLUGIN_TYPES_DATA_TYPE_UINT16,
    QV_UINT32 = QUIVER_PLUGIN_TYPES_DATA_TYPE_UINT32,
    QV_UINT64 = QUIVER_PLUGIN_TYPES_DATA_TYPE_UINT64,
    QV_FLOAT32 = QUIVER_PLUGIN_TYPES_DATA_TYPE_FLOAT32,
    QV_FLOAT64 = QUIVER_PLUGIN_TYPES_DATA_TYPE_FLOAT64,
    QV_UTF8 = QUIVER_PLUGIN_TYPES_DATA_TYPE_UTF8,
    QV_BINARY = QUIVER_PLUGIN_TYPES_DATA_TYPE_BINARY,
    QV_DATE32 = QUIVER_PLUGIN_TYPES_DATA_TYPE_DATE32,
    QV_TIMESTAMP = QUIVER_PLUGIN_TYPES_DATA_TYPE_TIMESTAMP,
};

/* A data type without payload (every type but QV_TIMESTAMP), e.g. QV_TYPE(QV_FLOAT64). */
#define QV_TYPE(t) ((qv_data_type){.tag = (uint8_t)(t)})
/* Sets of logical types, for qv_expect_type: QV_MASK(QV_UTF8) | QV_MASK(QV_BINARY). */
#define QV_MASK(t) (1u << (t))
#define QV_INTEGER_MASK                                                                       \
    (QV_MASK(QV_INT8) | QV_MASK(QV_INT16) | QV_MASK(QV_INT32) | QV_MASK(QV_INT64) |           \
     QV_MASK(QV_UINT8) | QV_MASK(QV_UINT16) | QV_MASK(QV_UINT32) | QV_MASK(QV_UINT64))
#define QV_NUMERIC_MASK (QV_INTEGER_MASK | QV_MASK(QV_FLOAT32) | QV_MASK(QV_FLOAT64))

/* Physical layouts (values tags): which member of column->values.val holds the data. */
enum {
    QV_VALUES_BITS = QUIVER_PLUGIN_TYPES_VALUES_BITS,
    QV_VALUES_I8 = QUIVER_PLUGIN_TYPES_VALUES_I8,
    QV_VALUES_I16 = QUIVER_PLUGIN_TYPES_VALUES_I16,
    QV_VALUES_I32 = QUIVER_PLUGIN_TYPES_VALUES_I32,
    QV_VALUES_I64 = QUIVER_PLUGIN_TYPES_VALUES_I64,
    QV_VALUES_U8 = QUIVER_PLUGIN_TYPES_VALUES_U8,
    QV_VALUES_U16 = QUIVER_PLUGIN_TYPES_VALUES_U16,
    QV_VALUES_U32 = QUIVER_PLUGIN_TYPES_VALUES_U32,
    QV_VALUES_U64 = QUIVER_PLUGIN_TYPES_VALUES_U64,
    QV_VALUES_F32 = QUIVER_PLUGIN_TYPES_VALUES_F32,
    QV_VALUES_F64 = QUIVER_PLUGIN_TYPES_VALUES_F64,
    QV_VALUES_BYTES = QUIVER_PLUGIN_TYPES_VALUES_BYTES,
};

/* Parameter kinds. */
enum {
    QV_KIND_BOOLEAN = QUIVER_PLUGIN_TYPES_PARAM_KIND_BOOLEAN,
    QV_KIND_INT = QUIVER_PLUGIN_TYPES_PARAM_KIND_INT,
    QV_KIND_FLOAT = QUIVER_PLUGIN_TYPES_PARAM_KIND_FLOAT,
    QV_KIND_TEXT = QUIVER_PLUGIN_TYPES_PARAM_KIND_TEXT,
    QV_KIND_TEXT_LIST = QUIVER_PLUGIN_TYPES_PARAM_KIND_TEXT_LIST,
    QV_KIND_TEXT_MAP = QUIVER_PLUGIN_TYPES_PARAM_KIND_TEXT_MAP,
};

/* Log levels. */
enum {
    QV_TRACE = QUIVER_PLUGIN_HOST_LEVEL_TRACE,
    QV_DEBUG = QUIVER_PLUGIN_HOST_LEVEL_DEBUG,
    QV_INFO = QUIVER_PLUGIN_HOST_LEVEL_INFO,
    QV_WARN = QUIVER_PLUGIN_HOST_LEVEL_WARN,
    QV_ERROR = QUIVER_PLUGIN_HOST_LEVEL_ERROR,
};

/* Checked parameters (opaque): read them with the qv_param_* functions. */
typedef struct qv_params qv_params;

/* ------------------------------------------------------------------------------------------ */
/* What a plugin defines                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* Name, version, description and parameter specs: qv_info_set, then qv_spec_* per parameter.
 * Must not depend on qv_init (the host calls it first, maybe in another instance). */
void qv_describe(qv_info *info);

/* Called once per instance with the pipeline's parameters, already checked against the specs
 * (unknown names, kinds and required ones are refused by the kit; defaults are filled in; an
 * int given for a float becomes a float; a text given for a text list becomes a list of one).
 * `params` and every string read from it stay valid until the instance ends. Return false
 * after qv_param_invalid(err, …) to refuse a value. */
bool qv_init(const qv_params *params, qv_param_error *err);

/* The plan for batches of this input schema: `plan` starts empty; usually
 * qv_plan_passthrough(plan, input) and then qv_plan_compute(…). Return false after qv_fail*. */
bool qv_prepare(const qv_fields *input, qv_plan *plan, qv_error *err);

/* One batch holding the plan's `reads` columns, in that order (input->columns.ptr[i]).
 * Append output batches with qv_output_all / qv_output_selected and their columns with
 * qv_output_add. Return false after qv_fail* (the outputs are then discarded). */
bool qv_transform(qv_batch *input, qv_outputs *out, qv_error *err);

/* ------------------------------------------------------------------------------------------ */
/* Describe: plugin info and parameter specs                                                  */
/* ------------------------------------------------------------------------------------------ */

void qv_info_set(qv_info *info, const char *name, const char *version, const char *description);
/* A parameter that must be given. */
void qv_spec_required(qv_info *info, const char *name, int kind, const char *doc);
/* A parameter that may be absent (qv_param_has tells). */
void qv_spec_optional(qv_info *info, const char *name, int kind, const char *doc);
/* Parameters with a default value. */
void qv_spec_bool(qv_info *info, const char *name, const char *doc, bool dflt);
void qv_spec_int(qv_info *info, const char *name, const char *doc, int64_t dflt);
void qv_spec_float(qv_info *info, const char *name, const char *doc, double dflt);
void qv_spec_text(qv_info *info, const char *name, const char *doc, const char *dflt);
void qv_spec_text_list(qv_info *info, const char *name, const char *doc,
                       const char *const *dflt, size_t n);

/* ------------------------------------------------------------------------------------------ */
/* Parameters                                                                                 */
/* ------------------------------------------------------------------------------------------ */

/* Text values are NUL-terminated (and their length is strlen unless they hold a NUL byte). */
bool qv_param_has(const qv_params *p, const char *name);
const char *qv_param_text(const qv_params *p, const char *name); /* NULL if absent */
double qv_param_float(const qv_params *p, const char *name, double otherwise);
int64_t qv_param_int(const qv_params *p, const char *name, int64_t otherwise);
bool qv_param_bool(const qv_params *p, const char *name, bool otherwise);
size_t qv_param_list_len(const qv_params *p, const char *name); /* 0 if absent */
const char *qv_param_list_item(const qv_params *p, const char *name, size_t i);
size_t qv_param_map_len(const qv_params *p, const char *name); /* 0 if absent */
const char *qv_param_map_key(const qv_params *p, const char *name, size_t i);
const char *qv_param_map_value(const qv_params *p, const char *name, size_t i);
/* The raw value (tag QUIVER_PLUGIN_TYPES_PARAM_VALUE_*), NULL if absent. */
const quiver_plugin_types_param_value_t *qv_param_value(const qv_params *p, const char *name);
/* A text parameter that must be one of `choices` (n of them): its index, or -1 after setting
 * an `invalid` error that lists the choices (an absent parameter is refused too). */
int qv_param_choice(const qv_params *p, const char *name, const char *const *choices, size_t n,
                    qv_param_error *err);
/* Sets an `invalid` parameter error (reason formatted like printf) and returns false. */
bool qv_param_invalid(qv_param_error *err, const char *name, const char *fmt, ...)
    QV_PRINTF(3, 4);

/* ------------------------------------------------------------------------------------------ */
/* Errors and logging                                                                         */
/* ------------------------------------------------------------------------------------------ */

/* Each sets the error (replacing any earlier one; nothing if err is NULL) and returns false,
 * for `return qv_fail(…)`. */
bool qv_fail(qv_error *err, const char *fmt, ...) QV_PRINTF(2, 3);
bool qv_fail_column(qv_error *err, const char *column, const char *fmt, ...) QV_PRINTF(3, 4);
bool qv_fail_row(qv_error *err, const char *column, uint32_t row, const char *fmt, ...)
    QV_PRINTF(4, 5);
/* Same, with a column name as the host sent it (not NUL-terminated). */
bool qv_fail_in(qv_error *err, const qv_string *column, const char *fmt, ...) QV_PRINTF(3, 4);
bool qv_fail_at(qv_error *err, const qv_string *column, uint32_t row, const char *fmt, ...)
    QV_PRINTF(4, 5);

/* Writes to the host's log (level QV_TRACE … QV_ERROR). Use it instead of printf/fprintf. */
void qv_log(int level, const char *fmt, ...) QV_PRINTF(2, 3);

/* printf-style formatting without libc's stdio. Use these instead of snprintf & co: in
 * wasi-libc every printf-family function links stdio's stderr, whose WASI imports make the
 * component import wasi:filesystem and wasi:clocks (which need grants). Supports the flags
 * - + space 0 #, width and precision (also *), the length modifiers hh h l ll z j t, and
 * d i u x X o c s p f F e E g G %; floats get up to 17 significant digits, correctly rounded
 * to within one unit of the last. */
int qv_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap);
int qv_snprintf(char *buf, size_t size, const char *fmt, ...) QV_PRINTF(3, 4);
/* A malloc'd formatted string (free it yourself). */
char *qv_format(const char *fmt, ...) QV_PRINTF(1, 2);

/* ------------------------------------------------------------------------------------------ */
/* Byte strings and utf8 helpers                                                              */
/* ------------------------------------------------------------------------------------------ */

/* A borrowed view of bytes (e.g. one row of a utf8 column). */
typedef struct {
    const uint8_t *ptr;
    size_t len;
} qv_str;

static inline qv_str qv_str_of(const void *ptr, size_t len) {
    qv_str s = {(const uint8_t *)ptr, len};
    return s;
}
static inline qv_str qv_cstr(const char *s) { return qv_str_of(s, strlen(s)); }
static inline qv_str qv_view(const qv_string *s) { return qv_str_of(s->ptr, s->len); }
static inline bool qv_str_eq(qv_str a, qv_str b) {
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}
/* Whether a (non NUL-terminated) name equals a C string. */
static inline bool qv_string_is(const qv_string *s, const char *c) {
    return qv_str_eq(qv_view(s), qv_cstr(c));
}
static inline bool qv_is_ascii_space(uint8_t c) {
    return c == ' ' || (c >= '\t' && c <= '\r'); /* space \t \n \v \f \r */
}
/* `s` without ASCII white space (space, \t, \n, \v, \f, \r) at either end. */
qv_str qv_str_trim_ascii(qv_str s);
/* Copies n bytes, mapping A–Z to a–z (other bytes, UTF-8 included, unchanged); dst may be src. */
void qv_ascii_lower(uint8_t *dst, const uint8_t *src, size_t n);
/* Offset of the last (first) byte c in s, or -1. */
ptrdiff_t qv_str_rfind(qv_str s, uint8_t c);
ptrdiff_t qv_str_find(qv_str s, uint8_t c);
/* Whether the bytes are valid UTF-8. */
bool qv_utf8_valid(const uint8_t *p, size_t n);
/* A malloc'd NUL-terminated copy (free it yourself). */
char *qv_str_dup(qv_str s);

/* ------------------------------------------------------------------------------------------ */
/* Bitmaps (Arrow layout: bit i is row i, least significant bit first)                        */
/* ------------------------------------------------------------------------------------------ */

static inline bool qv_get_bit(const uint8_t *bits, size_t i) {
    return (bits[i >> 3] >> (i & 7)) & 1;
}
/* Number of set bits among the first `len`. */
size_t qv_count_set_bits(const uint8_t *bits, size_t len);

/* A growable bitmap: for boolean values, validity and row selections. Zero-initialised is an
 * empty bitmap. */
typedef struct {
    uint8_t *bytes;
    size_t len; /* bits */
    size_t cap; /* bytes allocated */
} qv_bitmap;

void qv_bitmap_init(qv_bitmap *b, size_t capacity_bits);
/* `len` bits, all `value`. */
void qv_bitmap_filled(qv_bitmap *b, size_t len, bool value);
void qv_bitmap_grow_(qv_bitmap *b, size_t min_bytes);
static inline void qv_bitmap_push(qv_bitmap *b, bool value) {
    size_t byte = b->len >> 3;
    if ((b->len & 7) == 0) {
        if (byte >= b->cap) qv_bitmap_grow_(b, byte + 1);
        b->bytes[byte] = 0;
    }
    b->bytes[byte] |= (uint8_t)((value ? 1u : 0u) << (b->len & 7));
    b->len++;
}
/* Sets bit i (< len). */
static inline void qv_bitmap_set(qv_bitmap *b, size_t i, bool value) {
    if (value)
        b->bytes[i >> 3] |= (uint8_t)(1u << (i & 7));
    else
        b->bytes[i >> 3] &= (uint8_t) ~(1u << (i & 7));
}
static inline bool qv_bitmap_get(const qv_bitmap *b, size_t i) { return qv_get_bit(b->bytes, i); }
size_t qv_bitmap_count_set(const qv_bitmap *b);
void qv_bitmap_free(qv_bitmap *b);

/* ------------------------------------------------------------------------------------------ */
/* Reading columns                                                                            */
/* ------------------------------------------------------------------------------------------ */

/* Column i of the batch (i < batch->columns.len). */
static inline qv_column *qv_column_at(qv_batch *b, size_t i) { return &b->columns.ptr[i]; }
/* The column called `name`, or NULL. */
qv_column *qv_column_named(qv_batch *b, const char *name);

/* The validity bitmap, or NULL when the column has no nulls. */
static inline const uint8_t *qv_validity(const qv_column *c) {
    return c->validity.is_some && c->validity.val.len > 0 ? c->validity.val.ptr : NULL;
}
static inline bool qv_is_valid(const qv_column *c, size_t i) {
    const uint8_t *v = qv_validity(c);
    return v == NULL || qv_get_bit(v, i);
}
size_t qv_null_count(const qv_column *c, size_t rows);

/* Typed values: a pointer to the column's buffer (which you may change in place) and its
 * length, or NULL (and *len = 0) when the column has another layout — then, if err is not
 * NULL, an error naming the column is set. E.g.
 *     size_t n; double *x = qv_f64(col, &n, err); if (!x) return false;                    */
#define QV_TYPED_ACCESSORS(X)                                                                  \
    X(i8, int8_t, I8)                                                                          \
    X(i16, int16_t, I16)                                                                       \
    X(i32, int32_t, I32)                                                                       \
    X(i64, int64_t, I64)                                                                       \
    X(u8, uint8_t, U8)                                                                         \
    X(u16, uint16_t, U16)                                                                      \
    X(u32, uint32_t, U32)                                                                      \
    X(u64, uint64_t, U64)                                                                      \
    X(f32, float, F32)                                                                         \
    X(f64, double, F64)
#define QV_DECLARE_ACCESSOR(FN, CTYPE, TAG)                                                    \
    CTYPE *qv_##FN(qv_column *c, size_t *len, qv_error *err);                                 \
    qv_column qv_column_##FN(const char *col_name, qv_data_type type, CTYPE *values, size_t n, \
                             qv_bitmap *validity);
QV_TYPED_ACCESSORS(QV_DECLARE_ACCESSOR)
#undef QV_DECLARE_ACCESSOR

/* Boolean columns: the value bits (NULL after an error as above); qv_bool_at reads one. */
uint8_t *qv_bits(qv_column *c, size_t *nbytes, qv_error *err);
static inline bool qv_bool_at(const qv_column *c, size_t i) {
    return c->values.tag == QV_VALUES_BITS && qv_get_bit(c->values.val.bits.ptr, i);
}

/* utf8 / binary columns. qv_expect_strings checks the layout (offsets and bytes, rows + 1
 * offsets in bounds) and sets an error naming the column otherwise; after it, qv_str_at(c, i)
 * is row i (whatever its validity: a null row is usually empty). */
bool qv_expect_strings(const qv_column *c, size_t rows, qv_error *err);
static inline qv_str qv_str_at(const qv_column *c, size_t i) {
    const int32_t *o = c->offsets.val.ptr;
    return qv_str_of(c->values.val.bytes.ptr + o[i], (size_t)(o[i + 1] - o[i]));
}

/* ------------------------------------------------------------------------------------------ */
/* Building columns                                                                           */
/* ------------------------------------------------------------------------------------------ */

/* Builds a utf8 (or binary) column row by row. Zero-initialised is not enough: use
 * qv_strings_init. Byte totals over 2^31 - 1 abort (offsets are 32-bit). */
typedef struct {
    int32_t *offsets; /* rows + 1 */
    uint8_t *bytes;
    size_t rows, len, cap, offsets_cap;
    qv_bitmap validity;
    size_t nulls;
} qv_strings;

void qv_strings_init(qv_strings *b, size_t rows_hint, size_t bytes_hint);
void qv_strings_push(qv_strings *b, const void *bytes, size_t n);
static inline void qv_strings_push_str(qv_strings *b, qv_str s) { qv_strings_push(b, s.ptr, s.len); }
void qv_strings_push_null(qv_strings *b);
/* Room for n more bytes of the next value: write up to n bytes at the returned pointer, then
 * end the row with qv_strings_commit(b, written) (no intermediate buffer). */
uint8_t *qv_strings_reserve(qv_strings *b, size_t n);
void qv_strings_commit(qv_strings *b, size_t written);
/* The column (validity only if a null was pushed); the builder is left empty. */
qv_column qv_strings_finish(qv_strings *b, const char *name, qv_data_type type);
void qv_strings_free(qv_strings *b);

/* A boolean column from value bits and, optionally, validity bits (NULL: no nulls). Both
 * bitmaps are moved into the column (left empty). */
qv_column qv_column_bool(const char *name, qv_bitmap *values, qv_bitmap *validity);
/* A column of a fixed-width type from a malloc'd array of n values, moved into the column
 * (e.g. qv_column_f64(name, QV_TYPE(QV_FLOAT64), values, n, NULL)), optionally with validity
 * (moved too): declared above for i8 … f64. */

/* Replaces a column's name / validity (the bitmap is moved in; NULL removes the validity). */
void qv_column_rename(qv_column *c, const char *name);
void qv_column_set_validity(qv_column *c, qv_bitmap *validity);
/* A copy of a column's validity bitmap (rows bits) into `out`; false if it has none. */
bool qv_copy_validity(const qv_column *c, size_t rows, qv_bitmap *out);
/* Moves column i out of the batch (to return it, changed in place or not), leaving an empty
 * column in its place. */
qv_column qv_take(qv_batch *b, size_t i);
void qv_column_free(qv_column *c);

/* ------------------------------------------------------------------------------------------ */
/* Outputs                                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Appends an output batch keeping every input row (rows = the input's row count). The pointer
 * is valid until the next qv_output_all / qv_output_selected on `out`. */
qv_output *qv_output_all(qv_outputs *out, uint32_t rows);
/* Appends an output batch keeping the input rows whose bit is set (the bitmap is moved in). */
qv_output *qv_output_selected(qv_outputs *out, qv_bitmap *selection);
/* Moves a computed column into an output batch. */
void qv_output_add(qv_output *o, qv_column column);

/* ------------------------------------------------------------------------------------------ */
/* Plans                                                                                      */
/* ------------------------------------------------------------------------------------------ */

/* The input field called `name`, or NULL after an error naming the column and listing the
 * available ones (err may be NULL: no error, e.g. to test whether a column exists). */
const qv_field *qv_find_field(const qv_fields *input, const char *name, qv_error *err);
/* The same, also checking its type is in `mask` (QV_MASK(QV_UTF8) | …). */
const qv_field *qv_expect_type(const qv_fields *input, const char *name, unsigned mask,
                               qv_error *err);
/* Arrow's name of a type tag ("Float64", "Utf8", …). */
const char *qv_type_name(int tag);

/* Reads nothing; every input column passes through unchanged. */
void qv_plan_passthrough(qv_plan *plan, const qv_fields *input);
/* Adds `name` to the columns the plugin reads (once). */
void qv_plan_read(qv_plan *plan, const char *name);
/* Reads `name` and replaces its output column (or appends one) by a computed column. */
void qv_plan_compute(qv_plan *plan, const char *name, qv_data_type type, bool nullable);
/* Declares a computed output column without reading an input column of that name (replacing
 * an output column of that name in place, or appending). */
void qv_plan_computed(qv_plan *plan, const char *name, qv_data_type type, bool nullable);
/* Declares a computed column right after output column `after` (at the end if none). */
void qv_plan_computed_after(qv_plan *plan, const char *after, const char *name,
                            qv_data_type type, bool nullable);
/* Removes output column `name`. */
void qv_plan_drop(qv_plan *plan, const char *name);

/* ------------------------------------------------------------------------------------------ */
/* Low-level helpers                                                                          */
/* ------------------------------------------------------------------------------------------ */

/* malloc/realloc that abort on failure. */
void *qv_alloc(size_t n);
void *qv_realloc(void *p, size_t n);
/* An owned copy of bytes / a C string as a qv_string (empty: ptr NULL). */
qv_string qv_string_copy(const void *p, size_t n);
qv_string qv_string_from(const char *s);
/* A deep copy of a data type (a timestamp's time zone is copied). */
qv_data_type qv_data_type_copy(const qv_data_type *t);

#ifdef __cplusplus
}
#endif
#endif /* QUIVER_H */
