#!/usr/bin/env python3
"""varlink-conformance.py SRCDIR: vmleased's varlink interfaces against the
varlink specification (https://varlink.org/Interface-Definition), with a
parser of its own that follows the spec's grammar, and against a live
vmleased (started here in a temporary VMLEASE_ROOT and stopped by its pid).
TAP output.

Checked:
 - every docs/*.varlink file parses: one "interface NAME" with a
   reverse-domain name, members "type", "method" and "error" with type
   names (Uppercase + alphanumerics), field names (a letter, then
   alphanumerics each after at most one '_'), types bool/int/float/string/
   object, [] arrays, [string] maps, ?optional, inline structs and enums,
   and references only to types the same interface declares;
 - no member name twice in one interface (varlink-go's "method `List`
   already defined");
 - a type declared by two interfaces reads the same in both;
 - every method name in lib/vml-protocol.h is declared by its interface, and
   every io.vmlease.* error name in lib/vml-error.c that travels is declared
   by io.vmlease;
 - GetInfo lists org.varlink.service and exactly these interfaces;
   GetInterfaceDescription returns each file's text; an unknown interface
   answers InterfaceNotFound, an unknown method of a known interface
   MethodNotFound, and a method of an unknown interface InterfaceNotFound.
"""
import glob
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

SRC = sys.argv[1]
results = []


def check(ok, what, detail=""):
    results.append((bool(ok), what, detail))


# ---- the grammar -----------------------------------------------------------

INTERFACE_NAME = re.compile(r"[A-Za-z]([-]*[A-Za-z0-9])*(\.[A-Za-z0-9]([-]*[A-Za-z0-9])*)+$")
TYPE_NAME = re.compile(r"[A-Z][A-Za-z0-9]*$")
FIELD_NAME = re.compile(r"[A-Za-z](_?[A-Za-z0-9])*$")
BASIC = {"bool", "int", "float", "string", "object"}


class ParseError(Exception):
    pass


def tokens(text):
    """Words, punctuation and '->'; comments and whitespace dropped."""
    out = []
    for line in text.split("\n"):
        line = line.split("#", 1)[0]
        out.extend(re.findall(r"->|[A-Za-z0-9_.\-]+|[()\[\]?:,]", line))
        rest = re.sub(r"->|[A-Za-z0-9_.\-]+|[()\[\]?:,]|\s", "", line)
        if rest:
            raise ParseError("stray characters %r" % rest)
    return out


class Parser:
    def __init__(self, text):
        self.t = tokens(text)
        self.i = 0
        self.refs = []   # type names used

    def peek(self):
        return self.t[self.i] if self.i < len(self.t) else None

    def take(self, want=None):
        tok = self.peek()
        if tok is None or (want is not None and tok != want):
            raise ParseError("expected %s, found %s" % (want or "a token", tok))
        self.i += 1
        return tok

    def vtype(self):
        tok = self.peek()
        if tok == "?":
            self.take()
            if self.peek() == "?":
                raise ParseError("?? is not a type")
            return "?" + self.vtype()
        if tok == "[":
            self.take()
            if self.peek() == "]":
                self.take()
                return "[]" + self.vtype()
            self.take("string")
            self.take("]")
            return "[string]" + self.vtype()
        if tok == "(":
            return self.struct_or_enum()
        tok = self.take()
        if tok in BASIC:
            return tok
        if not TYPE_NAME.match(tok):
            raise ParseError("%r is no type" % tok)
        self.refs.append(tok)
        return tok

    def struct_or_enum(self):
        """( field: type, ... ) or ( a, b, ... ): canonical text."""
        self.take("(")
        fields, names, enum = [], set(), None
        while self.peek() != ")":
            name = self.take()
            if not FIELD_NAME.match(name):
                raise ParseError("%r is no field name" % name)
            if name in names:
                raise ParseError("field %r twice" % name)
            names.add(name)
            if self.peek() == ":":
                if enum is True:
                    raise ParseError("an enum and a struct at once")
                enum = False
                self.take(":")
                fields.append("%s: %s" % (name, self.vtype()))
            else:
                if enum is False:
                    raise ParseError("an enum and a struct at once")
                enum = True
                fields.append(name)
            if self.peek() == ",":
                self.take()
                if self.peek() == ")":
                    raise ParseError("a trailing comma")
            elif self.peek() != ")":
                raise ParseError("expected ',' or ')', found %s" % self.peek())
        self.take(")")
        return "(" + ", ".join(fields) + ")"

    def interface(self):
        self.take("interface")
        name = self.take()
        if not INTERFACE_NAME.match(name):
            raise ParseError("%r is no interface name" % name)
        members = {}
        while self.peek() is not None:
            kind = self.take()
            if kind not in ("type", "method", "error"):
                raise ParseError("expected type, method or error, found %s" % kind)
            mname = self.take()
            if not TYPE_NAME.match(mname):
                raise ParseError("%r is no %s name" % (mname, kind))
            if mname in members:
                raise ParseError("%s `%s` already defined" % (kind, mname))
            if kind == "method":
                sig = self.struct_or_enum()
                self.take("->")
                sig += " -> " + self.struct_or_enum()
            else:
                sig = self.struct_or_enum()
            members[mname] = (kind, sig)
        if not members:
            raise ParseError("an interface with no members")
        for ref in self.refs:
            if members.get(ref, ("",))[0] != "type":
                raise ParseError("type %s is not declared in %s" % (ref, name))
        return name, members


