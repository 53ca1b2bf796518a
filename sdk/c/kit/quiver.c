/*
 * quiver.c — the C kit for Quiver transform plugins: implements the component's exports
 * (describe, init, prepare, transform) on top of the generated bindings, and the helpers
 * declared in quiver.h.
 */
#include "quiver.h"

#include <math.h>
#include <stdlib.h>

/* ------------------------------------------------------------------------------------------ */
/* Allocation and strings                                                                     */
/* ------------------------------------------------------------------------------------------ */

void *qv_alloc(size_t n) {
    void *p = malloc(n ? n : 1);
    if (!p) abort();
    return p;
}

void *qv_realloc(void *p, size_t n) {
    void *q = realloc(p, n ? n : 1);
    if (!q) abort();
    return q;
}

qv_string qv_string_copy(const void *p, size_t n) {
    qv_string s = {NULL, 0};
    if (n > 0) {
        s.ptr = qv_alloc(n);
        memcpy(s.ptr, p, n);
        s.len = n;
    }
    return s;
}

qv_string qv_string_from(const char *s) { return qv_string_copy(s, s ? strlen(s) : 0); }

/* Frees an owned string (only when non-empty: an empty one may hold a dummy pointer). */
static void string_free(qv_string *s) {
    if (s->len > 0) free(s->ptr);
    s->ptr = NULL;
    s->len = 0;
}

/* A malloc'd string formatted like printf (by qv_vsnprintf). */
static qv_string string_vformat(const char *fmt, va_list ap) {
    va_list ap2;
    va_copy(ap2, ap);
    int n = qv_vsnprintf(NULL, 0, fmt, ap2);
    va_end(ap2);
    if (n <= 0) return (qv_string){NULL, 0};
    char *buf = qv_alloc((size_t)n + 1);
    qv_vsnprintf(buf, (size_t)n + 1, fmt, ap);
    return (qv_string){(uint8_t *)buf, (size_t)n};
}

char *qv_str_dup(qv_str s) {
    char *c = qv_alloc(s.len + 1);
    if (s.len) memcpy(c, s.ptr, s.len);
    c[s.len] = 0;
    return c;
}

qv_data_type qv_data_type_copy(const qv_data_type *t) {
    qv_data_type d = *t;
    if (t->tag == QV_TIMESTAMP && t->val.timestamp.timezone.is_some) {
        const qv_string *tz = &t->val.timestamp.timezone.val;
        d.val.timestamp.timezone.val = qv_string_copy(tz->ptr, tz->len);
    }
    return d;
}

/* ------------------------------------------------------------------------------------------ */
/* Formatting (printf-like, without libc's stdio: wasi-libc's vsnprintf links stderr, whose   */
/* WASI imports would make the component import wasi:filesystem and wasi:clocks)              */
/* ------------------------------------------------------------------------------------------ */

typedef struct {
    char *buf;
    size_t cap, len;
} sink;

static void put(sink *s, char c) {
    if (s->len + 1 < s->cap) s->buf[s->len] = c;
    s->len++;
}
static void put_n(sink *s, const char *p, size_t n) {
    for (size_t i = 0; i < n; i++) put(s, p[i]);
}
static void pad(sink *s, char c, int n) {
    for (; n > 0; n--) put(s, c);
}

enum { F_LEFT = 1, F_PLUS = 2, F_SPACE = 4, F_ZERO = 8, F_ALT = 16, F_UPPER = 32 };

/* Writes sign/prefix + body with width and flags. */
static void emit(sink *s, const char *prefix, const char *body, size_t n, int width, int flags) {
    size_t plen = strlen(prefix);
    int fill = width - (int)(plen + n);
    if (!(flags & F_LEFT) && !(flags & F_ZERO)) pad(s, ' ', fill);
    put_n(s, prefix, plen);
    if (!(flags & F_LEFT) && (flags & F_ZERO)) pad(s, '0', fill);
    put_n(s, body, n);
    if (flags & F_LEFT) pad(s, ' ', fill);
}

static void fmt_int(sink *s, uint64_t v, bool neg, int base, int prec, int width, int flags) {
    char tmp[72];
    const char *digits = (flags & F_UPPER) ? "0123456789ABCDEF" : "0123456789abcdef";
    int n = 0;
    while (v) {
        tmp[sizeof tmp - 1 - n++] = digits[v % (unsigned)base];
        v /= (unsigned)base;
    }
    if (prec < 0) prec = 1;
    else flags &= ~F_ZERO;
    while (n < prec && n < 64) tmp[sizeof tmp - 1 - n++] = '0';
    const char *prefix = neg ? "-" : (flags & F_PLUS) ? "+" : (flags & F_SPACE) ? " " : "";
    if ((flags & F_ALT) && base == 16 && n > 0) prefix = (flags & F_UPPER) ? "0X" : "0x";
    emit(s, prefix, tmp + sizeof tmp - n, (size_t)n, width, flags);
}

/* Appends the decimal digits of n (no leading zeros; nothing for 0) to d. */
static int u64_digits(uint64_t n, char *d) {
    char t[20];
    int k = 0;
    while (n) {
        t[k++] = (char)('0' + n % 10);
        n /= 10;
    }
    for (int i = 0; i < k; i++) d[i] = t[k - 1 - i];
    return k;
}

/* All the decimal digits of v > 0 (finite), exactly: d[0..n) with d[0] at 10^e, no leading
 * or trailing zeros. d must hold 1200 bytes. */
static int exact_digits(double v, char *d, int *e) {
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    int be = (int)((bits >> 52) & 0x7ff);
    uint64_t m = bits & 0xFFFFFFFFFFFFFull;
    if (be) m |= 1ull << 52;
    else be = 1;
    int k = be - 1075; /* v = m * 2^k */
    uint32_t a[40];
    int ni = 0; /* integer digits */
    char *id = d;
    if (k >= 0) {
        /* m << k as 32-bit limbs, then divided by 10^9 repeatedly. */
        memset(a, 0, sizeof a);
        int w = k / 32, sh = k % 32;
        uint64_t lo = m << sh, hi = sh ? m >> (64 - sh) : 0;
        a[w] = (uint32_t)lo;
        a[w + 1] = (uint32_t)(lo >> 32);
        a[w + 2] = (uint32_t)hi;
        int na = w + 3;
        char rev[360];
        int nr = 0;
        while (na > 0) {
            while (na > 0 && a[na - 1] == 0) na--;
            if (na == 0) break;
            uint64_t rem = 0;
            for (int i = na - 1; i >= 0; i--) {
                uint64_t cur = (rem << 32) | a[i];
                a[i] = (uint32_t)(cur / 1000000000u);
                rem = cur % 1000000000u;
            }
            for (int j = 0; j < 9; j++) {
                rev[nr++] = (char)('0' + rem % 10);
                rem /= 10;
            }
        }
        while (nr > 0 && rev[nr - 1] == '0') nr--;
        for (int i = 0; i < nr; i++) id[i] = rev[nr - 1 - i];
        ni = nr;
        *e = ni - 1;
        int n = ni;
        while (n > 0 && d[n - 1] == '0') n--;
        return n;
    }
    int s = -k; /* v = m / 2^s */
    uint64_t frac = s < 64 ? m & ((1ull << s) - 1) : m;
    if (s < 64) ni = u64_digits(m >> s, id);
    /* The fraction frac / 2^s, 9 digits at a time: multiply by 10^9, take the bits above s. */
    int L = s / 32 + 2;
    memset(a, 0, sizeof a);
    a[0] = (uint32_t)frac;
    a[1] = (uint32_t)(frac >> 32);
    char *fd = d + ni;
    int nf = 0;
    int w = s / 32, sh = s % 32;
    for (;;) {
        bool zero = true;
        for (int i = 0; i < L; i++)
            if (a[i]) {
                zero = false;
                break;
            }
        if (zero) break;
        uint64_t carry = 0;
        for (int i = 0; i < L; i++) {
            uint64_t cur = (uint64_t)a[i] * 1000000000u + carry;
            a[i] = (uint32_t)cur;
            carry = cur >> 32;
        }
        uint64_t window = a[w] | ((uint64_t)a[w + 1] << 32);
        uint32_t chunk = (uint32_t)(window >> sh);
        a[w] &= sh ? (uint32_t)((1ull << sh) - 1) : 0;
        for (int i = w + 1; i < L; i++) a[i] = 0;
        for (int j = 8; j >= 0; j--) {
            fd[nf + j] = (char)('0' + chunk % 10);
            chunk /= 10;
        }
        nf += 9;
    }
    if (ni > 0) {
        *e = ni - 1;
        int n = ni + nf;
        while (n > 0 && d[n - 1] == '0') n--;
        return n;
    }
    int z = 0;
    while (z < nf && fd[z] == '0') z++;
    int n = nf - z;
    memmove(d, fd + z, (size_t)n);
    while (n > 0 && d[n - 1] == '0') n--;
    *e = -(z + 1);
    return n;
}

