/*
 * fuzz_sasl_server.c - libFuzzer target: the server side of every SASL
 * mechanism (sasl_server_new / sasl_server_step) fed arbitrary response
 * lines, and the strict base64 decoder (sasl_b64_decode).
 *
 * Input: byte 0 picks the mechanism (bits 0-2: SCRAM-SHA-256, CRAM-MD5,
 * PLAIN, LOGIN, EXTERNAL, an unknown name), whether TLS is on (bit 3),
 * whether the first line is an initial response (bit 4); byte 1 picks
 * what the secret lookup answers for user "u" ({PLAIN}pw, a CRAM-MD5 key,
 * a SCRAM-SHA-256 secret with 1 iteration so that the fuzzer stays fast,
 * a malformed secret, "not found", a lookup error). The rest is split at
 * '\n' into response lines, as odmrd would pass them on (cut at a NUL).
 * A fixed test_nonce keeps the challenges reproducible.
 *
 * Checked: every status is a known one with a reply of the right class;
 * on SASL_CONTINUE the challenge is strict base64 (it decodes); after a
 * final status, another step gives SASL_BADPROT; SASL_OK only with the
 * right credentials, i.e. sasl_server_user() is "u"; the reason never
 * contains the password. Base64: whatever decodes re-encodes to exactly
 * the input (canonical form only), and encode-then-decode returns the
 * bytes (ASan/UBSan catch the rest, LeakSanitizer the leaks).
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "maps.h"
#include "sasl.h"
#include "util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define PASSWORD "pw-secret-9"

static const char *const mechs[] = {
    "SCRAM-SHA-256", "CRAM-MD5", "PLAIN", "LOGIN", "EXTERNAL", "X-UNKNOWN",
    "scram-sha-256", "cram-md5",
};

static char *scram_secret;
static char *cram_secret;
static int secret_choice;

static void
make_secrets(void)
{
    unsigned char salt[16], stored[SASL_SCRAM_KEYLEN], server[SASL_SCRAM_KEYLEN];
    char *s64, *st64, *sv64, *err = NULL;

    if (scram_secret != NULL)
        return;
    memset(salt, 0x5a, sizeof(salt));
    if (sasl_scram_keys(PASSWORD, salt, sizeof(salt), 1, stored, server) < 0)
        abort();
    s64 = sasl_b64_encode(salt, sizeof(salt));
    st64 = sasl_b64_encode(stored, sizeof(stored));
    sv64 = sasl_b64_encode(server, sizeof(server));
    scram_secret = x_asprintf("{SCRAM-SHA-256}1:%s$%s:%s", s64, st64, sv64);
    free(s64);
    free(st64);
    free(sv64);
    if ((cram_secret = sasl_secret_make(SASL_SCHEME_CRAM_MD5, PASSWORD, 0, NULL, 0,
                                        &err)) == NULL)
        abort();
}

static int
lookup(void *ctx, const char *user, char **secret_r)
{
    *secret_r = NULL;
    if (strcmp(user, "u") != 0)
        return MAP_NOTFOUND;
    switch (secret_choice % 6) {
    case 0:
        *secret_r = x_strdup("{PLAIN}" PASSWORD);
        return MAP_FOUND;
    case 1:
        *secret_r = x_strdup(cram_secret);
        return MAP_FOUND;
    case 2:
        *secret_r = x_strdup(scram_secret);
        return MAP_FOUND;
    case 3:
        *secret_r = x_strdup("{SCRAM-SHA-256}x:y$z");
        return MAP_FOUND;
    case 4:
        return MAP_NOTFOUND;
    default:
        return MAP_ERROR;
    }
}

static void
check_status(int status)
{
    const char *reply = sasl_status_reply(status);

    switch (status) {
    case SASL_OK:
        if (reply[0] != '2')
            abort();
        break;
    case SASL_CONTINUE:
        if (strcmp(reply, "334") != 0)
            abort();
        break;
    case SASL_FAIL:
    case SASL_BADPROT:
    case SASL_CANCEL:
    case SASL_NOMECH:
    case SASL_ENCRYPT:
        if (reply[0] != '5')
            abort();
        break;
    case SASL_TEMPFAIL:
        if (reply[0] != '4')
            abort();
        break;
    default:
        abort();
    }
}

static void
fuzz_b64(const uint8_t *data, size_t size)
{
    char *text = x_strndup((const char *) data, size), *again;
    unsigned char *out = NULL;
    size_t len = 0;

    if (sasl_b64_decode(text, size, &out, &len) == 0) {
        if (out == NULL || out[len] != 0 || len > size)
            abort();
        again = sasl_b64_encode(out, len);
        if (strcmp(again, text) != 0)
            abort();
        free(again);
        free(out);
        /* A limit one byte short must refuse it. */
        if (len > 0 && sasl_b64_decode(text, len - 1, &out, &len) == 0)
            abort();
    } else if (out != NULL || len != 0) {
        abort();
    }
    free(text);

    again = sasl_b64_encode(data, size);
    if (sasl_b64_decode(again, size, &out, &len) != 0 || len != size
        || (size && memcmp(out, data, size) != 0))
        abort();
    free(out);
    free(again);
}

