/*
 * test_sasl.c - unit tests for sasl.h: base64, secrets, every mechanism
 * on both sides, the RFC 2195 and RFC 7677 vectors.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "maps.h"
#include "sasl.h"
#include "util.h"

/* RFC 2195 section 2 */
#define CRAM_CHALLENGE "<1896.697170952@postoffice.reston.mci.net>"
#define CRAM_RESPONSE "tim b913a602c7eda7a495b4e6e7334d3890"

/* RFC 7677 section 3 */
#define SCRAM_CNONCE "rOprNGfwEbeRWgbNEkqO"
#define SCRAM_SNONCE "%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
#define SCRAM_SALT "W22ZaJ0SNY7soEsUEjb6gQ=="
#define SCRAM_C1 "n,,n=user,r=rOprNGfwEbeRWgbNEkqO"
#define SCRAM_S1 "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
#define SCRAM_C2 "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0," \
    "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ="
#define SCRAM_S2 "v=6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4="

/*
 * A lookup table standing in for auth_maps. Secrets that need computing
 * are filled in by the setup function.
 */
struct user_secret {
    const char *user;
    char *secret;
};

static struct user_secret users[] = {
    { "tim", NULL },            /* {PLAIN}tanstaaftanstaaf */
    { "timcram", NULL },        /* {CRAM-MD5} of tanstaaftanstaaf */
    { "user", NULL },           /* {SCRAM-SHA-256} of pencil, RFC 7677 salt */
    { "plainuser", NULL },      /* {PLAIN}secret */
    { "cramuser", NULL },       /* {CRAM-MD5} of secret */
    { "scramuser", NULL },      /* {SCRAM-SHA-256} of secret */
    { "broken", NULL },         /* malformed secret */
};

static int
test_lookup(void *ctx, const char *user, char **secret_r)
{
    if (strcmp(user, "maperr") == 0)
        return MAP_ERROR;
    for (size_t i = 0; i < ODMR_ARRAY_LEN(users); i++) {
        if (strcmp(users[i].user, user) == 0) {
            *secret_r = x_strdup(users[i].secret);
            return MAP_FOUND;
        }
    }
    return MAP_NOTFOUND;
}

static char *
b64(const char *s)
{
    return sasl_b64_encode((const unsigned char *) s, strlen(s));
}

static char *
b64_mem(const void *p, size_t len)
{
    return sasl_b64_encode(p, len);
}

/* Decode base64 that must be valid; returns a NUL-terminated copy. */
static char *
unb64(const char *s)
{
    unsigned char *out;
    size_t len;

    assert_int_equal(sasl_b64_decode(s, 65536, &out, &len), 0);
    return (char *) out;
}

static SASL_SERVER_CONFIG
base_cfg(int tls)
{
    SASL_SERVER_CONFIG cfg = {
        .hostname = "odmr.example.net",
        .tls_active = tls,
        .lookup = test_lookup,
        .response_limit = 12288,
    };

    return cfg;
}

static SASL_SERVER *
server_new_ok(const char *mech, const SASL_SERVER_CONFIG *cfg)
{
    char *error = NULL;
    int status = -1;
    SASL_SERVER *s = sasl_server_new(mech, cfg, &status, &error);

    assert_non_null(s);
    assert_null(error);
    assert_int_equal(status, SASL_CONTINUE);
    return s;
}

/* One server step on plain text (encoded here), expecting a status and,
 * for SASL_CONTINUE, the decoded challenge. */
static void
server_expect(SASL_SERVER *s, const char *text_in, int want, const char *want_out)
{
    char *in = text_in ? b64(text_in) : NULL, *out = NULL;
    int status = sasl_server_step(s, in, &out);

    assert_int_equal(status, want);
    if (want == SASL_CONTINUE) {
        char *dec;

        assert_non_null(out);
        dec = unb64(out);
        if (want_out)
            assert_string_equal(dec, want_out);
        free(dec);
    } else {
        assert_null(out);
    }
    free(in);
    free(out);
}

static int
setup_users(void **state)
{
    static const unsigned char rfc_salt[] = {
        0x5b, 0x6d, 0x99, 0x68, 0x9d, 0x12, 0x35, 0x8e,
        0xec, 0xa0, 0x4b, 0x14, 0x12, 0x36, 0xfa, 0x81,
    };
    char *error = NULL;

    users[0].secret = x_strdup("{PLAIN}tanstaaftanstaaf");
    users[1].secret = sasl_secret_make(SASL_SCHEME_CRAM_MD5, "tanstaaftanstaaf", 0,
                                       NULL, 0, &error);
    users[2].secret = sasl_secret_make(SASL_SCHEME_SCRAM_SHA_256, "pencil", 4096,
                                       rfc_salt, sizeof(rfc_salt), &error);
    users[3].secret = sasl_secret_make(SASL_SCHEME_PLAIN, "secret", 0, NULL, 0, &error);
    users[4].secret = sasl_secret_make(SASL_SCHEME_CRAM_MD5, "secret", 0, NULL, 0, &error);
    users[5].secret = sasl_secret_make(SASL_SCHEME_SCRAM_SHA_256, "secret", 0, NULL, 0,
                                       &error);
    users[6].secret = x_strdup("{CRAM-MD5}0123");
    for (size_t i = 0; i < ODMR_ARRAY_LEN(users); i++)
        if (users[i].secret == NULL)
            return -1;
    return error == NULL ? 0 : -1;
}

static int
teardown_users(void **state)
{
    for (size_t i = 0; i < ODMR_ARRAY_LEN(users); i++)
        x_free(&users[i].secret);
    return 0;
}

/*
 * Base64.
 */
