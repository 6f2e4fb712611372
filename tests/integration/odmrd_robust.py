#!/usr/bin/python3
"""odmrd_robust.py - bad input, floods, races and kills against the sandbox's
odmrd (tests/integration/t_odmrd_robust.sh, t_odmrd_kill.sh).

Subcommands (the sandbox's variables come from the environment, see
lib.sh's py_checks; passwords as arguments):

    badinput PASSWORD      bad input on the server side and on the reversed
                           side; prints "ok NAME" / "fail NAME: REASON"
    flood N                open N connections quickly (some send partial
                           lines, a half AUTH, half a 100 KiB line), drop
                           them all; prints "opened N"
    stall USER PASSWORD DOMAIN K SAVEDIR [data]
                           a customer that answers 250 to the final dot of
                           messages 1..K-1 and never answers message K's;
                           prints "port P" once connected and "stalled K"
                           when message K's dot arrived, then waits until
                           odmrd goes away; saves NNN.msg like
                           odmr_customer.py (and NNN.ok for those that got
                           250). With "data": it stops reading right after
                           its 354 for message K ("stalled-data K") and
                           sleeps (the caller kills it)
    race USER PASSWORD DOMAIN SAVEDIR1 SAVEDIR2 [DELAY]
                           two sessions authenticate, then send ATRN DOMAIN
                           at the same moment; prints "atrn1: CODE",
                           "atrn2: CODE"; the winner delivers (250 to
                           everything, after a 1 s pause before its 220 so
                           that the loser's ATRN surely finds the lock taken);
                           DOMAIN "-": ATRN without domains

Only Debian's /usr/bin/python3 and its standard library.
"""
import base64
import hashlib
import hmac
import os
import socket
import sys
import threading
import time

HOST = os.environ.get("ODMR_HOST", "127.0.0.1")
PORT = int(os.environ.get("ODMR_PORT", "366"))
TIMEOUT = float(os.environ.get("ROBUST_TIMEOUT", "60"))

results = []


def report(name, good, why=""):
    results.append(bool(good))
    print(("ok %s" % name) if good else ("fail %s: %s" % (name, why)), flush=True)
    return good


class Closed(Exception):
    pass


class Conn:
    def __init__(self, timeout=TIMEOUT):
        self.sock = socket.create_connection((HOST, PORT), timeout=timeout)
        self.buf = b""

    def send(self, data):
        self.sock.sendall(data)

    def line(self):
        while b"\n" not in self.buf:
            try:
                d = self.sock.recv(65536)
            except ConnectionResetError:
                d = b""
            if not d:
                raise Closed("connection closed")
            self.buf += d
        l, self.buf = self.buf.split(b"\n", 1)
        return l.rstrip(b"\r")

    def reply(self):
        """(code, [lines]) of one (multi-line) reply; code -1 on EOF."""
        lines = []
        try:
            while True:
                l = self.line()
                lines.append(l.decode("latin-1"))
                if len(l) < 4 or l[3:4] != b"-":
                    break
        except Closed:
            return -1, lines or ["<EOF>"]
        try:
            return int(lines[-1][:3]), lines
        except ValueError:
            return -2, lines

    def cmd(self, data):
        if isinstance(data, str):
            data = data.encode("latin-1")
        self.send(data + b"\r\n")
        return self.reply()

    def eof(self, wait=10):
        """True when the server closes within wait seconds (data discarded)."""
        self.sock.settimeout(wait)
        try:
            while True:
                d = self.sock.recv(65536)
                if not d:
                    return True
        except ConnectionResetError:
            return True
        except OSError:
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def cram_md5(user, password, challenge_b64):
    challenge = base64.b64decode(challenge_b64)
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return base64.b64encode(("%s %s" % (user, digest)).encode()).decode()


def login(user, password):
    """A connection after EHLO and a successful CRAM-MD5 AUTH."""
    c = Conn()
    code, _ = c.reply()
    if code != 220:
        raise Closed("greeting %d" % code)
    c.cmd("EHLO robust.test")
    code, lines = c.cmd("AUTH CRAM-MD5")
    if code != 334:
        raise Closed("AUTH CRAM-MD5: %d" % code)
    code, lines = c.cmd(cram_md5(user, password, lines[0][4:]))
    if code != 235:
        raise Closed("AUTH: %d %s" % (code, lines))
    return c


