#!/usr/bin/python3
"""limits_check.py - odmrd on the open internet (tests/integration/t_odmrd_limits.sh):
slot exhaustion, password guessing, ATRN floods, SCRAM user enumeration,
against the sandbox's odmrd. Prints "ok NAME" / "fail NAME: REASON" lines
and "figure: ..." lines with what was measured.

Subcommands (ODMR_HOST, ODMR_PORT, ODMR_LOG_FILE from the environment):

    slots LIMIT PRE_AUTH
        LIMIT+2 idle connections from 127.0.0.1 (one of them trickles a byte
        a second): LIMIT get 220, the rest 421 4.7.0; 127.0.0.2 still gets
        220; the idle ones are closed at the PRE_AUTH deadline; afterwards
        127.0.0.1 is served again.
    guess USER PASSWORD OTHER OTHERPW USER_LIMIT ADDR_LIMIT CONN_LIMIT WINDOW
        parallel sessions from 127.0.0.1 guess USER's password for 8 s:
        password checks (535) stop at USER_LIMIT (plus at most the sessions
        that raced past the check, CONN_LIMIT - 1), then 454; the right
        password from 127.0.0.1 gets 454 (never checked), from 127.0.0.2
        235; OTHER from 127.0.0.1 still works until unknown user names
        fill the address counter (ADDR_LIMIT), then 454 at once for
        everyone there; 127.0.0.2 unaffected; after WINDOW seconds the
        counters have decayed and USER gets in from 127.0.0.1.
    atrn USER PASSWORD FOREIGN_DOMAIN CAP ERROR_LIMIT N
        N pipelined "ATRN FOREIGN_DOMAIN" (450 each) in one session: the
        session ends with 421 after min(CAP, ERROR_LIMIT) of them.
    scram REALUSER PLAINUSER
        client-first-messages for an unknown user, twice; for REALUSER
        (a {SCRAM-SHA-256} secret), twice; for PLAINUSER ({PLAIN}), twice:
        salts and iteration counts are stable and alike in shape.

Only Debian's /usr/bin/python3 and its standard library.
"""
import base64
import hashlib
import hmac
import os
import re
import socket
import sys
import threading
import time

HOST = os.environ.get("ODMR_HOST", "127.0.0.1")
PORT = int(os.environ.get("ODMR_PORT", "366"))
LOG = os.environ.get("ODMR_LOG_FILE", "")

results = []


def report(name, good, why=""):
    results.append(bool(good))
    print(("ok %s" % name) if good else ("fail %s: %s" % (name, why)), flush=True)
    return good


class Closed(Exception):
    pass


