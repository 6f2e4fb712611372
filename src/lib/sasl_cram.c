/*
 * sasl_cram.c - CRAM-MD5 (RFC 2195), server and client; see sasl.h.
 *
 * The server must answer with the plaintext password unknown: a
 * {CRAM-MD5} secret holds the HMAC-MD5 key schedule of RFC 2104 section 4
 * (the MD5 states after the opad and ipad blocks), which is also what
 * Dovecot stores. OpenSSL 3 does not let us load an MD5 state, so this
 * file carries its own small MD5 (RFC 1321) whose state can be set.
 * MD5 here is only HMAC-MD5 for CRAM-MD5, which RFC 2645 requires.
 *
 * Server: challenge "<digits.time@hostname>", response "user hexdigest".
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "sasl.h"
#include "util.h"

/*
 * MD5 (RFC 1321).
 */
typedef struct md5 {
    uint32_t s[4];
    uint64_t len;               /* bytes so far */
    unsigned char buf[64];
    size_t used;
} MD5;

static const uint32_t md5_k[64] = {
    0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a,
    0xa8304613, 0xfd469501, 0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be,
    0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821, 0xf61e2562, 0xc040b340,
    0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
    0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8,
    0x676f02d9, 0x8d2a4c8a, 0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c,
    0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70, 0x289b7ec6, 0xeaa127fa,
    0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
    0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92,
    0xffeff47d, 0x85845dd1, 0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1,
    0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
};

static const unsigned char md5_r[64] = {
    7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
    5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
    4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
    6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
};

static uint32_t
md5_get32(const unsigned char *p)
{
    return (uint32_t) p[0] | (uint32_t) p[1] << 8 | (uint32_t) p[2] << 16
        | (uint32_t) p[3] << 24;
}

static void
md5_put32(unsigned char *p, uint32_t v)
{
    p[0] = (unsigned char) v;
    p[1] = (unsigned char) (v >> 8);
    p[2] = (unsigned char) (v >> 16);
    p[3] = (unsigned char) (v >> 24);
}

static void
md5_block(uint32_t s[4], const unsigned char *block)
{
    uint32_t m[16], a = s[0], b = s[1], c = s[2], d = s[3];

    for (int i = 0; i < 16; i++)
        m[i] = md5_get32(block + 4 * i);
    for (int i = 0; i < 64; i++) {
        uint32_t f;
        int g;

        if (i < 16) {
            f = (b & c) | (~b & d);
            g = i;
        } else if (i < 32) {
            f = (d & b) | (~d & c);
            g = (5 * i + 1) % 16;
        } else if (i < 48) {
            f = b ^ c ^ d;
            g = (3 * i + 5) % 16;
        } else {
            f = c ^ (b | ~d);
            g = (7 * i) % 16;
        }
        f += a + md5_k[i] + m[g];
        a = d;
        d = c;
        c = b;
        b += (f << md5_r[i]) | (f >> (32 - md5_r[i]));
    }
    s[0] += a;
    s[1] += b;
    s[2] += c;
    s[3] += d;
    OPENSSL_cleanse(m, sizeof(m));
}

static void
md5_init(MD5 *ctx)
{
    memset(ctx, 0, sizeof(*ctx));
    ctx->s[0] = 0x67452301;
    ctx->s[1] = 0xefcdab89;
    ctx->s[2] = 0x98badcfe;
    ctx->s[3] = 0x10325476;
}

static void
md5_update(MD5 *ctx, const unsigned char *p, size_t len)
{
    ctx->len += len;
    while (len > 0) {
        size_t n = 64 - ctx->used;

        if (n > len)
            n = len;
        memcpy(ctx->buf + ctx->used, p, n);
        ctx->used += n;
        p += n;
        len -= n;
        if (ctx->used == 64) {
            md5_block(ctx->s, ctx->buf);
            ctx->used = 0;
        }
    }
}