/* Rounds the digits (d[0] at 10^e) to keep positions >= 10^p, half to even as the value is
 * exact. n = 0 means zero. */
static void round_at(char *d, int *n, int *e, int p) {
    int keep = *e - p + 1;
    if (keep >= *n) return;
    if (keep < 0) {
        *n = 0;
        return;
    }
    char r = d[keep];
    bool rest = false;
    for (int i = keep + 1; i < *n && !rest; i++) rest = d[i] != '0';
    bool odd = keep > 0 && ((d[keep - 1] - '0') & 1);
    bool up = r > '5' || (r == '5' && (rest || odd));
    *n = keep;
    if (!up) return;
    int i = keep - 1;
    while (i >= 0 && d[i] == '9') d[i--] = '0';
    if (i >= 0) {
        d[i]++;
    } else {
        memmove(d + 1, d, (size_t)keep);
        d[0] = '1';
        (*e)++;
        (*n)++;
    }
}

/* The digit of 10^p in the number d (n digits, first at 10^e). */
static char digit_at(const char *d, int n, int e, int p) {
    int j = e - p;
    return j >= 0 && j < n ? d[j] : '0';
}

static void fmt_float(sink *s, double v, char conv, int prec, int width, int flags) {
    char body[720];
    char d[1200];
    size_t bn = 0;
    bool neg = signbit(v);
    if (neg) v = -v;
    const char *prefix = neg ? "-" : (flags & F_PLUS) ? "+" : (flags & F_SPACE) ? " " : "";
    bool upper = conv == 'F' || conv == 'E' || conv == 'G';
    if (isnan(v) || isinf(v)) {
        emit(s, prefix, isnan(v) ? (upper ? "NAN" : "nan") : (upper ? "INF" : "inf"), 3, width,
             flags & ~F_ZERO);
        return;
    }
    if (prec < 0) prec = 6;
    if (prec > 340) prec = 340;
    char lc = (char)(conv | 32);
    int e = 0;
    int n = v == 0 ? 0 : exact_digits(v, d, &e);
    bool strip = false;
    if (lc == 'g') {
        if (prec == 0) prec = 1;
        round_at(d, &n, &e, e - (prec - 1));
        int x = n == 0 ? 0 : e;
        if (x >= -4 && x < prec) {
            lc = 'f';
            prec = prec - 1 - x;
        } else {
            lc = 'e';
            prec = prec - 1;
        }
        strip = !(flags & F_ALT);
    } else if (lc == 'e') {
        round_at(d, &n, &e, e - prec);
    } else {
        round_at(d, &n, &e, -prec);
    }
    if (n == 0) e = 0;
    if (lc == 'f') {
        if (n > 0 && e >= 0)
            for (int p = e; p >= 0; p--) body[bn++] = digit_at(d, n, e, p);
        else
            body[bn++] = '0';
        if (prec > 0 || (flags & F_ALT)) body[bn++] = '.';
        for (int i = 1; i <= prec; i++) body[bn++] = digit_at(d, n, e, -i);
    } else {
        body[bn++] = n > 0 ? d[0] : '0';
        if (prec > 0 || (flags & F_ALT)) body[bn++] = '.';
        for (int i = 1; i <= prec; i++) body[bn++] = i < n ? d[i] : '0';
    }
    if (strip && memchr(body, '.', bn)) {
        while (bn > 0 && body[bn - 1] == '0') bn--;
        if (bn > 0 && body[bn - 1] == '.') bn--;
    }
    if (lc == 'e') {
        body[bn++] = upper ? 'E' : 'e';
        int x = e;
        body[bn++] = x < 0 ? '-' : '+';
        if (x < 0) x = -x;
        if (x >= 100) body[bn++] = (char)('0' + x / 100);
        body[bn++] = (char)('0' + x / 10 % 10);
        body[bn++] = (char)('0' + x % 10);
    }
    emit(s, prefix, body, bn, width, flags);
}