static void
test_b64_vectors(void **state)
{
    /* RFC 4648 section 10 */
    static const struct {
        const char *plain, *enc;
    } t[] = {
        { "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
        { "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        char *enc = b64(t[i].plain), *dec = unb64(t[i].enc);

        assert_string_equal(enc, t[i].enc);
        assert_string_equal(dec, t[i].plain);
        free(enc);
        free(dec);
    }
}

static void
test_b64_strict(void **state)
{
    static const char *const bad[] = {
        "Zg=", "Zg", "Z===", "Zh==", "Zm9=", "Zm9v\n", "Zm 9v", "Zm=v", "=Zm9",
        "Zm9v====", "Zm9v*A==", "Zg==Zg==", "====", "Zm9-", "Zm9_",
    };
    unsigned char *out;
    size_t len;

    for (size_t i = 0; i < ODMR_ARRAY_LEN(bad); i++) {
        assert_int_equal(sasl_b64_decode(bad[i], 1024, &out, &len), -1);
        assert_null(out);
    }
    /* The size bound counts decoded bytes. */
    assert_int_equal(sasl_b64_decode("Zm9vYmFy", 5, &out, &len), -1);
    assert_int_equal(sasl_b64_decode("Zm9vYmFy", 6, &out, &len), 0);
    assert_int_equal(len, 6);
    free(out);
    /* Embedded NUL survives and the buffer is terminated after it. */
    assert_int_equal(sasl_b64_decode("AHRpbQA=", 16, &out, &len), 0);
    assert_int_equal(len, 5);
    assert_memory_equal(out, "\0tim\0", 6);
    free(out);
}

/*
 * Secrets.
 */
static void
test_cram_context_matches_hmac(void **state)
{
    /* Our own MD5 with a loadable state against OpenSSL's HMAC-MD5: keys
     * shorter than, equal to and longer than a block; messages around the
     * padding boundaries. */
    static const size_t key_lens[] = { 0, 1, 16, 63, 64, 65, 200 };
    static const size_t msg_lens[] = { 0, 1, 55, 56, 63, 64, 65, 119, 120, 1000 };
    char key[201];
    unsigned char msg[1000], ctx[SASL_CRAM_CONTEXTLEN], ours[16], ref[16];
    unsigned int ref_len;

    for (size_t i = 0; i < sizeof(msg); i++)
        msg[i] = (unsigned char) (i * 7 + 3);
    for (size_t k = 0; k < ODMR_ARRAY_LEN(key_lens); k++) {
        for (size_t i = 0; i < key_lens[k]; i++)
            key[i] = (char) ('a' + (i % 26));
        key[key_lens[k]] = 0;
        sasl_cram_context(key, ctx);
        for (size_t m = 0; m < ODMR_ARRAY_LEN(msg_lens); m++) {
            sasl_cram_digest(ctx, msg, msg_lens[m], ours);
            assert_non_null(HMAC(EVP_md5(), key, (int) key_lens[k], msg, msg_lens[m],
                                 ref, &ref_len));
            assert_int_equal(ref_len, 16);
            assert_memory_equal(ours, ref, 16);
        }
    }
}

static void
test_cram_rfc2195_digest(void **state)
{
    static const unsigned char want[16] = {
        0xb9, 0x13, 0xa6, 0x02, 0xc7, 0xed, 0xa7, 0xa4,
        0x95, 0xb4, 0xe6, 0xe7, 0x33, 0x4d, 0x38, 0x90,
    };
    unsigned char ctx[SASL_CRAM_CONTEXTLEN], digest[16];

    sasl_cram_context("tanstaaftanstaaf", ctx);
    sasl_cram_digest(ctx, (const unsigned char *) CRAM_CHALLENGE,
                     strlen(CRAM_CHALLENGE), digest);
    assert_memory_equal(digest, want, 16);
}

static void
test_secret_make_scram_rfc7677(void **state)
{
    /* users[2] was made from RFC 7677's password and salt; StoredKey and
     * ServerKey follow from them (RFC 5802 section 3). */
    assert_string_equal(users[2].secret,
                        "{SCRAM-SHA-256}4096:" SCRAM_SALT
                        "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
                        ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=");
}

static void
test_secret_verify(void **state)
{
    static const struct {
        size_t user;
        const char *password;
        int want;
    } t[] = {
        { 0, "tanstaaftanstaaf", 1 }, { 0, "tanstaaftanstaa", 0 },
        { 0, "tanstaaftanstaafx", 0 }, { 1, "tanstaaftanstaaf", 1 },
        { 1, "wrong", 0 }, { 2, "pencil", 1 }, { 2, "Pencil", 0 },
        { 3, "secret", 1 }, { 4, "secret", 1 }, { 5, "secret", 1 },
        { 5, "", 0 }, { 6, "anything", -1 },
    };
    const char *why;

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++)
        assert_int_equal(sasl_secret_verify(users[t[i].user].secret, t[i].password, &why),
                         t[i].want);
}

static void
test_secret_parse_errors(void **state)
{
    static const char *const bad[] = {
        "", "plain", "{PLAIN", "{}x", "{MD5}abc", "{CRAM-MD5}",
        "{CRAM-MD5}0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdeg",
        "{CRAM-MD5}0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef00",
        "{SCRAM-SHA-256}4096:" SCRAM_SALT,
        "{SCRAM-SHA-256}x:" SCRAM_SALT "$AAAA:AAAA",
        "{SCRAM-SHA-256}0:" SCRAM_SALT "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
            ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "{SCRAM-SHA-256}4096:$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
            ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "{SCRAM-SHA-256}4096:" SCRAM_SALT "$AAAA:wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU=",
        "{SCRAM-SHA-256}4096:" SCRAM_SALT "$WG5d8oPm3OtcPnkdi4Uo7BkeZkBFzpcXkuLmtbsT4qY="
            ":wfPLwcE6nTWhTAmQ7tl2KeoiWGPlZqQxSrmfPwDl2dU",
    };
    SASL_SECRET secret;
    const char *why;

    for (size_t i = 0; i < ODMR_ARRAY_LEN(bad); i++) {
        assert_int_equal(sasl_secret_parse(bad[i], &secret, &why), -1);
        assert_true(*why != 0);
        assert_null(secret.plain);
    }
    /* Scheme names are case-insensitive; an empty PLAIN password parses
     * (and can never match a non-empty one). */
    assert_int_equal(sasl_secret_parse("{plain}", &secret, &why), 0);
    assert_int_equal(secret.scheme, SASL_SCHEME_PLAIN);
    sasl_secret_wipe(&secret);
}

static void
test_secret_make_errors(void **state)
{
    char *error = NULL;

    assert_null(sasl_secret_make(SASL_SCHEME_SCRAM_SHA_256, "x", 100, NULL, 0, &error));
    assert_non_null(error);
    x_free(&error);
    assert_null(sasl_secret_make(SASL_SCHEME_SCRAM_SHA_256, "x", 4096,
                                 (const unsigned char *) "", 0, &error));
    x_free(&error);
    assert_null(sasl_secret_make(99, "x", 0, NULL, 0, &error));
    x_free(&error);
}

/*
 * Dispatcher: statuses, replies, mechanism lists.
 */
static void
test_status_replies(void **state)
{
    static const struct {
        int status;
        const char *prefix;
    } t[] = {
        { SASL_OK, "235 2.7.0 " }, { SASL_CONTINUE, "334" },
        { SASL_FAIL, "535 5.7.8 " }, { SASL_BADPROT, "501 5.5.2 " },
        { SASL_CANCEL, "501 " }, { SASL_TEMPFAIL, "454 4.7.0 " },
        { SASL_NOMECH, "504 5.5.4 " }, { SASL_ENCRYPT, "538 5.7.11 " },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++)
        assert_int_equal(strncmp(sasl_status_reply(t[i].status), t[i].prefix,
                                 strlen(t[i].prefix)), 0);
}

static void
test_mech_list(void **state)
{
    static const struct {
        int tls;
        const char *external;
        const char *config;
        const char *want;
    } t[] = {
        { 0, NULL, NULL, "SCRAM-SHA-256 CRAM-MD5" },
        { 1, NULL, NULL, "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN" },
        { 1, "cust1", NULL, "SCRAM-SHA-256 CRAM-MD5 PLAIN LOGIN EXTERNAL" },
        { 0, "cust1", NULL, "SCRAM-SHA-256 CRAM-MD5 EXTERNAL" },
        { 0, NULL, "CRAM-MD5 SCRAM-SHA-256 PLAIN LOGIN EXTERNAL", "SCRAM-SHA-256 CRAM-MD5" },
        { 1, NULL, "cram-md5, plain", "CRAM-MD5 PLAIN" },
        { 0, NULL, "PLAIN LOGIN", "" },
        { 1, NULL, "", "" },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        SASL_SERVER_CONFIG cfg = base_cfg(t[i].tls);
        char *list;

        cfg.external_user = t[i].external;
        cfg.mechanisms = t[i].config;
        list = sasl_server_mech_list(&cfg);
        assert_string_equal(list, t[i].want);
        free(list);
    }
}

static void
test_mech_list_check(void **state)
{
    char *error = NULL;

    assert_int_equal(sasl_mech_list_check("CRAM-MD5 SCRAM-SHA-256 PLAIN LOGIN EXTERNAL",
                                          &error), 0);
    assert_int_equal(sasl_mech_list_check("", &error), 0);
    assert_int_equal(sasl_mech_list_check("CRAM-MD5, DIGEST-MD5", &error), -1);
    assert_non_null(strstr(error, "DIGEST-MD5"));
    free(error);
}

static void
test_server_new_refusals(void **state)
{
    static const struct {
        const char *mech;
        int tls;
        const char *external;
        const char *config;
        int want;
    } t[] = {
        { "DIGEST-MD5", 1, NULL, NULL, SASL_NOMECH },
        { "", 1, NULL, NULL, SASL_NOMECH },
        { "PLAIN", 0, NULL, NULL, SASL_ENCRYPT },
        { "LOGIN", 0, NULL, NULL, SASL_ENCRYPT },
        { "plain", 0, NULL, NULL, SASL_ENCRYPT },
        { "EXTERNAL", 1, NULL, NULL, SASL_FAIL },
        { "CRAM-MD5", 1, NULL, "SCRAM-SHA-256", SASL_NOMECH },
        { "PLAIN", 1, NULL, "CRAM-MD5", SASL_NOMECH },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        SASL_SERVER_CONFIG cfg = base_cfg(t[i].tls);
        char *error = NULL;
        int status = -1;

        cfg.external_user = t[i].external;
        cfg.mechanisms = t[i].config;
        assert_null(sasl_server_new(t[i].mech, &cfg, &status, &error));
        assert_int_equal(status, t[i].want);
        assert_non_null(error);
        free(error);
    }
}

/* "*", bad base64, over-long lines, steps after the end: every mechanism. */
static void
test_server_cancel_and_garbage(void **state)
{
    static const char *const mechs[] = {
        "CRAM-MD5", "SCRAM-SHA-256", "PLAIN", "LOGIN", "EXTERNAL",
    };
    static const struct {
        const char *line;
        int want;
    } t[] = {
        { "*", SASL_CANCEL },
        { "!!!!", SASL_BADPROT },
        { "dGl", SASL_BADPROT },
        { "dGltIGI5MTNhNjAyYzdlZGE3YTQ5NWI0ZTZlNzMzNGQzODkw", SASL_BADPROT }, /* > limit */
    };
    SASL_SERVER_CONFIG cfg = base_cfg(1);

    cfg.external_user = "cust1";
    cfg.response_limit = 40;
    for (size_t m = 0; m < ODMR_ARRAY_LEN(mechs); m++) {
        for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
            SASL_SERVER *s;
            char *out = NULL;

            s = server_new_ok(mechs[m], &cfg);
            /* First the empty challenge (or prompt) ... */
            assert_int_equal(sasl_server_step(s, NULL, &out), SASL_CONTINUE);
            x_free(&out);
            /* ... then the bad line. */
            assert_int_equal(sasl_server_step(s, t[i].line, &out), t[i].want);
            assert_null(out);
            assert_true(*sasl_server_reason(s) != 0);
            /* Nothing more once the exchange ended. */
            assert_int_equal(sasl_server_step(s, "", &out), SASL_BADPROT);
            sasl_server_free(&s);
            assert_null(s);
        }
    }
}

/*
 * CRAM-MD5.
 */
static void
test_cram_server_rfc2195(void **state)
{
    static const struct {
        const char *response;
        int want;
        const char *reason;
    } t[] = {
        { CRAM_RESPONSE, SASL_OK, "" },
        { "timcram b913a602c7eda7a495b4e6e7334d3890", SASL_OK, "" },
        { "tim B913A602C7EDA7A495B4E6E7334D3890", SASL_OK, "" },
        { "tim  b913a602c7eda7a495b4e6e7334d3890", SASL_FAIL, "unknown user" },
        { "tim b913a602c7eda7a495b4e6e7334d3891", SASL_FAIL, "wrong password" },
        { "timcram 0913a602c7eda7a495b4e6e7334d3890", SASL_FAIL, "wrong password" },
        { "nobody b913a602c7eda7a495b4e6e7334d3890", SASL_FAIL, "unknown user" },
        { "user b913a602c7eda7a495b4e6e7334d3890", SASL_FAIL,
          "secret scheme SCRAM-SHA-256 cannot serve CRAM-MD5" },
        { "broken b913a602c7eda7a495b4e6e7334d3890", SASL_FAIL, NULL },
        { "maperr b913a602c7eda7a495b4e6e7334d3890", SASL_TEMPFAIL, NULL },
        { "timb913a602c7eda7a495b4e6e7334d3890", SASL_BADPROT, NULL },
        { " b913a602c7eda7a495b4e6e7334d3890", SASL_BADPROT, NULL },
        { "tim b913a602c7eda7a495b4e6e7334d389", SASL_BADPROT, NULL },
        { "tim b913a602c7eda7a495b4e6e7334d38900", SASL_BADPROT, NULL },
        { "tim b913a602c7eda7a495b4e6e7334d389g", SASL_BADPROT, NULL },
        { "", SASL_BADPROT, NULL },
    };
    SASL_SERVER_CONFIG cfg = base_cfg(0);

    cfg.test_nonce = CRAM_CHALLENGE;
    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        SASL_SERVER *s = server_new_ok("CRAM-MD5", &cfg);

        server_expect(s, NULL, SASL_CONTINUE, CRAM_CHALLENGE);
        server_expect(s, t[i].response, t[i].want, NULL);
        if (t[i].reason)
            assert_string_equal(sasl_server_reason(s), t[i].reason);
        if (t[i].want == SASL_OK)
            assert_memory_equal(sasl_server_user(s), t[i].response,
                                strlen(sasl_server_user(s)) + 1 - 1);
        if (t[i].want == SASL_OK)
            assert_int_equal(t[i].response[strlen(sasl_server_user(s))], ' ');
        sasl_server_free(&s);
    }
}

