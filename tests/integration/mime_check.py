#!/usr/bin/python3
"""mime_check.py BUILD_DIR - the MIME downgrade seen by Python's email package.

Each message is written in queue wire form (CRLF, dot-stuffed, ".\r\n"),
converted by the library (BUILD_DIR/tests/test_mime convert IN OUT), and
the output is checked: wire form, every byte 7-bit, quoted-printable lines
at most 76 characters; parsed by email.parser.BytesParser, it has the same
tree of parts as the input, the same headers but the Content-Transfer-
Encoding (and the MIME-Version / Content-Type added where missing), each
leaf decodes to the same bytes, a leaf that was 7-bit is byte for byte the
same, a leaf that was 8-bit is now quoted-printable. Messages that cannot
be converted must exit 2 with a reason.

Prints "ok NAME" or "fail NAME: REASON" per case.
"""
import email
import email.policy
import os
import subprocess
import sys
import tempfile
from email.message import EmailMessage
from email.parser import BytesParser

BUILD = sys.argv[1]
DRIVER = os.path.join(BUILD, "tests", "test_mime")
TMP = tempfile.mkdtemp(prefix="odmr-mime.")


def crlf(text):
    """bytes with LF or CRLF line ends -> CRLF."""
    return text.replace(b"\r\n", b"\n").replace(b"\n", b"\r\n")