def healthy(name):
    """A new session still works: 220, EHLO 250, NOOP 250, QUIT 221."""
    try:
        c = Conn()
        g, _ = c.reply()
        e, _ = c.cmd("EHLO robust.test")
        n, _ = c.cmd("NOOP")
        q, _ = c.cmd("QUIT")
        c.close()
        got = (g, e, n, q)
    except OSError as ex:
        got = str(ex)
    return report("%s: a new session still works" % name, got == (220, 250, 250, 221), got)


def codes(replies):
    return [r[0] for r in replies]


# ---- bad input, server side ------------------------------------------------

def case_long_line():
    c = Conn()
    c.reply()
    c.cmd("EHLO robust.test")
    big = b"NOOP " + b"x" * (100 * 1024)
    r1 = c.cmd(big)
    r2 = c.cmd("NOOP")
    report("100 KiB line: 500 5.5.2 line too long", r1[0] == 500 and "5.5.2" in r1[1][-1], r1)
    report("100 KiB line: the session goes on (NOOP 250)", r2[0] == 250, r2)
    c.close()
    # The same as an AUTH response line.
    c = Conn()
    c.reply()
    c.cmd("EHLO robust.test")
    r0 = c.cmd("AUTH CRAM-MD5")
    r1 = c.cmd(base64.b64encode(b"u" * 75000))
    r2 = c.cmd("NOOP")
    report("100 KiB AUTH response: 500 5.5.6, session goes on",
           r0[0] == 334 and r1[0] == 500 and "5.5.6" in r1[1][-1] and r2[0] == 250,
           (r0, r1, r2))
    c.close()
    # 100 KiB without a line end, then the client goes away.
    c = Conn()
    c.reply()
    c.send(b"EHLO " + b"y" * (100 * 1024))
    c.close()
    healthy("100 KiB line")


def case_nul():
    c = Conn()
    c.reply()
    r = [c.cmd(b"NO\x00OP"), c.cmd(b"EHLO a\x00b"), c.cmd(b"\x00"), c.cmd(b"NOOP")]
    report("NUL bytes: 500 5.5.2 each", codes(r[:3]) == [500, 500, 500]
           and all("5.5.2" in x[1][-1] for x in r[:3]), r)
    report("NUL bytes: the session goes on", r[3][0] == 250, r[3])
    c.close()
    c = Conn()
    c.reply()
    c.cmd("EHLO robust.test")
    r0 = c.cmd("AUTH CRAM-MD5")
    r1 = c.cmd(b"Zm9v\x00YmFy")
    report("NUL in an AUTH response: 501", r0[0] == 334 and r1[0] == 501, (r0, r1))
    c.close()
    healthy("NUL bytes")


def case_bare_lf_cr():
    c = Conn()
    c.reply()
    c.send(b"EHLO robust.test\nNOOP\n")
    r = [c.reply(), c.reply()]
    report("bare LF: lines end there (EHLO 250, NOOP 250)", codes(r) == [250, 250], r)
    r = c.cmd(b"NO\rOP")
    report("bare CR inside a line: 500", r[0] == 500, r)
    c.send(b"NOOP\r\r\n")
    r = c.reply()
    report("CR CR LF: a clear reply", r[0] in (250, 500), r)
    r = c.cmd("QUIT")
    report("bare LF/CR: QUIT 221", r[0] == 221, r)
    c.close()
    healthy("bare LF")


def case_base64():
    # Each connection stays below auth_failure_limit (3).
    c = Conn()
    c.reply()
    c.cmd("EHLO robust.test")
    r = [c.cmd("AUTH CRAM-MD5"), c.cmd("Zm9v!!!!"), c.cmd("AUTH CRAM-MD5"), c.cmd("Zm9vYmF")]
    report("broken base64 (bad character, bad length): 334 then 501 5.5.2",
           codes(r) == [334, 501, 334, 501] and "5.5.2" in r[1][1][-1], r)
    n = c.cmd("NOOP")
    report("broken base64: session goes on", n[0] == 250, n)
    c.close()
    c = Conn()
    c.reply()
    c.cmd("EHLO robust.test")
    r = [c.cmd("AUTH SCRAM-SHA-256 %%%%"), c.cmd("AUTH CRAM-MD5"), c.cmd("Zm9=YmFy")]
    report("broken base64 initial response and padding in the middle: 501",
           codes(r) == [501, 334, 501], r)
    r3 = c.cmd("AUTH CRAM-MD5")
    r4 = c.cmd("Zm9vYh==")   # non-zero bits under the padding
    report("non-canonical base64, third failure: 501 then 421",
           r3[0] == 334 and r4[0] == 501 and c.reply()[0] == 421 and c.eof(), (r3, r4))
    c.close()
    c = Conn()
    c.reply()
    c.cmd("EHLO robust.test")
    r = [c.cmd("AUTH CRAM-MD5"), c.cmd(base64.b64encode(b"nospace").decode()),
         c.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(b"garbage,,,").decode()),
         c.cmd("AUTH PLAIN ===="), c.cmd("AUTH")]
    report("valid base64 of garbage: 501; PLAIN without TLS 538; AUTH alone 501",
           codes(r) == [334, 501, 501, 538, 501], r)
    c.close()
    # Drop in the middle of AUTH.
    c = Conn()
    c.reply()
    c.cmd("EHLO robust.test")
    c.cmd("AUTH CRAM-MD5")
    c.send(b"Zm9v")
    c.close()
    healthy("broken base64")