# ---- the files ---------------------------------------------------------------

files = sorted(glob.glob(os.path.join(SRC, "docs", "*.varlink")))
check(len(files) == 4, "four interface files in docs/", ", ".join(map(os.path.basename, files)))
interfaces = {}
texts = {}
for path in files:
    text = open(path, encoding="utf-8").read()
    try:
        name, members = Parser(text).interface()
        check(True, "%s parses as varlink" % os.path.basename(path))
        check(os.path.basename(path) == name + ".varlink",
              "%s is named after its interface %s" % (os.path.basename(path), name))
        interfaces[name] = members
        texts[name] = text
    except ParseError as e:
        check(False, "%s parses as varlink" % os.path.basename(path), str(e))

# A type two interfaces declare must be the same type.
seen = {}
for iface, members in interfaces.items():
    for mname, (kind, sig) in members.items():
        if kind == "type":
            seen.setdefault(mname, []).append((iface, sig))
for tname, decls in sorted(seen.items()):
    if len(decls) > 1:
        check(len({sig for _, sig in decls}) == 1,
              "type %s reads the same in %s" % (tname, ", ".join(i for i, _ in decls)),
              "; ".join("%s: %s" % d for d in decls))

# Every method the daemon and its clients name is declared.
protocol = open(os.path.join(SRC, "lib", "vml-protocol.h"), encoding="utf-8").read()
for method in re.findall(r'#define VML_METHOD_\w+\s+"([^"]+)"', protocol):
    iface, _, mname = method.rpartition(".")
    if iface == "org.varlink.service":
        continue
    check(interfaces.get(iface, {}).get(mname, ("",))[0] == "method",
          "method %s is declared by %s" % (method, iface))

# Every io.vmlease error that goes on the wire is declared by io.vmlease.
errors = open(os.path.join(SRC, "lib", "vml-error.c"), encoding="utf-8").read()
LOCAL_ONLY = {"io.vmlease.ConfigError", "io.vmlease.ProtocolError"}
for err in re.findall(r'"(io\.vmlease\.[A-Za-z]+)"', errors):
    if err in LOCAL_ONLY:
        continue
    iface, _, ename = err.rpartition(".")
    check(interfaces.get(iface, {}).get(ename, ("",))[0] == "error",
          "error %s is declared by %s" % (err, iface))

# ---- a live vmleased ---------------------------------------------------------

root = tempfile.mkdtemp(prefix="vmlease-varlink-")
daemon = subprocess.Popen([os.environ["VMLEASED_BIN"], "--foreground"],
                          env=dict(os.environ, VMLEASE_ROOT=root),
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
try:
    admin = os.path.join(root, "run", "vmleased-admin.sock")
    for _ in range(300):
        if os.path.exists(admin):
            break
        time.sleep(0.05)
    s = socket.socket(socket.AF_UNIX)
    s.connect(admin)

    def call(method, params=None):
        s.sendall(json.dumps({"method": method, "parameters": params or {}}).encode() + b"\0")
        buf = b""
        while not buf.endswith(b"\0"):
            chunk = s.recv(1 << 20)
            if not chunk:
                raise RuntimeError("vmleased hung up")
            buf += chunk
        return json.loads(buf[:-1])

    info = call("org.varlink.service.GetInfo").get("parameters", {})
    want = ["org.varlink.service"] + sorted(interfaces)
    check(sorted(info.get("interfaces", [])) == sorted(want),
          "GetInfo lists org.varlink.service and every interface", str(info.get("interfaces")))
    for iface, text in sorted(texts.items()):
        r = call("org.varlink.service.GetInterfaceDescription", {"interface": iface})
        check(r.get("parameters", {}).get("description") == text,
              "GetInterfaceDescription(%s) is %s.varlink" % (iface, iface))
    r = call("org.varlink.service.GetInterfaceDescription", {"interface": "io.vmlease.Nope"})
    check(r.get("error") == "org.varlink.service.InterfaceNotFound" and
          r.get("parameters", {}).get("interface") == "io.vmlease.Nope",
          "an unknown interface: InterfaceNotFound naming it", json.dumps(r))
    r = call("io.vmlease.Admin.Nope")
    check(r.get("error") == "org.varlink.service.MethodNotFound" and
          r.get("parameters", {}).get("method") == "io.vmlease.Admin.Nope",
          "an unknown method of io.vmlease.Admin: MethodNotFound naming it", json.dumps(r))
    r = call("com.example.Other.Method")
    check(r.get("error") == "org.varlink.service.InterfaceNotFound" and
          r.get("parameters", {}).get("interface") == "com.example.Other",
          "a method of an interface not served: InterfaceNotFound naming it", json.dumps(r))
    s.close()
finally:
    daemon.send_signal(signal.SIGTERM)
    daemon.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)

print("1..%d" % len(results))
for n, (ok, what, detail) in enumerate(results, 1):
    print("%s %d - %s" % ("ok" if ok else "not ok", n, what))
    if not ok and detail:
        print("# " + detail.replace("\n", "\n# "))
sys.exit(0 if all(ok for ok, _, _ in results) else 1)
