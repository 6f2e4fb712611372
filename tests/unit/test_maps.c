/*
 * test_maps.c - maps.c against the real postmap(1): tables are built with
 * /usr/sbin/postmap in a private temporary directory, so these tests check
 * that we read what Postfix writes, the way Postfix reads it.
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "maps.h"
#include "util.h"

/* config.c is not linked into this test: the two parameters maps.c reads. */
char *var_postmap_path = "/usr/sbin/postmap";
char *var_postfix_config_dir = "/etc/postfix";

#define POSTMAP "/usr/sbin/postmap"

static char tmpdir[PATH_MAX];

/* tpath("x") -> "<tmpdir>/x"; a few rotating buffers so two may be live. */
static const char *
tpath(const char *name)
{
    static char bufs[4][PATH_MAX];
    static int next;
    char *buf = bufs[next++ % 4];

    assert_int_equal(str_format(buf, PATH_MAX, "%s/%s", tmpdir, name), 0);
    return buf;
}

static void
write_file(const char *name, const char *content)
{
    char tmp[PATH_MAX];
    FILE *fp;

    /* Write then rename, so a postmap running in parallel never sees half a file. */
    assert_int_equal(str_format(tmp, sizeof(tmp), "%s.tmp%ld", tpath(name), (long) getpid()), 0);
    fp = fopen(tmp, "w");
    assert_non_null(fp);
    assert_int_equal(fputs(content, fp) >= 0, 1);
    assert_int_equal(fclose(fp), 0);
    /* Postfix's texthash reader waits while its file is younger than a second
     * or two (an editor may still be writing); an older mtime keeps the
     * tests fast. */
    {
        struct timespec times[2];

        times[0].tv_sec = times[1].tv_sec = time(NULL) - 60;
        times[0].tv_nsec = times[1].tv_nsec = 0;
        assert_int_equal(utimensat(AT_FDCWD, tmp, times, 0), 0);
    }
    assert_int_equal(rename(tmp, tpath(name)), 0);
}

/* Run postmap with up to two arguments; return its exit status. */
static int
run_postmap(const char *arg1, const char *arg2)
{
    pid_t pid = fork();
    int status;

    if (pid < 0)
        return -1;
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);

        (void) dup2(null, 2);
        if (arg2 != NULL)
            execl(POSTMAP, POSTMAP, arg1, arg2, (char *) NULL);
        else
            execl(POSTMAP, POSTMAP, arg1, (char *) NULL);
        _exit(127);
    }
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return -1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

/* Build TYPE:<tmpdir>/NAME from CONTENT with the real postmap. */
static void
make_map(const char *type, const char *name, const char *content)
{
    char spec[PATH_MAX + 16];

    write_file(name, content);
    assert_int_equal(str_format(spec, sizeof(spec), "%s:%s", type, tpath(name)), 0);
    assert_int_equal(run_postmap(spec, NULL), 0);
}

static char *
map_list(const char *fmt, ...) ODMR_PRINTF(1, 2);

static char *
map_list(const char *fmt, ...)
{
    static char buf[4 * PATH_MAX];
    va_list ap;
    int n;

    va_start(ap, fmt);
    n = vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    assert_true(n > 0 && (size_t) n < sizeof(buf));
    return buf;
}

