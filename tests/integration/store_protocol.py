#!/usr/bin/python3
"""LMTP conversations with odmr-store over a pipe, and checks of what the
hold queue holds afterwards, byte for byte.

Usage: store_protocol.py BUILD_DIR
Runs odmr-store as user odmr (setpriv) on its own private queue and domain
map under a temporary directory. Prints "ok NAME" / "fail NAME: reason"
lines; exit status 1 when anything failed.
"""
import glob
import os
import pwd
import shutil
import subprocess
import sys
import tempfile
import time

BUILD = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build")
STORE = os.path.join(BUILD, "bin", "odmr-store")
QTOOL = os.path.join(BUILD, "bin", "odmr-queue")
USER = "odmr"

results = []


def report(name, ok, why=""):
    results.append(ok)
    print(("ok %s" % name) if ok else ("fail %s: %s" % (name, why)), flush=True)


class Env:
    def __init__(self, extra_cf=""):
        self.dir = tempfile.mkdtemp(prefix="odmr-store-test.")
        os.chmod(self.dir, 0o755)
        pw = pwd.getpwnam(USER)
        self.etc = os.path.join(self.dir, "etc")
        self.queue = os.path.join(self.dir, "queue")
        self.log = os.path.join(self.dir, "odmr.log")
        os.mkdir(self.etc, 0o755)
        os.mkdir(self.queue, 0o700)
        os.chown(self.queue, pw.pw_uid, pw.pw_gid)
        open(self.log, "w").close()
        os.chown(self.log, pw.pw_uid, pw.pw_gid)
        with open(os.path.join(self.etc, "odmr_domains"), "w") as f:
            f.write("example.org cust1\nexample.com cust2\n")
        subprocess.run(["postmap", "hash:" + os.path.join(self.etc, "odmr_domains")],
                       check=True)
        with open(os.path.join(self.etc, "odmr.cf"), "w") as f:
            f.write("queue_directory = %s\n" % self.queue)
            f.write("domain_maps = hash:%s/odmr_domains\n" % self.etc)
            f.write("log_file = %s\n" % self.log)
            f.write("myhostname = store.test\n")
            f.write("command_timeout = 20s\n")
            f.write(extra_cf)

    def cleanup(self):
        shutil.rmtree(self.dir, ignore_errors=True)

    def start(self):
        return Conn(self)

    def files(self):
        return sorted(glob.glob(os.path.join(self.queue, "msg", "*", "*")))

    def incoming(self):
        return sorted(glob.glob(os.path.join(self.queue, "incoming", "*")))

    def queue_tool(self, *args):
        return subprocess.run(["setpriv", "--reuid", USER, "--regid", USER, "--clear-groups",
                               QTOOL, "-c", self.etc] + list(args),
                              capture_output=True, text=True, timeout=60)


