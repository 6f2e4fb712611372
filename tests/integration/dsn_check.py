#!/usr/bin/python3
"""dsn_check.py - check a delivery status notification field by field.

    dsn_check.py NAME FILE EXPECTATION...

FILE is one message as delivered (a Maildir file); it is parsed with
Python's email package (RFC 3464 / 6522 structure). Each EXPECTATION is
SCOPE:FIELD OP VALUE, where

    SCOPE  header          the notice's own header
           msg             the per-message fields of message/delivery-status
           rcpt=ADDR       the per-recipient fields whose Final-Recipient is ADDR
    OP     =   equal (white space folded, case kept)
           ~   contains
           ?   present (no VALUE)
           !   absent (no VALUE)

and these stand alone:

    type=CT             the top Content-Type (multipart/report)
    report-type=X       its report-type parameter
    part3=CT            the third part's Content-Type (message/rfc822,
                        text/rfc822-headers, ...) or "none"
    returned~TEXT       the returned message or headers contain TEXT
    returned!TEXT       ... do not contain TEXT
    rcpts=N             the number of per-recipient groups

Prints "ok NAME: EXPECTATION" or "fail NAME: EXPECTATION: why" per
expectation (tests/integration/lib.sh py_checks records them).
"""

import email
import email.policy
import re
import sys


def fold(v):
    # str(): a field with 8-bit text (message/global-delivery-status)
    # comes as an email.header.Header.
    return re.sub(r"\s+", " ", str(v) if v is not None else "").strip()


def report_groups(msg):
    """The message/delivery-status part as a list of field dicts."""
    for part in msg.walk():
        if part.get_content_type() in ("message/delivery-status",
                                       "message/global-delivery-status"):
            payload = part.get_payload()
            groups = []
            if part.get_content_type() == "message/global-delivery-status" \
                    and isinstance(payload, list):
                # Parsed as one embedded message (headers: the first
                # group, body: the rest): read the groups from its bytes.
                payload = b"".join(m.as_bytes() for m in payload).decode("utf-8", "replace")
            if isinstance(payload, list):
                for block in payload:
                    groups.append({k.lower(): fold(v) for k, v in block.items()})
            else:
                text = payload if isinstance(payload, str) else payload.decode()
                for block in re.split(r"\r?\n\r?\n", text.strip()):
                    fields, last = {}, None
                    for line in block.splitlines():
                        if line[:1] in (" ", "\t") and last:
                            fields[last] += " " + line.strip()
                        elif ":" in line:
                            k, v = line.split(":", 1)
                            last = k.strip().lower()
                            fields[last] = v.strip()
                    groups.append({k: fold(v) for k, v in fields.items()})
            return groups
    return None


def main():
    name, path = sys.argv[1], sys.argv[2]
    with open(path, "rb") as f:
        msg = email.message_from_binary_file(f, policy=email.policy.compat32)
    groups = report_groups(msg) or []
    per_msg = groups[0] if groups else {}
    per_rcpt = {}
    for g in groups[1:]:
        fr = g.get("final-recipient", "")
        addr = fr.split(";", 1)[-1].strip().lower()
        per_rcpt[addr] = g
    parts = msg.get_payload() if msg.is_multipart() else []
    third = parts[2] if len(parts) > 2 else None
    if third is None:
        returned = ""
    elif third.is_multipart():
        returned = third.as_string()
    else:
        returned = third.get_payload(decode=False)
        if not isinstance(returned, str):
            returned = str(returned)

    for exp in sys.argv[3:]:
        why = None
        m = re.match(r"^(type|report-type|part3|rcpts)=(.*)$", exp)
        r = re.match(r"^returned([~!])(.*)$", exp)
        if m:
            key, want = m.group(1), m.group(2)
            if key == "type":
                got = msg.get_content_type()
            elif key == "report-type":
                got = msg.get_param("report-type") or ""
            elif key == "part3":
                got = third.get_content_type() if third is not None else "none"
            else:
                got = str(len(per_rcpt))
            if got != want:
                why = "got %r" % got
        elif r:
            has = r.group(2) in returned
            if (r.group(1) == "~") != has:
                why = "returned part %s %r" % ("lacks" if not has else "has", r.group(2))
        else:
            m = re.match(r"^(header|msg|rcpt=[^:]+):([A-Za-z0-9-]+)([=~?!])(.*)$", exp)
            if not m:
                print("fail %s: %s: bad expectation" % (name, exp))
                continue
            scope, field, op, want = m.groups()
            if scope == "header":
                got = msg.get(field)
                got = fold(str(got)) if got is not None else None
            elif scope == "msg":
                got = per_msg.get(field.lower())
            else:
                g = per_rcpt.get(scope[5:].lower())
                if g is None:
                    print("fail %s: %s: no recipient group for %s (have %s)"
                          % (name, exp, scope[5:], sorted(per_rcpt)))
                    continue
                got = g.get(field.lower())
            if op == "?" and got is None:
                why = "absent"
            elif op == "!" and got is not None:
                why = "present: %r" % got
            elif op == "=" and got != fold(want):
                why = "got %r" % got
            elif op == "~" and (got is None or want not in got):
                why = "got %r" % got
        if why is None:
            print("ok %s: %s" % (name, exp))
        else:
            print("fail %s: %s: %s" % (name, exp, why))


if __name__ == "__main__":
    main()
