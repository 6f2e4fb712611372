/*
 * test_odmrd_atrn.c - unit tests for the ATRN argument parser of odmrd
 * (src/odmrd/odmrd_atrn.c, RFC 2645 section 5.2.1 ABNF).
 *
 * The Makefile links src/odmrd/odmrd_atrn.c into this test and adds
 * -Isrc/odmrd.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "odmrd.h"
#include "util.h"

static const struct {
    const char *args;
    size_t limit;
    int ret;
    const char *want; /* domains joined with "," when ret is OK */
} cases[] = {
    /* no domains: all of the user's */
    {"", 100, ODMRD_ATRN_OK, ""},
    {"   ", 100, ODMRD_ATRN_OK, ""},
    /* one, several, case folding, duplicates */
    {"example.org", 100, ODMRD_ATRN_OK, "example.org"},
    {"Example.ORG", 100, ODMRD_ATRN_OK, "example.org"},
    {"example.org,example.com", 100, ODMRD_ATRN_OK, "example.org,example.com"},
    {"example.org,EXAMPLE.org", 100, ODMRD_ATRN_OK, "example.org"},
    {"a.b,c.d,e.f", 100, ODMRD_ATRN_OK, "a.b,c.d,e.f"},
    {"sub.example.org", 100, ODMRD_ATRN_OK, "sub.example.org"},
    {"x-1.example-2.org", 100, ODMRD_ATRN_OK, "x-1.example-2.org"},
    {"1.2", 100, ODMRD_ATRN_OK, "1.2"},
    /* trailing blanks are tolerated */
    {"example.org ", 100, ODMRD_ATRN_OK, "example.org"},
    {"example.org\t", 100, ODMRD_ATRN_OK, "example.org"},
    /* malformed lists */
    {",", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"example.org,", 100, ODMRD_ATRN_SYNTAX, NULL},
    {",example.org", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"example.org,,example.com", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"example.org, example.com", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"example.org example.com", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"example.org;example.com", 100, ODMRD_ATRN_SYNTAX, NULL},
    /* malformed domains */
    {"example", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"example.", 100, ODMRD_ATRN_SYNTAX, NULL},
    {".example.org", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"example..org", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"-example.org", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"example-.org", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"exa_mple.org", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"[127.0.0.1]", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"user@example.org", 100, ODMRD_ATRN_SYNTAX, NULL},
    {"ex\xc3\xa4mple.org", 100, ODMRD_ATRN_SYNTAX, NULL},
    {" example.org", 100, ODMRD_ATRN_SYNTAX, NULL},
    /* limits: distinct domains count, duplicates do not; 0 = none */
    {"a.org,b.org", 2, ODMRD_ATRN_OK, "a.org,b.org"},
    {"a.org,b.org,c.org", 2, ODMRD_ATRN_TOO_MANY, NULL},
    {"a.org,A.ORG,b.org", 2, ODMRD_ATRN_OK, "a.org,b.org"},
    {"a.org,b.org,c.org", 0, ODMRD_ATRN_OK, "a.org,b.org,c.org"},
};

static void
test_cases(void **state)
{
    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        char **dom = NULL, joined[512] = "";
        size_t n = 99;
        const char *why = NULL;
        int ret = odmrd_atrn_parse(cases[i].args, cases[i].limit, &dom, &n, &why);

        if (ret != cases[i].ret)
            fail_msg("case %zu \"%s\": ret %d, want %d", i, cases[i].args, ret, cases[i].ret);
        if (ret != ODMRD_ATRN_OK) {
            assert_non_null(why);
            assert_true(strncmp(why, "5.5.", 4) == 0);
            assert_null(dom);
            assert_int_equal(n, 0);
            continue;
        }
        for (size_t j = 0; j < n; j++) {
            if (j > 0)
                strcat(joined, ",");
            strcat(joined, dom[j]);
        }
        if (strcmp(joined, cases[i].want) != 0)
            fail_msg("case %zu \"%s\": got \"%s\", want \"%s\"", i, cases[i].args, joined,
                     cases[i].want);
        odmrd_atrn_free(&dom, n);
        assert_null(dom);
    }
}

/* Label and name length limits (63 per label, 255 in all). */
static void
test_lengths(void **state)
{
    char buf[400], **dom = NULL;
    size_t n;
    const char *why;

    memset(buf, 'a', 63);
    strcpy(buf + 63, ".org");
    assert_int_equal(odmrd_atrn_parse(buf, 10, &dom, &n, &why), ODMRD_ATRN_OK);
    assert_int_equal(n, 1);
    odmrd_atrn_free(&dom, n);

    memset(buf, 'a', 64);
    strcpy(buf + 64, ".org");
    assert_int_equal(odmrd_atrn_parse(buf, 10, &dom, &n, &why), ODMRD_ATRN_SYNTAX);

    /* 300 bytes of labels */
    for (int i = 0; i < 75; i++)
        memcpy(buf + i * 4, "abc.", 4);
    strcpy(buf + 300, "org");
    assert_int_equal(odmrd_atrn_parse(buf, 10, &dom, &n, &why), ODMRD_ATRN_SYNTAX);
}

/* Many domains: the list grows past its first allocation. */
static void
test_many(void **state)
{
    char buf[4096] = "", **dom = NULL;
    size_t n;
    const char *why;

    for (int i = 0; i < 100; i++) {
        char d[32];

        (void) snprintf(d, sizeof(d), "%sd%d.example", i ? "," : "", i);
        strcat(buf, d);
    }
    assert_int_equal(odmrd_atrn_parse(buf, 100, &dom, &n, &why), ODMRD_ATRN_OK);
    assert_int_equal(n, 100);
    assert_string_equal(dom[0], "d0.example");
    assert_string_equal(dom[99], "d99.example");
    odmrd_atrn_free(&dom, n);
    assert_int_equal(odmrd_atrn_parse(buf, 99, &dom, &n, &why), ODMRD_ATRN_TOO_MANY);
    assert_null(dom);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_cases),
        cmocka_unit_test(test_lengths),
        cmocka_unit_test(test_many),
    };

    return cmocka_run_group_tests(tests, NULL, NULL);
}
