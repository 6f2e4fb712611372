#!/usr/bin/python3
"""odmr_customer.py - a scripted ODMR customer (RFC 2645) for tests.

Connects to odmrd, says EHLO, optionally STARTTLS, authenticates (CRAM-MD5
by default, PLAIN or LOGIN on request), sends ATRN, and then plays the SMTP
server on the reversed connection with scripted replies. Every message it
receives is saved in --save-dir:

    NNN.env   envelope: "MAIL FROM:<...> PARAMS", one "RCPT TO:<...> PARAMS"
              line per recipient with the reply it got ("RCPT ... -> 250"),
              and "DOT -> CODE" for the reply to the final dot
    NNN.raw   the bytes between the 354 and the final ".\\r\\n" exclusive,
              exactly as received (wire form: CRLF, dot-stuffed)
    NNN.msg   the same with dot-stuffing removed (the message as an MTA
              would store it, CRLF line ends)

Only /usr/bin/python3's standard library is used.

Result on stdout, one "key: value" line each (tests grep them):
    ehlo: <keywords of the server's EHLO reply, space separated>
    auth: CODE text
    atrn: CODE text
    messages: N            messages that reached the final dot
    quit: yes|no           QUIT was received
    result: ok|...
Exit status: 0 when the ATRN got 250 and the reversed session ended with
QUIT (or as scripted), 2 when ATRN got another reply, 3 when AUTH failed,
1 for anything else (connection problems, protocol errors).

Scripting options (see --help): per-recipient RCPT replies, replies to the
final dot per message, 421 or 500 to EHLO, a SIZE limit, dropping the
connection in the middle of DATA, a silent customer (timeout tests), the
220 sent together with ATRN (tests that odmrd keeps those bytes), a reply
other than 354 to DATA, a recipient limit per transaction (452 4.5.3 for
the recipients past it), STARTTLS offered on the reversed side (and either
completed with --tls-cert, or answered 220 and then left hanging, as a
line-by-line relay like fetchmail's does), a customer out of step (an
extra reply after a 354 or after a dot reply, in the same write), an EHLO
reply padded past odmrd's kept text, and a refused RSET (the transaction
stays open: the next MAIL gets "503 nested MAIL command", as from
Postfix's smtpd).

Extra result lines for the reversed side:
    transactions: N        MAIL commands received
    reversed_starttls: yes|no   odmrd sent STARTTLS
    reversed_tls: VERSION  the handshake completed
"""

import argparse
import base64
import hashlib
import hmac
import os
import socket
import ssl
import sys
import time


class Fail(Exception):
    pass


class Conn:
    """Line I/O over a socket (plain or TLS) with a transcript."""

    def __init__(self, sock, transcript, timeout):
        self.sock = sock
        self.buf = b""
        self.transcript = transcript
        self.sock.settimeout(timeout)

    def log(self, direction, data):
        if self.transcript:
            self.transcript.write("%s %s\n" % (direction, data.decode("latin-1").rstrip("\r\n")))
            self.transcript.flush()

    def send(self, data):
        if isinstance(data, str):
            data = data.encode("utf-8", "surrogateescape")
        self.log(">", data)
        self.sock.sendall(data)

    def sendline(self, line):
        self.send(line + "\r\n")

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Fail("connection closed by peer")
        self.buf += data

    def readline(self):
        while b"\n" not in self.buf:
            self.fill()
        line, self.buf = self.buf.split(b"\n", 1)
        line += b"\n"
        self.log("<", line)
        return line

    def read_reply(self):
        """Returns (code, [text lines])."""
        lines = []
        while True:
            line = self.readline().rstrip(b"\r\n").decode("utf-8", "replace")
            if len(line) < 3 or not line[:3].isdigit():
                raise Fail("malformed reply: %r" % line)
            lines.append(line[4:])
            if len(line) == 3 or line[3] == " ":
                return int(line[:3]), lines

    def command(self, line):
        self.sendline(line)
        return self.read_reply()


def cram_md5(user, password, challenge_b64):
    challenge = base64.b64decode(challenge_b64)
    digest = hmac.new(password.encode(), challenge, hashlib.md5).hexdigest()
    return base64.b64encode(("%s %s" % (user, digest)).encode()).decode()