static int
count_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    struct dirent *de;
    int n = 0;

    assert_non_null(d);
    while ((de = readdir(d)) != NULL)
        if (de->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* Look up and check the outcome; value_want NULL means "do not care". */
static void
expect_lookup(MAPS *maps, const char *key, int status_want, const char *value_want)
{
    char *value = (char *) 0x1, *error = (char *) 0x1;
    int status = maps_lookup(maps, key, &value, &error);

    if (status != status_want)
        fail_msg("lookup \"%s\" in %s: status %d, want %d (error: %s)", key,
                 maps_title(maps), status, status_want,
                 status == MAP_ERROR && error ? error : "-");
    if (status == MAP_FOUND) {
        assert_non_null(value);
        if (value_want != NULL)
            assert_string_equal(value, value_want);
        assert_null(error);
    } else if (status == MAP_NOTFOUND) {
        assert_null(value);
        assert_null(error);
    } else {
        assert_null(value);
        assert_non_null(error);
    }
    free(value);
    free(error);
}

/* Look up expecting MAP_ERROR; returns the error text (caller frees). */
static char *
lookup_error(MAPS *maps, const char *key)
{
    char *value = NULL, *error = NULL;
    int status = maps_lookup(maps, key, &value, &error);

    if (status != MAP_ERROR)
        fail_msg("lookup \"%s\" in %s: status %d, want MAP_ERROR", key,
                 maps_title(maps), status);
    assert_null(value);
    assert_non_null(error);
    return error;
}

static MAPS *
open_ok(const char *list)
{
    char *error = NULL;
    MAPS *maps = maps_open(list, &error);

    if (maps == NULL)
        fail_msg("maps_open(\"%s\"): %s", list, error ? error : "(null)");
    assert_null(error);
    return maps;
}

/*
 * maps_split and maps_list_contains.
 */

static void
join_token(const char *token, void *ctx)
{
    char *buf = ctx;
    size_t len = strlen(buf);

    assert_int_equal(str_format(buf + len, 256 - len, "%s%s", len ? "|" : "", token), 0);
}

static void
test_split(void **state)
{
    static const struct {
        const char *value;
        int count;
        const char *joined;
    } cases[] = {
        { "cust1", 1, "cust1" },
        { "cust1, cust7", 2, "cust1|cust7" },
        { "cust1,cust7", 2, "cust1|cust7" },
        { "  cust1 \t cust7 ,, cust9  ", 3, "cust1|cust7|cust9" },
        { "", 0, "" },
        { " , \t,", 0, "" },
        { "a\r\nb", 2, "a|b" },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        char buf[256] = "";

        assert_int_equal(maps_split(cases[i].value, join_token, buf), cases[i].count);
        assert_string_equal(buf, cases[i].joined);
        /* The count alone, without a callback. */
        assert_int_equal(maps_split(cases[i].value, NULL, NULL), cases[i].count);
    }
    assert_int_equal(maps_split(NULL, NULL, NULL), 0);
}

static void
test_list_contains(void **state)
{
    static const struct {
        const char *value;
        const char *name;
        int want;
    } cases[] = {
        { "cust1, cust7", "cust7", 1 },
        { "cust1, cust7", "CUST1", 1 },
        { "Cust1 cust7", "cust1", 1 },
        { "cust1, cust7", "cust", 0 },
        { "cust1, cust7", "cust17", 0 },
        { "cust1,cust7", "cust1,cust7", 0 },
        { "", "cust1", 0 },
        { "cust1", "", 0 },
        { NULL, "cust1", 0 },
        { "cust1", NULL, 0 },
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++)
        if (maps_list_contains(cases[i].value, cases[i].name) != cases[i].want)
            fail_msg("maps_list_contains(\"%s\", \"%s\") != %d",
                     cases[i].value ? cases[i].value : "NULL",
                     cases[i].name ? cases[i].name : "NULL", cases[i].want);
}

/*
 * maps_open syntax.
 */

static void
test_open_syntax(void **state)
{
    static const struct {
        const char *list;
        const char *error_has; /* NULL: must open */
    } cases[] = {
        { "foo", "\"foo\"" },
        { "hash:/etc/postfix/x, odmr_domains", "\"odmr_domains\"" },
        { "hash:", "missing table name" },
        { ":/etc/x", "missing table type" },
        { "/etc/x:y", "bad table type" },
        { "inline:{a=b, c=d", "missing '}'" },
        { "", NULL },
        { " , \t ", NULL },
        { "texthash:/nonexistent/a, inline:{ a=b, { c = d e } }", NULL },
        { "hash:/nonexistent/dir/map", NULL }, /* missing file: not an open error */
    };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(cases); i++) {
        char *error = NULL;
        MAPS *maps = maps_open(cases[i].list, &error);

        if (cases[i].error_has == NULL) {
            if (maps == NULL)
                fail_msg("maps_open(\"%s\"): %s", cases[i].list, error);
            assert_null(error);
            assert_string_equal(maps_title(maps), cases[i].list);
            maps_close(&maps);
            assert_null(maps);
        } else {
            assert_null(maps);
            assert_non_null(error);
            if (strstr(error, cases[i].error_has) == NULL)
                fail_msg("maps_open(\"%s\"): error \"%s\" lacks \"%s\"", cases[i].list,
                         error, cases[i].error_has);
            free(error);
        }
    }
}

