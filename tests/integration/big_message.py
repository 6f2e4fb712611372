#!/usr/bin/python3
"""big_message.py OUT SIZE - write a test message of about SIZE bytes to OUT
(LF line ends, as odmr-enqueue takes it) and print the SHA-256 and length
of its SMTP wire form (CRLF line ends, dot-stuffed, without the final
dot): what the customer's MTA must receive, byte for byte.

The body mixes every byte value but NUL, CR and LF, lines that start with
one or more dots (and a line that is just "."), empty lines and lines of
every length up to 998 bytes. Deterministic (seeded). Only the standard
library."""
import hashlib
import random
import sys


def main():
    out, size = sys.argv[1], int(sys.argv[2])
    rnd = random.Random(2645)
    alphabet = bytes(b for b in range(1, 256) if b not in (10, 13))
    h = hashlib.sha256()
    wire_len = 0
    written = 0
    with open(out, "wb") as f:
        def line(b):
            nonlocal wire_len, written
            f.write(b + b"\n")
            written += len(b) + 1
            w = (b"." + b if b.startswith(b".") else b) + b"\r\n"
            h.update(w)
            wire_len += len(w)
        line(b"From: big sender <big@sender.test>")
        line(b"To: big@example.org")
        line(b"Subject: 100 MiB byte-exact test")
        line(b"MIME-Version: 1.0")
        line(b"Content-Type: application/octet-stream")
        line(b"Content-Transfer-Encoding: 8bit")
        line(b"")
        block = bytes(rnd.choice(alphabet) for _ in range(1 << 16))
        specials = [b".", b"..", b". leading dot", b".." * 400, b"", b"\xff\xfe 8-bit \x80",
                    b"x" * 998, b".\t"]
        n = 0
        while written < size:
            n += 1
            if n % 17 == 0:
                line(specials[n % len(specials)])
                continue
            length = rnd.randrange(0, 999)
            start = rnd.randrange(0, len(block) - length)
            b = block[start:start + length]
            line(b)
    print(h.hexdigest(), wire_len)


main()