int qv_vsnprintf(char *buf, size_t size, const char *fmt, va_list ap) {
    sink s = {buf, size, 0};
    for (const char *p = fmt; *p; p++) {
        if (*p != '%') {
            put(&s, *p);
            continue;
        }
        p++;
        int flags = 0, width = 0, prec = -1;
        for (;; p++) {
            if (*p == '-') flags |= F_LEFT;
            else if (*p == '+') flags |= F_PLUS;
            else if (*p == ' ') flags |= F_SPACE;
            else if (*p == '0') flags |= F_ZERO;
            else if (*p == '#') flags |= F_ALT;
            else break;
        }
        if (*p == '*') {
            width = va_arg(ap, int);
            if (width < 0) { flags |= F_LEFT; width = -width; }
            p++;
        } else {
            while (*p >= '0' && *p <= '9') width = width * 10 + (*p++ - '0');
        }
        if (*p == '.') {
            p++;
            prec = 0;
            if (*p == '*') {
                prec = va_arg(ap, int);
                p++;
            } else {
                while (*p >= '0' && *p <= '9') prec = prec * 10 + (*p++ - '0');
            }
        }
        if (flags & F_LEFT) flags &= ~F_ZERO;
        int len = 0; /* 0 int, 1 long, 2 long long, 3 size_t, 4 intmax, 5 ptrdiff, -1 short, -2 char */
        for (;; p++) {
            if (*p == 'l') len = len == 1 ? 2 : 1;
            else if (*p == 'h') len = len == -1 ? -2 : -1;
            else if (*p == 'z') len = 3;
            else if (*p == 'j') len = 4;
            else if (*p == 't') len = 5;
            else if (*p == 'L') len = 2;
            else break;
        }
        char c = *p;
        if (!c) break;
        switch (c) {
        case 'd':
        case 'i': {
            int64_t v;
            switch (len) {
            case 1: v = va_arg(ap, long); break;
            case 2: v = va_arg(ap, long long); break;
            case 3: v = (int64_t)va_arg(ap, ptrdiff_t); break;
            case 4: v = va_arg(ap, intmax_t); break;
            case 5: v = va_arg(ap, ptrdiff_t); break;
            case -1: v = (short)va_arg(ap, int); break;
            case -2: v = (signed char)va_arg(ap, int); break;
            default: v = va_arg(ap, int); break;
            }
            uint64_t u = v < 0 ? (uint64_t)0 - (uint64_t)v : (uint64_t)v;
            fmt_int(&s, u, v < 0, 10, prec, width, flags);
            break;
        }
        case 'u':
        case 'x':
        case 'X':
        case 'o': {
            uint64_t v;
            switch (len) {
            case 1: v = va_arg(ap, unsigned long); break;
            case 2: v = va_arg(ap, unsigned long long); break;
            case 3: v = va_arg(ap, size_t); break;
            case 4: v = va_arg(ap, uintmax_t); break;
            case 5: v = (uint64_t)va_arg(ap, ptrdiff_t); break;
            case -1: v = (unsigned short)va_arg(ap, unsigned); break;
            case -2: v = (unsigned char)va_arg(ap, unsigned); break;
            default: v = va_arg(ap, unsigned); break;
            }
            if (c == 'X') flags |= F_UPPER;
            fmt_int(&s, v, false, c == 'o' ? 8 : c == 'u' ? 10 : 16, prec, width,
                    flags & ~(F_PLUS | F_SPACE));
            break;
        }
        case 'p':
            fmt_int(&s, (uint64_t)(uintptr_t)va_arg(ap, void *), false, 16, -1, width,
                    (flags | F_ALT) & ~F_ZERO);
            break;
        case 'c': {
            char ch = (char)va_arg(ap, int);
            emit(&s, "", &ch, 1, width, flags & ~F_ZERO);
            break;
        }
        case 's': {
            const char *str = va_arg(ap, const char *);
            if (!str) str = "(null)";
            size_t n = 0;
            while ((prec < 0 || n < (size_t)prec) && str[n]) n++;
            emit(&s, "", str, n, width, flags & ~F_ZERO);
            break;
        }
        case 'f':
        case 'F':
        case 'e':
        case 'E':
        case 'g':
        case 'G':
            fmt_float(&s, va_arg(ap, double), c, prec, width, flags);
            break;
        case '%':
            put(&s, '%');
            break;
        default: /* unknown conversion: written as is */
            put(&s, '%');
            put(&s, c);
            break;
        }
    }
    if (size > 0) buf[s.len < size ? s.len : size - 1] = 0;
    return (int)s.len;
}

int qv_snprintf(char *buf, size_t size, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = qv_vsnprintf(buf, size, fmt, ap);
    va_end(ap);
    return n;
}

char *qv_format(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    qv_string s = string_vformat(fmt, ap);
    va_end(ap);
    char *c = qv_alloc(s.len + 1);
    if (s.len) memcpy(c, s.ptr, s.len);
    c[s.len] = 0;
    string_free(&s);
    return c;
}

/* ------------------------------------------------------------------------------------------ */
/* utf8 helpers                                                                               */
/* ------------------------------------------------------------------------------------------ */

qv_str qv_str_trim_ascii(qv_str s) {
    const uint8_t *p = s.ptr;
    size_t n = s.len;
    while (n > 0 && qv_is_ascii_space(p[0])) {
        p++;
        n--;
    }
    while (n > 0 && qv_is_ascii_space(p[n - 1])) n--;
    return qv_str_of(p, n);
}

void qv_ascii_lower(uint8_t *dst, const uint8_t *src, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t c = src[i];
        dst[i] = (uint8_t)(c - 'A' < 26u ? c + 32 : c);
    }
}

ptrdiff_t qv_str_rfind(qv_str s, uint8_t c) {
    for (size_t i = s.len; i > 0; i--)
        if (s.ptr[i - 1] == c) return (ptrdiff_t)(i - 1);
    return -1;
}

ptrdiff_t qv_str_find(qv_str s, uint8_t c) {
    const uint8_t *p = s.len ? memchr(s.ptr, c, s.len) : NULL;
    return p ? p - s.ptr : -1;
}

