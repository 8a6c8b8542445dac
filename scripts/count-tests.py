#!/usr/bin/env python3
"""Count test results from meson's testlog.json: every TAP case counts, a
test without TAP output counts once. Prints 'N passed, N failed'."""
import json
import re
import sys

passed = failed = skipped = 0
with open(sys.argv[1], encoding='utf-8') as f:
    for line in f:
        if not line.strip():
            continue
        t = json.loads(line)
        out = t.get('stdout') or ''
        oks = len(re.findall(r'^ok \d+(?! # SKIP)', out, re.M))
        skips = len(re.findall(r'^ok \d+.*# SKIP', out, re.M))
        bad = len(re.findall(r'^not ok \d+', out, re.M))
        if t.get('result') not in ('OK', 'SKIP', 'EXPECTEDFAIL') and bad == 0:
            bad = 1   # crashed or timed out before a TAP line said so
        if oks + skips + bad == 0:
            if t.get('result') == 'SKIP':
                skips = 1
            else:
                oks = 1
        passed += oks
        failed += bad
        skipped += skips
line = f'{passed} passed, {failed} failed'
if skipped:
    line += f', {skipped} skipped'
print(line)
sys.exit(1 if failed else 0)