def to_wire(msg_bytes):
    lines = msg_bytes.split(b"\r\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = [(b"." + l if l.startswith(b".") else l) + b"\r\n" for l in lines]
    return b"".join(out) + b".\r\n"


def from_wire(data):
    """Check wire form and 7-bit; return the message bytes."""
    if not data.endswith(b".\r\n"):
        raise ValueError("output does not end with .CRLF")
    for i, ch in enumerate(data):
        if ch >= 0x80:
            raise ValueError("8-bit byte 0x%02x at offset %d" % (ch, i))
        if ch == 0x0A and (i == 0 or data[i - 1] != 0x0D):
            raise ValueError("bare LF at offset %d" % i)
    body = data[:-3]
    out = []
    for line in body.split(b"\r\n")[:-1]:
        if line.startswith(b"."):
            if not line.startswith(b".."):
                raise ValueError("unstuffed line %r" % line[:40])
            line = line[1:]
        out.append(line + b"\r\n")
    return b"".join(out)


def convert(msg_bytes):
    src = os.path.join(TMP, "in")
    dst = os.path.join(TMP, "out")
    with open(src, "wb") as f:
        f.write(to_wire(msg_bytes))
    p = subprocess.run([DRIVER, "convert", src, dst], capture_output=True, timeout=120)
    out = b""
    if p.returncode == 0:
        with open(dst, "rb") as f:
            out = f.read()
    return p.returncode, out, p.stderr.decode("ascii", "replace").strip()


def parse(b):
    return BytesParser(policy=email.policy.compat32).parsebytes(b)


def norm(b):
    return (b or b"").replace(b"\r\n", b"\n")


def leaves(msg):
    return [part for part in msg.walk() if not part.is_multipart()]


def raw_payload(part):
    """The body as it stands in the message, bytes (compat32 keeps it as a
    str with surrogate escapes; get_payload() would decode the charset)."""
    return part._payload.encode("ascii", "surrogateescape")


def headers(part):
    return [(k.lower(), v) for k, v in part.items()]


def compare(orig_bytes, out_bytes):
    """Raise ValueError on the first difference."""
    orig, conv = parse(orig_bytes), parse(out_bytes)
    if orig.defects or conv.defects:
        raise ValueError("parse defects: %r / %r" % (orig.defects, conv.defects))
    o_parts, c_parts = list(orig.walk()), list(conv.walk())
    if len(o_parts) != len(c_parts):
        raise ValueError("%d parts became %d" % (len(o_parts), len(c_parts)))
    converted = 0
    for n, (o, c) in enumerate(zip(o_parts, c_parts)):
        if o.get_content_type() != c.get_content_type():
            raise ValueError("part %d: %s became %s" % (n, o.get_content_type(), c.get_content_type()))
        if o.get_content_charset() != c.get_content_charset() and o.get("content-type") is not None:
            raise ValueError("part %d: charset %s became %s" % (n, o.get_content_charset(),
                                                               c.get_content_charset()))
        added = {"content-transfer-encoding"}
        if "mime-version" not in o:
            added.add("mime-version")
        if "content-type" not in o:
            added.add("content-type")
        oh = [h for h in headers(o) if h[0] != "content-transfer-encoding"]
        ch = [h for h in headers(c) if h[0] not in added]
        if oh != ch:
            raise ValueError("part %d: headers %r became %r" % (n, oh, ch))
        if o.is_multipart():
            continue
        o_raw = o.get_payload(decode=True)
        c_raw = c.get_payload(decode=True)
        if norm(o_raw) != norm(c_raw):
            raise ValueError("part %d (%s): decoded payload differs: %r... vs %r..."
                             % (n, o.get_content_type(), norm(o_raw)[:60], norm(c_raw)[:60]))
        was_8bit = any(b >= 0x80 for b in raw_payload(o))
        cte = (c.get("content-transfer-encoding") or "").strip().lower()
        if was_8bit:
            converted += 1
            if cte != "quoted-printable":
                raise ValueError("part %d: 8-bit part labelled %r" % (n, cte))
            for line in raw_payload(c).split(b"\r\n"):
                if len(line) > 76:
                    raise ValueError("part %d: QP line of %d characters" % (n, len(line)))
        elif raw_payload(o) != raw_payload(c) or \
                o.get("content-transfer-encoding") != c.get("content-transfer-encoding"):
            raise ValueError("part %d: 7-bit part changed" % n)
    return converted


# ---- the messages --------------------------------------------------------

TEXT = ("Grüße aus Köln. Naïve café, smörgåsbord = 100 % €\n"
        ".a line that starts with a dot\n"
        ".\n"
        "-- \n"
        "trailing blanks  \t\n"
        "--not-a-boundary\n") * 3


def m_text_plain():
    m = EmailMessage()
    m["From"] = "a@sink.test"
    m["To"] = "b@example.org"
    m["Subject"] = "8bit text"
    m.set_content(TEXT, charset="utf-8", cte="8bit")
    return crlf(m.as_bytes())


def m_no_mime_version():
    return crlf(b"From: a@sink.test\nSubject: legacy\n\n" + TEXT.encode("latin-1", "replace"))


def m_alternative():
    m = EmailMessage()
    m["From"] = "a@sink.test"
    m["To"] = "b@example.org"
    m["Subject"] = "alternative"
    m.set_content("plain ascii only\n.dot line\n", charset="us-ascii", cte="7bit")
    # The soft line break after 75 characters falls before "--fixed-bnd":
    # unless the dash is encoded, the converted text would end the part.
    m.add_alternative("<p>" + TEXT + "</p>\n" + "z" * 75 + "--fixed-bnd\n",
                      subtype="html", charset="utf-8", cte="8bit")
    m.set_boundary("fixed-bnd")
    return crlf(m.as_bytes())


def m_nested():
    inner = EmailMessage()
    inner["From"] = "x@sink.test"
    inner["Subject"] = "forwarded"
    inner.set_content("forwarded " + TEXT, charset="utf-8", cte="8bit")
    m = EmailMessage()
    m["From"] = "a@sink.test"
    m["To"] = "b@example.org"
    m["Subject"] = "nested"
    m.set_content("see the attachments\n", charset="us-ascii", cte="7bit")
    m.add_alternative("<b>" + TEXT + "</b>\n", subtype="html", charset="utf-8", cte="8bit")
    m.make_mixed()
    m.attach(inner)
    m.add_attachment(bytes(range(256)) * 20, maintype="application", subtype="octet-stream",
                     filename="blob.bin")
    m.add_attachment(TEXT.encode("iso-8859-15", "replace"), maintype="text", subtype="plain",
                     cte="8bit", disposition="attachment", filename="latin.txt",
                     params={"charset": "iso-8859-15"})
    return crlf(m.as_bytes())


def m_long_lines():
    long_line = ("é=ü " * 700) + "-" * 300 + "\t"
    m = EmailMessage()
    m["Subject"] = "long lines"
    m.set_content(long_line + "\n" + "x" * 5000 + "\n" + long_line + "\n", charset="utf-8",
                  cte="8bit")
    return crlf(m.as_bytes())


def m_digest():
    return crlf(("MIME-Version: 1.0\nSubject: digest\n"
                 "Content-Type: multipart/digest; boundary=\"dg\"\n\n"
                 "--dg\n\nSubject: one\n\nfirst " + TEXT + "\n"
                 "--dg\n\nSubject: two\nContent-Type: text/plain; charset=us-ascii\n\nascii two\n"
                 "--dg--\n").encode("utf-8"))


def m_big():
    m = EmailMessage()
    m["Subject"] = "big"
    m.set_content(TEXT * 4000, charset="utf-8", cte="8bit")   # about 1.5 MB
    return crlf(m.as_bytes())


CASES = [
    ("8bit text/plain", m_text_plain),
    ("8bit without MIME-Version", m_no_mime_version),
    ("8bit multipart/alternative, 7-bit part kept", m_alternative),
    ("nested multipart, message/rfc822, base64 attachment", m_nested),
    ("long lines", m_long_lines),
    ("multipart/digest", m_digest),
    ("1.5 MB body", m_big),
]

IMPOSSIBLE = [
    ("8-bit header", crlf("Subject: Grüße\nMIME-Version: 1.0\n\nbody\n".encode("utf-8")),
     "header"),
    ("binary part", crlf(b"MIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=b\n\n--b\n"
                         b"Content-Type: application/octet-stream\n"
                         b"Content-Transfer-Encoding: binary\n\n\x00\xff\xfe\n--b--\n"), "binary"),
    ("8-bit in base64 part", crlf(b"MIME-Version: 1.0\nContent-Transfer-Encoding: base64\n\n"
                                  b"\xe9\xe9\xe9\n"), "base64"),
]


def main():
    try:
        for name, make in CASES:
            orig = make()
            rc, out, err = convert(orig)
            if rc != 0:
                print("fail %s: exit %d: %s" % (name, rc, err))
                continue
            try:
                n = compare(orig, from_wire(out))
            except ValueError as e:
                print("fail %s: %s" % (name, e))
                continue
            if n == 0:
                print("fail %s: no part was converted" % name)
                continue
            print("ok %s (%d part(s) converted)" % (name, n))
        for name, orig, why in IMPOSSIBLE:
            rc, out, err = convert(orig)
            if rc == 2 and why in err:
                print("ok cannot convert: %s (%s)" % (name, err))
            else:
                print("fail cannot convert: %s: exit %d, reason %r" % (name, rc, err))
        # A 7-bit message is left as it is.
        orig = crlf(b"Subject: ascii\nMIME-Version: 1.0\n\nplain\n.dot\n")
        rc, out, err = convert(orig)
        if rc == 0 and out == to_wire(orig):
            print("ok 7-bit message unchanged")
        else:
            print("fail 7-bit message unchanged: exit %d %s" % (rc, err))
    finally:
        for f in os.listdir(TMP):
            os.unlink(os.path.join(TMP, f))
        os.rmdir(TMP)


main()