def parse_map(items, what):
    """["key=CODE text", ...] -> {key: "CODE text"}"""
    out = {}
    for item in items or []:
        if "=" not in item:
            raise SystemExit("bad %s %r: want KEY=CODE [text]" % (what, item))
        k, v = item.split("=", 1)
        if not v[:3].isdigit():
            raise SystemExit("bad %s %r: reply must start with a code" % (what, item))
        out[k.lower()] = v
    return out


def reply_line(spec, default_text):
    """"550" -> "550 default"; "550 5.1.1 x" as is."""
    spec = spec.strip()
    if len(spec) == 3:
        return "%s %s" % (spec, default_text)
    return spec


class Customer:
    def __init__(self, args):
        self.a = args
        self.transcript = None
        if args.transcript:
            self.transcript = open(args.transcript, "a")
        self.msgno = 0
        self.transactions = 0
        self.got_starttls = False
        self.got_quit = False
        self.rcpt_replies = parse_map(args.rcpt_reply, "--rcpt-reply")
        self.dot_replies = parse_map(args.dot_reply, "--dot-reply")

    def out(self, key, value):
        print("%s: %s" % (key, value))
        sys.stdout.flush()

    # ---- the ODMR client part --------------------------------------------

    def odmr(self, c):
        code, lines = c.read_reply()
        if code != 220:
            raise Fail("greeting: %d %s" % (code, lines[0]))
        code, lines = c.command("EHLO %s" % self.a.helo)
        if code != 250:
            raise Fail("EHLO: %d" % code)
        self.out("ehlo", " ".join(l.split(" ")[0].upper() for l in lines[1:]))
        self.ehlo_lines = lines
        if self.a.starttls:
            code, lines = c.command("STARTTLS")
            if code != 220:
                raise Fail("STARTTLS: %d %s" % (code, lines[0]))
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            if self.a.cafile:
                ctx.load_verify_locations(self.a.cafile)
                ctx.verify_mode = ssl.CERT_REQUIRED
            if self.a.cert:
                ctx.load_cert_chain(self.a.cert, self.a.key or self.a.cert)
            c.sock = ctx.wrap_socket(c.sock, server_hostname=self.a.tls_servername)
            c.buf = b""
            self.out("tls", c.sock.version())
            code, lines = c.command("EHLO %s" % self.a.helo)
            if code != 250:
                raise Fail("EHLO after STARTTLS: %d" % code)
            self.out("ehlo", " ".join(l.split(" ")[0].upper() for l in lines[1:]))
        for cmd in self.a.before_auth or []:
            code, lines = c.command(cmd)
            self.out("cmd", "%s -> %d %s" % (cmd.split(" ")[0], code, lines[-1]))
        if self.a.mech != "none":
            if not self.auth(c):
                return 3
        for cmd in self.a.before_atrn or []:
            code, lines = c.command(cmd)
            self.out("cmd", "%s -> %d %s" % (cmd.split(" ")[0], code, lines[-1]))
        atrn = "ATRN" + (" " + self.a.domains if self.a.domains else "")
        if self.a.early_220:
            # The customer's greeting in the same packet as ATRN: odmrd
            # must keep these bytes for the reversed session.
            c.send(atrn + "\r\n" + self.greeting() + "\r\n")
            code, lines = c.read_reply()
        else:
            code, lines = c.command(atrn)
        self.out("atrn", "%d %s" % (code, lines[-1]))
        if code != 250:
            if self.a.quit_after_refusal:
                code, lines = c.command("QUIT")
            return 2
        if not self.a.early_220:
            if self.a.greeting_delay:
                time.sleep(self.a.greeting_delay)
            c.sendline(self.greeting())
        return self.reversed(c)

    def auth(self, c):
        mech = self.a.mech.upper()
        user, password = self.a.user, self.a.password
        if mech == "CRAM-MD5":
            code, lines = c.command("AUTH CRAM-MD5")
            if code == 334:
                resp = "*" if self.a.auth_cancel else cram_md5(user, password, lines[0])
                code, lines = c.command(resp)
        elif mech == "PLAIN":
            ir = base64.b64encode(("\0%s\0%s" % (user, password)).encode()).decode()
            code, lines = c.command("AUTH PLAIN " + ir)
        elif mech == "LOGIN":
            code, lines = c.command("AUTH LOGIN")
            if code == 334:
                code, lines = c.command(base64.b64encode(user.encode()).decode())
            if code == 334:
                code, lines = c.command(base64.b64encode(password.encode()).decode())
        elif mech == "SCRAM-SHA-256":
            code, lines = self.scram(c, user, password)
        elif mech == "EXTERNAL":
            code, lines = c.command("AUTH EXTERNAL =")
        else:
            code, lines = c.command("AUTH " + mech)
        self.out("auth", "%d %s" % (code, lines[-1]))
        return code == 235

    def scram(self, c, user, password):
        """RFC 5802 / RFC 7677 client; checks the server's signature."""
        b64 = lambda b: base64.b64encode(b).decode()
        hm = lambda k, m: hmac.new(k, m, hashlib.sha256).digest()
        cnonce = b64(os.urandom(18))
        bare = "n=%s,r=%s" % (user.replace("=", "=3D").replace(",", "=2C"), cnonce)
        code, lines = c.command("AUTH SCRAM-SHA-256 " + b64(("n,," + bare).encode()))
        if code != 334:
            return code, lines
        first = base64.b64decode(lines[0]).decode()
        attrs = dict(a.split("=", 1) for a in first.split(","))
        if not attrs.get("r", "").startswith(cnonce):
            c.command("*")
            raise Fail("SCRAM: server nonce does not extend ours")
        salted = hashlib.pbkdf2_hmac("sha256", password.encode(), base64.b64decode(attrs["s"]),
                                     int(attrs["i"]))
        ckey = hm(salted, b"Client Key")
        final_wo = "c=biws,r=" + attrs["r"]
        authmsg = ",".join([bare, first, final_wo]).encode()
        proof = bytes(a ^ b for a, b in zip(ckey, hm(hashlib.sha256(ckey).digest(), authmsg)))
        code, lines = c.command(b64((final_wo + ",p=" + b64(proof)).encode()))
        if code != 334:
            return code, lines
        want = "v=" + b64(hm(hm(salted, b"Server Key"), authmsg))
        if base64.b64decode(lines[0]).decode() != want:
            c.command("*")
            raise Fail("SCRAM: bad server signature")
        self.out("scram", "server signature ok")
        return c.command("")

    # ---- the SMTP server part --------------------------------------------

    def greeting(self):
        return "220 %s %s" % (self.a.helo, self.a.greeting_text)

    def ehlo_reply(self, c):
        if self.a.ehlo_reply:
            c.sendline(reply_line(self.a.ehlo_reply, "EHLO refused"))
            return
        ext = []
        if not self.a.no_pipelining:
            ext.append("PIPELINING")
        if self.a.size is not None:
            ext.append("SIZE %d" % self.a.size if self.a.size else "SIZE")
        if not self.a.no_8bitmime:
            ext.append("8BITMIME")
        if not self.a.no_dsn:
            ext.append("DSN")
        if self.a.smtputf8:
            ext.append("SMTPUTF8")
        if self.a.offer_starttls and not isinstance(c.sock, ssl.SSLSocket):
            ext.append("STARTTLS")
        ext.append("ENHANCEDSTATUSCODES")
        pad = []
        left = self.a.ehlo_pad
        while left > 0:
            n = min(left, 1000)
            pad.append("X-PAD" + "x" * max(n - 7, 0))
            left -= n
        lines = [self.a.helo] + pad + ext
        for i, l in enumerate(lines):
            c.sendline("250%s%s" % (" " if i == len(lines) - 1 else "-", l))

    def reversed(self, c):
        self.out("reversed", "yes")
        c.sock.settimeout(self.a.timeout)
        mail = None
        rcpts = []
        env = []
        while True:
            try:
                raw = c.readline()
            except Fail:
                break
            except socket.timeout:
                raise Fail("timeout waiting for a command from odmrd")
            line = raw.rstrip(b"\r\n").decode("utf-8", "surrogateescape")
            verb = line.split(" ", 1)[0].upper()
            if self.a.silent:
                continue
            if verb == "EHLO":
                self.ehlo_reply(c)
            elif verb == "HELO":
                c.sendline("250 %s" % self.a.helo)
            elif verb == "MAIL":
                if mail is not None:
                    # As Postfix's smtpd: a transaction is still open.
                    c.sendline("503 5.5.1 Error: nested MAIL command")
                    continue
                rcpts = []
                self.transactions += 1
                env = [line]
                rep = reply_line(self.a.mail_reply or "250 2.1.0 Ok", "Ok")
                if rep.startswith("2"):
                    mail = line
                c.sendline(rep)
            elif verb == "RCPT":
                addr = line[line.find("<") + 1:line.find(">")].lower()
                rep = reply_line(self.rcpt_replies.get(addr, "250 2.1.5 Ok"), "rcpt")
                if mail is None:
                    rep = "503 5.5.1 Error: need MAIL command"
                elif (self.a.rcpt_limit and rep.startswith("2")
                      and len(rcpts) >= self.a.rcpt_limit):
                    rep = "452 4.5.3 Error: too many recipients"
                if rep.startswith("2"):
                    rcpts.append(addr)
                env.append("%s -> %s" % (line, rep[:3]))
                c.sendline(rep)
            elif verb == "DATA":
                if mail is None or not rcpts:
                    c.sendline("554 5.5.1 Error: no valid recipients")
                    continue
                if self.a.data_reply:
                    c.sendline(reply_line(self.a.data_reply, "DATA refused"))
                    continue
                self.msgno += 1
                n = self.msgno
                go = "354 End data with <CR><LF>.<CR><LF>\r\n"
                if self.a.stray_after_354 == n:
                    go += "250 2.0.0 stray\r\n"
                c.send(go)
                data = self.read_data(c, n)
                if data is None:
                    return 1  # dropped on purpose
                rep = reply_line(self.dot_replies.get(str(n), "250 2.0.0 Ok: queued as M%d" % n),
                                 "dot")
                env.append("DOT -> %s" % rep[:3])
                self.save(n, env, data)
                if self.a.drop_after_dot == n:
                    c.sock.close()
                    self.out("dropped", "after dot of message %d" % n)
                    return 1
                if self.a.stray_after_dot == n:
                    c.send(rep + "\r\n550 5.0.0 stray\r\n")
                else:
                    c.sendline(rep)
                mail = None
                rcpts = []
                if rep.startswith("421"):
                    # 421: the server closes the channel (RFC 5321 3.8),
                    # whatever the client pipelined after the dot.
                    break
            elif verb == "RSET":
                rep = reply_line(self.a.rset_reply or "250 2.0.0 Ok", "RSET")
                if rep.startswith("2"):
                    mail = None
                    rcpts = []
                c.sendline(rep)
            elif verb == "NOOP":
                c.sendline("250 2.0.0 Ok")
            elif verb == "STARTTLS" and self.a.offer_starttls:
                self.got_starttls = True
                c.sendline("220 2.0.0 Ready to start TLS")
                if not self.a.tls_cert:
                    # A relay that passes lines, not a TLS handshake: the
                    # ClientHello goes nowhere; wait until odmrd gives up.
                    try:
                        while True:
                            c.fill()
                    except (Fail, OSError):
                        pass
                    break
                ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
                ctx.load_cert_chain(self.a.tls_cert, self.a.tls_key or self.a.tls_cert)
                c.sock = ctx.wrap_socket(c.sock, server_side=True)
                c.buf = b""
                self.out("reversed_tls", c.sock.version())
            elif verb == "QUIT":
                self.got_quit = True
                c.sendline("221 2.0.0 Bye")
                break
            else:
                c.sendline("502 5.5.2 Error: command not recognized")
        self.out("messages", str(self.msgno))
        self.out("transactions", str(self.transactions))
        self.out("reversed_starttls", "yes" if self.got_starttls else "no")
        self.out("quit", "yes" if self.got_quit else "no")
        return 0 if self.got_quit or not self.a.expect_quit else 1

    def read_data(self, c, n):
        raw = b""
        if self.a.drop_mid_data == n:
            # Wait for the first bytes of the content, then hang up.
            if not c.buf:
                c.fill()
            c.sock.close()
            self.out("dropped", "in DATA of message %d" % n)
            return None
        while True:
            while b"\n" not in c.buf:
                c.fill()
            line, c.buf = c.buf.split(b"\n", 1)
            line += b"\n"
            if line == b".\r\n":
                break
            raw += line
        if self.a.save_dir:
            with open(os.path.join(self.a.save_dir, "%03d.raw" % n), "wb") as f:
                f.write(raw)
        return raw

    def save(self, n, env, raw):
        if not self.a.save_dir:
            return
        msg = b"".join(l[1:] if l.startswith(b".") else l for l in raw.splitlines(True))
        with open(os.path.join(self.a.save_dir, "%03d.msg" % n), "wb") as f:
            f.write(msg)
        with open(os.path.join(self.a.save_dir, "%03d.env" % n), "w") as f:
            f.write("\n".join(env) + "\n")

    def run(self):
        try:
            sock = socket.create_connection((self.a.host, self.a.port), timeout=self.a.timeout)
            c = Conn(sock, self.transcript, self.a.timeout)
            rc = self.odmr(c)
        except (Fail, OSError, ssl.SSLError) as e:
            self.out("result", "error: %s" % e)
            return 1
        self.out("result", "ok" if rc == 0 else "rc=%d" % rc)
        return rc