def case_pipelining(user, password):
    c = Conn()
    c.reply()
    c.send(b"EHLO robust.test\r\nNOOP\r\nRSET\r\nMAIL FROM:<a@b.test>\r\nHELP\r\n"
           b"ATRN example.org\r\nQUIT\r\nNOOP\r\n")
    r = [c.reply() for _ in range(7)]
    report("pipelined commands: one reply each, in order",
           codes(r) == [250, 250, 250, 502, 502, 530, 221], codes(r))
    report("pipelined commands: closed after QUIT", c.eof(), "still open")
    c.close()
    c = Conn()
    c.reply()
    c.send(b"NOOP\r\n" * 2000 + b"QUIT\r\n")
    r = [c.reply() for _ in range(2001)]
    report("2000 pipelined NOOPs: 2000 x 250, then 221",
           codes(r).count(250) == 2000 and r[-1][0] == 221, codes(r)[-3:])
    c.close()
    c = Conn()
    c.reply()
    c.send(b"FOO\r\n" * 25)
    r = [c.reply() for _ in range(21)]
    report("25 pipelined bad commands: 20 x 502, 421, close",
           codes(r) == [502] * 20 + [421] and c.eof(), codes(r))
    c.close()
    # After AUTH: NOOP, ATRN (no mail for that domain), NOOP, QUIT in one go.
    try:
        c = login(user, password)
        c.send(b"NOOP\r\nATRN example.net\r\nNOOP\r\nQUIT\r\n")
        r = [c.reply() for _ in range(4)]
        report("pipelined after AUTH: 250 453 250 221", codes(r) == [250, 453, 250, 221], r)
        c.close()
    except (Closed, OSError) as e:
        report("pipelined after AUTH: 250 453 250 221", False, e)
    healthy("pipelining")


def case_tls_garbage():
    c = Conn()
    c.reply()
    c.cmd("EHLO robust.test")
    r = c.cmd("STARTTLS")
    if r[0] != 220:
        report("STARTTLS then garbage instead of a handshake", False, r)
        return
    c.send(b"\x16\x03\x01\x00\x05hello" + b"NOT TLS AT ALL\r\n" * 10)
    report("STARTTLS then garbage: odmrd hangs up", c.eof(), "still open")
    c.close()
    healthy("TLS garbage")


def case_tls_bad():
    """The same bad input inside TLS (reads go through OpenSSL there)."""
    import ssl
    c = Conn()
    c.reply()
    c.cmd("EHLO robust.test")
    r = c.cmd("STARTTLS")
    if r[0] != 220:
        report("bad input under TLS", False, r)
        return
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    c.sock = ctx.wrap_socket(c.sock)
    c.buf = b""
    r = [c.cmd("EHLO robust.test"), c.cmd(b"NOOP " + b"x" * (100 * 1024)),
         c.cmd(b"NO\x00OP"), c.cmd(b"AUTH PLAIN ####")]
    c.send(b"NOOP\n" * 500 + b"QUIT\r\n")
    r += [c.reply() for _ in range(501)]
    report("under TLS: 100 KiB line 500, NUL 500, bad base64 501, 500 pipelined NOOPs, QUIT",
           codes(r[:4]) == [250, 500, 500, 501] and codes(r[4:]).count(250) == 500
           and r[-1][0] == 221, codes(r[:4]) + codes(r)[-2:])
    c.close()
    healthy("bad input under TLS")


def case_drops():
    """Drops at every point of the server side."""
    for data in (b"", b"EH", b"EHLO robust.test\r\n", b"EHLO robust.test\r\nAUTH CRAM-MD5\r\n",
                 b"EHLO robust.test\r\nSTARTTLS\r\n"):
        c = Conn()
        if data:
            c.send(data)
        c.close()
    # A reset (unread data, SO_LINGER 0).
    c = Conn()
    c.send(b"EHLO robust.test\r\n")
    c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    c.close()
    healthy("dropped connections")