class Conn:
    def __init__(self, source="127.0.0.1", timeout=30):
        self.sock = socket.create_connection((HOST, PORT), timeout=timeout,
                                             source_address=(source, 0))
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
        return l.rstrip(b"\r").decode("utf-8", "replace")

    def reply(self):
        """(code, text of the last line); (-1, "") at EOF."""
        try:
            while True:
                l = self.line()
                if len(l) < 4 or l[3] != "-":
                    return int(l[:3]), l[4:]
        except (Closed, socket.timeout, OSError):
            return -1, ""

    def cmd(self, text):
        self.send(text.encode() + b"\r\n")
        return self.reply()

    def eof_within(self, seconds):
        """True when the server closes within seconds (input is dropped)."""
        self.sock.settimeout(seconds)
        try:
            while True:
                d = self.sock.recv(4096)
                if not d:
                    return True
        except ConnectionResetError:
            return True
        except (socket.timeout, OSError):
            return False

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def log_lines():
    try:
        with open(LOG, encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def cram_auth(c, user, password):
    """AUTH CRAM-MD5; returns the final reply code."""
    code, text = c.cmd("AUTH CRAM-MD5")
    if code != 334:
        return code
    chal = base64.b64decode(text)
    digest = hmac.new(password.encode(), chal, hashlib.md5).hexdigest()
    return c.cmd(base64.b64encode(("%s %s" % (user, digest)).encode()).decode())[0]


def session(source="127.0.0.1", patience=15):
    """A session past EHLO; a 421 (the address's slots are still held by
    sessions that are ending) is retried for patience seconds."""
    end = time.time() + patience
    while True:
        c = Conn(source)
        code, _ = c.reply()
        if code == 220:
            c.cmd("EHLO client.example")
            return c, 220
        c.close()
        if code != 421 or time.time() > end:
            return None, code
        time.sleep(0.3)


# ---- slots ------------------------------------------------------------------

def do_slots(limit, pre_auth):
    conns, codes, started = [], [], []
    for i in range(limit + 2):
        c = Conn("127.0.0.1")
        code, text = c.reply()
        codes.append((code, text))
        conns.append((c, code))
        started.append(time.time())
    got220 = sum(1 for code, _ in codes if code == 220)
    got421 = [t for code, t in codes if code == 421]
    report("%d idle sessions from one address get 220" % limit, got220 == limit,
           "codes %s" % [c for c, _ in codes])
    report("the next ones get 421 4.7.0", len(got421) == 2 and all(
        t.startswith("4.7.0") and "too many connections" in t for t in got421), str(codes))
    print("figure: slots held by one address: %d of %d tried (limit %d)" %
          (got220, limit + 2, limit), flush=True)
    ok = any("Connection concurrency limit exceeded: %d from" % (limit + 1) in l
             and "for service odmrd" in l for l in log_lines())
    report("log line for the refused client", ok, "no 'Connection concurrency limit exceeded'")

    other = Conn("127.0.0.2")
    code, _ = other.reply()
    report("a second address is still served", code == 220, "got %d" % code)

    # One of the held sessions trickles: a byte a second never makes a line.
    idle = [c for c, code in conns if code == 220]
    t0 = started[[code for _, code in conns].index(220)]
    stop = threading.Event()

    def trickle(c):
        while not stop.is_set():
            try:
                c.send(b"N")
            except OSError:
                return
            time.sleep(1)

    th = threading.Thread(target=trickle, args=(idle[0],), daemon=True)
    th.start()
    closed = [c.eof_within(pre_auth + 15) for c in idle]
    took = time.time() - t0
    stop.set()
    # took: from the first held session's banner to the last close.
    report("idle and trickling sessions are closed at the pre-AUTH deadline",
           all(closed) and pre_auth - 1 <= took <= pre_auth + 15,
           "closed %s after %.1f s (deadline %d s)" % (closed, took, pre_auth))
    print("figure: idle pre-AUTH sessions closed after %.1f s (odmrd_pre_auth_timeout=%ds)"
          % (took, pre_auth), flush=True)
    other.close()
    for c, _ in conns:
        c.close()
    n = sum(1 for l in log_lines() if "timeout before AUTH" in l)
    report("log says timeout before AUTH", n >= limit, "%d lines" % n)
    # The slots are free again (the processes exited; the kernel dropped
    # their locks): wait for the 127.0.0.2 session to end too.
    deadline = time.time() + 20
    while True:
        c = Conn("127.0.0.1")
        code, _ = c.reply()
        c.close()
        if code == 220 or time.time() > deadline:
            break
        time.sleep(0.5)
    report("afterwards the address is served again", code == 220, "got %d" % code)


# ---- guessing -----------------------------------------------------------------

def do_guess(user, password, other, otherpw, user_limit, addr_limit, conn_limit, window):
    counts = {}
    lock = threading.Lock()
    stop = time.time() + 8
    t0 = time.time()

    def guesser(k):
        n = 0
        while time.time() < stop:
            try:
                c, code = session(patience=0)
            except OSError:
                time.sleep(0.2)
                continue
            if c is None:
                with lock:
                    counts[code] = counts.get(code, 0) + 1
                time.sleep(0.2)
                continue
            while time.time() < stop:
                n += 1
                code = cram_auth(c, user, "wrong%d.%d" % (k, n))
                with lock:
                    counts[code] = counts.get(code, 0) + 1
                if code not in (535, 454):
                    break
            c.close()

    threads = [threading.Thread(target=guesser, args=(k,)) for k in range(conn_limit)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    checked = counts.get(535, 0)
    blocked = counts.get(454, 0)
    report("parallel guesses: password checks stop at the per-user limit",
           user_limit <= checked <= user_limit + conn_limit - 1,
           "%d checked (535), limit %d, replies %s" % (checked, user_limit, counts))
    report("then 454 4.7.0", blocked > 0, "replies %s" % counts)
    print("figure: %d sessions from one address guessing for 8 s: %d passwords checked, "
          "%d answered 454 without a check (window %d s): at most %.1f guesses per minute "
          "for one user from one address" % (conn_limit, checked, blocked, window,
                                              (user_limit + conn_limit - 1) * 60.0 / window),
          flush=True)

    before = len(log_lines())
    c, _ = session()
    code = cram_auth(c, user, password) if c else -1
    if c:
        c.close()
    new = log_lines()[before:]
    report("the right password from the same address gets 454 (not checked)", code == 454,
           "got %d" % code)
    report("the blocked AUTH logs a fail2ban line, no password check",
           any(re.search(r"warning: [^ ]*\[127\.0\.0\.1\]: SASL authentication blocked: "
                         r"\d+ failures for sasl_username=%s" % re.escape(user), l) for l in new)
           and not any("authentication failed" in l for l in new), "\n".join(new[-5:]))

    c, _ = session("127.0.0.2")
    code = cram_auth(c, user, password) if c else -1
    if c:
        c.close()
    report("the right password from another address works", code == 235, "got %d" % code)

    c, _ = session()
    code = cram_auth(c, other, otherpw) if c else -1
    if c:
        c.close()
    report("another user from the guessing address still works", code == 235,
           "got %d" % code)

    # Unknown user names fill the address's counter.
    n, codes = 0, []
    while n < addr_limit + 5:
        c, _ = session()
        if c is None:
            time.sleep(0.2)
            continue
        for _ in range(3):
            n += 1
            code = cram_auth(c, "nosuchuser%d" % n, "x")
            codes.append(code)
            if code not in (535, 454):
                break
        c.close()
    report("unknown user names: 454 once the address limit is reached",
           codes.count(535) <= addr_limit and 454 in codes, "codes %s" % codes)
    before = len(log_lines())
    c, _ = session()
    code = c.cmd("AUTH CRAM-MD5")[0] if c else -1
    if c:
        c.close()
    report("then AUTH gets 454 before any exchange, for every user", code == 454,
           "got %d" % code)
    report("log line for the blocked address", any(
        re.search(r"warning: [^ ]*\[127\.0\.0\.1\]: SASL authentication blocked: \d+ failures "
                  r"from this client", l) for l in log_lines()[before:]), "no line")
    c, _ = session("127.0.0.2")
    code = cram_auth(c, other, otherpw) if c else -1
    if c:
        c.close()
    report("another address is not locked out", code == 235, "got %d" % code)

    # Decay: the windows began at the first failures of this run.
    deadline = t0 + window + 30
    while True:
        c, _ = session()
        code = cram_auth(c, user, password) if c else -1
        if c:
            c.close()
        if code == 235 or time.time() > deadline:
            break
        time.sleep(1)
    report("the counters decay after the window", code == 235,
           "still %d after %.0f s" % (code, time.time() - t0))
    print("figure: blocked until %.0f s after the first failure (window %d s)"
          % (time.time() - t0, window), flush=True)


# ---- ATRN flood ---------------------------------------------------------------

def do_atrn(user, password, domain, cap, error_limit, n):
    before = len(log_lines())
    c, _ = session("127.0.0.2")
    code = cram_auth(c, user, password)
    if not report("authenticated", code == 235, "got %d" % code):
        return
    t0 = time.time()
    c.send(("ATRN %s\r\n" % domain).encode() * n)
    codes = []
    while True:
        code, text = c.reply()
        codes.append(code)
        if code != 450:
            break
    c.close()
    stop = min(cap, error_limit)
    report("%d x 450, then 421 and the end" % stop,
           codes[:-1] == [450] * stop and codes[-1] == 421, "codes %s" % codes)
    time.sleep(1)
    new = [l for l in log_lines()[before:] if "ATRN" in l]
    report("bounded log lines", len(new) <= stop + 5 + 2, "%d ATRN lines" % len(new))
    print("figure: %d pipelined ATRN commands: %d answered, %d ATRN log lines, %.2f s" %
          (n, len(codes), len(new), time.time() - t0), flush=True)


# ---- SCRAM --------------------------------------------------------------------

def scram_first(user):
    c, _ = session()
    if c is None:
        return None
    cnonce = base64.b64encode(os.urandom(18)).decode()
    code, text = c.cmd("AUTH SCRAM-SHA-256 " + base64.b64encode(
        ("n,,n=%s,r=%s" % (user, cnonce)).encode()).decode())
    c.cmd("*")
    c.close()
    if code != 334:
        return None
    msg = base64.b64decode(text).decode()
    attrs = dict(a.split("=", 1) for a in msg.split(","))
    return attrs["r"][len(cnonce):], attrs["s"], attrs["i"]


def do_scram(real, plain):
    u1, u2 = scram_first("nosuchuser"), scram_first("nosuchuser")
    r1, r2 = scram_first(real), scram_first(real)
    p1, p2 = scram_first(plain), scram_first(plain)
    if not report("server-first-messages", None not in (u1, u2, r1, r2, p1, p2),
                  "%s" % [u1, u2, r1, r2, p1, p2]):
        return
    report("unknown user: same salt and iteration count twice", u1[1:] == u2[1:],
           "%s / %s" % (u1, u2))
    report("real SCRAM user: same salt twice", r1[1:] == r2[1:], "%s / %s" % (r1, r2))
    report("{PLAIN} user: same salt twice", p1[1:] == p2[1:], "%s / %s" % (p1, p2))
    report("nothing tells them apart: salt length, iterations, nonce length",
           len(base64.b64decode(u1[1])) == len(base64.b64decode(r1[1]))
           == len(base64.b64decode(p1[1])) and u1[2] == r1[2] == p1[2]
           and len(u1[0]) == len(r1[0]) == len(p1[0]),
           "unknown %s real %s plain %s" % (u1, r1, p1))
    report("different users, different salts", len({u1[1], r1[1], p1[1]}) == 3,
           "%s" % [u1[1], r1[1], p1[1]])


def main():
    if len(sys.argv) < 2:
        print("usage: limits_check.py slots|guess|atrn|scram ...", file=sys.stderr)
        return 2
    cmd, a = sys.argv[1], sys.argv[2:]
    if cmd == "slots":
        do_slots(int(a[0]), int(a[1]))
    elif cmd == "guess":
        do_guess(a[0], a[1], a[2], a[3], int(a[4]), int(a[5]), int(a[6]), int(a[7]))
    elif cmd == "atrn":
        do_atrn(a[0], a[1], a[2], int(a[3]), int(a[4]), int(a[5]))
    elif cmd == "scram":
        do_scram(a[0], a[1])
    else:
        print("unknown subcommand %s" % cmd, file=sys.stderr)
        return 2
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
