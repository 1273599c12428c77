/* http_path.c — percent-decoding of URL paths and query values. Pure: no I/O, no allocation.
 * Decoding happens before validation, so "%2e%2e" is judged as "..". */
#include "err.h"
#include "http.h"

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
