#!/usr/bin/python3
"""fetch_sink.py - a recording SMTP/LMTP server standing in for the
customer's local MTA in t_fetch*.sh.

    fetch_sink.py --out DIR (--listen 127.0.0.1:PORT | --unix PATH) [--lmtp]
                  [--starttls] [--rcpt-reply SUBSTR=REPLY]... [--dot-reply REPLY]
                  [--greeting REPLY]

Every command line it receives is appended to DIR/commands.log (AUTH data
is never sent to it). Each completed transaction (final dot read) becomes
DIR/tNNN.json (mail, rcpts accepted, the reply given) and DIR/tNNN.data:
the content exactly as it came on the wire (dot-stuffed, CRLF), without the
final ".\\r\\n". --starttls advertises STARTTLS (and CHUNKING) in the EHLO
reply, so a test can see that odmr-fetch does not relay them.
--rcpt-reply gives RCPT TO addresses containing SUBSTR that reply (e.g.
"tmp=450 4.2.0 try later"); in LMTP mode --lmtp-dot SUBSTR=REPLY gives
the per-recipient reply after the dot. Writes DIR/ready when listening.
Only the Python standard library.
"""
import argparse
import json
import os
import socket
import sys
import threading

lock = threading.Lock()
counter = [0]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--listen")
    ap.add_argument("--unix")
    ap.add_argument("--lmtp", action="store_true")
    ap.add_argument("--starttls", action="store_true")
    ap.add_argument("--rcpt-reply", action="append", default=[])
    ap.add_argument("--lmtp-dot", action="append", default=[])
    ap.add_argument("--dot-reply", default="250 2.0.0 Ok: queued")
    ap.add_argument("--greeting", default="220 mx.customer.test ESMTP fetch_sink")
    a = ap.parse_args()
    os.makedirs(a.out, exist_ok=True)
    if a.unix:
        try:
            os.unlink(a.unix)
        except FileNotFoundError:
            pass
        srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        srv.bind(a.unix)
        os.chmod(a.unix, 0o777)
    else:
        host, port = a.listen.rsplit(":", 1)
        srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        srv.bind((host, int(port)))
    srv.listen(16)
    open(os.path.join(a.out, "ready"), "w").close()
    while True:
        conn, _ = srv.accept()
        threading.Thread(target=session, args=(conn, a), daemon=True).start()


def pairs(items):
    out = []
    for item in items:
        k, v = item.split("=", 1)
        out.append((k.lower(), v))
    return out


def log_cmd(a, line):
    with lock:
        with open(os.path.join(a.out, "commands.log"), "ab") as f:
            f.write(line + b"\n")


def session(conn, a):
    f = conn.makefile("rb")
    rcpt_replies = pairs(a.rcpt_reply)
    lmtp_dot = pairs(a.lmtp_dot)

    def send(text):
        conn.sendall(text.encode() + b"\r\n")

    send(a.greeting)
    mail, rcpts = None, []
    try:
        while True:
            raw = f.readline(4096)
            if not raw:
                return
            line = raw.rstrip(b"\r\n")
            log_cmd(a, line)
            verb = line.split(b" ", 1)[0].upper()
            if verb in (b"EHLO", b"LHLO", b"HELO"):
                if verb == b"HELO":
                    send("250 mx.customer.test")
                    continue
                if (verb == b"LHLO") != a.lmtp:
                    send("500 5.5.1 wrong greeting verb")
                    continue
                ext = ["mx.customer.test", "PIPELINING", "SIZE 200000000", "8BITMIME",
                       "ENHANCEDSTATUSCODES", "DSN"]
                if a.starttls:
                    ext[1:1] = ["STARTTLS", "CHUNKING"]
                for i, e in enumerate(ext):
                    send("250%s%s" % ("-" if i < len(ext) - 1 else " ", e))
            elif verb == b"MAIL":
                mail, rcpts = line.decode("utf-8", "replace"), []
                send("250 2.1.0 Ok")
            elif verb == b"RCPT":
                text = line.decode("utf-8", "replace")
                reply = "250 2.1.5 Ok"
                for k, v in rcpt_replies:
                    if k in text.lower():
                        reply = v
                if reply.startswith("2"):
                    rcpts.append(text)
                send(reply)
            elif verb == b"DATA":
                if mail is None or not rcpts:
                    send("503 5.5.1 Error: need RCPT command")
                    continue
                send("354 End data with <CR><LF>.<CR><LF>")
                data = bytearray()  # += on bytes is quadratic (100 MiB tests)
                while True:
                    chunk = f.readline(1 << 20)
                    if not chunk:
                        return  # no final dot: nothing recorded
                    if chunk in (b".\r\n", b".\n"):
                        break
                    data += chunk
                with lock:
                    counter[0] += 1
                    n = counter[0]
                base = os.path.join(a.out, "t%03d" % n)
                replies = []
                if a.lmtp:
                    for r in rcpts:
                        reply = "250 2.0.0 Ok: delivered"
                        for k, v in lmtp_dot:
                            if k in r.lower():
                                reply = v
                        replies.append(reply)
                else:
                    replies.append(a.dot_reply)
                with open(base + ".data", "wb") as out:
                    out.write(data)
                with open(base + ".json", "w") as out:
                    json.dump({"mail": mail, "rcpts": rcpts, "replies": replies}, out)
                for r in replies:
                    send(r)
                mail, rcpts = None, []
            elif verb == b"RSET":
                mail, rcpts = None, []
                send("250 2.0.0 Ok")
            elif verb == b"NOOP":
                send("250 2.0.0 Ok")
            elif verb == b"QUIT":
                send("221 2.0.0 Bye")
                return
            elif verb == b"STARTTLS":
                # Must never arrive: odmr-fetch answers it itself.
                send("454 4.7.0 fetch_sink: STARTTLS reached the local MTA")
            else:
                send("502 5.5.2 Error: command not recognized")
    except (OSError, ValueError):
        return
    finally:
        conn.close()


if __name__ == "__main__":
    sys.exit(main())
