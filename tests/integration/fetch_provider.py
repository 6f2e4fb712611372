#!/usr/bin/python3
"""fetch_provider.py - a scripted ODMR provider for t_fetch_provider.sh:
what the project's odmrd never does.

    fetch_provider.py --port-file FILE --mode MODE [--delay SECONDS]

Listens on 127.0.0.1 (a free port, written to FILE), serves connections
one after another until killed. Every mode offers AUTH CRAM-MD5 and
accepts any response; no mode offers STARTTLS.

    nostarttls   a normal server without STARTTLS: ATRN gets 453
    garbage      ATRN gets a line that is no SMTP reply
    slow         ATRN's reply (453) comes after --delay seconds
    reverse      ATRN gets 250; then, as the SMTP client of the reversed
                 session: EHLO, STARTTLS (must get 502, and must not have
                 been announced), then one message; writes the replies it
                 got to FILE.transcript

Only the Python standard library.
"""
import argparse
import base64
import socket
import time


def reply(f):
    lines = []
    while True:
        line = f.readline().decode("utf-8", "replace").rstrip("\r\n")
        if not line:
            return lines
        lines.append(line)
        if len(line) < 4 or line[3] != "-":
            return lines


def serve(conn, a):
    f = conn.makefile("rb")

    def send(text):
        conn.sendall(text.encode() + b"\r\n")

    send("220 provider.test ESMTP scripted")
    while True:
        line = f.readline()
        if not line:
            return
        cmd = line.decode("utf-8", "replace").rstrip("\r\n")
        verb = cmd.split(" ", 1)[0].upper()
        if verb == "EHLO":
            send("250-provider.test")
            send("250 AUTH CRAM-MD5")
        elif verb == "AUTH":
            send("334 " + base64.b64encode(b"<1.2@provider.test>").decode())
            f.readline()
            send("235 2.7.0 Authentication successful")
        elif verb == "ATRN":
            if a.mode == "garbage":
                send("this is not an SMTP reply")
            elif a.mode == "slow":
                time.sleep(a.delay)
                send("453 4.0.0 You have no mail")
            elif a.mode == "reverse":
                send("250 2.0.0 OK now reversing the connection")
                reversed_session(conn, f, a)
                return
            else:
                send("453 4.0.0 You have no mail")
        elif verb == "QUIT":
            send("221 2.0.0 Bye")
            return
        else:
            send("502 5.5.2 Error: command not recognized")


def reversed_session(conn, f, a):
    out = []

    def cmd(text):
        conn.sendall(text.encode() + b"\r\n")
        r = reply(f)
        out.append("%s -> %s" % (text, " | ".join(r)))
        return r

    out.append("greeting -> " + " | ".join(reply(f)))
    cmd("EHLO provider.test")
    cmd("STARTTLS")
    cmd("MAIL FROM:<s@sender.test>")
    cmd("RCPT TO:<u@example.org>")
    cmd("DATA")
    conn.sendall(b"Subject: reversed\r\n\r\n..dot\r\nbody\r\n.\r\n")
    out.append("dot -> " + " | ".join(reply(f)))
    cmd("QUIT")
    with open(a.port_file + ".transcript", "w") as t:
        t.write("\n".join(out) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port-file", required=True)
    ap.add_argument("--mode", required=True)
    ap.add_argument("--delay", type=float, default=3)
    a = ap.parse_args()
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    with open(a.port_file + ".tmp", "w") as pf:
        pf.write("%d\n" % srv.getsockname()[1])
    import os
    os.rename(a.port_file + ".tmp", a.port_file)
    while True:
        conn, _ = srv.accept()
        try:
            serve(conn, a)
        except OSError:
            pass
        finally:
            conn.close()


if __name__ == "__main__":
    main()