static void
fuzz_server(const uint8_t *data, size_t size)
{
    SASL_SERVER_CONFIG cfg;
    SASL_SERVER *s;
    char *err = NULL, *out = NULL, *line;
    const char *p, *end;
    int status, with_ir, steps = 0;

    if (size < 2)
        return;
    make_secrets();
    memset(&cfg, 0, sizeof(cfg));
    cfg.hostname = "odmr.test";
    cfg.tls_active = (data[0] >> 3) & 1;
    cfg.mechanisms = NULL;
    cfg.external_user = (data[0] & 0x20) ? "u" : NULL;
    cfg.lookup = lookup;
    cfg.response_limit = 4096;
    cfg.test_nonce = "<1896.697170952@odmr.test>";
    with_ir = (data[0] >> 4) & 1;
    secret_choice = data[1];

    s = sasl_server_new(mechs[data[0] & 7], &cfg, &status, &err);
    check_status(status);
    if (s == NULL) {
        if (status == SASL_CONTINUE || status == SASL_OK || err == NULL)
            abort();
        free(err);
        return;
    }
    if (status != SASL_CONTINUE || err != NULL)
        abort();

    p = (const char *) data + 2;
    end = (const char *) data + size;
    status = SASL_CONTINUE;
    if (!with_ir) {
        status = sasl_server_step(s, NULL, &out);
        steps++;
    }
    while (status == SASL_CONTINUE) {
        const char *nl;

        if (steps > 0) {
            unsigned char *dec;
            size_t len;

            if (out == NULL || sasl_b64_decode(out, 100000, &dec, &len) < 0)
                abort();
            free(dec);
            free(out);
            out = NULL;
        }
        if (p >= end)
            break;
        nl = memchr(p, '\n', (size_t) (end - p));
        if (nl == NULL)
            nl = end;
        line = x_strndup(p, (size_t) (nl - p)); /* cut at a NUL, like odmrd */
        if (line[0] && line[strlen(line) - 1] == '\r')
            line[strlen(line) - 1] = 0;
        p = nl + 1;
        status = sasl_server_step(s, line, &out);
        steps++;
        free(line);
        check_status(status);
        if (status != SASL_CONTINUE && out != NULL)
            abort();
    }
    free(out);
    out = NULL;
    if (status != SASL_CONTINUE) {
        if (strstr(sasl_server_reason(s), PASSWORD) != NULL)
            abort();
        if (status == SASL_OK) {
            const char *user = sasl_server_user(s);

            if (user == NULL || strcmp(user, "u") != 0)
                abort();
        }
        /* Nothing after the end. */
        if (sasl_server_step(s, "", &out) != SASL_BADPROT || out != NULL)
            abort();
    }
    (void) sasl_server_mech(s);
    sasl_server_free(&s);
    if (s != NULL)
        abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    fuzz_b64(data, size);
    fuzz_server(data, size);
    return 0;
}