# ---- bad input, reversed side -----------------------------------------------

def reversed_case(user, password, domain, name, feed):
    """ATRN, then feed(conn) plays the customer's SMTP server badly."""
    try:
        c = login(user, password)
        r = c.cmd("ATRN " + domain)
        if r[0] != 250:
            report(name, False, "ATRN: %s" % (r,))
            c.close()
            return
        feed(c)
        report(name, c.eof(30), "odmrd did not hang up")
        c.close()
    except (Closed, OSError) as e:
        report(name, False, e)


def feed_junk_greeting(c):
    c.send(b"garbage without a code\r\n")


def feed_long_greeting(c):
    """Like Postfix's smtp(8), odmrd may take a long greeting cut short; then
    an over-long EHLO reply, and 421 to whatever comes next."""
    c.send(b"220 " + b"z" * (100 * 1024) + b"\r\n")
    try:
        c.line()  # EHLO (or QUIT)
        c.send(b"250-customer.test\r\n250 " + b"X" * (100 * 1024) + b"\r\n")
        c.line()
        c.send(b"421 4.3.2 bye\r\n")
    except Closed:
        pass


def feed_nul_greeting(c):
    """NUL bytes in the greeting, which odmrd refuses as malformed."""
    c.send(b"220 a\x00b\r\n")


def feed_nul_ehlo(c):
    """NUL bytes and a bare LF inside the EHLO reply."""
    c.send(b"220 customer.test\r\n")
    c.line()  # EHLO
    c.send(b"250-x\x00y\r\n250 PIPE\nLINING\r\n")
    try:
        c.line()
        c.send(b"421 4.3.2 bye\r\n")
    except Closed:
        pass


def feed_bare_lf_replies(c):
    """Bare LF line ends, a 6xx code, then a drop after MAIL."""
    c.send(b"220 customer.test ready\n")
    c.line()  # EHLO
    c.send(b"250-customer.test\n250-PIPELINING\n250 8BITMIME\n")
    c.line()  # MAIL
    c.send(b"650 what\n")


def case_reversed(user, password, domain):
    reversed_case(user, password, domain, "reversed side: junk greeting, odmrd gives up",
                  feed_junk_greeting)
    reversed_case(user, password, domain, "reversed side: 100 KiB greeting and EHLO reply, 421",
                  feed_long_greeting)
    reversed_case(user, password, domain, "reversed side: NUL in the greeting",
                  feed_nul_greeting)
    reversed_case(user, password, domain, "reversed side: NUL and bare LF in the EHLO reply",
                  feed_nul_ehlo)
    reversed_case(user, password, domain, "reversed side: bare LF and a 6xx code",
                  feed_bare_lf_replies)
    healthy("reversed side")


def cmd_badinput(argv):
    password = argv[0]
    user = argv[1] if len(argv) > 1 else "cust1"
    domain = argv[2] if len(argv) > 2 else "example.org"
    cases = [case_long_line, case_nul, case_bare_lf_cr, case_base64,
             lambda: case_pipelining(user, password), case_tls_garbage, case_tls_bad, case_drops,
             lambda: case_reversed(user, password, domain)]
    for fn in cases:
        try:
            fn()
        except (Closed, OSError) as e:
            report("case %s" % getattr(fn, "__name__", "?"), False, "exception: %s" % e)
    return 0 if all(results) else 1


# ---- flood -----------------------------------------------------------------

def cmd_flood(argv):
    n = int(argv[0])
    socks = []
    partial = [b"", b"EH", b"EHLO flood.test", b"EHLO flood.test\r\nAUTH CRAM-MD5\r\n",
               b"EHLO flood.test\r\nNOOP\r\nNO", b"NOOP " + b"x" * 50000]
    opened = 0
    for i in range(n):
        try:
            s = socket.create_connection((HOST, PORT), timeout=30)
        except OSError as e:
            print("connect %d: %s" % (i, e), flush=True)
            continue
        opened += 1
        data = partial[i % len(partial)]
        if data:
            try:
                s.setblocking(False)
                s.send(data)
            except OSError:
                pass
        socks.append(s)
        if len(socks) >= 100:     # drop them in batches, the newest last
            for x in socks:
                x.close()
            socks = []
    for x in socks:
        x.close()
    print("opened %d" % opened, flush=True)
    return 0 if opened == n else 1


# ---- stall and race ----------------------------------------------------------