static void
test_empty_list(void **state)
{
    MAPS *maps = open_ok("");

    expect_lookup(maps, "example.org", MAP_NOTFOUND, NULL);
    maps_close(&maps);
    maps = open_ok(NULL);
    assert_string_equal(maps_title(maps), "");
    expect_lookup(maps, "example.org", MAP_NOTFOUND, NULL);
    maps_close(&maps);
    maps_close(&maps); /* already NULL: harmless */
}

/*
 * Native hash: and btree:.
 */

static const char basic_source[] =
    "# customer domains\n"
    "Example.ORG   cust1, cust7\n"
    "example.com\tcust2\n"
    "spaced        value with  inner   spaces\n"
    "user@Example.NET  cust3\n";

static const struct {
    const char *key;
    int status;
    const char *value;
} basic_cases[] = {
    { "example.org", MAP_FOUND, "cust1, cust7" },
    { "Example.ORG", MAP_FOUND, "cust1, cust7" },
    { "EXAMPLE.COM", MAP_FOUND, "cust2" },
    { "spaced", MAP_FOUND, "value with  inner   spaces" },
    { "user@example.net", MAP_FOUND, "cust3" },
    { "nope.example", MAP_NOTFOUND, NULL },
    { "example", MAP_NOTFOUND, NULL },
    { "", MAP_NOTFOUND, NULL },
    { "# customer domains", MAP_NOTFOUND, NULL },
};

static void
check_basic(const char *type, const char *name, const char *postmap_flag)
{
    MAPS *maps;
    char key[64];

    write_file(name, basic_source);
    if (postmap_flag != NULL)
        assert_int_equal(run_postmap(postmap_flag, map_list("%s:%s", type, tpath(name))), 0);
    else
        assert_int_equal(run_postmap(map_list("%s:%s", type, tpath(name)), NULL), 0);
    maps = open_ok(map_list("%s:%s", type, tpath(name)));
    for (size_t i = 0; i < ODMR_ARRAY_LEN(basic_cases); i++)
        expect_lookup(maps, basic_cases[i].key, basic_cases[i].status, basic_cases[i].value);

    /* The caller's key is left as it was. */
    assert_int_equal(str_format(key, sizeof(key), "%s", "EXAMPLE.Org"), 0);
    expect_lookup(maps, key, MAP_FOUND, "cust1, cust7");
    assert_string_equal(key, "EXAMPLE.Org");
    maps_close(&maps);
}

static void
test_hash(void **state)
{
    check_basic("hash", "h1", NULL);
}

static void
test_btree(void **state)
{
    check_basic("btree", "b1", NULL);
}

/* postmap -n stores keys and values without the NUL: the second try finds them. */
static void
test_no_trailing_nul(void **state)
{
    check_basic("hash", "h1n", "-n");
    check_basic("btree", "b1n", "-n");
}

/* A btree file read as hash: is an error whose text is ours, and libdb
 * writes nothing to fd 2 (a client socket under spawn(8)). */