static void
test_cram_server_challenge_shape(void **state)
{
    SASL_SERVER_CONFIG cfg = base_cfg(0);
    SASL_SERVER *s = server_new_ok("CRAM-MD5", &cfg);
    char *out = NULL, *ch;
    const char *p;

    assert_int_equal(sasl_server_step(s, NULL, &out), SASL_CONTINUE);
    ch = unb64(out);
    /* "<digits.digits@hostname>" */
    assert_int_equal(ch[0], '<');
    p = ch + 1;
    assert_true(*p >= '0' && *p <= '9');
    p += strspn(p, "0123456789");
    assert_int_equal(*p, '.');
    p++;
    assert_true(*p >= '0' && *p <= '9');
    p += strspn(p, "0123456789");
    assert_string_equal(p, "@odmr.example.net>");
    free(ch);
    free(out);
    sasl_server_free(&s);

    /* No initial response in CRAM-MD5. */
    s = server_new_ok("CRAM-MD5", &cfg);
    assert_int_equal(sasl_server_step(s, "dGlt", &out), SASL_BADPROT);
    sasl_server_free(&s);
}

static void
test_cram_client_rfc2195(void **state)
{
    char *error = NULL, *out = NULL, *ch = b64(CRAM_CHALLENGE), *resp;
    SASL_CLIENT *c = sasl_client_new("CRAM-MD5", "tim", "tanstaaftanstaaf", &error);

    assert_non_null(c);
    assert_int_equal(sasl_client_step(c, NULL, &out), SASL_CONTINUE);
    assert_null(out);                   /* no initial response */
    assert_int_equal(sasl_client_step(c, ch, &out), SASL_CONTINUE);
    resp = unb64(out);
    assert_string_equal(resp, CRAM_RESPONSE);
    free(resp);
    free(out);
    /* A second challenge is a protocol error. */
    assert_int_equal(sasl_client_step(c, ch, &out), SASL_BADPROT);
    assert_int_equal(sasl_client_finish(c), SASL_OK);
    free(ch);
    sasl_client_free(&c);
    assert_null(c);
}

