/* email-normalize: trims and ASCII-lowercases e-mail addresses (in place of the column) and
 * adds a boolean column flagging free mail domains (see ../README.md). */
#include <stdlib.h>

#include "quiver.h"

static const char *const FREE_DOMAINS[] = {"gmail.com", "yahoo.com", "hotmail.com", "outlook.com"};

/* Parameters (the kit owns the strings for the life of the instance). */
static const char *column;
static const char *flag;
static qv_str *free_domains; /* ASCII-lowercased copies */
static size_t free_count;

void qv_describe(qv_info *info) {
    qv_info_set(info, "email-normalize", "0.1.0",
                "trims and lowercases e-mail addresses and flags free mail domains");
    qv_spec_required(info, "column", QV_KIND_TEXT, "a utf8 column of e-mail addresses");
    qv_spec_text_list(info, "free-domains", "domains of free mail providers", FREE_DOMAINS, 4);
    qv_spec_text(info, "flag", "the name of the boolean column it adds", "is_free_mail");
}

bool qv_init(const qv_params *params, qv_param_error *err) {
    column = qv_param_text(params, "column");
    flag = qv_param_text(params, "flag");
    for (size_t i = 0; i < free_count; i++) free((void *)free_domains[i].ptr);
    free_count = qv_param_list_len(params, "free-domains");
    free_domains = qv_realloc(free_domains, free_count * sizeof *free_domains);
    for (size_t i = 0; i < free_count; i++) {
        const char *domain = qv_param_list_item(params, "free-domains", i);
        size_t len = strlen(domain);
        uint8_t *lower = qv_alloc(len);
        qv_ascii_lower(lower, (const uint8_t *)domain, len);
        free_domains[i] = qv_str_of(lower, len);
    }
    return true;
}

bool qv_prepare(const qv_fields *input, qv_plan *plan, qv_error *err) {
    const qv_field *field = qv_expect_type(input, column, QV_MASK(QV_UTF8), err);
    if (!field) return false;
    if (qv_find_field(input, flag, NULL))
        return qv_fail_column(err, flag, "the flag column `%s` already exists in the input", flag);
    /* Read only `column`; replace it in place and add `flag` right after it. */
    qv_plan_passthrough(plan, input);
    qv_plan_compute(plan, column, QV_TYPE(QV_UTF8), field->nullable);
    qv_plan_computed_after(plan, column, flag, QV_TYPE(QV_BOOLEAN), true);
    return true;
}

static bool is_free_domain(qv_str domain) {
    for (size_t i = 0; i < free_count; i++)
        if (qv_str_eq(domain, free_domains[i])) return true;
    return false;
}

bool qv_transform(qv_batch *input, qv_outputs *out, qv_error *err) {
    size_t rows = input->rows;
    qv_column *emails = qv_column_at(input, 0);
    if (!qv_expect_strings(emails, rows, err)) return false;

    qv_strings normalized;
    qv_strings_init(&normalized, rows, emails->values.val.bytes.len);
    qv_bitmap is_free;
    qv_bitmap_init(&is_free, rows);
    for (size_t i = 0; i < rows; i++) {
        if (!qv_is_valid(emails, i)) {
            qv_strings_push_null(&normalized);
            qv_bitmap_push(&is_free, false);
            continue;
        }
        qv_str email = qv_str_trim_ascii(qv_str_at(emails, i));
        /* Lowercase straight into the output buffer. */
        uint8_t *lower = qv_strings_reserve(&normalized, email.len);
        qv_ascii_lower(lower, email.ptr, email.len);
        qv_strings_commit(&normalized, email.len);
        ptrdiff_t at = qv_str_rfind(qv_str_of(lower, email.len), '@');
        qv_bitmap_push(&is_free, at >= 0 && is_free_domain(qv_str_of(lower + at + 1,
                                                                      email.len - (size_t)at - 1)));
    }

    /* The flag is null where the address is: it takes a copy of the input's validity. */
    qv_bitmap validity = {0};
    bool has_nulls = qv_copy_validity(emails, rows, &validity);
    qv_output *o = qv_output_all(out, input->rows);
    qv_output_add(o, qv_strings_finish(&normalized, column, QV_TYPE(QV_UTF8)));
    qv_output_add(o, qv_column_bool(flag, &is_free, has_nulls ? &validity : NULL));
    return true;
}