class Conn:
    def __init__(self, env):
        wrap = []
        vg = os.environ.get("VALGRIND_LOG_DIR")
        if vg:
            # Every run of odmr-store under valgrind: any error or definite
            # leak makes its exit status 99, which the tests see.
            wrap = ["valgrind", "--quiet", "--error-exitcode=99", "--leak-check=full",
                    "--errors-for-leak-kinds=definite", "--show-leak-kinds=definite",
                    "--log-file=%s/vg.%%p" % vg]
        self.p = subprocess.Popen(["setpriv", "--reuid", USER, "--regid", USER,
                                   "--clear-groups"] + wrap + [STORE, "-c", env.etc],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.buf = b""

    def send(self, data):
        self.p.stdin.write(data)
        self.p.stdin.flush()

    def line(self):
        while b"\n" not in self.buf:
            chunk = os.read(self.p.stdout.fileno(), 65536)
            if not chunk:
                raise EOFError("odmr-store closed the connection")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return line.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        lines = [self.line()]
        while len(lines[-1]) > 3 and lines[-1][3] == "-":
            lines.append(self.line())
        return lines

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def close(self):
        try:
            self.p.stdin.close()
        except BrokenPipeError:
            pass
        try:
            rc = self.p.wait(timeout=60)
            if rc == 99:
                report("valgrind-clean", False, "odmr-store exited 99 (valgrind errors)")
            return rc
        except subprocess.TimeoutExpired:
            self.p.kill()
            return -1


def code(reply):
    return int(reply[-1][:3])


def expect(name, reply, want):
    got = code(reply)
    if got != want:
        report(name, False, "expected %d, got %r" % (want, reply))
        return False
    return True


def parse_file(path):
    data = open(path, "rb").read()
    head, _, _ = data.partition(b"\n\n")
    fields = {}
    rcpts = []
    for line in head.split(b"\n")[1:]:
        k, _, v = line.partition(b" ")
        if k == b"rcpt":
            rcpts.append(v.decode())
        else:
            fields[k.decode()] = v.decode()
    off, length = (int(x) for x in fields["content"].split())
    return fields, rcpts, data[off:off + length], data


def held_id(reply):
    return reply[-1].split()[-1]


def greet(c):
    r = c.reply()
    if code(r) != 220:
        raise AssertionError("greeting %r" % r)
    return c.cmd("LHLO client.test")


def test_lhlo(env):
    c = env.start()
    r = greet(c)
    words = {l[4:].split()[0] for l in r}
    want = {"PIPELINING", "ENHANCEDSTATUSCODES", "8BITMIME", "SIZE", "DSN", "SMTPUTF8"}
    report("lhlo-extensions", code(r) == 250 and want <= words, repr(r))
    expect("ehlo-refused", c.cmd("EHLO x"), 500) and report("ehlo-refused", True)
    c.cmd("QUIT")
    c.close()


def test_store_exact(env):
    """Envelope and content stored byte for byte, one reply per good rcpt."""
    c = env.start()
    greet(c)
    content = (b"From: a@sender.test\r\nSubject: t\xc3\xa9st\r\n\r\n"
               b"..leading dot line\r\nbody \xff 8bit\r\n.\r\n")
    c.send(b"MAIL FROM:<a@sender.test> SIZE=100 BODY=8BITMIME SMTPUTF8 RET=HDRS ENVID=QQ+2B1\r\n")
    r1 = c.reply()
    c.send(b"RCPT TO:<u1@Example.ORG> NOTIFY=SUCCESS,FAILURE ORCPT=rfc822;u1+40example.org\r\n")
    r2 = c.reply()
    c.send(b"RCPT TO:<nobody@not-held.test>\r\n")
    r3 = c.reply()
    c.send(b"RCPT TO:<u2@example.com>\r\n")
    r4 = c.reply()
    c.send(b"DATA\r\n")
    r5 = c.reply()
    c.send(content)
    finals = [c.reply(), c.reply()]
    c.cmd("QUIT")
    c.close()
    ok = [code(x) for x in (r1, r2, r3, r4, r5)] == [250, 250, 550, 250, 354]
    ok = ok and all(code(f) == 250 for f in finals) and held_id(finals[0]) == held_id(finals[1])
    if not ok:
        report("store-exact", False, repr((r1, r2, r3, r4, r5, finals)))
        return
    qid = held_id(finals[0])
    path = [p for p in env.files() if os.path.basename(p) == qid]
    if len(path) != 1:
        report("store-exact", False, "no file for %s in %r" % (qid, env.files()))
        return
    fields, rcpts, body, _ = parse_file(path[0])
    want_body = content  # wire form, dot-stuffing kept, ends with .CRLF
    checks = [
        ("sender", fields.get("sender") == "a@sender.test"),
        ("envid", fields.get("envid") == "QQ+2B1"),
        ("ret", fields.get("ret") == "HDRS"),
        ("body", fields.get("body") == "8BITMIME"),
        ("smtputf8", fields.get("smtputf8") == "1"),
        ("rcpt1", rcpts[0] == "Q SUCCESS,FAILURE rfc822;u1+40example.org u1@Example.ORG"),
        ("rcpt2", rcpts[1] == "Q - - u2@example.com"),
        ("nrcpt", len(rcpts) == 2),
        ("content", body == want_body),
    ]
    bad = [n for n, good in checks if not good]
    report("store-exact", not bad, "mismatch in %s: %r %r %r" % (bad, fields, rcpts, body))
    if os.path.exists(QTOOL):
        for dom in ("example.org", "example.com"):
            out = env.queue_tool("list", dom)
            report("indexed-" + dom, out.returncode == 0 and qid in out.stdout,
                   out.stdout + out.stderr)


def test_pipelined(env):
    c = env.start()
    greet(c)
    n_before = len(env.files())
    c.send(b"MAIL FROM:<>\r\nRCPT TO:<x@example.org>\r\nRCPT TO:<y@example.org>\r\nDATA\r\n")
    codes = [code(c.reply()) for _ in range(4)]
    c.send(b"Subject: pipelined\r\n\r\nhello\r\n.\r\nMAIL FROM:<b@c.test>\r\n"
           b"RCPT TO:<z@example.com>\r\nDATA\r\n")
    codes += [code(c.reply()) for _ in range(5)]
    c.send(b"second\r\n.\r\nQUIT\r\n")
    codes += [code(c.reply()) for _ in range(2)]
    c.close()
    report("pipelined", codes == [250, 250, 250, 354, 250, 250, 250, 250, 354, 250, 221]
           and len(env.files()) == n_before + 2, repr(codes))


def test_bad_input(env):
    c = env.start()
    greet(c)
    r = c.cmd("X" * (100 * 1024))
    ok = code(r) == 500 and "too long" in r[-1]
    report("long-line", ok and code(c.cmd("NOOP")) == 250, repr(r))
    c.send(b"NO\x00OP\r\n")
    r = c.reply()
    report("nul-in-command", code(r) == 500 and code(c.cmd("NOOP")) == 250, repr(r))
    c.send(b"NOOP\n")
    r = c.reply()
    report("bare-lf-command", code(r) == 250, repr(r))
    cases = [
        ("size-not-number", "MAIL FROM:<a@b.test> SIZE=abc", 501),
        ("size-too-big", "MAIL FROM:<a@b.test> SIZE=999999999999", 552),
        ("body-binarymime", "MAIL FROM:<a@b.test> BODY=BINARYMIME", 501),
        ("unknown-mail-param", "MAIL FROM:<a@b.test> FOO=bar", 555),
        ("envid-bad-xtext", "MAIL FROM:<a@b.test> ENVID=a+zz", 501),
        ("mail-no-brackets", "MAIL FROM:a@b.test", 501),
        ("rcpt-before-mail", "RCPT TO:<x@example.org>", 503),
        ("data-before-mail", "DATA", 503),
    ]
    for name, line, want in cases:
        if expect(name, c.cmd(line), want):
            report(name, True)
    expect("mail-ok", c.cmd("MAIL FROM:<a@b.test>"), 250)
    rcases = [
        ("notify-never-plus", "RCPT TO:<x@example.org> NOTIFY=NEVER,SUCCESS", 501),
        ("notify-unknown", "RCPT TO:<x@example.org> NOTIFY=SOMETIMES", 501),
        ("orcpt-no-type", "RCPT TO:<x@example.org> ORCPT=x@example.org", 501),
        ("unknown-rcpt-param", "RCPT TO:<x@example.org> FOO=1", 555),
        ("rcpt-no-domain", "RCPT TO:<postmaster>", 550),
        ("rcpt-not-held", "RCPT TO:<x@elsewhere.test>", 550),
        ("rcpt-bad-domain", "RCPT TO:<x@-bad-.test>", 550),
        ("nested-mail", "MAIL FROM:<a@b.test>", 503),
        ("data-without-rcpt", "DATA", 503),
    ]
    for name, line, want in rcases:
        if expect(name, c.cmd(line), want):
            report(name, True)
    c.cmd("QUIT")
    c.close()


def test_bare_lf_data(env):
    c = env.start()
    greet(c)
    c.cmd("MAIL FROM:<a@b.test>")
    c.cmd("RCPT TO:<lf@example.org>")
    c.cmd("DATA")
    # Bare LF lines are stored with CRLF; a bare-LF "." line is content,
    # not the end of the data (no smuggling), and is stored dot-stuffed.
    c.send(b"Subject: lf\n\nline1\n.\nline3\r\n.\r\n")
    r = c.reply()
    c.cmd("QUIT")
    c.close()
    if code(r) != 250:
        report("bare-lf-data", False, repr(r))
        return
    qid = held_id(r)
    path = [p for p in env.files() if os.path.basename(p) == qid][0]
    body = parse_file(path)[2]
    want = b"Subject: lf\r\n\r\nline1\r\n..\r\nline3\r\n.\r\n"
    report("bare-lf-data", body == want, repr(body))


def test_long_data_lines(env):
    c = env.start()
    greet(c)
    c.cmd("MAIL FROM:<a@b.test>")
    c.cmd("RCPT TO:<long@example.org>")
    c.cmd("DATA")
    long_line = b"x" * 50000
    c.send(b"Subject: long\r\n\r\n" + long_line + b"\r\n." + long_line + b"\r\n.\r\n")
    r = c.reply()
    c.cmd("QUIT")
    c.close()
    if code(r) != 250:
        report("long-data-lines", False, repr(r))
        return
    path = [p for p in env.files() if os.path.basename(p) == held_id(r)][0]
    body = parse_file(path)[2]
    want = b"Subject: long\r\n\r\n" + long_line + b"\r\n." + long_line + b"\r\n.\r\n"
    report("long-data-lines", body == want, "length %d vs %d" % (len(body), len(want)))


def test_nul_in_data(env):
    c = env.start()
    greet(c)
    c.cmd("MAIL FROM:<a@b.test>")
    c.cmd("RCPT TO:<nul@example.org>")
    c.cmd("DATA")
    c.send(b"Subject: nul\r\n\r\na\x00b\r\n.\r\n")
    r = c.reply()
    c.cmd("QUIT")
    c.close()
    ok = code(r) == 250
    if ok:
        path = [p for p in env.files() if os.path.basename(p) == held_id(r)][0]
        ok = parse_file(path)[2] == b"Subject: nul\r\n\r\na\x00b\r\n.\r\n"
    report("nul-in-data", ok, repr(r))


def test_oversize(env_small):
    env = env_small
    c = env.start()
    greet(c)
    before = env.files()
    c.cmd("MAIL FROM:<a@b.test>")
    c.cmd("RCPT TO:<big1@example.org>")
    c.cmd("RCPT TO:<big2@example.com>")
    c.cmd("DATA")
    c.send(b"Subject: big\r\n\r\n" + (b"y" * 70 + b"\r\n") * 100 + b".\r\n")
    r1, r2 = c.reply(), c.reply()
    alive = code(c.cmd("NOOP")) == 250
    c.cmd("QUIT")
    c.close()
    report("oversize-rejected", code(r1) == 552 and code(r2) == 552 and alive
           and env.files() == before and env.incoming() == [], repr((r1, r2)))


def test_recipient_limit(env_small):
    c = env_small.start()
    greet(c)
    c.cmd("MAIL FROM:<a@b.test>")
    codes = [code(c.cmd("RCPT TO:<r%d@example.org>" % i)) for i in range(4)]
    c.cmd("QUIT")
    c.close()
    report("recipient-limit", codes == [250, 250, 250, 452], repr(codes))


def test_drop_mid_data(env):
    before = env.files()
    c = env.start()
    greet(c)
    c.cmd("MAIL FROM:<a@b.test>")
    c.cmd("RCPT TO:<drop@example.org>")
    c.cmd("DATA")
    c.send(b"Subject: dropped\r\n\r\npartial content\r\n")
    rc = c.close()
    time.sleep(0.2)
    report("drop-mid-data", env.files() == before and env.incoming() == [] and rc == 0,
           "files %r incoming %r rc %r" % (env.files(), env.incoming(), rc))


def test_errors_limit(env):
    c = env.start()
    greet(c)
    last = None
    try:
        for _ in range(30):
            last = c.cmd("BOGUS")
            if code(last) == 421:
                break
    except EOFError:
        pass
    c.close()
    report("error-limit-421", last is not None and code(last) == 421, repr(last))


def main():
    if os.geteuid() != 0:
        print("fail store-protocol: must run as root (to switch to user odmr)")
        return 1
    env = Env()
    small = Env("message_size_limit = 2000\nrecipient_limit = 3\n")
    try:
        for t in (test_lhlo, test_store_exact, test_pipelined, test_bad_input,
                  test_bare_lf_data, test_long_data_lines, test_nul_in_data,
                  test_drop_mid_data, test_errors_limit):
            try:
                t(env)
            except Exception as e:  # a crash of odmr-store shows up here
                report(t.__name__, False, "exception %r" % (e,))
        for t in (test_oversize, test_recipient_limit):
            try:
                t(small)
            except Exception as e:
                report(t.__name__, False, "exception %r" % (e,))
    finally:
        if os.environ.get("KEEP_TEST_DIR"):
            print("kept %s %s" % (env.dir, small.dir))
        else:
            env.cleanup()
            small.cleanup()
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