static void
test_wrong_db_type(void **state)
{
    char errfile[PATH_MAX], buf[64];
    int saved, fd, n;
    MAPS *maps;
    char *error;

    make_map("btree", "wrongtype", "a b\n");
    assert_int_equal(str_format(errfile, sizeof(errfile), "%s", tpath("stderr.out")), 0);
    fd = open(errfile, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    assert_true(fd >= 0);
    saved = dup(2);
    assert_true(saved >= 0);
    assert_int_equal(dup2(fd, 2), 2);
    close(fd);

    maps = open_ok(map_list("hash:%s", tpath("wrongtype")));
    error = lookup_error(maps, "a");
    maps_close(&maps);

    assert_int_equal(dup2(saved, 2), 2);
    close(saved);
    assert_non_null(strstr(error, "wrongtype.db"));
    free(error);
    fd = open(errfile, O_RDONLY);
    assert_true(fd >= 0);
    n = (int) read(fd, buf, sizeof(buf));
    close(fd);
    assert_int_equal(n, 0);
}

static void
test_list_order(void **state)
{
    MAPS *maps;

    make_map("hash", "first", "a.example first-a\nboth.example first-both\n");
    make_map("btree", "second", "b.example second-b\nboth.example second-both\n");
    maps = open_ok(map_list("hash:%s,btree:%s", tpath("first"), tpath("second")));
    expect_lookup(maps, "a.example", MAP_FOUND, "first-a");
    expect_lookup(maps, "B.example", MAP_FOUND, "second-b");
    expect_lookup(maps, "both.example", MAP_FOUND, "first-both");
    expect_lookup(maps, "none.example", MAP_NOTFOUND, NULL);
    maps_close(&maps);

    /* Whitespace only, and the other order. */
    maps = open_ok(map_list("  btree:%s \t hash:%s  ", tpath("second"), tpath("first")));
    expect_lookup(maps, "both.example", MAP_FOUND, "second-both");
    expect_lookup(maps, "a.example", MAP_FOUND, "first-a");
    maps_close(&maps);
}

static void
test_missing_then_created(void **state)
{
    MAPS *maps;
    char *error;
    int fds;

    maps = open_ok(map_list("hash:%s", tpath("later")));
    fds = count_fds();
    error = lookup_error(maps, "example.org");
    assert_non_null(strstr(error, tpath("later.db")));
    free(error);
    /* Still missing: still an error, and the failed opens leak nothing. */
    error = lookup_error(maps, "example.org");
    free(error);
    assert_int_equal(count_fds(), fds);

    make_map("hash", "later", "example.org cust1\n");
    expect_lookup(maps, "example.org", MAP_FOUND, "cust1");

    /* Removed under us: an error again, then back when rebuilt. */
    assert_int_equal(unlink(tpath("later.db")), 0);
    error = lookup_error(maps, "example.org");
    assert_non_null(strstr(error, "later.db"));
    free(error);
    make_map("hash", "later", "example.org cust9\n");
    expect_lookup(maps, "example.org", MAP_FOUND, "cust9");
    maps_close(&maps);
}

/* A missing native table in front stops the search: an error is never
 * turned into a later table's answer (or into "not found"). */
static void
test_error_stops_search(void **state)
{
    MAPS *maps;
    char *error;

    make_map("hash", "behind", "example.org cust1\n");
    maps = open_ok(map_list("hash:%s hash:%s", tpath("absent"), tpath("behind")));
    error = lookup_error(maps, "example.org");
    assert_non_null(strstr(error, "absent.db"));
    free(error);
    maps_close(&maps);
}

static void
test_rebuild_while_open(void **state)
{
    const char *type[] = { "hash", "btree" };

    for (size_t i = 0; i < ODMR_ARRAY_LEN(type); i++) {
        MAPS *maps;
        int fds;

        make_map(type[i], "rebuilt", "example.org old-value\nstay.example same\n");
        maps = open_ok(map_list("%s:%s", type[i], tpath("rebuilt")));
        expect_lookup(maps, "example.org", MAP_FOUND, "old-value");
        fds = count_fds();

        /* In place, same size: only the timestamps tell the rebuild apart. */
        make_map(type[i], "rebuilt", "example.org new-value\nstay.example same\n");
        expect_lookup(maps, "example.org", MAP_FOUND, "new-value");
        expect_lookup(maps, "stay.example", MAP_FOUND, "same");

        /* A key removed by the rebuild, another added. */
        make_map(type[i], "rebuilt", "added.example yes\nstay.example same\n");
        expect_lookup(maps, "example.org", MAP_NOTFOUND, NULL);
        expect_lookup(maps, "added.example", MAP_FOUND, "yes");

        /* Replaced with rename(2): a new inode. */
        make_map(type[i], "other", "example.org renamed-in\n");
        assert_int_equal(rename(tpath("other.db"), tpath("rebuilt.db")), 0);
        expect_lookup(maps, "example.org", MAP_FOUND, "renamed-in");
        expect_lookup(maps, "stay.example", MAP_NOTFOUND, NULL);

        /* Reopening does not leak descriptors. */
        assert_int_equal(count_fds(), fds);
        maps_close(&maps);
    }
}

/*
 * postmap rewrites the file in place under LOCK_EX while we look up under
 * LOCK_SH: every lookup sees either the old or the new table, never a
 * half-written one.
 */
static void
test_concurrent_rebuild(void **state)
{
    static const char old_src[] = "example.org old-value\n";
    static const char new_src[] = "example.org new-value-that-is-longer\n";
    int seen_old = 0, seen_new = 0, pipefd[2];
    char spec[PATH_MAX + 8];
    MAPS *maps;
    pid_t pid;
    int status;
    char go;

    make_map("hash", "busy", old_src);
    assert_int_equal(str_format(spec, sizeof(spec), "hash:%s", tpath("busy")), 0);
    assert_int_equal(pipe(pipefd), 0);
    pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        pid_t parent = getppid();
        int n;

        close(pipefd[0]);
        for (n = 0; getppid() == parent; n++) {
            write_file("busy", n % 2 ? old_src : new_src);
            if (run_postmap(spec, NULL) != 0)
                _exit(1);
            /* A failed write shows as the parent's failed read. */
            if (n == 1 && write(pipefd[1], "g", 1) != 1)
                _exit(1);
        }
        _exit(0);
    }
    close(pipefd[1]);
    /* Start once the child has rebuilt the table twice. */
    assert_int_equal(read(pipefd[0], &go, 1), 1);
    close(pipefd[0]);

    maps = open_ok(spec);
    for (int i = 0; i < 1000; i++) {
        char *value = NULL, *error = NULL;
        struct timespec ts = { 0, 300000 };
        int st = maps_lookup(maps, "example.org", &value, &error);

        if (st != MAP_FOUND) {
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            fail_msg("lookup %d during rebuild: status %d (%s)", i, st, error ? error : "-");
        }
        if (strcmp(value, "old-value") == 0)
            seen_old++;
        else if (strcmp(value, "new-value-that-is-longer") == 0)
            seen_new++;
        else
            fail_msg("lookup %d during rebuild: unexpected value \"%s\"", i, value);
        free(value);
        /* Spread the lookups over many rebuilds. */
        nanosleep(&ts, NULL);
    }
    maps_close(&maps);
    kill(pid, SIGTERM);
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_int_equal(seen_old + seen_new, 1000);
    /* Both versions were seen, so rebuilds really happened during the loop. */
    assert_true(seen_old > 0);
    assert_true(seen_new > 0);
}