static void
md5_final(MD5 *ctx, unsigned char digest[16])
{
    static const unsigned char pad[64] = { 0x80 };
    unsigned char lenbuf[8];
    uint64_t bits = ctx->len * 8;

    for (int i = 0; i < 8; i++)
        lenbuf[i] = (unsigned char) (bits >> (8 * i));
    md5_update(ctx, pad, ctx->used < 56 ? 56 - ctx->used : 120 - ctx->used);
    md5_update(ctx, lenbuf, 8);
    for (int i = 0; i < 4; i++)
        md5_put32(digest + 4 * i, ctx->s[i]);
    OPENSSL_cleanse(ctx, sizeof(*ctx));
}

/*
 * HMAC-MD5 key schedule (RFC 2104 section 4), Dovecot's byte layout.
 */
void
sasl_cram_context(const char *password, unsigned char ctx_r[SASL_CRAM_CONTEXTLEN])
{
    unsigned char key[64], ipad[64], opad[64];
    size_t len = strlen(password);
    MD5 ictx, octx;

    memset(key, 0, sizeof(key));
    if (len > sizeof(key)) {
        /* RFC 2104: a key longer than a block is hashed first. */
        MD5 kctx;

        md5_init(&kctx);
        md5_update(&kctx, (const unsigned char *) password, len);
        md5_final(&kctx, key);
    } else {
        memcpy(key, password, len);
    }
    for (size_t i = 0; i < 64; i++) {
        ipad[i] = key[i] ^ 0x36;
        opad[i] = key[i] ^ 0x5c;
    }
    md5_init(&ictx);
    md5_update(&ictx, ipad, 64);
    md5_init(&octx);
    md5_update(&octx, opad, 64);
    for (int i = 0; i < 4; i++) {
        md5_put32(ctx_r + 4 * i, octx.s[i]);
        md5_put32(ctx_r + 16 + 4 * i, ictx.s[i]);
    }
    OPENSSL_cleanse(key, sizeof(key));
    OPENSSL_cleanse(ipad, sizeof(ipad));
    OPENSSL_cleanse(opad, sizeof(opad));
    OPENSSL_cleanse(&ictx, sizeof(ictx));
    OPENSSL_cleanse(&octx, sizeof(octx));
}

/* An MD5 context that has already consumed one 64-byte block. */
static void
md5_resume(MD5 *ctx, const unsigned char state[16])
{
    md5_init(ctx);
    for (int i = 0; i < 4; i++)
        ctx->s[i] = md5_get32(state + 4 * i);
    ctx->len = 64;
}

void
sasl_cram_digest(const unsigned char ctx[SASL_CRAM_CONTEXTLEN],
                 const unsigned char *challenge, size_t len,
                 unsigned char digest_r[16])
{
    unsigned char inner[16];
    MD5 m;

    md5_resume(&m, ctx + 16);
    md5_update(&m, challenge, len);
    md5_final(&m, inner);
    md5_resume(&m, ctx);
    md5_update(&m, inner, sizeof(inner));
    md5_final(&m, digest_r);
    OPENSSL_cleanse(inner, sizeof(inner));
}

/*
 * Server.
 */
typedef struct cram_server {
    char *challenge;
} CRAM_SERVER;

