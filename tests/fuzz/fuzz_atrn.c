/*
 * fuzz_atrn.c - libFuzzer target: odmrd_atrn_parse(), the ATRN argument
 * parser of odmrd (src/odmrd/odmrd_atrn.c).
 *
 * Input: byte 0 picks the domain limit (0 = none, else 1..255); the rest,
 * cut at the first NUL (the dispatcher hands over a C string), is the
 * argument text after "ATRN ".
 *
 * Checked on every input:
 *     the result is one of OK, SYNTAX, TOO_MANY;
 *     OK: *why_r is NULL, count <= limit (when set), count 0 iff the list
 *         is NULL, every domain is domain_valid(), lower case, at most 255
 *         bytes, no duplicates, and each one occurs (case-insensitively) in
 *         the input;
 *     not OK: a static *why_r starting with "5.5.", no list, count 0;
 *     a second parse of the same text gives the same answer (no state);
 *     odmrd_atrn_free() NULLs the list (ASan sees leaks and double frees).
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "odmrd.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static char *
lower_copy(const char *s)
{
    char *c = x_strdup(s);

    for (char *p = c; *p; p++)
        if (*p >= 'A' && *p <= 'Z')
            *p = (char) (*p - 'A' + 'a');
    return c;
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char *args, *lower;
    char **list = NULL, **list2 = NULL;
    size_t count = 0, count2 = 0, limit;
    const char *why = NULL, *why2 = NULL;
    int ret, ret2;

    if (size == 0)
        return 0;
    limit = data[0];
    args = x_strndup((const char *) data + 1, size - 1); /* stops at a NUL */
    lower = lower_copy(args);

    ret = odmrd_atrn_parse(args, limit, &list, &count, &why);
    switch (ret) {
    case ODMRD_ATRN_OK:
        if (why != NULL)
            abort();
        if ((count == 0) != (list == NULL))
            abort();
        if (limit > 0 && count > limit)
            abort();
        for (size_t i = 0; i < count; i++) {
            size_t n = strlen(list[i]);

            if (n == 0 || n > 255 || !domain_valid(list[i]))
                abort();
            for (const char *p = list[i]; *p; p++)
                if (*p >= 'A' && *p <= 'Z')
                    abort();
            if (strstr(lower, list[i]) == NULL)
                abort();
            for (size_t j = 0; j < i; j++)
                if (strcmp(list[i], list[j]) == 0)
                    abort();
        }
        break;
    case ODMRD_ATRN_SYNTAX:
    case ODMRD_ATRN_TOO_MANY:
        if (why == NULL || strncmp(why, "5.5.", 4) != 0 || list != NULL || count != 0)
            abort();
        if (ret == ODMRD_ATRN_TOO_MANY && limit == 0)
            abort();
        break;
    default:
        abort();
    }

    ret2 = odmrd_atrn_parse(args, limit, &list2, &count2, &why2);
    if (ret2 != ret || count2 != count || why2 != why)
        abort();
    for (size_t i = 0; i < count; i++)
        if (strcmp(list[i], list2[i]) != 0)
            abort();

    odmrd_atrn_free(&list, count);
    odmrd_atrn_free(&list2, count2);
    if (list != NULL || list2 != NULL)
        abort();
    /* Freeing an empty list is allowed. */
    odmrd_atrn_free(&list, 0);
    free(lower);
    free(args);
    return 0;
}