/*
 * Other types through postmap -q.
 */

static void
test_texthash(void **state)
{
    MAPS *maps;

    write_file("text1", basic_source);
    maps = open_ok(map_list("texthash:%s", tpath("text1")));
    for (size_t i = 0; i < ODMR_ARRAY_LEN(basic_cases); i++)
        expect_lookup(maps, basic_cases[i].key, basic_cases[i].status, basic_cases[i].value);
    maps_close(&maps);
}

/* cdb: is a plugin (Debian package postfix-cdb); skipped when absent. */
static void
test_cdb(void **state)
{
    MAPS *maps;

    if (access("/usr/lib/postfix/postfix-cdb.so", F_OK) != 0
        && access("/usr/lib/postfix/postfix-cdb.so.1.1", F_OK) != 0)
        skip();
    make_map("cdb", "cdb1", basic_source);
    maps = open_ok(map_list("cdb:%s", tpath("cdb1")));
    expect_lookup(maps, "Example.ORG", MAP_FOUND, "cust1, cust7");
    expect_lookup(maps, "spaced", MAP_FOUND, "value with  inner   spaces");
    expect_lookup(maps, "nope.example", MAP_NOTFOUND, NULL);
    maps_close(&maps);
}

/* Native and postmap tables in one list, searched in order. */
static void
test_mixed_list(void **state)
{
    MAPS *maps;

    make_map("hash", "mix1", "a.example from-hash\n");
    write_file("mix2", "a.example from-text\nb.example from-text\n-q from-dash\n");
    /* inline: braces nest and hold commas and spaces of their own. */
    maps = open_ok(map_list("hash:%s, texthash:%s, inline:{ c.example=from-inline,"
                            " { d.example = x y } }", tpath("mix1"), tpath("mix2")));
    expect_lookup(maps, "a.example", MAP_FOUND, "from-hash");
    expect_lookup(maps, "b.example", MAP_FOUND, "from-text");
    expect_lookup(maps, "C.example", MAP_FOUND, "from-inline");
    expect_lookup(maps, "d.example", MAP_FOUND, "x y");
    /* A key that looks like an option is still the argument of -q. */
    expect_lookup(maps, "-Q", MAP_FOUND, "from-dash");
    expect_lookup(maps, "z.example", MAP_NOTFOUND, NULL);
    maps_close(&maps);
}