class Server:
    """The customer's SMTP server on the reversed connection."""

    def __init__(self, c, savedir, stall=0, greeting_delay=0.0, stall_data=0):
        self.c = c
        self.savedir = savedir
        self.stall = stall
        self.stall_data = stall_data
        self.greeting_delay = greeting_delay
        self.n = 0
        os.makedirs(savedir, exist_ok=True)

    def run(self):
        c = self.c
        if self.greeting_delay:
            time.sleep(self.greeting_delay)
        c.send(b"220 customer.test ESMTP\r\n")
        while True:
            try:
                line = c.line()
            except Closed:
                return "closed"
            verb = line.split(b" ", 1)[0].upper()
            if verb == b"EHLO":
                c.send(b"250-customer.test\r\n250-PIPELINING\r\n250-8BITMIME\r\n"
                       b"250 ENHANCEDSTATUSCODES\r\n")
            elif verb in (b"MAIL", b"RCPT", b"RSET", b"NOOP"):
                c.send(b"250 2.0.0 Ok\r\n")
            elif verb == b"DATA":
                c.send(b"354 go ahead\r\n")
                self.n += 1
                if self.n == self.stall_data:
                    # Read no more: odmrd blocks sending the content.
                    print("stalled-data %d" % self.n, flush=True)
                    time.sleep(600)
                    return "gave up"
                raw = []
                try:
                    while True:
                        l = c.line()
                        if l == b".":
                            break
                        raw.append(l[1:] if l.startswith(b".") else l)
                except Closed:
                    return "closed in DATA"
                with open(os.path.join(self.savedir, "%03d.msg" % self.n), "wb") as f:
                    f.write(b"\r\n".join(raw) + b"\r\n")
                if self.n == self.stall:
                    print("stalled %d" % self.n, flush=True)
                    c.sock.settimeout(600)
                    c.eof(600)
                    return "killed while stalled"
                c.send(b"250 2.0.0 Ok: queued as C%d\r\n" % self.n)
                open(os.path.join(self.savedir, "%03d.ok" % self.n), "w").close()
            elif verb == b"QUIT":
                c.send(b"221 2.0.0 Bye\r\n")
                return "quit"
            else:
                c.send(b"502 5.5.2 what\r\n")


def cmd_stall(argv):
    user, password, domain, k, savedir = argv[0], argv[1], argv[2], int(argv[3]), argv[4]
    in_data = len(argv) > 5 and argv[5] == "data"
    c = login(user, password)
    if in_data:
        # A small receive buffer, so that odmrd's sending blocks early.
        c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    print("port %d" % c.sock.getsockname()[1], flush=True)
    r = c.cmd("ATRN " + domain)
    print("atrn: %d" % r[0], flush=True)
    if r[0] != 250:
        return 2
    srv = Server(c, savedir, stall=0 if in_data else k, stall_data=k if in_data else 0)
    how = srv.run()
    print("end: %s" % how, flush=True)
    print("messages: %d" % srv.n, flush=True)
    return 0


def cmd_race(argv):
    user, password, domain, d1, d2 = argv[:5]
    delay = float(argv[5]) if len(argv) > 5 else 1.0  # the winner's greeting delay
    conns = [login(user, password), login(user, password)]
    barrier = threading.Barrier(2)
    out = [None, None]

    def go(i, savedir):
        c = conns[i]
        barrier.wait()
        c.send(("ATRN %s\r\n" % domain if domain != "-" else "ATRN\r\n").encode())
        code, _ = c.reply()
        out[i] = ["atrn%d: %d" % (i + 1, code)]
        if code == 250:
            srv = Server(c, savedir, greeting_delay=delay)
            how = srv.run()
            out[i].append("session%d: %s, %d messages" % (i + 1, how, srv.n))
        else:
            r = c.cmd("QUIT")
            out[i].append("session%d: QUIT %d" % (i + 1, r[0]))
        c.close()

    threads = [threading.Thread(target=go, args=(i, d)) for i, d in enumerate((d1, d2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for o in out:
        print("\n".join(o or ["missing"]), flush=True)
    return 0


def main():
    if len(sys.argv) < 2:
        print(__doc__, file=sys.stderr)
        return 64
    fn = {"badinput": cmd_badinput, "flood": cmd_flood, "stall": cmd_stall,
          "race": cmd_race}.get(sys.argv[1])
    if fn is None:
        print("unknown subcommand %s" % sys.argv[1], file=sys.stderr)
        return 64
    return fn(sys.argv[2:])


if __name__ == "__main__":
    sys.exit(main())