static int
cram_server_step(SASL_SERVER *s, const SASL_BUF *in, SASL_BUF *out)
{
    CRAM_SERVER *st = s->state;
    unsigned char got[16], want[16];
    SASL_SECRET secret;
    const char *sp;
    char *user;
    int status;

    if (st == NULL) {
        unsigned char rnd[8];
        uint64_t r = 0;

        /* RFC 2195 has no initial response. */
        if (in != NULL) {
            sasl_server_set_reason(s, "unexpected initial response");
            return SASL_BADPROT;
        }
        st = s->state = x_calloc(1, sizeof(*st));
        if (s->cfg.test_nonce) {
            st->challenge = x_strdup(s->cfg.test_nonce);
        } else {
            if (random_bytes(rnd, sizeof(rnd)) < 0) {
                sasl_server_set_reason(s, "no random bytes for the challenge");
                return SASL_TEMPFAIL;
            }
            for (size_t i = 0; i < sizeof(rnd); i++)
                r = r << 8 | rnd[i];
            st->challenge = x_asprintf("<%llu.%lld@%s>", (unsigned long long) r,
                                       (long long) time(NULL), s->cfg.hostname);
        }
        sasl_buf_set(out, st->challenge, strlen(st->challenge));
        return SASL_CONTINUE;
    }

    /* "user SP 32 hex digits"; the name may itself hold spaces. */
    if (in->len < 34 || memchr(in->data, 0, in->len) != NULL
        || (sp = strrchr((const char *) in->data, ' ')) == NULL
        || sp == (const char *) in->data || strlen(sp + 1) != 32) {
        sasl_server_set_reason(s, "malformed CRAM-MD5 response");
        return SASL_BADPROT;
    }
    for (int i = 0; i < 16; i++) {
        int hi = -1, lo = -1;

        for (int k = 0; k < 2; k++) {
            int ch = (unsigned char) sp[1 + 2 * i + k], v;

            v = (ch >= '0' && ch <= '9') ? ch - '0'
                : (ch >= 'a' && ch <= 'f') ? ch - 'a' + 10
                : (ch >= 'A' && ch <= 'F') ? ch - 'A' + 10 : -1;
            if (k == 0)
                hi = v;
            else
                lo = v;
        }
        if (hi < 0 || lo < 0) {
            sasl_server_set_reason(s, "malformed CRAM-MD5 digest");
            return SASL_BADPROT;
        }
        got[i] = (unsigned char) (hi << 4 | lo);
    }
    user = x_strndup((const char *) in->data, (size_t) (sp - (const char *) in->data));
    sasl_server_set_user(s, user);
    status = sasl_server_secret(s, user, &secret);
    free(user);
    if (status != SASL_OK)
        return status;
    switch (secret.scheme) {
    case SASL_SCHEME_PLAIN:
        sasl_cram_context(secret.plain, secret.cram);
        break;
    case SASL_SCHEME_CRAM_MD5:
        break;
    default:
        sasl_server_reason_scheme(s, secret.scheme);
        sasl_secret_wipe(&secret);
        return SASL_FAIL;
    }
    sasl_cram_digest(secret.cram, (const unsigned char *) st->challenge,
                     strlen(st->challenge), want);
    sasl_secret_wipe(&secret);
    status = CRYPTO_memcmp(got, want, sizeof(want)) == 0 ? SASL_OK : SASL_FAIL;
    OPENSSL_cleanse(want, sizeof(want));
    if (status != SASL_OK)
        sasl_server_set_reason(s, "wrong password");
    return status;
}

static void
cram_server_free(SASL_SERVER *s)
{
    CRAM_SERVER *st = s->state;

    if (st) {
        free(st->challenge);
        free(st);
        s->state = NULL;
    }
}

/*
 * Client.
 */
static int
cram_client_step(SASL_CLIENT *c, const SASL_BUF *in, SASL_BUF *out)
{
    unsigned char ctx[SASL_CRAM_CONTEXTLEN], digest[16];
    static const char digits[] = "0123456789abcdef";
    char *resp;
    size_t ulen;

    if (in == NULL)
        return SASL_CONTINUE;           /* no initial response */
    if (c->steps != 2 || in->len == 0)
        return SASL_BADPROT;
    sasl_cram_context(c->password, ctx);
    sasl_cram_digest(ctx, in->data, in->len, digest);
    ulen = strlen(c->user);
    resp = x_malloc(ulen + 1 + 32 + 1);
    memcpy(resp, c->user, ulen);
    resp[ulen] = ' ';
    for (int i = 0; i < 16; i++) {
        resp[ulen + 1 + 2 * i] = digits[digest[i] >> 4];
        resp[ulen + 2 + 2 * i] = digits[digest[i] & 15];
    }
    resp[ulen + 33] = 0;
    out->data = (unsigned char *) resp;
    out->len = ulen + 33;
    OPENSSL_cleanse(ctx, sizeof(ctx));
    OPENSSL_cleanse(digest, sizeof(digest));
    return SASL_CONTINUE;
}

const SASL_MECH sasl_mech_cram_md5 = {
    .name = "CRAM-MD5",
    .flags = 0,
    .server_step = cram_server_step,
    .server_free = cram_server_free,
    .client_step = cram_client_step,
};