static void
test_postmap_errors(void **state)
{
    MAPS *maps;
    char *error;
    int fds;

    /* A missing texthash file: postmap exits 1 with a fatal error. */
    maps = open_ok("texthash:/nonexistent/odmr-test-map");
    fds = count_fds();
    error = lookup_error(maps, "example.org");
    assert_non_null(strstr(error, "/nonexistent/odmr-test-map"));
    assert_non_null(strstr(error, "No such file"));
    free(error);
    assert_int_equal(count_fds(), fds);
    maps_close(&maps);

    /* A type Postfix does not know. */
    maps = open_ok(map_list("nosuchtype:%s", tpath("text1")));
    error = lookup_error(maps, "example.org");
    assert_non_null(strstr(error, "nosuchtype"));
    free(error);
    maps_close(&maps);

    /* The error string is cleaned and bounded. */
    maps = open_ok(map_list("texthash:/nonexistent/%0200d", 7));
    error = lookup_error(maps, "example.org");
    assert_true(strlen(error) < 400);
    for (const char *p = error; *p; p++)
        assert_true(*p >= 0x20 && *p < 0x7f);
    free(error);
    maps_close(&maps);
}

/* Fake postmap programs for the cases the real one does not produce. */
static void
with_fake_postmap(const char *name, const char *script, const char *error_has, int status_want,
                  const char *value_want)
{
    char *saved = var_postmap_path;
    char path[PATH_MAX];
    MAPS *maps;

    write_file(name, script);
    assert_int_equal(str_format(path, sizeof(path), "%s", tpath(name)), 0);
    assert_int_equal(chmod(path, 0755), 0);
    var_postmap_path = path;
    maps = open_ok("texthash:/whatever");
    if (status_want == MAP_ERROR) {
        char *error = lookup_error(maps, "example.org");

        if (strstr(error, error_has) == NULL)
            fail_msg("fake %s: error \"%s\" lacks \"%s\"", name, error, error_has);
        free(error);
    } else {
        expect_lookup(maps, "example.org", status_want, value_want);
    }
    maps_close(&maps);
    var_postmap_path = saved;
}