/*
 * SCRAM-SHA-256.
 */
static void
test_scram_client_rfc7677(void **state)
{
    char *error = NULL, *out = NULL, *in, *dec;
    SASL_CLIENT *c = sasl_client_new("SCRAM-SHA-256", "user", "pencil", &error);

    assert_non_null(c);
    sasl_client_set_test_nonce(c, SCRAM_CNONCE);
    assert_int_equal(sasl_client_step(c, NULL, &out), SASL_CONTINUE);
    dec = unb64(out);
    assert_string_equal(dec, SCRAM_C1);
    free(dec);
    free(out);

    in = b64(SCRAM_S1);
    assert_int_equal(sasl_client_step(c, in, &out), SASL_CONTINUE);
    dec = unb64(out);
    assert_string_equal(dec, SCRAM_C2);
    free(dec);
    free(out);
    free(in);
    /* Not yet verified: a 235 now would not be trusted. */
    assert_int_equal(sasl_client_finish(c), SASL_FAIL);

    in = b64(SCRAM_S2);
    assert_int_equal(sasl_client_step(c, in, &out), SASL_CONTINUE);
    assert_string_equal(out, "");
    free(out);
    free(in);
    assert_int_equal(sasl_client_finish(c), SASL_OK);
    sasl_client_free(&c);
}

