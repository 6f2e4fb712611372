/*
 * odmrd_atrn.c - the ATRN argument parser (RFC 2645 section 5.2.1).
 *
 *     atrn          = "ATRN" [SP domain *("," domain)]
 *     domain        = sub-domain 1*("." sub-domain)
 *     sub-domain    = (ALPHA / DIGIT) *(ldh-str)
 *     ldh-str       = *(ALPHA / DIGIT / "-") (ALPHA / DIGIT)
 *
 * The verb and its space were taken off by smtp_cmd_split(); what is left is
 * the domain list or nothing. No blank inside the list, no empty element; a
 * trailing blank is tolerated (some clients send one). Pure: no I/O, no
 * logging; tests/unit/test_odmrd_atrn.c feeds it.
 */
#include <stdlib.h>
#include <string.h>

#include "odmrd.h"
#include "util.h"

void
odmrd_atrn_free(char ***domains, size_t count)
{
    if (*domains == NULL)
        return;
    for (size_t i = 0; i < count; i++)
        free((*domains)[i]);
    x_free(domains);
}

int
odmrd_atrn_parse(const char *args, size_t limit, char ***domains_r, size_t *count_r,
                 const char **why_r)
{
    char **list = NULL;
    size_t count = 0, cap = 0, len;
    const char *p, *end;

    *domains_r = NULL;
    *count_r = 0;
    *why_r = NULL;

    len = strlen(args);
    while (len > 0 && (args[len - 1] == ' ' || args[len - 1] == '\t'))
        len--;
    if (len == 0)
        return ODMRD_ATRN_OK;

    for (p = args, end = args + len; p <= end; p++) {
        const char *comma = memchr(p, ',', (size_t) (end - p));
        const char *stop = comma ? comma : end;
        size_t n = (size_t) (stop - p);
        char *dom;
        int dup = 0;

        if (n == 0) {
            *why_r = "5.5.4 Syntax: ATRN [domain *(\",\" domain)]: empty domain";
            goto bad;
        }
        if (n > 255) {
            *why_r = "5.5.4 Syntax: ATRN: domain name too long";
            goto bad;
        }
        dom = x_strndup(p, n);
        if (!domain_valid(dom)) {
            free(dom);
            *why_r = "5.5.4 Syntax: ATRN [domain *(\",\" domain)]: malformed domain";
            goto bad;
        }
        str_lower(dom);
        for (size_t i = 0; i < count && !dup; i++)
            dup = strcmp(list[i], dom) == 0;
        if (dup) {
            free(dom);
        } else {
            if (limit > 0 && count >= limit) {
                free(dom);
                *why_r = "5.5.3 Error: too many domains in ATRN";
                odmrd_atrn_free(&list, count);
                return ODMRD_ATRN_TOO_MANY;
            }
            if (count == cap) {
                cap = cap ? cap * 2 : 4;
                list = x_realloc(list, cap * sizeof(*list));
            }
            list[count++] = dom;
        }
        p = stop; /* the loop's p++ steps over the comma */
        if (comma == NULL)
            break;
    }
    *domains_r = list;
    *count_r = count;
    return ODMRD_ATRN_OK;

bad:
    odmrd_atrn_free(&list, count);
    return ODMRD_ATRN_SYNTAX;
}
