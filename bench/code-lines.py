#!/usr/bin/env python3
"""The code a request runs, in 64-byte instruction-cache lines, from a callgrind profile.

Usage: bench/code-lines.py PROFILE --requests N [--top K] [--function SUBSTRING] [--names]

PROFILE is a callgrind output made with `--dump-instr=yes` (and `--toggle-collect` on the
measured part); N is the number of requests it measured. A code line counts when one of its
instructions ran at least N times (0.95 N, for rounding), that is once per request or more: the
lines printed are what every request needs in the instruction cache. Rarely run code (an
allocator's slow path, a grown buffer) is left out.

Prints the total (lines, KiB, and the 4 KiB pages they lie on) and the functions with the most lines; with --function, the
source lines (file:line, as the debug info names them) inside the matching functions; with
--names, only the names of every function that has such a line, most lines first, one a line
(from a profile made with `--demangle=no`, the linker's symbol names:
tuning/hot-functions.sh orders the binary's code with them). Line
numbers need a build with debug line tables:

    CARGO_PROFILE_RELEASE_DEBUG=line-tables-only cargo build --release -p fcgi-loadtest \\
        --example request_path
    valgrind --tool=callgrind --dump-instr=yes --toggle-collect='*run_rounds*' \\
        --callgrind-out-file=/tmp/rp.out target/release/examples/request_path hello 200
    bench/code-lines.py /tmp/rp.out --requests 200
"""

import argparse
import collections
import re

LINE = 64
# The pages the lines lie on: each one an entry of the instruction TLB.
PAGE = 4096
NAMED = re.compile(r"^(fn|cfn|fl|fi|fe|cfi|cfl|ob|cob)=\((\d+)\)(?: (.*))?$")


def code_lines(path, min_count, pattern):
    """{function: set of code lines} and, for functions matching `pattern`,
    {source position: set of code lines}."""
    names, files = {}, {}
    fn = file = inlined = None
    addr = line = 0
    call_site = False
    by_fn = collections.defaultdict(set)
    by_source = collections.defaultdict(set)
    with open(path, encoding="utf-8", errors="replace") as profile:
        for raw in profile:
            text = raw.rstrip("\n")
            named = NAMED.match(text)
            if named:
                kind, ident, name = named.groups()
                if kind in ("fn", "cfn"):
                    if name:
                        names[ident] = name
                    if kind == "fn":
                        fn, inlined = names.get(ident, ident), None
                elif kind in ("fl", "fi", "fe", "cfi", "cfl"):
                    if name:
                        files[ident] = name
                    if kind == "fl":
                        file, inlined = files.get(ident, ident), None
                    elif kind in ("fi", "fe"):
                        inlined = files.get(ident, ident)
                continue
            if text.startswith("calls="):
                # The next cost line is the call's inclusive cost, at the call's address.
                call_site = True
                continue
            if not text or text[0] not in "0+-*":
                continue
            fields = text.split()
            addr = position(fields[0], addr)
            if len(fields) > 1:
                line = position(fields[1], line)
            if call_site:
                call_site = False
                continue
            try:
                count = int(fields[-1])
            except ValueError:
                continue
            if count < min_count or fn is None:
                continue
            by_fn[fn].add(addr // LINE)
            if pattern and pattern in fn:
                source = "/".join((inlined or file or "?").split("/")[-2:])
                by_source[f"{source}:{line}"].add(addr // LINE)
    return by_fn, by_source


def position(field, previous):
    """A callgrind position: absolute (hex or decimal), relative (+n, -n) or the same (*)."""
    if field == "*":
        return previous
    if field[0] == "+":
        return previous + int(field[1:])
    if field[0] == "-":
        return previous - int(field[1:])
    return int(field, 16) if field.startswith("0x") else int(field)


def main():
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n", 1)[0],
        usage="bench/code-lines.py PROFILE --requests N [--top K] [--function SUBSTRING] [--names]",
    )
    p.add_argument("profile", help="callgrind output made with --dump-instr=yes")
    p.add_argument("--requests", type=int, required=True, help="requests the profile measured")
    p.add_argument("--top", type=int, default=25, help="functions to list (default 25)")
    p.add_argument("--function", help="list the source lines of functions containing this")
    p.add_argument("--names", action="store_true",
                   help="print only the names of the functions run by every request")
    args = p.parse_args()
    if args.requests < 1:
        raise SystemExit("--requests must be at least 1")
    by_fn, by_source = code_lines(args.profile, int(args.requests * 0.95), args.function)
    if not by_fn:
        raise SystemExit(
            f"{args.profile}: no instruction ran {args.requests} times; was it made with "
            "--dump-instr=yes, and does --requests match the measured requests?"
        )
    if args.names:
        for fn, _ in sorted(by_fn.items(), key=lambda kv: (-len(kv[1]), kv[0])):
            print(fn)
        return
    every = set().union(*by_fn.values())
    pages = len({line * LINE // PAGE for line in every})
    print(f"code lines run by every request: {len(every)} ({len(every) * LINE / 1024:.1f} KiB)"
          f" on {pages} pages of {PAGE // 1024} KiB")
    for fn, lines in sorted(by_fn.items(), key=lambda kv: -len(kv[1]))[: args.top]:
        print(f"{len(lines):6d}  {fn[:140]}")
    if args.function:
        if not by_source:
            raise SystemExit(f"no function containing {args.function!r} ran every request")
        lines = set().union(*by_source.values())
        print(f"\nin functions containing {args.function!r}: {len(lines)} lines")
        for source, lines in sorted(by_source.items(), key=lambda kv: -len(kv[1]))[: args.top]:
            print(f"{len(lines):6d}  {source}")


if __name__ == "__main__":
    main()
