#!/usr/bin/env python3
"""Count test results from meson's testlog.json files (one or more): every
TAP case counts, a test without TAP output counts once. Prints
'N passed, N failed'."""
import json
import re
import sys


def count(test):
    """(passed, failed, skipped) of one test record."""
    out = test.get('stdout') or ''
    oks = len(re.findall(r'^ok \d+(?!.*# SKIP)', out, re.M))
    skips = len(re.findall(r'^ok \d+.*# SKIP', out, re.M))
    bad = len(re.findall(r'^not ok \d+', out, re.M))
    if test.get('result') not in ('OK', 'SKIP', 'EXPECTEDFAIL') and bad == 0:
        bad = 1   # crashed or timed out before a TAP line said so
    if oks + skips + bad == 0:
        if test.get('result') == 'SKIP':
            skips = 1
        else:
            oks = 1
    return oks, bad, skips


def main():
    passed = failed = skipped = 0
    for path in sys.argv[1:]:
        with open(path, encoding='utf-8') as f:
            for line in f:
                if line.strip():
                    p, b, s = count(json.loads(line))
                    passed, failed, skipped = passed + p, failed + b, skipped + s
    summary = f'{passed} passed, {failed} failed'
    if skipped:
        summary += f', {skipped} skipped'
    print(summary)
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
