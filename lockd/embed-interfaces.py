#!/usr/bin/env python3
# Turn varlink interface files into a C header: a table of each interface's
# name (from its "interface NAME" line) and its whole text, for
# org.varlink.service.GetInfo and GetInterfaceDescription.
import re
import sys

dst, srcs = sys.argv[1], sys.argv[2:]


def c_string(text):
    return ''.join('    "%s"\n' % line.replace('\\', '\\\\').replace('"', '\\"').replace('\n', '\\n')
                   for line in text.splitlines(True))


with open(dst, 'w', encoding='utf-8') as out:
    out.write('/* generated from %s: do not edit */\n#pragma once\n\n'
              % ', '.join(s.split('/')[-1] for s in srcs))
    out.write('typedef struct {\n    const char *name;\n    const char *description;\n'
              '} VmlInterfaceText;\n\n')
    out.write('static const VmlInterfaceText vml_interfaces[] = {\n')
    for src in srcs:
        with open(src, encoding='utf-8') as f:
            text = f.read()
        m = re.search(r'^interface\s+(\S+)\s*$', text, re.M)
        if not m:
            sys.exit('%s: no "interface NAME" line' % src)
        out.write('  { "%s",\n%s  },\n' % (m.group(1), c_string(text)))
    out.write('};\n')