static void
test_scram_client_bad_server(void **state)
{
    static const struct {
        const char *server_first;
        const char *server_final;       /* NULL: the first must fail */
        int want;
    } t[] = {
        /* nonce not extending ours */
        { "r=xOprNGfwEbeRWgbNEkqO%hvYD,s=" SCRAM_SALT ",i=4096", NULL, SASL_BADPROT },
        /* nonce equal to ours (no server part) */
        { "r=" SCRAM_CNONCE ",s=" SCRAM_SALT ",i=4096", NULL, SASL_BADPROT },
        { "r=" SCRAM_CNONCE "X,s=" SCRAM_SALT ",i=100", NULL, SASL_BADPROT },
        { "r=" SCRAM_CNONCE "X,s=" SCRAM_SALT ",i=99999999999", NULL, SASL_BADPROT },
        { "r=" SCRAM_CNONCE "X,s=" SCRAM_SALT, NULL, SASL_BADPROT },
        { "r=" SCRAM_CNONCE "X,s=,i=4096", NULL, SASL_BADPROT },
        { "r=" SCRAM_CNONCE "X,s=!!,i=4096", NULL, SASL_BADPROT },
        { "m=x,r=" SCRAM_CNONCE "X,s=" SCRAM_SALT ",i=4096", NULL, SASL_BADPROT },
        { "s=" SCRAM_SALT ",r=" SCRAM_CNONCE "X,i=4096", NULL, SASL_BADPROT },
        /* a forged or refused server-final */
        { SCRAM_S1, "v=7rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=", SASL_FAIL },
        { SCRAM_S1, "e=invalid-proof", SASL_FAIL },
        { SCRAM_S1, "v=AAAA", SASL_BADPROT },
        { SCRAM_S1, "x=1", SASL_BADPROT },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        char *error = NULL, *out = NULL, *in;
        SASL_CLIENT *c = sasl_client_new("SCRAM-SHA-256", "user", "pencil", &error);

        sasl_client_set_test_nonce(c, SCRAM_CNONCE);
        assert_int_equal(sasl_client_step(c, NULL, &out), SASL_CONTINUE);
        free(out);
        in = b64(t[i].server_first);
        if (t[i].server_final == NULL) {
            assert_int_equal(sasl_client_step(c, in, &out), t[i].want);
            assert_null(out);
        } else {
            assert_int_equal(sasl_client_step(c, in, &out), SASL_CONTINUE);
            free(out);
            free(in);
            in = b64(t[i].server_final);
            assert_int_equal(sasl_client_step(c, in, &out), t[i].want);
            assert_null(out);
        }
        assert_int_equal(sasl_client_finish(c), SASL_FAIL);
        free(in);
        sasl_client_free(&c);
    }
}

static SASL_SERVER *
scram_server_rfc(void)
{
    SASL_SERVER_CONFIG cfg = base_cfg(0);
    SASL_SERVER *s;

    cfg.test_nonce = SCRAM_SNONCE;
    s = server_new_ok("SCRAM-SHA-256", &cfg);
    return s;
}

static void
test_scram_server_rfc7677(void **state)
{
    SASL_SERVER *s = scram_server_rfc();
    char *in = b64(SCRAM_C1), *out = NULL, *dec;

    /* Initial response: client-first-message. */
    assert_int_equal(sasl_server_step(s, in, &out), SASL_CONTINUE);
    dec = unb64(out);
    assert_string_equal(dec, SCRAM_S1);
    free(dec);
    free(out);
    free(in);
    server_expect(s, SCRAM_C2, SASL_CONTINUE, SCRAM_S2);
    /* The client's empty answer to the server-final-message. */
    assert_int_equal(sasl_server_step(s, "", &out), SASL_OK);
    assert_null(out);
    assert_string_equal(sasl_server_user(s), "user");
    assert_string_equal(sasl_server_reason(s), "");
    sasl_server_free(&s);

    /* Without initial response: empty challenge first. */
    s = scram_server_rfc();
    server_expect(s, NULL, SASL_CONTINUE, "");
    server_expect(s, SCRAM_C1, SASL_CONTINUE, SCRAM_S1);
    server_expect(s, SCRAM_C2, SASL_CONTINUE, SCRAM_S2);
    server_expect(s, "x", SASL_BADPROT, NULL);        /* must be empty */
    sasl_server_free(&s);
}

static void
test_scram_server_bad_first(void **state)
{
    static const struct {
        const char *msg;
        int want;
    } t[] = {
        { "", SASL_BADPROT },
        { "x,,n=user,r=abc", SASL_BADPROT },
        { "p=tls-unique,,n=user,r=abc", SASL_BADPROT },
        { "n,,m=ext,n=user,r=abc", SASL_BADPROT },
        { "n,,n=user", SASL_BADPROT },
        { "n,,n=user,", SASL_BADPROT },
        { "n,,n=user,r=", SASL_BADPROT },
        { "n,,r=abc,n=user", SASL_BADPROT },
        { "n,,n=,r=abc", SASL_BADPROT },
        { "n,,n=us=er,r=abc", SASL_BADPROT },
        { "n,,n=us=2er,r=abc", SASL_BADPROT },
        { "n,n=user,r=abc", SASL_BADPROT },
        { "n,b=x,n=user,r=abc", SASL_BADPROT },
        { "n", SASL_BADPROT },
        { "n,,n=user,r=a\x01" "b", SASL_BADPROT },
        { "n,a=other,n=user,r=abc", SASL_FAIL },
        { "maperr", SASL_BADPROT },
        { "n,,n=maperr,r=abc", SASL_TEMPFAIL },
        /* accepted: "y", an authzid equal to the user, extensions */
        { "y,,n=user,r=abc", SASL_CONTINUE },
        { "n,a=user,n=user,r=abc", SASL_CONTINUE },
        { "n,,n=user,r=abc,x=ext", SASL_CONTINUE },
        { "n,,n=nobody,r=abc", SASL_CONTINUE },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        SASL_SERVER *s = scram_server_rfc();

        server_expect(s, NULL, SASL_CONTINUE, "");
        server_expect(s, t[i].msg, t[i].want, NULL);
        sasl_server_free(&s);
    }
}

/* The server-first-message for user with the fake-salt key (NULL: none):
 * "s=SALT,i=ITER" (after the nonce) into buf. */
static void
scram_salt_of(const char *user, const unsigned char *key, size_t keylen, char *buf,
              size_t size)
{
    SASL_SERVER_CONFIG cfg = base_cfg(0);
    SASL_SERVER *s;
    char *c1 = x_asprintf("n,,n=%s,r=abcdef", user), *in = b64(c1), *out = NULL;
    unsigned char *dec = NULL;
    size_t len = 0, at;

    cfg.fake_salt_key = key;
    cfg.fake_salt_key_len = keylen;
    s = server_new_ok("SCRAM-SHA-256", &cfg);
    assert_int_equal(sasl_server_step(s, in, &out), SASL_CONTINUE);
    assert_int_equal(sasl_b64_decode(out, 4096, &dec, &len), 0);
    for (at = 0; at + 3 < len && memcmp(dec + at, ",s=", 3) != 0; at++)
        ;
    assert_true(at + 3 < len);
    str_copy(buf, (const char *) dec + at + 1, size);
    free(dec);
    free(out);
    free(in);
    free(c1);
    sasl_server_free(&s);
}

