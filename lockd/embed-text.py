#!/usr/bin/env python3
# Turn a text file into a C header holding it as one string constant.
import sys

src, dst, name = sys.argv[1:4]
with open(src, encoding='utf-8') as f:
    text = f.read()
with open(dst, 'w', encoding='utf-8') as f:
    f.write('/* generated from %s: do not edit */\n#pragma once\n' % src.split('/')[-1])
    f.write('static const char %s[] =\n' % name)
    for line in text.splitlines(True):
        f.write('    "%s"\n' % line.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n'))
    f.write(';\n')