static void
test_postmap_fakes(void **state)
{
    int64_t start;

    /* The arguments arrive as documented, without a shell; the key is folded. */
    with_fake_postmap("fake-args", "#!/bin/sh\necho \"$#|$1|$2|$3|$4|$5\"\n", NULL, MAP_FOUND,
                      "5|-c|/etc/postfix|-q|example.org|texthash:/whatever");
    /* Only PATH is passed on. */
    with_fake_postmap("fake-env", "#!/bin/sh\nenv | grep -v '^PWD=' | grep -v '^SHLVL=' "
                      "| grep -v '^_=' | sed 's/=.*//' | tr '\\n' ' '\n", NULL, MAP_FOUND,
                      "PATH ");
    with_fake_postmap("fake-found-warn", "#!/bin/sh\necho 'postmap: warning: x' >&2\n"
                      "printf 'v a l\\n'\n", NULL, MAP_FOUND, "v a l");
    with_fake_postmap("fake-empty", "#!/bin/sh\necho\n", NULL, MAP_FOUND, "");
    with_fake_postmap("fake-notfound", "#!/bin/sh\necho 'postmap: warning: y' >&2\nexit 1\n",
                      NULL, MAP_NOTFOUND, NULL);
    with_fake_postmap("fake-fatal", "#!/bin/sh\necho 'postmap: warning: first' >&2\n"
                      "echo 'postmap: fatal: table texthash:/whatever: query error' >&2\n"
                      "exit 1\n", "query error", MAP_ERROR, NULL);
    with_fake_postmap("fake-exit75", "#!/bin/sh\nprintf 'bad\\001thing\\n' >&2\nexit 75\n",
                      "bad?thing", MAP_ERROR, NULL);
    with_fake_postmap("fake-silent", "#!/bin/sh\nexit 3\n", "exit status 3", MAP_ERROR, NULL);
    with_fake_postmap("fake-signal", "#!/bin/sh\nkill -9 $$\n", "signal 9", MAP_ERROR, NULL);
    /* 64 KiB of value is fine, one byte more is not. */
    with_fake_postmap("fake-64k", "#!/bin/sh\nhead -c 65536 /dev/zero | tr '\\0' a\necho\n",
                      NULL, MAP_FOUND, NULL);
    with_fake_postmap("fake-huge", "#!/bin/sh\nhead -c 200000 /dev/zero | tr '\\0' a\n",
                      "longer than", MAP_ERROR, NULL);
    /* Lots of stderr must not block the child; the text is still used. */
    with_fake_postmap("fake-noisy", "#!/bin/sh\nhead -c 300000 /dev/zero | tr '\\0' w >&2\n"
                      "exit 2\n", "www", MAP_ERROR, NULL);

    /* A postmap that hangs is killed at the deadline. */
    maps_postmap_timeout = 1;
    start = now_ms();
    with_fake_postmap("fake-hang", "#!/bin/sh\nexec sleep 30\n", "did not finish", MAP_ERROR,
                      NULL);
    assert_true(now_ms() - start < 5000);
    maps_postmap_timeout = 10;

    /* A postmap_path that cannot be executed. */
    {
        char *saved = var_postmap_path, *error;
        MAPS *maps = open_ok("texthash:/whatever");

        var_postmap_path = "/nonexistent/postmap";
        error = lookup_error(maps, "example.org");
        assert_non_null(strstr(error, "/nonexistent/postmap"));
        free(error);
        var_postmap_path = saved;
        maps_close(&maps);
    }
}

/*
 * Fixture: one temporary directory for the whole run.
 */

static int
rm_one(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    return remove(path);
}

static int
setup_dir(void **state)
{
    const char *base = getenv("TMPDIR");

    if (str_format(tmpdir, sizeof(tmpdir), "%s/test_maps.XXXXXX", base && *base ? base : "/tmp") < 0)
        return -1;
    if (mkdtemp(tmpdir) == NULL)
        return -1;
    /* Like a daemon that ignores SIGPIPE: the postmap child must get the
     * default action back (maps.c resets it before exec). */
    signal(SIGPIPE, SIG_IGN);
    return 0;
}

static int
teardown_dir(void **state)
{
    return nftw(tmpdir, rm_one, 16, FTW_DEPTH | FTW_PHYS);
}

int
main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_split),
        cmocka_unit_test(test_list_contains),
        cmocka_unit_test(test_open_syntax),
        cmocka_unit_test(test_empty_list),
        cmocka_unit_test(test_hash),
        cmocka_unit_test(test_btree),
        cmocka_unit_test(test_no_trailing_nul),
        cmocka_unit_test(test_wrong_db_type),
        cmocka_unit_test(test_list_order),
        cmocka_unit_test(test_missing_then_created),
        cmocka_unit_test(test_error_stops_search),
        cmocka_unit_test(test_rebuild_while_open),
        cmocka_unit_test(test_concurrent_rebuild),
        cmocka_unit_test(test_texthash),
        cmocka_unit_test(test_cdb),
        cmocka_unit_test(test_mixed_list),
        cmocka_unit_test(test_postmap_errors),
        cmocka_unit_test(test_postmap_fakes),
    };

    if (access(POSTMAP, X_OK) != 0) {
        fprintf(stderr, "test_maps: %s not found: skipped\n", POSTMAP);
        return 0;
    }
    return cmocka_run_group_tests(tests, setup_dir, teardown_dir);
}