/* Users without a SCRAM secret (unknown, or another scheme) get a salt
 * that is the same at every attempt and the default iteration count, like
 * a real user: two attempts do not tell them apart. */
static void
test_scram_server_fake_salt(void **state)
{
    static const unsigned char key[32] = "0123456789abcdef0123456789abcdef";
    static const unsigned char key2[32] = "x123456789abcdef0123456789abcdef";
    char a[128], b[128], real[128];
    SASL_SERVER_CONFIG cfg;
    SASL_SERVER *s;

    scram_salt_of("nobody", key, sizeof(key), a, sizeof(a));
    scram_salt_of("nobody", key, sizeof(key), b, sizeof(b));
    assert_string_equal(a, b);
    /* Same shape as a real user's: 16 bytes of salt (24 base64), i=4096. */
    scram_salt_of("scramuser", key, sizeof(key), real, sizeof(real));
    assert_int_equal(strlen(a), strlen(real));
    assert_string_equal(strstr(a, ",i="), ",i=4096");
    assert_string_equal(strstr(real, ",i="), ",i=4096");
    /* The real user's salt is its own, not the fake one. */
    scram_salt_of("scramuser", NULL, 0, b, sizeof(b));
    assert_string_equal(real, b);
    /* Another user, another key: another salt. */
    scram_salt_of("nobody2", key, sizeof(key), b, sizeof(b));
    assert_string_not_equal(a, b);
    scram_salt_of("nobody", key2, sizeof(key2), b, sizeof(b));
    assert_string_not_equal(a, b);
    /* Without a key: random, different each time. */
    scram_salt_of("nobody", NULL, 0, a, sizeof(a));
    scram_salt_of("nobody", NULL, 0, b, sizeof(b));
    assert_string_not_equal(a, b);
    /* A {CRAM-MD5} user also gets a stable one. */
    scram_salt_of("cramuser", key, sizeof(key), a, sizeof(a));
    scram_salt_of("cramuser", key, sizeof(key), b, sizeof(b));
    assert_string_equal(a, b);

    /* A {PLAIN} user still logs in with SCRAM (keys from the fake salt). */
    {
        SASL_CLIENT *c;
        char *error = NULL, *cout = NULL, *sout = NULL;

        cfg = base_cfg(0);
        cfg.fake_salt_key = key;
        cfg.fake_salt_key_len = sizeof(key);
        s = server_new_ok("SCRAM-SHA-256", &cfg);
        c = sasl_client_new("SCRAM-SHA-256", "plainuser", "secret", &error);
        assert_non_null(c);
        assert_int_equal(sasl_client_step(c, NULL, &cout), SASL_CONTINUE);
        assert_int_equal(sasl_server_step(s, cout, &sout), SASL_CONTINUE);
        sasl_wipe_free(&cout);
        assert_int_equal(sasl_client_step(c, sout, &cout), SASL_CONTINUE);
        free(sout);
        sout = NULL;
        assert_int_equal(sasl_server_step(s, cout, &sout), SASL_CONTINUE);
        sasl_wipe_free(&cout);
        assert_int_equal(sasl_client_step(c, sout, &cout), SASL_CONTINUE);
        free(sout);
        sout = NULL;
        assert_int_equal(sasl_server_step(s, cout, &sout), SASL_OK);
        assert_int_equal(sasl_client_finish(c), SASL_OK);
        sasl_wipe_free(&cout);
        sasl_client_free(&c);
        sasl_server_free(&s);
    }
}

