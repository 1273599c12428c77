/* http_path.c — percent-decoding of URL paths and query values. Pure: no I/O, no allocation.
 * Decoding happens before validation, so "%2e%2e" is judged as "..". */
#include <string.h>

#include "err.h"
#include "http.h"
#include "http_internal.h"

static int http_path_hex(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int http_path_decode(const char *raw, size_t raw_len, char *out, size_t out_cap, size_t *out_len)
{
    size_t n = 0;
    for (size_t i = 0; i < raw_len; i++) {
        char c = raw[i];
        if (c == '%') {
            int hi = i + 1 < raw_len ? http_path_hex(raw[i + 1]) : -1;
            int lo = i + 2 < raw_len ? http_path_hex(raw[i + 2]) : -1;
            if (hi < 0 || lo < 0) return ERR_INVALID;
            c = (char)(hi << 4 | lo);
            i += 2;
        }
        if (c == '\0') return ERR_INVALID; /* an encoded (or raw) NUL never reaches a path */
        if (n + 1 >= out_cap) return ERR_TOOBIG;
        out[n++] = c;
    }
    if (out_cap == 0) return ERR_TOOBIG;
    out[n] = '\0';
    *out_len = n;
    return 0;
}

/* Length of the UTF-8 sequence starting at s[0..len) (1..4), or 0 when it is not well formed
 * (bad lead or continuation byte, overlong form, surrogate, beyond U+10FFFF, truncated). */
static size_t http_utf8_seq(const unsigned char *s, size_t len)
{
    unsigned c = s[0];
    size_t n = c < 0x80                 ? 1
               : c >= 0xc2 && c <= 0xdf ? 2
               : c >= 0xe0 && c <= 0xef ? 3
               : c >= 0xf0 && c <= 0xf4 ? 4
                                        : 0;
    if (n == 0 || n > len) return 0;
    for (size_t i = 1; i < n; i++)
        if ((s[i] & 0xc0) != 0x80) return 0;
    if ((c == 0xe0 && s[1] < 0xa0) || (c == 0xed && s[1] > 0x9f) || (c == 0xf0 && s[1] < 0x90) ||
        (c == 0xf4 && s[1] > 0x8f))
        return 0;
    return n;
}

bool http_utf8_valid(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t i = 0; i < len;) {
        size_t n = http_utf8_seq(p + i, len - i);
        if (n == 0) return false;
        i += n;
    }
    return true;
}

void http_utf8_sanitize(char *s)
{
    unsigned char *p = (unsigned char *)s;
    size_t len = strlen(s);
    for (size_t i = 0; i < len;) {
        size_t n = http_utf8_seq(p + i, len - i);
        if (n == 0) {
            p[i] = '?';
            n = 1;
        }
        i += n;
    }
}
