/*
 * fuzz_xtext.c - libFuzzer target: xtext encode/decode round trip of
 * arbitrary bytes, and decode/valid agreement on arbitrary text.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "smtp.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    size_t esize = size * 3 + 1;
    char *enc = malloc(esize), *dec = malloc(size + 1), *str = malloc(size + 1);
    int n, m;

    /* encode -> valid -> decode gives the input back */
    n = xtext_encode((const char *) data, size, enc, esize);
    if (n < 0 || (size_t) n >= esize || enc[n] != 0 || !xtext_valid(enc))
        abort();
    m = xtext_decode(enc, dec, size + 1);
    if (m != (int) size || memcmp(dec, data, size) != 0)
        abort();
    /* one byte too small must fail, never overflow */
    if (n > 0 && xtext_encode((const char *) data, size, enc, (size_t) n) != -1)
        abort();

    /* the input as xtext: valid exactly when it decodes */
    memcpy(str, data, size);
    str[size] = 0;
    m = xtext_decode(str, dec, size + 1);
    if ((m >= 0) != (xtext_valid(str) != 0))
        abort();
    if (m >= 0 && (size_t) m > strlen(str))
        abort();
    free(enc);
    free(dec);
    free(str);
    return 0;
}