static void
test_scram_server_bad_final(void **state)
{
    static const char nonce[] = SCRAM_CNONCE SCRAM_SNONCE;
    static const struct {
        const char *msg;
        int want;
        const char *reason;
    } t[] = {
        { "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0", SASL_BADPROT, NULL },
        { "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_BADPROT, NULL },
        { "c=biws,p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_BADPROT, NULL },
        /* wrong nonce: another server part, and only the client's part */
        { "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k1,"
          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_BADPROT,
          "SCRAM nonce mismatch" },
        { "c=biws,r=rOprNGfwEbeRWgbNEkqO,"
          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_BADPROT,
          "SCRAM nonce mismatch" },
        /* channel binding data other than our gs2 header ("y,," here) */
        { "c=eSws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_BADPROT, NULL },
        { "c=!!,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_BADPROT, NULL },
        /* bad proofs */
        { "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          "p=eHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=", SASL_FAIL, "wrong password" },
        { "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ", SASL_BADPROT, NULL },
        { "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7And==", SASL_BADPROT, NULL },
        { "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
          "p=dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=,x=1", SASL_BADPROT, NULL },
        { "", SASL_BADPROT, NULL },
    };

    assert_int_equal(strlen(nonce), 50);
    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        SASL_SERVER *s = scram_server_rfc();

        server_expect(s, SCRAM_C1, SASL_CONTINUE, SCRAM_S1);
        server_expect(s, t[i].msg, t[i].want, NULL);
        if (t[i].reason)
            assert_string_equal(sasl_server_reason(s), t[i].reason);
        sasl_server_free(&s);
    }
}

/*
 * PLAIN, LOGIN, EXTERNAL.
 */
static void
test_plain_server(void **state)
{
    static const struct {
        const char *msg;
        size_t len;
        int want;
        const char *user;
    } t[] = {
#define M(s) s, sizeof(s) - 1
        { M("\0tim\0tanstaaftanstaaf"), SASL_OK, "tim" },
        { M("tim\0tim\0tanstaaftanstaaf"), SASL_OK, "tim" },
        { M("\0timcram\0tanstaaftanstaaf"), SASL_OK, "timcram" },
        { M("\0user\0pencil"), SASL_OK, "user" },
        { M("bob\0tim\0tanstaaftanstaaf"), SASL_FAIL, "tim" },
        { M("\0tim\0tanstaaf"), SASL_FAIL, "tim" },
        { M("\0nobody\0x"), SASL_FAIL, "nobody" },
        { M("\0maperr\0x"), SASL_TEMPFAIL, "maperr" },
        { M("\0tim\0"), SASL_BADPROT, NULL },
        { M("\0\0pw"), SASL_BADPROT, NULL },
        { M("tim\0tanstaaftanstaaf"), SASL_BADPROT, NULL },
        { M("\0tim\0pw\0x"), SASL_BADPROT, NULL },
        { M(""), SASL_BADPROT, NULL },
#undef M
    };
    SASL_SERVER_CONFIG cfg = base_cfg(1);

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        SASL_SERVER *s = server_new_ok("PLAIN", &cfg);
        char *in = b64_mem(t[i].msg, t[i].len), *out = NULL;

        /* As the initial response ("=" for an empty one). */
        assert_int_equal(sasl_server_step(s, *in ? in : "=", &out), t[i].want);
        assert_null(out);
        if (t[i].user)
            assert_string_equal(sasl_server_user(s), t[i].user);
        sasl_server_free(&s);

        /* After an empty challenge. */
        s = server_new_ok("PLAIN", &cfg);
        assert_int_equal(sasl_server_step(s, NULL, &out), SASL_CONTINUE);
        assert_string_equal(out, "");
        x_free(&out);
        assert_int_equal(sasl_server_step(s, in, &out), t[i].want);
        sasl_server_free(&s);
        free(in);
    }
}

static void
test_login_server(void **state)
{
    SASL_SERVER_CONFIG cfg = base_cfg(1);
    SASL_SERVER *s = server_new_ok("LOGIN", &cfg);
    char *out = NULL, *in;

    /* The prompts as RFC 4954 era clients expect them on the wire. */
    assert_int_equal(sasl_server_step(s, NULL, &out), SASL_CONTINUE);
    assert_string_equal(out, "VXNlcm5hbWU6");
    x_free(&out);
    in = b64("tim");
    assert_int_equal(sasl_server_step(s, in, &out), SASL_CONTINUE);
    assert_string_equal(out, "UGFzc3dvcmQ6");
    x_free(&out);
    free(in);
    in = b64("tanstaaftanstaaf");
    assert_int_equal(sasl_server_step(s, in, &out), SASL_OK);
    assert_string_equal(sasl_server_user(s), "tim");
    free(in);
    sasl_server_free(&s);

    /* The user name as an initial response; then a wrong password. */
    s = server_new_ok("LOGIN", &cfg);
    in = b64("cramuser");
    assert_int_equal(sasl_server_step(s, in, &out), SASL_CONTINUE);
    assert_string_equal(out, "UGFzc3dvcmQ6");
    x_free(&out);
    free(in);
    in = b64("wrong");
    assert_int_equal(sasl_server_step(s, in, &out), SASL_FAIL);
    assert_string_equal(sasl_server_reason(s), "wrong password");
    assert_string_equal(sasl_server_user(s), "cramuser");
    free(in);
    sasl_server_free(&s);

    /* An empty user name is malformed. */
    s = server_new_ok("LOGIN", &cfg);
    assert_int_equal(sasl_server_step(s, NULL, &out), SASL_CONTINUE);
    x_free(&out);
    assert_int_equal(sasl_server_step(s, "", &out), SASL_BADPROT);
    sasl_server_free(&s);
}

static void
test_external_server(void **state)
{
    static const struct {
        const char *ir;         /* base64 line; NULL: no initial response */
        int want;
    } t[] = {
        { "=", SASL_OK },
        { "Y3VzdDE=", SASL_OK },        /* "cust1" */
        { "b3RoZXI=", SASL_FAIL },      /* "other" */
        { "Y3VzdDEAeA==", SASL_BADPROT }, /* "cust1\0x" */
        { "", SASL_BADPROT },           /* empty IR must be "=" */
    };
    SASL_SERVER_CONFIG cfg = base_cfg(0);

    cfg.external_user = "cust1";
    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        SASL_SERVER *s = server_new_ok("EXTERNAL", &cfg);
        char *out = NULL;

        assert_int_equal(sasl_server_step(s, t[i].ir, &out), t[i].want);
        if (t[i].want == SASL_OK)
            assert_string_equal(sasl_server_user(s), "cust1");
        sasl_server_free(&s);
    }
    /* No initial response: empty challenge, empty answer. */
    SASL_SERVER *s = server_new_ok("EXTERNAL", &cfg);
    char *out = NULL;

    assert_int_equal(sasl_server_step(s, NULL, &out), SASL_CONTINUE);
    assert_string_equal(out, "");
    x_free(&out);
    assert_int_equal(sasl_server_step(s, "", &out), SASL_OK);
    assert_string_equal(sasl_server_user(s), "cust1");
    sasl_server_free(&s);
}

static void
test_client_initial_responses(void **state)
{
    static const struct {
        const char *mech, *user, *password;
        const char *want;       /* NULL: no initial response */
    } t[] = {
        { "PLAIN", "tim", "tanstaaftanstaaf", "AHRpbQB0YW5zdGFhZnRhbnN0YWFm" },
        { "LOGIN", "tim", "pw", NULL },
        { "CRAM-MD5", "tim", "pw", NULL },
        { "EXTERNAL", NULL, NULL, "=" },
        { "EXTERNAL", "cust1", NULL, "Y3VzdDE=" },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        char *error = NULL, *out = NULL;
        SASL_CLIENT *c = sasl_client_new(t[i].mech, t[i].user, t[i].password, &error);

        assert_non_null(c);
        assert_int_equal(sasl_client_step(c, NULL, &out), SASL_CONTINUE);
        if (t[i].want)
            assert_string_equal(out, t[i].want);
        else
            assert_null(out);
        sasl_wipe_free(&out);
        sasl_client_free(&c);
    }
}

static void
test_client_new_errors(void **state)
{
    char *error = NULL;

    assert_null(sasl_client_new("DIGEST-MD5", "u", "p", &error));
    assert_non_null(error);
    x_free(&error);
    assert_null(sasl_client_new("PLAIN", "", "p", &error));
    x_free(&error);
    assert_null(sasl_client_new("SCRAM-SHA-256", "u", NULL, &error));
    x_free(&error);
}

/*
 * Round trips: our client against our server, every mechanism, every
 * secret scheme.
 */
static int
round_trip(const char *mech, const char *user, const char *password, int tls,
           const char **reason_r)
{
    SASL_SERVER_CONFIG cfg = base_cfg(tls);
    char *error = NULL, *to_server = NULL, *to_client = NULL;
    SASL_CLIENT *c = sasl_client_new(mech, user, password, &error);
    SASL_SERVER *s;
    int status, cstatus, rounds = 0;

    cfg.external_user = "cust1";
    assert_non_null(c);
    s = sasl_server_new(mech, &cfg, &status, &error);
    if (s == NULL) {
        free(error);
        sasl_client_free(&c);
        return status;
    }
    assert_int_equal(sasl_client_step(c, NULL, &to_server), SASL_CONTINUE);
    status = sasl_server_step(s, to_server, &to_client);
    while (status == SASL_CONTINUE) {
        assert_true(++rounds < 10);
        sasl_wipe_free(&to_server);
        cstatus = sasl_client_step(c, to_client, &to_server);
        x_free(&to_client);
        if (cstatus != SASL_CONTINUE)
            to_server = x_strdup("*");
        status = sasl_server_step(s, to_server, &to_client);
    }
    assert_null(to_client);
    if (status == SASL_OK) {
        assert_int_equal(sasl_client_finish(c), SASL_OK);
        assert_string_equal(sasl_server_user(s),
                            strcmp(mech, "EXTERNAL") == 0 ? "cust1" : user);
    }
    *reason_r = "";
    if (status != SASL_OK) {
        static char reason[128];

        str_copy(reason, sasl_server_reason(s), sizeof(reason));
        *reason_r = reason;
    }
    sasl_wipe_free(&to_server);
    sasl_server_free(&s);
    sasl_client_free(&c);
    return status;
}

static void
test_round_trips(void **state)
{
    static const struct {
        const char *mech, *user, *password;
        int tls;
        int want;
        const char *reason;
    } t[] = {
        { "CRAM-MD5", "plainuser", "secret", 0, SASL_OK, NULL },
        { "CRAM-MD5", "cramuser", "secret", 0, SASL_OK, NULL },
        { "CRAM-MD5", "scramuser", "secret", 0, SASL_FAIL,
          "secret scheme SCRAM-SHA-256 cannot serve CRAM-MD5" },
        { "CRAM-MD5", "cramuser", "Secret", 0, SASL_FAIL, "wrong password" },
        { "CRAM-MD5", "maperr", "secret", 0, SASL_TEMPFAIL, NULL },
        { "SCRAM-SHA-256", "plainuser", "secret", 0, SASL_OK, NULL },
        { "SCRAM-SHA-256", "scramuser", "secret", 0, SASL_OK, NULL },
        { "SCRAM-SHA-256", "user", "pencil", 0, SASL_OK, NULL },
        { "SCRAM-SHA-256", "cramuser", "secret", 0, SASL_FAIL,
          "secret scheme CRAM-MD5 cannot serve SCRAM-SHA-256" },
        { "SCRAM-SHA-256", "scramuser", "secreT", 0, SASL_FAIL, "wrong password" },
        { "SCRAM-SHA-256", "nobody", "secret", 0, SASL_FAIL, "unknown user" },
        { "SCRAM-SHA-256", "broken", "secret", 0, SASL_FAIL, NULL },
        { "SCRAM-SHA-256", "maperr", "secret", 0, SASL_TEMPFAIL, NULL },
        { "SCRAM-SHA-256", "a,b=c", "secret", 0, SASL_FAIL, "unknown user" },
        { "PLAIN", "plainuser", "secret", 1, SASL_OK, NULL },
        { "PLAIN", "cramuser", "secret", 1, SASL_OK, NULL },
        { "PLAIN", "scramuser", "secret", 1, SASL_OK, NULL },
        { "PLAIN", "scramuser", "wrong", 1, SASL_FAIL, "wrong password" },
        { "PLAIN", "plainuser", "secret", 0, SASL_ENCRYPT, NULL },
        { "LOGIN", "plainuser", "secret", 1, SASL_OK, NULL },
        { "LOGIN", "cramuser", "secret", 1, SASL_OK, NULL },
        { "LOGIN", "scramuser", "secret", 1, SASL_OK, NULL },
        { "LOGIN", "cramuser", "wrong", 1, SASL_FAIL, "wrong password" },
        { "LOGIN", "plainuser", "secret", 0, SASL_ENCRYPT, NULL },
        { "EXTERNAL", NULL, NULL, 0, SASL_OK, NULL },
        { "EXTERNAL", "cust1", NULL, 1, SASL_OK, NULL },
        { "EXTERNAL", "cust2", NULL, 1, SASL_FAIL, NULL },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(t); i++) {
        const char *reason = NULL;
        int got = round_trip(t[i].mech, t[i].user, t[i].password, t[i].tls, &reason);

        if (got != t[i].want)
            fail_msg("round trip %zu (%s %s): got %s, want %s", i, t[i].mech,
                     t[i].user ? t[i].user : "-", sasl_status_name(got),
                     sasl_status_name(t[i].want));
        if (t[i].reason)
            assert_string_equal(reason, t[i].reason);
    }
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_b64_vectors),
        cmocka_unit_test(test_b64_strict),
        cmocka_unit_test(test_cram_context_matches_hmac),
        cmocka_unit_test(test_cram_rfc2195_digest),
        cmocka_unit_test(test_secret_make_scram_rfc7677),
        cmocka_unit_test(test_secret_verify),
        cmocka_unit_test(test_secret_parse_errors),
        cmocka_unit_test(test_secret_make_errors),
        cmocka_unit_test(test_status_replies),
        cmocka_unit_test(test_mech_list),
        cmocka_unit_test(test_mech_list_check),
        cmocka_unit_test(test_server_new_refusals),
        cmocka_unit_test(test_server_cancel_and_garbage),
        cmocka_unit_test(test_cram_server_rfc2195),
        cmocka_unit_test(test_cram_server_challenge_shape),
        cmocka_unit_test(test_cram_client_rfc2195),
        cmocka_unit_test(test_scram_client_rfc7677),
        cmocka_unit_test(test_scram_client_bad_server),
        cmocka_unit_test(test_scram_server_rfc7677),
        cmocka_unit_test(test_scram_server_bad_first),
        cmocka_unit_test(test_scram_server_bad_final),
        cmocka_unit_test(test_scram_server_fake_salt),
        cmocka_unit_test(test_plain_server),
        cmocka_unit_test(test_login_server),
        cmocka_unit_test(test_external_server),
        cmocka_unit_test(test_client_initial_responses),
        cmocka_unit_test(test_client_new_errors),
        cmocka_unit_test(test_round_trips),
    };

    return cmocka_run_group_tests(tests, setup_users, teardown_users);
}
