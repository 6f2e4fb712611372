#!/usr/bin/python3
"""odmr_cf_man_check.py CONFIG_C PAGE - odmr.cf(5) against the parameter
table in src/lib/config.c: the same parameter names, each with the same
default. Prints "ok NAME" / "fail NAME: REASON" lines (py_checks style).

The table entries are P_STR/P_ENUM/P_INT/P_TIME/P_SIZE/P_BOOL("name",
"default", ...) or {.name = "name", ... .def = TEXT or .def_fn}; a .def_fn
default is shown in the page as "the host name"; test_fault_point (a test
hook) is left out of the page."""
import re
import sys

HIDDEN = {"test_fault_point"}
MACROS = {"CONFIG_DEFAULT_DIR": None}


def table(path):
    src = open(path, encoding="utf-8").read()
    m = re.search(r'#define CONFIG_DEFAULT_DIR "([^"]*)"', src)
    MACROS["CONFIG_DEFAULT_DIR"] = m.group(1) if m else None
    body = src[src.index("static const struct param params[] = {"):]
    body = body[:body.index("\n};")]
    params = {}
    for m in re.finditer(r'P_[A-Z]+\(\s*"([^"]+)",\s*"((?:[^"\\]|\\.)*)"\s*(?:"((?:[^"\\]|\\.)*)")?', body):
        params[m.group(1)] = m.group(2) + (m.group(3) or "")
    for m in re.finditer(r'\{\.name = "([^"]+)",([^}]*)\}', body):
        rest = m.group(2)
        d = re.search(r'\.def = (?:"([^"]*)"|([A-Z_]+))', rest)
        if ".def_fn" in rest:
            params[m.group(1)] = "the host name"
        elif d:
            params[m.group(1)] = d.group(1) if d.group(1) is not None else MACROS[d.group(2)]
    return {k: v for k, v in params.items() if k not in HIDDEN}


def page(path):
    got = {}
    for line in open(path, encoding="utf-8"):
        m = re.match(r'\.IP "\\fB(.+?)\\fR \(default: (.*)\)"$', line.rstrip("\n"))
        if m:
            name = m.group(1).replace("\\-", "-")
            d = m.group(2).replace("\\-", "-")
            got[name] = "" if d == "empty" else d
    return got


def main():
    want, got = table(sys.argv[1]), page(sys.argv[2])
    if len(want) < 40:
        print("fail odmr.cf(5) table parse: only %d parameters found in %s" % (len(want), sys.argv[1]))
        return
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    wrong = sorted(n for n in set(want) & set(got) if want[n] != got[n])
    if missing:
        print("fail odmr.cf(5) lists every parameter: missing %s" % ", ".join(missing))
    else:
        print("ok odmr.cf(5) lists every parameter (%d)" % len(want))
    if extra:
        print("fail odmr.cf(5) has no unknown parameter: %s" % ", ".join(extra))
    else:
        print("ok odmr.cf(5) has no unknown parameter")
    if wrong:
        print("fail odmr.cf(5) defaults match config.c: %s" % "; ".join(
            "%s page '%s' code '%s'" % (n, got[n], want[n]) for n in wrong))
    else:
        print("ok odmr.cf(5) defaults match config.c")


main()