def main():
    p = argparse.ArgumentParser(description="scripted ODMR customer")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=366)
    p.add_argument("--user", default="cust1")
    p.add_argument("--password", default="")
    p.add_argument("--mech", default="CRAM-MD5",
                   help="CRAM-MD5 | PLAIN | LOGIN | EXTERNAL | none | any other name as is")
    p.add_argument("--auth-cancel", action="store_true", help='answer the challenge with "*"')
    p.add_argument("--domains", default="", help="ATRN argument, e.g. example.org,example.net")
    p.add_argument("--helo", default="customer.example")
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--cafile")
    p.add_argument("--cert", help="client certificate (PEM) for EXTERNAL")
    p.add_argument("--key")
    p.add_argument("--tls-servername", default=None)
    p.add_argument("--before-auth", action="append", help="extra command before AUTH")
    p.add_argument("--before-atrn", action="append", help="extra command before ATRN")
    p.add_argument("--quit-after-refusal", action="store_true")
    p.add_argument("--early-220", action="store_true",
                   help="send the 220 greeting in the same write as ATRN")
    p.add_argument("--greeting-text", default="ESMTP odmr test customer")
    p.add_argument("--greeting-delay", type=float, default=0)
    p.add_argument("--ehlo-reply", help='reply to EHLO instead of 250, e.g. "421" or "500"')
    p.add_argument("--mail-reply", help='reply to MAIL, e.g. "451 4.3.0 try later"')
    p.add_argument("--data-reply", help='reply to DATA instead of 354, e.g. "250 2.0.0 Ok"')
    p.add_argument("--rcpt-limit", type=int, default=0,
                   help="accept N recipients per transaction, then 452 4.5.3")
    p.add_argument("--offer-starttls", action="store_true",
                   help="list STARTTLS in the reversed EHLO reply and answer it with 220")
    p.add_argument("--tls-cert", help="server certificate (PEM) for the reversed STARTTLS; "
                   "without it the 220 is followed by silence")
    p.add_argument("--tls-key")
    p.add_argument("--rcpt-reply", action="append",
                   help='ADDR=REPLY, e.g. "u@example.org=550 5.1.1 no such user"')
    p.add_argument("--dot-reply", action="append",
                   help='N=REPLY for message N (from 1), e.g. "2=451 4.3.0 later"')
    p.add_argument("--drop-mid-data", type=int, default=0,
                   help="close the connection in the middle of message N's DATA")
    p.add_argument("--drop-after-dot", type=int, default=0,
                   help="close the connection after message N's final dot, unanswered")
    p.add_argument("--stray-after-354", type=int, default=0, metavar="N",
                   help='with message N\'s 354, in the same write, "250 2.0.0 stray"')
    p.add_argument("--stray-after-dot", type=int, default=0, metavar="N",
                   help='with the reply to message N\'s dot, in the same write, '
                        '"550 5.0.0 stray"')
    p.add_argument("--ehlo-pad", type=int, default=0, metavar="BYTES",
                   help="about BYTES of X-PAD lines in the EHLO reply before the keywords")
    p.add_argument("--rset-reply", help='reply to RSET, e.g. "500 5.5.2 RSET not understood" '
                                        "(not 2xx: the transaction stays open)")
    p.add_argument("--size", type=int, default=None, help="advertise SIZE N (0: SIZE alone)")
    p.add_argument("--no-pipelining", action="store_true")
    p.add_argument("--no-8bitmime", action="store_true")
    p.add_argument("--no-dsn", action="store_true")
    p.add_argument("--smtputf8", action="store_true")
    p.add_argument("--silent", action="store_true",
                   help="never answer on the reversed connection (timeout tests)")
    p.add_argument("--expect-quit", action="store_true",
                   help="exit 1 when the reversed session ends without QUIT")
    p.add_argument("--save-dir")
    p.add_argument("--transcript", help="append the conversation to this file")
    p.add_argument("--timeout", type=float, default=60)
    args = p.parse_args()
    if args.save_dir:
        os.makedirs(args.save_dir, exist_ok=True)
    return Customer(args).run()


if __name__ == "__main__":
    sys.exit(main())