bool qv_utf8_valid(const uint8_t *p, size_t n) {
    size_t i = 0;
    while (i < n) {
        uint8_t c = p[i];
        if (c < 0x80) {
            i++;
            continue;
        }
        size_t k;
        uint32_t cp;
        if (c >= 0xC2 && c <= 0xDF) {
            k = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            k = 2;
            cp = c & 0x0F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            k = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (n - i <= k) return false;
        for (size_t j = 1; j <= k; j++) {
            if ((p[i + j] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i + j] & 0x3F);
        }
        if ((k == 2 && cp < 0x800) || (k == 3 && (cp < 0x10000 || cp > 0x10FFFF)) ||
            (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += k + 1;
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Bitmaps                                                                                    */
/* ------------------------------------------------------------------------------------------ */

size_t qv_count_set_bits(const uint8_t *bits, size_t len) {
    size_t full = len / 8, n = 0;
    for (size_t i = 0; i < full; i++) n += (size_t)__builtin_popcount(bits[i]);
    if (len % 8) n += (size_t)__builtin_popcount(bits[full] & ((1u << (len % 8)) - 1));
    return n;
}

void qv_bitmap_init(qv_bitmap *b, size_t capacity_bits) {
    b->len = 0;
    b->cap = (capacity_bits + 7) / 8;
    b->bytes = b->cap ? qv_alloc(b->cap) : NULL;
}

void qv_bitmap_filled(qv_bitmap *b, size_t len, bool value) {
    b->len = len;
    b->cap = (len + 7) / 8;
    b->bytes = b->cap ? qv_alloc(b->cap) : NULL;
    if (b->cap) memset(b->bytes, value ? 0xFF : 0, b->cap);
}

void qv_bitmap_grow_(qv_bitmap *b, size_t min_bytes) {
    size_t cap = b->cap ? b->cap * 2 : 8;
    if (cap < min_bytes) cap = min_bytes;
    b->bytes = qv_realloc(b->bytes, cap);
    b->cap = cap;
}

size_t qv_bitmap_count_set(const qv_bitmap *b) {
    return b->len ? qv_count_set_bits(b->bytes, b->len) : 0;
}

void qv_bitmap_free(qv_bitmap *b) {
    free(b->bytes);
    b->bytes = NULL;
    b->len = b->cap = 0;
}

/* The bitmap's bytes as a list (ceil(len / 8) bytes), moved out of the bitmap. */
static transform_list_u8_t bitmap_take(qv_bitmap *b) {
    transform_list_u8_t l = {NULL, 0};
    size_t n = (b->len + 7) / 8;
    if (n > 0) {
        l.ptr = b->bytes;
        l.len = n;
    } else {
        free(b->bytes);
    }
    b->bytes = NULL;
    b->len = b->cap = 0;
    return l;
}

/* ------------------------------------------------------------------------------------------ */
/* Errors and logging                                                                         */
/* ------------------------------------------------------------------------------------------ */

static void error_clear(qv_error *err) {
    quiver_plugin_types_plugin_error_free(err);
    memset(err, 0, sizeof *err);
}

static bool error_set(qv_error *err, const void *column, size_t column_len, bool has_column,
                      bool has_row, uint32_t row, const char *fmt, va_list ap) {
    if (!err) return false;
    error_clear(err);
    err->message = string_vformat(fmt, ap);
    if (has_column) {
        err->column.is_some = true;
        err->column.val = qv_string_copy(column, column_len);
    }
    if (has_row) {
        err->row.is_some = true;
        err->row.val = row;
    }
    return false;
}

bool qv_fail(qv_error *err, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_set(err, NULL, 0, false, false, 0, fmt, ap);
    va_end(ap);
    return false;
}

bool qv_fail_column(qv_error *err, const char *column, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_set(err, column, column ? strlen(column) : 0, column != NULL, false, 0, fmt, ap);
    va_end(ap);
    return false;
}

bool qv_fail_row(qv_error *err, const char *column, uint32_t row, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_set(err, column, column ? strlen(column) : 0, column != NULL, true, row, fmt, ap);
    va_end(ap);
    return false;
}

bool qv_fail_in(qv_error *err, const qv_string *column, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_set(err, column->ptr, column->len, true, false, 0, fmt, ap);
    va_end(ap);
    return false;
}

bool qv_fail_at(qv_error *err, const qv_string *column, uint32_t row, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    error_set(err, column->ptr, column->len, true, true, row, fmt, ap);
    va_end(ap);
    return false;
}

bool qv_param_invalid(qv_param_error *err, const char *name, const char *fmt, ...) {
    if (!err) return false;
    quiver_plugin_types_param_error_free(err);
    memset(err, 0, sizeof *err);
    err->tag = QUIVER_PLUGIN_TYPES_PARAM_ERROR_INVALID;
    err->val.invalid.name = qv_string_from(name);
    va_list ap;
    va_start(ap, fmt);
    err->val.invalid.reason = string_vformat(fmt, ap);
    va_end(ap);
    return false;
}

void qv_log(int level, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    qv_string msg = string_vformat(fmt, ap);
    va_end(ap);
    quiver_plugin_host_log((quiver_plugin_host_level_t)level, &msg);
    string_free(&msg);
}

/* ------------------------------------------------------------------------------------------ */
/* Describe                                                                                   */
/* ------------------------------------------------------------------------------------------ */

void qv_info_set(qv_info *info, const char *name, const char *version, const char *description) {
    string_free(&info->name);
    string_free(&info->version);
    string_free(&info->description);
    info->name = qv_string_from(name);
    info->version = qv_string_from(version);
    info->description = qv_string_from(description);
}

static quiver_plugin_types_param_spec_t *spec_push(qv_info *info, const char *name, int kind,
                                                   const char *doc) {
    quiver_plugin_types_list_param_spec_t *l = &info->params;
    l->ptr = qv_realloc(l->len ? l->ptr : NULL, (l->len + 1) * sizeof *l->ptr);
    quiver_plugin_types_param_spec_t *s = &l->ptr[l->len++];
    memset(s, 0, sizeof *s);
    s->name = qv_string_from(name);
    s->kind = (quiver_plugin_types_param_kind_t)kind;
    s->doc = qv_string_from(doc);
    return s;
}

void qv_spec_required(qv_info *info, const char *name, int kind, const char *doc) {
    spec_push(info, name, kind, doc)->required = true;
}

void qv_spec_optional(qv_info *info, const char *name, int kind, const char *doc) {
    spec_push(info, name, kind, doc);
}

void qv_spec_bool(qv_info *info, const char *name, const char *doc, bool dflt) {
    quiver_plugin_types_param_spec_t *s = spec_push(info, name, QV_KIND_BOOLEAN, doc);
    s->default_.is_some = true;
    s->default_.val.tag = QUIVER_PLUGIN_TYPES_PARAM_VALUE_BOOLEAN;
    s->default_.val.val.boolean = dflt;
}

void qv_spec_int(qv_info *info, const char *name, const char *doc, int64_t dflt) {
    quiver_plugin_types_param_spec_t *s = spec_push(info, name, QV_KIND_INT, doc);
    s->default_.is_some = true;
    s->default_.val.tag = QUIVER_PLUGIN_TYPES_PARAM_VALUE_INT;
    s->default_.val.val.int_ = dflt;
}

void qv_spec_float(qv_info *info, const char *name, const char *doc, double dflt) {
    quiver_plugin_types_param_spec_t *s = spec_push(info, name, QV_KIND_FLOAT, doc);
    s->default_.is_some = true;
    s->default_.val.tag = QUIVER_PLUGIN_TYPES_PARAM_VALUE_FLOAT;
    s->default_.val.val.float_ = dflt;
}

void qv_spec_text(qv_info *info, const char *name, const char *doc, const char *dflt) {
    quiver_plugin_types_param_spec_t *s = spec_push(info, name, QV_KIND_TEXT, doc);
    s->default_.is_some = true;
    s->default_.val.tag = QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT;
    s->default_.val.val.text = qv_string_from(dflt);
}

void qv_spec_text_list(qv_info *info, const char *name, const char *doc,
                       const char *const *dflt, size_t n) {
    quiver_plugin_types_param_spec_t *s = spec_push(info, name, QV_KIND_TEXT_LIST, doc);
    s->default_.is_some = true;
    s->default_.val.tag = QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_LIST;
    transform_list_string_t *l = &s->default_.val.val.text_list;
    l->len = n;
    l->ptr = n ? qv_alloc(n * sizeof *l->ptr) : NULL;
    for (size_t i = 0; i < n; i++) l->ptr[i] = qv_string_from(dflt[i]);
}

/* ------------------------------------------------------------------------------------------ */
/* Parameters                                                                                 */
/* ------------------------------------------------------------------------------------------ */

struct qv_params {
    quiver_plugin_types_param_t *items; /* names and texts NUL-terminated */
    size_t len;
};

static qv_params the_params;
static bool initialized;

/* The string with a NUL byte after its last one (still len bytes long). */
static void string_nul(qv_string *s) {
    uint8_t *p = qv_alloc(s->len + 1);
    if (s->len) {
        memcpy(p, s->ptr, s->len);
        free(s->ptr);
    }
    p[s->len] = 0;
    s->ptr = p;
}

/* Frees a string made by string_nul (allocated even when empty). */
static void string_nul_free(qv_string *s) {
    free(s->ptr);
    s->ptr = NULL;
    s->len = 0;
}

static void value_nul(quiver_plugin_types_param_value_t *v) {
    switch (v->tag) {
    case QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT:
        string_nul(&v->val.text);
        break;
    case QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_LIST:
        for (size_t i = 0; i < v->val.text_list.len; i++) string_nul(&v->val.text_list.ptr[i]);
        break;
    case QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_MAP:
        for (size_t i = 0; i < v->val.text_map.len; i++) {
            string_nul(&v->val.text_map.ptr[i].f0);
            string_nul(&v->val.text_map.ptr[i].f1);
        }
        break;
    default:
        break;
    }
}

static void value_nul_free(quiver_plugin_types_param_value_t *v) {
    switch (v->tag) {
    case QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT:
        string_nul_free(&v->val.text);
        break;
    case QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_LIST:
        for (size_t i = 0; i < v->val.text_list.len; i++)
            string_nul_free(&v->val.text_list.ptr[i]);
        if (v->val.text_list.len) free(v->val.text_list.ptr);
        break;
    case QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_MAP:
        for (size_t i = 0; i < v->val.text_map.len; i++) {
            string_nul_free(&v->val.text_map.ptr[i].f0);
            string_nul_free(&v->val.text_map.ptr[i].f1);
        }
        if (v->val.text_map.len) free(v->val.text_map.ptr);
        break;
    default:
        break;
    }
}

static void params_free(qv_params *p) {
    for (size_t i = 0; i < p->len; i++) {
        string_nul_free(&p->items[i].name);
        value_nul_free(&p->items[i].value);
    }
    free(p->items);
    p->items = NULL;
    p->len = 0;
}

static quiver_plugin_types_param_value_t value_copy(const quiver_plugin_types_param_value_t *v) {
    quiver_plugin_types_param_value_t c = *v;
    switch (v->tag) {
    case QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT:
        c.val.text = qv_string_copy(v->val.text.ptr, v->val.text.len);
        break;
    case QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_LIST: {
        size_t n = v->val.text_list.len;
        c.val.text_list.ptr = n ? qv_alloc(n * sizeof(qv_string)) : NULL;
        for (size_t i = 0; i < n; i++)
            c.val.text_list.ptr[i] =
                qv_string_copy(v->val.text_list.ptr[i].ptr, v->val.text_list.ptr[i].len);
        break;
    }
    case QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_MAP: {
        size_t n = v->val.text_map.len;
        c.val.text_map.ptr = n ? qv_alloc(n * sizeof(transform_tuple2_string_string_t)) : NULL;
        for (size_t i = 0; i < n; i++) {
            const transform_tuple2_string_string_t *t = &v->val.text_map.ptr[i];
            c.val.text_map.ptr[i].f0 = qv_string_copy(t->f0.ptr, t->f0.len);
            c.val.text_map.ptr[i].f1 = qv_string_copy(t->f1.ptr, t->f1.len);
        }
        break;
    }
    default:
        break;
    }
    return c;
}

static int kind_of(const quiver_plugin_types_param_value_t *v) {
    /* Value tags and kinds are declared in the same order. */
    return v->tag;
}

static const quiver_plugin_types_param_t *param_find(const qv_params *p, const char *name) {
    if (!p) return NULL;
    for (size_t i = 0; i < p->len; i++)
        if (qv_string_is(&p->items[i].name, name)) return &p->items[i];
    return NULL;
}

const quiver_plugin_types_param_value_t *qv_param_value(const qv_params *p, const char *name) {
    const quiver_plugin_types_param_t *it = param_find(p, name);
    return it ? &it->value : NULL;
}

bool qv_param_has(const qv_params *p, const char *name) { return param_find(p, name) != NULL; }

const char *qv_param_text(const qv_params *p, const char *name) {
    const quiver_plugin_types_param_value_t *v = qv_param_value(p, name);
    return v && v->tag == QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT ? (const char *)v->val.text.ptr
                                                               : NULL;
}

double qv_param_float(const qv_params *p, const char *name, double otherwise) {
    const quiver_plugin_types_param_value_t *v = qv_param_value(p, name);
    if (v && v->tag == QUIVER_PLUGIN_TYPES_PARAM_VALUE_FLOAT) return v->val.float_;
    if (v && v->tag == QUIVER_PLUGIN_TYPES_PARAM_VALUE_INT) return (double)v->val.int_;
    return otherwise;
}

int64_t qv_param_int(const qv_params *p, const char *name, int64_t otherwise) {
    const quiver_plugin_types_param_value_t *v = qv_param_value(p, name);
    return v && v->tag == QUIVER_PLUGIN_TYPES_PARAM_VALUE_INT ? v->val.int_ : otherwise;
}

bool qv_param_bool(const qv_params *p, const char *name, bool otherwise) {
    const quiver_plugin_types_param_value_t *v = qv_param_value(p, name);
    return v && v->tag == QUIVER_PLUGIN_TYPES_PARAM_VALUE_BOOLEAN ? v->val.boolean : otherwise;
}

size_t qv_param_list_len(const qv_params *p, const char *name) {
    const quiver_plugin_types_param_value_t *v = qv_param_value(p, name);
    return v && v->tag == QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_LIST ? v->val.text_list.len : 0;
}

const char *qv_param_list_item(const qv_params *p, const char *name, size_t i) {
    const quiver_plugin_types_param_value_t *v = qv_param_value(p, name);
    if (!v || v->tag != QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_LIST || i >= v->val.text_list.len)
        return NULL;
    return (const char *)v->val.text_list.ptr[i].ptr;
}

size_t qv_param_map_len(const qv_params *p, const char *name) {
    const quiver_plugin_types_param_value_t *v = qv_param_value(p, name);
    return v && v->tag == QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_MAP ? v->val.text_map.len : 0;
}

const char *qv_param_map_key(const qv_params *p, const char *name, size_t i) {
    const quiver_plugin_types_param_value_t *v = qv_param_value(p, name);
    if (!v || v->tag != QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_MAP || i >= v->val.text_map.len)
        return NULL;
    return (const char *)v->val.text_map.ptr[i].f0.ptr;
}

const char *qv_param_map_value(const qv_params *p, const char *name, size_t i) {
    const quiver_plugin_types_param_value_t *v = qv_param_value(p, name);
    if (!v || v->tag != QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_MAP || i >= v->val.text_map.len)
        return NULL;
    return (const char *)v->val.text_map.ptr[i].f1.ptr;
}

int qv_param_choice(const qv_params *p, const char *name, const char *const *choices, size_t n,
                    qv_param_error *err) {
    const char *value = qv_param_text(p, name);
    if (!value) value = "";
    for (size_t i = 0; i < n; i++)
        if (strcmp(value, choices[i]) == 0) return (int)i;
    size_t total = 1;
    for (size_t i = 0; i < n; i++) total += strlen(choices[i]) + 2;
    char *list = qv_alloc(total);
    list[0] = 0;
    for (size_t i = 0; i < n; i++) {
        if (i) strcat(list, ", ");
        strcat(list, choices[i]);
    }
    qv_param_invalid(err, name, "`%s` is not one of %s", value, list);
    free(list);
    return -1;
}

/* Checks `given` (owned, consumed) against the specs; fills `out` (names and texts
 * NUL-terminated). On failure sets `err` and returns false. */
static bool params_check(const qv_info *info, exports_quiver_plugin_transformer_list_param_t *given,
                         qv_params *out, qv_param_error *err) {
    const quiver_plugin_types_list_param_spec_t *specs = &info->params;
    out->items = qv_alloc((given->len + specs->len + 1) * sizeof *out->items);
    out->len = 0;
    bool ok = true;
    size_t i = 0;
    for (; i < given->len && ok; i++) {
        quiver_plugin_types_param_t *p = &given->ptr[i];
        const quiver_plugin_types_param_spec_t *spec = NULL;
        for (size_t j = 0; j < specs->len; j++)
            if (qv_str_eq(qv_view(&specs->ptr[j].name), qv_view(&p->name))) spec = &specs->ptr[j];
        if (!spec) {
            err->tag = QUIVER_PLUGIN_TYPES_PARAM_ERROR_UNKNOWN;
            err->val.unknown = qv_string_copy(p->name.ptr, p->name.len);
            ok = false;
            break;
        }
        if (spec->kind == QV_KIND_FLOAT && p->value.tag == QUIVER_PLUGIN_TYPES_PARAM_VALUE_INT) {
            double f = (double)p->value.val.int_;
            p->value.tag = QUIVER_PLUGIN_TYPES_PARAM_VALUE_FLOAT;
            p->value.val.float_ = f;
        } else if (spec->kind == QV_KIND_TEXT_LIST &&
                   p->value.tag == QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT) {
            qv_string t = p->value.val.text;
            p->value.tag = QUIVER_PLUGIN_TYPES_PARAM_VALUE_TEXT_LIST;
            p->value.val.text_list.ptr = qv_alloc(sizeof(qv_string));
            p->value.val.text_list.ptr[0] = t;
            p->value.val.text_list.len = 1;
        } else if (spec->kind != kind_of(&p->value)) {
            err->tag = QUIVER_PLUGIN_TYPES_PARAM_ERROR_WRONG_KIND;
            err->val.wrong_kind.name = qv_string_copy(p->name.ptr, p->name.len);
            err->val.wrong_kind.expected = spec->kind;
            err->val.wrong_kind.found = (quiver_plugin_types_param_kind_t)kind_of(&p->value);
            ok = false;
            break;
        }
        /* Move the parameter into the checked list (a later duplicate name is kept too, but
         * lookups find the first). */
        quiver_plugin_types_param_t *dst = &out->items[out->len++];
        *dst = *p;
        string_nul(&dst->name);
        value_nul(&dst->value);
        memset(p, 0, sizeof *p);
    }
    /* What was not moved is freed (the generated free functions skip empty lists). */
    for (size_t k = 0; k < given->len; k++) quiver_plugin_types_param_free(&given->ptr[k]);
    if (given->len) free(given->ptr);
    given->ptr = NULL;
    given->len = 0;
    if (!ok) return false;

    for (size_t j = 0; j < specs->len; j++) {
        const quiver_plugin_types_param_spec_t *spec = &specs->ptr[j];
        bool present = false;
        for (size_t k = 0; k < out->len && !present; k++)
            present = qv_str_eq(qv_view(&out->items[k].name), qv_view(&spec->name));
        if (present) continue;
        if (spec->default_.is_some) {
            out->items = qv_realloc(out->items, (out->len + 1) * sizeof *out->items);
            quiver_plugin_types_param_t *dst = &out->items[out->len++];
            dst->name = qv_string_copy(spec->name.ptr, spec->name.len);
            dst->value = value_copy(&spec->default_.val);
            string_nul(&dst->name);
            value_nul(&dst->value);
        } else if (spec->required) {
            err->tag = QUIVER_PLUGIN_TYPES_PARAM_ERROR_MISSING;
            err->val.missing = qv_string_copy(spec->name.ptr, spec->name.len);
            return false;
        }
    }
    return true;
}

/* ------------------------------------------------------------------------------------------ */
/* Columns                                                                                    */
/* ------------------------------------------------------------------------------------------ */

qv_column *qv_column_named(qv_batch *b, const char *name) {
    for (size_t i = 0; i < b->columns.len; i++)
        if (qv_string_is(&b->columns.ptr[i].name, name)) return &b->columns.ptr[i];
    return NULL;
}

size_t qv_null_count(const qv_column *c, size_t rows) {
    const uint8_t *v = qv_validity(c);
    return v ? rows - qv_count_set_bits(v, rows) : 0;
}

static const char *layout_name(int tag) {
    static const char *const names[] = {"bits", "i8",  "i16", "i32", "i64", "u8",
                                        "u16",  "u32", "u64", "f32", "f64", "bytes"};
    return tag >= 0 && tag < 12 ? names[tag] : "?";
}

static void *layout_error(qv_column *c, int wanted, size_t *len, qv_error *err) {
    if (len) *len = 0;
    if (err)
        qv_fail_in(err, &c->name, "column `%.*s` has type %s, not values of %s",
                   (int)c->name.len, (const char *)c->name.ptr, qv_type_name(c->data_type.tag),
                   layout_name(wanted));
    return NULL;
}

#define QV_DEFINE_ACCESSOR(FN, CTYPE, TAG)                                                     \
    CTYPE *qv_##FN(qv_column *c, size_t *len, qv_error *err) {                                \
        if (c->values.tag != QV_VALUES_##TAG) return layout_error(c, QV_VALUES_##TAG, len, err); \
        if (len) *len = c->values.val.FN.len;                                                  \
        return c->values.val.FN.ptr;                                                           \
    }                                                                                          \
    qv_column qv_column_##FN(const char *col_name, qv_data_type type, CTYPE *values, size_t n, \
                             qv_bitmap *validity) {                                            \
        qv_column c;                                                                           \
        memset(&c, 0, sizeof c);                                                               \
        c.name = qv_string_from(col_name);                                                     \
        c.data_type = qv_data_type_copy(&type);                                                \
        c.values.tag = QV_VALUES_##TAG;                                                        \
        if (n > 0) {                                                                           \
            c.values.val.FN.ptr = values;                                                      \
            c.values.val.FN.len = n;                                                           \
        } else {                                                                               \
            free(values);                                                                      \
        }                                                                                      \
        qv_column_set_validity(&c, validity);                                                  \
        return c;                                                                              \
    }
QV_TYPED_ACCESSORS(QV_DEFINE_ACCESSOR)
#undef QV_DEFINE_ACCESSOR

uint8_t *qv_bits(qv_column *c, size_t *nbytes, qv_error *err) {
    if (c->values.tag != QV_VALUES_BITS) return layout_error(c, QV_VALUES_BITS, nbytes, err);
    if (nbytes) *nbytes = c->values.val.bits.len;
    return c->values.val.bits.ptr;
}

bool qv_expect_strings(const qv_column *c, size_t rows, qv_error *err) {
    if (c->values.tag != QV_VALUES_BYTES || !c->offsets.is_some) {
        layout_error((qv_column *)c, QV_VALUES_BYTES, NULL, err);
        return false;
    }
    const transform_list_s32_t *o = &c->offsets.val;
    size_t nbytes = c->values.val.bytes.len;
    if (o->len < rows + 1)
        return qv_fail_in(err, &c->name, "column `%.*s` has %zu offsets for %zu rows",
                          (int)c->name.len, (const char *)c->name.ptr, o->len, rows);
    for (size_t i = 0; i < rows; i++) {
        if (o->ptr[i] < 0 || o->ptr[i] > o->ptr[i + 1] || (size_t)o->ptr[i + 1] > nbytes)
            return qv_fail_at(err, &c->name, (uint32_t)i, "column `%.*s` has bad offsets",
                              (int)c->name.len, (const char *)c->name.ptr);
    }
    return true;
}

void qv_column_rename(qv_column *c, const char *name) {
    string_free(&c->name);
    c->name = qv_string_from(name);
}

void qv_column_set_validity(qv_column *c, qv_bitmap *validity) {
    transform_option_list_u8_free(&c->validity);
    memset(&c->validity, 0, sizeof c->validity);
    if (validity) {
        c->validity.val = bitmap_take(validity);
        c->validity.is_some = true;
    }
}

bool qv_copy_validity(const qv_column *c, size_t rows, qv_bitmap *out) {
    const uint8_t *v = qv_validity(c);
    if (!v) return false;
    size_t n = (rows + 7) / 8;
    qv_bitmap_init(out, rows);
    if (n) memcpy(out->bytes, v, n);
    out->len = rows;
    return true;
}

qv_column qv_take(qv_batch *b, size_t i) {
    qv_column c = b->columns.ptr[i];
    memset(&b->columns.ptr[i], 0, sizeof c);
    return c;
}

void qv_column_free(qv_column *c) {
    quiver_plugin_types_column_free(c);
    memset(c, 0, sizeof *c);
}

qv_column qv_column_bool(const char *name, qv_bitmap *values, qv_bitmap *validity) {
    qv_column c;
    memset(&c, 0, sizeof c);
    c.name = qv_string_from(name);
    c.data_type = QV_TYPE(QV_BOOLEAN);
    c.values.tag = QV_VALUES_BITS;
    c.values.val.bits = bitmap_take(values);
    qv_column_set_validity(&c, validity);
    return c;
}

/* String builder. */

void qv_strings_init(qv_strings *b, size_t rows_hint, size_t bytes_hint) {
    memset(b, 0, sizeof *b);
    b->offsets_cap = rows_hint + 1;
    b->offsets = qv_alloc(b->offsets_cap * sizeof(int32_t));
    b->offsets[0] = 0;
    b->cap = bytes_hint;
    b->bytes = bytes_hint ? qv_alloc(bytes_hint) : NULL;
    qv_bitmap_init(&b->validity, rows_hint);
}

static void strings_end_row(qv_strings *b, bool valid) {
    if (b->len > INT32_MAX) {
        qv_log(QV_ERROR, "a utf8 column grew past 2^31 - 1 bytes");
        abort();
    }
    if (b->rows + 2 > b->offsets_cap) {
        b->offsets_cap = b->offsets_cap * 2 + 8;
        b->offsets = qv_realloc(b->offsets, b->offsets_cap * sizeof(int32_t));
    }
    b->offsets[++b->rows] = (int32_t)b->len;
    qv_bitmap_push(&b->validity, valid);
    if (!valid) b->nulls++;
}

uint8_t *qv_strings_reserve(qv_strings *b, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap * 2;
        if (cap < b->len + n) cap = b->len + n;
        if (cap < 64) cap = 64;
        b->bytes = qv_realloc(b->bytes, cap);
        b->cap = cap;
    }
    return b->bytes + b->len;
}

void qv_strings_commit(qv_strings *b, size_t written) {
    b->len += written;
    strings_end_row(b, true);
}

void qv_strings_push(qv_strings *b, const void *bytes, size_t n) {
    uint8_t *dst = qv_strings_reserve(b, n);
    if (n) memcpy(dst, bytes, n);
    qv_strings_commit(b, n);
}

void qv_strings_push_null(qv_strings *b) { strings_end_row(b, false); }

qv_column qv_strings_finish(qv_strings *b, const char *name, qv_data_type type) {
    qv_column c;
    memset(&c, 0, sizeof c);
    c.name = qv_string_from(name);
    c.data_type = qv_data_type_copy(&type);
    c.offsets.is_some = true;
    c.offsets.val.ptr = b->offsets; /* rows + 1 >= 1 entries: never empty */
    c.offsets.val.len = b->rows + 1;
    b->offsets = NULL;
    c.values.tag = QV_VALUES_BYTES;
    if (b->len > 0) {
        c.values.val.bytes.ptr = b->bytes;
        c.values.val.bytes.len = b->len;
    } else {
        free(b->bytes);
    }
    b->bytes = NULL;
    if (b->nulls > 0)
        qv_column_set_validity(&c, &b->validity);
    else
        qv_bitmap_free(&b->validity);
    qv_strings_free(b);
    return c;
}

void qv_strings_free(qv_strings *b) {
    free(b->offsets);
    free(b->bytes);
    qv_bitmap_free(&b->validity);
    memset(b, 0, sizeof *b);
}

/* ------------------------------------------------------------------------------------------ */
/* Outputs                                                                                    */
/* ------------------------------------------------------------------------------------------ */

static qv_output *output_push(qv_outputs *out) {
    out->ptr = qv_realloc(out->len ? out->ptr : NULL, (out->len + 1) * sizeof *out->ptr);
    qv_output *o = &out->ptr[out->len++];
    memset(o, 0, sizeof *o);
    return o;
}

qv_output *qv_output_all(qv_outputs *out, uint32_t rows) {
    qv_output *o = output_push(out);
    o->rows = rows;
    return o;
}

qv_output *qv_output_selected(qv_outputs *out, qv_bitmap *selection) {
    qv_output *o = output_push(out);
    o->rows = (uint32_t)qv_bitmap_count_set(selection);
    o->selection.val = bitmap_take(selection);
    o->selection.is_some = true;
    return o;
}

void qv_output_add(qv_output *o, qv_column column) {
    quiver_plugin_types_list_column_t *l = &o->columns;
    l->ptr = qv_realloc(l->len ? l->ptr : NULL, (l->len + 1) * sizeof *l->ptr);
    l->ptr[l->len++] = column;
}

/* ------------------------------------------------------------------------------------------ */
/* Plans                                                                                      */
/* ------------------------------------------------------------------------------------------ */

const char *qv_type_name(int tag) {
    static const char *const names[] = {"Boolean", "Int8",    "Int16",   "Int32",  "Int64",
                                        "UInt8",   "UInt16",  "UInt32",  "UInt64", "Float32",
                                        "Float64", "Utf8",    "Binary",  "Date32", "Timestamp"};
    return tag >= 0 && tag < 15 ? names[tag] : "?";
}

const qv_field *qv_find_field(const qv_fields *input, const char *name, qv_error *err) {
    size_t total = 1;
    for (size_t i = 0; i < input->len; i++) {
        if (qv_string_is(&input->ptr[i].name, name)) return &input->ptr[i];
        total += input->ptr[i].name.len + 2;
    }
    if (!err) return NULL;
    char *names = qv_alloc(total), *w = names;
    for (size_t i = 0; i < input->len; i++) {
        if (i) {
            memcpy(w, ", ", 2);
            w += 2;
        }
        if (input->ptr[i].name.len) memcpy(w, input->ptr[i].name.ptr, input->ptr[i].name.len);
        w += input->ptr[i].name.len;
    }
    *w = 0;
    qv_fail_column(err, name, "column `%s` not found; the input has: %s", name, names);
    free(names);
    return NULL;
}

const qv_field *qv_expect_type(const qv_fields *input, const char *name, unsigned mask,
                               qv_error *err) {
    const qv_field *f = qv_find_field(input, name, err);
    if (!f) return NULL;
    if (mask & QV_MASK(f->data_type.tag)) return f;
    if (!err) return NULL;
    char expected[256] = "";
    for (int t = 0; t < 15; t++) {
        if (!(mask & QV_MASK(t))) continue;
        if (expected[0]) strncat(expected, ", ", sizeof expected - strlen(expected) - 1);
        strncat(expected, qv_type_name(t), sizeof expected - strlen(expected) - 1);
    }
    qv_fail_column(err, name, "column `%s` has type %s; expected %s", name,
                   qv_type_name(f->data_type.tag), expected);
    return NULL;
}

static void list_string_push(transform_list_string_t *l, const char *s) {
    l->ptr = qv_realloc(l->len ? l->ptr : NULL, (l->len + 1) * sizeof *l->ptr);
    l->ptr[l->len++] = qv_string_from(s);
}

void qv_plan_passthrough(qv_plan *plan, const qv_fields *input) {
    quiver_plugin_types_list_output_field_t *o = &plan->output;
    size_t n = input->len;
    o->ptr = qv_realloc(o->len ? o->ptr : NULL, (o->len + n) * sizeof *o->ptr);
    for (size_t i = 0; i < n; i++) {
        const qv_field *f = &input->ptr[i];
        quiver_plugin_types_output_field_t *d = &o->ptr[o->len++];
        memset(d, 0, sizeof *d);
        d->name = qv_string_copy(f->name.ptr, f->name.len);
        d->data_type = qv_data_type_copy(&f->data_type);
        d->nullable = f->nullable;
        d->source.tag = QUIVER_PLUGIN_TYPES_OUTPUT_SOURCE_PASSTHROUGH;
        d->source.val.passthrough = qv_string_copy(f->name.ptr, f->name.len);
    }
}

void qv_plan_read(qv_plan *plan, const char *name) {
    for (size_t i = 0; i < plan->reads.len; i++)
        if (qv_string_is(&plan->reads.ptr[i], name)) return;
    list_string_push(&plan->reads, name);
}

static quiver_plugin_types_output_field_t computed_field(const char *name, qv_data_type type,
                                                         bool nullable) {
    quiver_plugin_types_output_field_t f;
    memset(&f, 0, sizeof f);
    f.name = qv_string_from(name);
    f.data_type = qv_data_type_copy(&type);
    f.nullable = nullable;
    f.source.tag = QUIVER_PLUGIN_TYPES_OUTPUT_SOURCE_COMPUTED;
    return f;
}

void qv_plan_computed(qv_plan *plan, const char *name, qv_data_type type, bool nullable) {
    quiver_plugin_types_list_output_field_t *o = &plan->output;
    for (size_t i = 0; i < o->len; i++) {
        if (qv_string_is(&o->ptr[i].name, name)) {
            quiver_plugin_types_output_field_free(&o->ptr[i]);
            o->ptr[i] = computed_field(name, type, nullable);
            return;
        }
    }
    o->ptr = qv_realloc(o->len ? o->ptr : NULL, (o->len + 1) * sizeof *o->ptr);
    o->ptr[o->len++] = computed_field(name, type, nullable);
}

void qv_plan_compute(qv_plan *plan, const char *name, qv_data_type type, bool nullable) {
    qv_plan_read(plan, name);
    qv_plan_computed(plan, name, type, nullable);
}

void qv_plan_drop(qv_plan *plan, const char *name) {
    quiver_plugin_types_list_output_field_t *o = &plan->output;
    size_t w = 0;
    for (size_t i = 0; i < o->len; i++) {
        if (qv_string_is(&o->ptr[i].name, name))
            quiver_plugin_types_output_field_free(&o->ptr[i]);
        else
            o->ptr[w++] = o->ptr[i];
    }
    if (w == 0 && o->len > 0) {
        free(o->ptr);
        o->ptr = NULL;
    }
    o->len = w;
}

void qv_plan_computed_after(qv_plan *plan, const char *after, const char *name,
                            qv_data_type type, bool nullable) {
    qv_plan_drop(plan, name);
    quiver_plugin_types_list_output_field_t *o = &plan->output;
    size_t at = o->len;
    for (size_t i = 0; i < o->len; i++)
        if (qv_string_is(&o->ptr[i].name, after)) {
            at = i + 1;
            break;
        }
    o->ptr = qv_realloc(o->len ? o->ptr : NULL, (o->len + 1) * sizeof *o->ptr);
    memmove(&o->ptr[at + 1], &o->ptr[at], (o->len - at) * sizeof *o->ptr);
    o->ptr[at] = computed_field(name, type, nullable);
    o->len++;
}

/* ------------------------------------------------------------------------------------------ */
/* The component's exports                                                                    */
/* ------------------------------------------------------------------------------------------ */

/* Error messages must not be empty: a plugin that returned false without qv_fail gets one. */
static void error_ensure(qv_error *err, const char *what) {
    if (err->message.len == 0) {
        string_free(&err->message);
        err->message = qv_string_from(what);
    }
}

void exports_quiver_plugin_transformer_describe(qv_info *ret) {
    memset(ret, 0, sizeof *ret);
    qv_describe(ret);
}

bool exports_quiver_plugin_transformer_init(exports_quiver_plugin_transformer_list_param_t *params,
                                            qv_param_error *err) {
    memset(err, 0, sizeof *err);
    qv_info info;
    memset(&info, 0, sizeof info);
    qv_describe(&info);
    params_free(&the_params);
    initialized = false;
    qv_params checked = {NULL, 0};
    bool ok = params_check(&info, params, &checked, err);
    quiver_plugin_types_plugin_info_free(&info);
    if (!ok) {
        params_free(&checked);
        return false;
    }
    the_params = checked;
    if (!qv_init(&the_params, err)) {
        bool empty = err->tag == QUIVER_PLUGIN_TYPES_PARAM_ERROR_UNKNOWN && err->val.unknown.len == 0;
        if (empty) qv_param_invalid(err, "", "the plugin refused its parameters");
        return false;
    }
    initialized = true;
    return true;
}

bool exports_quiver_plugin_transformer_prepare(qv_fields *input, qv_plan *ret, qv_error *err) {
    memset(ret, 0, sizeof *ret);
    memset(err, 0, sizeof *err);
    bool ok = initialized ? qv_prepare(input, ret, err)
                          : qv_fail(err, "the host called prepare before init");
    exports_quiver_plugin_transformer_list_field_free(input);
    if (!ok) {
        quiver_plugin_types_plan_free(ret);
        memset(ret, 0, sizeof *ret);
        error_ensure(err, "prepare failed");
    }
    return ok;
}

bool exports_quiver_plugin_transformer_transform(qv_batch *input, qv_outputs *ret, qv_error *err) {
    memset(ret, 0, sizeof *ret);
    memset(err, 0, sizeof *err);
    bool ok = initialized ? qv_transform(input, ret, err)
                          : qv_fail(err, "the host called transform before init");
    quiver_plugin_types_batch_free(input);
    if (!ok) {
        exports_quiver_plugin_transformer_list_output_batch_free(ret);
        memset(ret, 0, sizeof *ret);
        error_ensure(err, "transform failed");
    }
    return ok;
}
