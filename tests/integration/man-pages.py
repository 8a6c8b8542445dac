#!/usr/bin/env python3
"""man-pages.py SOURCEDIR BUILDDIR: the manual pages say what the code does
(TAP output).
 - every page builds from its rst without a docutils warning and renders
   with groff -man -ww (and man -l) without a warning;
 - vmlease(1) has a section for every subcommand `vmlease --help` lists,
   naming every option that subcommand's help names, and an EXIT STATUS
   entry for every VML_EXIT_ constant and every status --help lists;
   vmleased(8) one for every status its main() returns;
 - vmleased.conf(5) and qemu-vmlease.conf(5) document every key the code
   accepts (read from lockd/daemon-config.c, lockd/backends/*.c and
   plugin/plugin-config.c), with the default, range and type the code
   sets, and no key the code does not accept;
 - every key of every --json document of a real vmlease against a real
   vmleased (started here in a private VMLEASE_ROOT) is documented in
   vmlease(1)'s JSON OUTPUT, the top-level ones in that document's own
   section;
 - `meson install --destdir` puts the four pages in MANDIR/man{1,5,8}, and
   the admin guide and the files it names in the doc directory.
VMLEASED_BIN and VMLEASE_BIN name the binaries (tests/meson.build)."""
import ast
import glob
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

src, build = sys.argv[1], sys.argv[2]
man_build = os.path.join(build, "docs", "man")
PAGES = ["vmlease.1", "vmleased.8", "vmleased.conf.5", "qemu-vmlease.conf.5"]
results = []


def check(ok, what, detail=""):
    results.append(("ok" if ok else "not ok", what, detail))
    return bool(ok)


def skip(what, why):
    results.append(("skip", what, why))


def read(*parts):
    with open(os.path.join(*parts), encoding="utf-8") as f:
        return f.read()


# ---- rendering ---------------------------------------------------------------

def render(troff_path):
    """The page as plain text (wide lines, no hyphenation) and groff's stderr."""
    r = subprocess.run(["groff", "-man", "-Tutf8", "-ww", "-rLL=250n", "-rHY=0", "-P-cbou",
                        troff_path], capture_output=True, text=True)
    text = r.stdout
    for u, a in (("\u2010", "-"), ("\u2011", "-"), ("\u2212", "-"), ("\u2013", "-"),
                 ("\u2018", "'"), ("\u2019", "'"), ("\u201c", '"'), ("\u201d", '"')):
        text = text.replace(u, a)
    return r.returncode, text, r.stderr


def sections(text):
    """{SH title: {SS title or '': text}} of a rendered page."""
    out, sh, ss = {}, None, ""
    for line in text.splitlines():
        if re.match(r"^\S", line) and not re.match(r"^[A-Z0-9.\-]+\(\d\)", line):
            sh, ss = line.strip(), ""
            out.setdefault(sh, {"": ""})
        elif sh and re.match(r"^   \S", line):
            ss = line.strip()
            out[sh].setdefault(ss, "")
        elif sh:
            out[sh][ss] = out[sh].get(ss, "") + line + "\n"
    return out


rst2man = shutil.which("rst2man") or shutil.which("rst2man.py")
rendered = {}
for page in PAGES:
    troff = os.path.join(man_build, page)
    rst = troff + ".rst"
    check(os.path.exists(troff), "%s is built" % page, troff)
    text = read(rst) if os.path.exists(rst) else ""
    left = re.findall(r"@[A-Z_]+@", text)
    check(text and not left, "%s.rst has this build's paths put in" % page, " ".join(left))
    if rst2man and text:
        with tempfile.NamedTemporaryFile(suffix=".man") as out:
            r = subprocess.run([rst2man, "--halt=warning", "--report=info", rst, out.name],
                               capture_output=True, text=True)
        check(r.returncode == 0 and not r.stderr.strip(),
              "%s: rst2man reports nothing" % page, r.stderr.strip())
    else:
        check(False, "%s: rst2man reports nothing" % page, "no rst2man or no rst")
    if not os.path.exists(troff):
        rendered[page] = {}
        continue
    rc, text, err = render(troff)
    check(rc == 0 and not err.strip() and len(text) > 1000,
          "%s renders with groff -man -ww without a warning" % page, err.strip())
    if shutil.which("man"):
        r = subprocess.run(["man", "--warnings", "-l", troff], capture_output=True, text=True,
                           env=dict(os.environ, MANPAGER="cat", PAGER="cat", MANWIDTH="100"))
        check(r.returncode == 0 and not r.stderr.strip(),
              "%s renders with man -l without a warning" % page, r.stderr.strip())
    rendered[page] = sections(text)
    check("NAME" in rendered[page] and "SEE ALSO" in rendered[page],
          "%s has NAME and SEE ALSO" % page, str(list(rendered[page])))


def section_text(page, sh):
    return "".join(rendered.get(page, {}).get(sh, {}).values())


# ---- vmlease(1): subcommands, options, exit status ---------------------------

vmlease = os.environ.get("VMLEASE_BIN", os.path.join(build, "tools", "vmlease"))
vmleased = os.environ.get("VMLEASED_BIN", os.path.join(build, "lockd", "vmleased"))
env = {k: v for k, v in os.environ.items() if k != "VMLEASE_ROOT"}
help_text = subprocess.run([vmlease, "--help"], capture_output=True, text=True, env=env).stdout
sub = re.search(r"^Subcommands:\n(.*?)\n\n", help_text, re.M | re.S)
subcommands = re.findall(r"^  (\S+)", sub.group(1), re.M) if sub else []
check(len(subcommands) >= 9, "vmlease --help lists the subcommands", " ".join(subcommands))
man_subs = rendered.get("vmlease.1", {}).get("SUBCOMMANDS", {})
global_opts = set(re.findall(r"--[a-z][a-z-]*", section_text("vmlease.1", "GLOBAL OPTIONS")))
for name in subcommands:
    titles = [t for t in man_subs if re.match(r"%s(?![\w-])" % re.escape(name), t)]
    check(titles, "vmlease(1) has a section for subcommand %s" % name, str(list(man_subs)))
    if name == "help":
        continue
    text = "".join(man_subs[t] + t for t in titles)
    sub_help = subprocess.run([vmlease, "help", name], capture_output=True, text=True,
                              env=env).stdout
    opts = set(re.findall(r"(?<![\w-])--?[a-z][a-z-]*", sub_help.split("Global options")[0]))
    opts -= global_opts | {"-h", "--help", "-U"}   # -U: qemu-img's, quoted
    missing = sorted(o for o in opts if not re.search(r"(?<![\w-])%s(?![\w-])" % re.escape(o),
                                                      text))
    check(not missing, "vmlease(1) %s names every option of 'vmlease help %s'" % (name, name),
          "missing: %s" % " ".join(missing))
missing = sorted(o for o in ("--socket", "--admin-socket", "--help", "--version")
                 if o not in global_opts)
check(not missing, "vmlease(1) GLOBAL OPTIONS has every global option", " ".join(missing))


def documented_statuses(page):
    return set(int(n) for n in re.findall(r"^ {7}(\d+)(?:\s|$)",
                                          section_text(page, "EXIT STATUS"), re.M))


codes = {}
for path in glob.glob(os.path.join(src, "tools", "*.[ch]")) + \
        glob.glob(os.path.join(src, "lib", "*.[ch]")):
    for name, value in re.findall(r"\b(VML_EXIT_\w+)\s*=\s*(\d+)", read(path)):
        codes[name] = int(value)
check(len(codes) >= 7, "the VML_EXIT_ constants are found", str(codes))
in_man = documented_statuses("vmlease.1")
for name, value in sorted(codes.items(), key=lambda kv: kv[1]):
    check(value in in_man, "vmlease(1) EXIT STATUS documents %s (%d)" % (name, value),
          "documented: %s" % sorted(in_man))
helped = set(int(n) for n in re.findall(r"^  (\d+)  ", help_text.split("Exit status:")[-1],
                                        re.M))
check(helped and helped <= in_man, "vmlease(1) EXIT STATUS has every status vmlease --help lists",
      "help %s, man %s" % (sorted(helped), sorted(in_man)))
run_c = read(src, "tools", "run-command.c")
run_statuses = set(int(n) for n in re.findall(r"\b(12[6-9])\b", run_c))
exit_text = section_text("vmlease.1", "EXIT STATUS")
missing = sorted(n for n in run_statuses if str(n) not in exit_text)
check(run_statuses >= {126, 127} and not missing and "128+N" in exit_text.replace(" ", ""),
      "vmlease(1) EXIT STATUS explains run's own statuses (126, 127, 128+N)",
      "found %s, missing %s" % (sorted(run_statuses), missing))
main_c = read(src, "lockd", "main.c")
daemon_statuses = set(int(n) for n in re.findall(r"\breturn (\d+);", main_c))
daemon_statuses |= {0, 1} if "EXIT_SUCCESS : EXIT_FAILURE" in main_c else set()
in_man = documented_statuses("vmleased.8")
check(daemon_statuses and daemon_statuses <= in_man,
      "vmleased(8) EXIT STATUS documents every status main() returns",
      "code %s, man %s" % (sorted(daemon_statuses), sorted(in_man)))

# ---- the configuration files -------------------------------------------------

macros = {}
config_h = os.path.join(build, "vml-config.h")
for path in [config_h] + glob.glob(os.path.join(src, "lib", "*.h")):
    for name, value in re.findall(r"^#define (\w+) (.+?)\s*(?:/\*.*)?$", read(path), re.M):
        macros.setdefault(name, value.strip())


def c_value(expr, number=False):
    """A C default expression of the config loaders as a string, or None
    (unset: NULL, 0, (gid_t)-1); with NUMBER, a plain constant."""
    expr = expr.strip()
    if not number and re.fullmatch(r"NULL|0|\(gid_t\)\s*-1", expr):
        return None
    if expr in ("TRUE", "FALSE"):
        return "1" if expr == "TRUE" else "0"
    m = re.fullmatch(r"vml_default_dir\((\w+)\)", expr)
    if m:
        paths = read(src, "lib", "vml-paths.c")
        case = re.search(r"case %s:\s*return g_build_filename\((.*?)\);" % m.group(1), paths, re.S)
        parts = [c_value(p) for p in case.group(1).split(",") if p.strip() != "NULL"]
        return "/".join(parts)
    m = re.fullmatch(r"g_strdup\((.*)\)", expr, re.S)
    if m:
        return c_value(m.group(1))
    if re.fullmatch(r'(?:"(?:[^"\\]|\\.)*"|\w+)(?:\s+(?:"(?:[^"\\]|\\.)*"|\w+))*', expr) and \
            ('"' in expr or expr in macros and macros[expr].startswith('"')):
        out = ""
        for tok in re.findall(r'"(?:[^"\\]|\\.)*"|\w+', expr):
            out += ast.literal_eval(tok) if tok.startswith('"') else c_value(macros[tok])
        return out
    expr = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr)
    for name in sorted(set(re.findall(r"[A-Za-z_]\w*", expr)), key=len, reverse=True):
        if name not in macros:
            raise ValueError("unknown name %s in %s" % (name, expr))
        expr = re.sub(r"\b%s\b" % name, "(%s)" % macros[name], expr)
    expr = re.sub(r"\b(\d+)[uUlL]+\b", r"\1", expr)
    if not re.fullmatch(r"[\d\s()+\-*/<>]+", expr):
        raise ValueError("not a constant: %s" % expr)
    return str(int(eval(expr, {"__builtins__": {}})))


def code_keys(files, known_array_re):
    """{key: {type, default, range}} as the C loaders in FILES read them."""
    text = "\n".join(read(f) for f in files)
    keys = []
    for body in re.findall(known_array_re + r"\[\]\s*=\s*\{(.*?)\};", text, re.S):
        keys += re.findall(r'"(\w+)"', body)
    out = {}
    for key in keys:
        info = {"type": None, "default": None, "range": None}
        m = re.search(r'\b(vml_conf_update_\w+|get_limit|get_group)\(conf,\s*"%s",\s*&([\w>-]+)'
                      r"(.*?)\)\s*(?:\|\||\))" % key, text, re.S)
        if m:
            func, target, rest = m.groups()
            info["type"] = {"vml_conf_update_uint": "integer", "get_limit": "integer",
                            "vml_conf_update_bool": "0 or 1",
                            "vml_conf_update_abs_path": "absolute path",
                            "vml_conf_update_string": "string",
                            "get_group": "group name"}[func]
            args = [a.strip() for a in rest.split(",")[1:]]
            if func == "vml_conf_update_uint":
                info["range"] = (c_value(args[0], True), c_value(args[1], True))
            elif func == "get_limit":
                info["range"] = ("1", c_value(args[0], True))
            field = target.split("->")[-1]
            owner = r"\w+->" if "->" in target else r"(?:\bchar\s*\*\s*)?"
            # The first assignment to the field that is a constant: the
            # loader's default (others copy it on, or compute it).
            for a in re.finditer(r"(?:^|[\s;{])%s%s\s*=\s*(.+?);" % (owner, re.escape(field)),
                                 text, re.S | re.M):
                try:
                    info["default"] = c_value(a.group(1))
                    break
                except (ValueError, KeyError, SyntaxError, AttributeError):
                    continue
        elif re.search(r'vml_conf_get_string_list\(conf,\s*"%s"' % key, text):
            info["type"] = "list of strings"
        out[key] = info
    return out


def doc_keys(rst_text):
    """{key: (term, default line)} of the definition items ``key`` (TYPE)."""
    out = {}
    for key, term, body in re.findall(r"^``(\w+)`` \((.*?)\)\n((?:    .*\n|\n)+)", rst_text,
                                      re.M):
        first = body.strip().split("\n\n")[0].replace("\n", " ")
        out[key] = (term, re.sub(r"\s+", " ", first))
    return out


def check_config(page, code, what):
    rst = os.path.join(man_build, page + ".rst")
    docs = doc_keys(read(rst)) if os.path.exists(rst) else {}
    check(len(code) >= 5, "the keys %s accepts are found in its source" % what,
          " ".join(code))
    for key, info in code.items():
        if not check(key in docs, "%s documents %s" % (page, key)):
            continue
        term, default = docs[key]
        if info["default"] is None:
            ok = default.startswith("Default: unset")
            said = "unset"
        else:
            m = re.match(r"Default: ``\"?(.*?)\"?``", default)
            ok = m and m.group(1) == info["default"]
            said = info["default"]
        check(ok, "%s: %s defaults to %s, as the code sets" % (page, key, said), default)
        if info["type"]:
            types = ("string", "absolute path") if info["type"] == "string" else (info["type"],)
            check(any(t in term for t in types),
                  "%s: %s is documented as %s" % (page, key, " or ".join(types)), term)
        if info["range"]:
            check("%s to %s" % info["range"] in term,
                  "%s: %s's range is %s to %s, as the code checks" % ((page, key) + info["range"]),
                  term)
    extra = sorted(set(docs) - set(code))
    check(not extra, "%s documents no key %s does not accept" % (page, what), " ".join(extra))


def guarded(what, func, *args):
    """Run one part of the checks; a crash of it is a failed check, not a lost TAP stream."""
    try:
        func(*args)
    except Exception as e:   # noqa: BLE001 - reported as a failure
        import traceback
        check(False, "%s runs to its end" % what, traceback.format_exc())


daemon_files = [os.path.join(src, "lockd", "daemon-config.c"),
                os.path.join(src, "lib", "vml-image-identity.c")] + \
    sorted(glob.glob(os.path.join(src, "lockd", "backends", "*.c")))
guarded("the vmleased.conf(5) check",
        lambda: check_config("vmleased.conf.5",
                             code_keys(daemon_files, r"\b\w*(?:known_keys|config_keys)"),
                             "vmleased"))
guarded("the qemu-vmlease.conf(5) check",
        lambda: check_config("qemu-vmlease.conf.5",
                             code_keys([os.path.join(src, "plugin", "plugin-config.c")],
                                       r"\bknown_keys"), "the plugin"))

# ---- vmlease(1): the JSON documents of a real vmlease and vmleased ------------

man_rst = read(man_build, "vmlease.1.rst") if os.path.exists(
    os.path.join(man_build, "vmlease.1.rst")) else ""
json_part = man_rst.split("\nJSON OUTPUT\n")[-1].split("\nEXIT STATUS\n")[0]
KEY = r"``([a-z_][a-z0-9_]*)``"
json_literals = set(re.findall(KEY, json_part))
json_sections = {}
for title, body in re.findall(r"^(\S[^\n]*)\n-+\n(.*?)(?=^\S[^\n]*\n-+\n|\Z)", json_part,
                              re.M | re.S):
    json_sections[title] = set(re.findall(KEY, body))


def keys_of(doc, top=True):
    if isinstance(doc, dict):
        out = set(doc)
        for v in doc.values():
            out |= keys_of(v, False)
        return out
    if isinstance(doc, list):
        return set().union(*(keys_of(v, False) for v in doc)) if doc else set()
    return set()


def check_document(title, argv, expect_status=0):
    r = subprocess.run([vmlease] + argv, capture_output=True, text=True, env=run_env)
    argv = [a.replace(root, "$VMLEASE_ROOT") for a in argv]   # stable test names
    try:
        doc = json.loads(r.stdout)
    except ValueError:
        doc = None
    if not check(r.returncode == expect_status and isinstance(doc, dict),
                 "vmlease %s prints one JSON document (exit %d)" % (" ".join(argv), expect_status),
                 "exit %d: %s %s" % (r.returncode, r.stdout[:300], r.stderr[:300])):
        return None
    section = json_sections.get(title)
    check(section is not None, "vmlease(1) has a JSON section '%s'" % title,
          " | ".join(json_sections))
    undocumented = sorted(keys_of(doc) - json_literals)
    check(not undocumented, "every key of 'vmlease %s' is documented in JSON OUTPUT"
          % " ".join(argv), "undocumented: %s" % " ".join(undocumented))
    missing = sorted(set(doc) - (section or set()))
    check(not missing, "'%s' lists every top-level key of 'vmlease %s'" % (title, " ".join(argv)),
          "missing: %s" % " ".join(missing))
    return doc


root = tempfile.mkdtemp(prefix="vmlease-man-")
run_env = dict(env, VMLEASE_ROOT=root)
daemon = holder = None
try:
    conf = os.path.join(root, "vmleased.conf")
    open(conf, "w").close()
    log = open(os.path.join(root, "vmleased.log"), "w")
    daemon = subprocess.Popen([vmleased, "--foreground", "--config", conf], env=run_env,
                              stdout=log, stderr=subprocess.STDOUT)
    up = False
    for _ in range(100):
        if subprocess.run([vmlease, "status"], env=run_env, capture_output=True).returncode == 0:
            up = True
            break
        time.sleep(0.1)
    check(up, "a private vmleased serves", read(root, "vmleased.log")[-500:])
    base, top = os.path.join(root, "base.qcow2"), os.path.join(root, "top.qcow2")
    made = subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", base, "16M"]).returncode == 0
    made = made and subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-b", base,
                                    "-F", "qcow2", top]).returncode == 0
    check(made, "qemu-img makes a qcow2 image with a backing image")
    holder = subprocess.Popen([vmlease, "run", "--exclusive", top, "--", "sleep", "60"],
                              env=run_env, stdout=subprocess.DEVNULL)
    held = False
    for _ in range(100):
        r = subprocess.run([vmlease, "owners", "--json"], env=run_env, capture_output=True,
                           text=True)
        if r.returncode == 0 and len(json.loads(r.stdout).get("resources", [])) == 2:
            held = True
            break
        time.sleep(0.1)
    check(held, "vmlease run holds the image and its backing image")
    stash_owner = "0f3c8e5e-6c39-4d5b-9a55-6bbd1c0b5a11"
    subprocess.run([vmlease, "stash", "give", "--owner", stash_owner, "--name", "base", "--keep",
                    base], env=run_env, capture_output=True)

    check_document("vmlease status --json", ["status", "--json"])
    check_document("vmlease metrics --json", ["metrics", "--json"])
    check_document("vmlease owners --json", ["owners", "--json"])
    check_document("vmlease owners --json", ["owners", "--json", top, base])
    check_document("vmlease inspect --json", ["inspect", "--json", top])
    check_document("vmlease chain show --json", ["chain", "show", "--json", top])
    check_document("vmlease stash list --json", ["stash", "list", "--json"])
    if os.geteuid() == 0:
        check_document("vmlease force-unlock --json", ["force-unlock", "--json", base])
    else:
        skip("vmlease force-unlock --json is documented", "force-unlock is for root")
    # fcntl has no hosts: the error document, with the daemon's error name.
    err = check_document("The error document", ["hosts", "--json"], 4)
    check(err and err.get("error", {}).get("name") == "io.vmlease.BackendError",
          "hosts --json on fcntl is the error document naming BackendError", str(err))
    err = check_document("The error document",
                         ["owners", "--json", os.path.join(root, "missing")], 5)
    check(err and "name" not in err.get("error", {"name": 1}),
          "an error of vmlease's own is the error document without a name", str(err))
    if "log-level" in subcommands:
        check_document("vmlease log-level --json", ["log-level", "--json"])
    else:
        skip("vmlease log-level --json is documented", "this vmlease has no log-level yet")
    if holder:
        holder.terminate()
        holder.wait(timeout=10)
        holder = None
    # With vmleased gone, inspect still answers, owners null.
    daemon.terminate()
    daemon.wait(timeout=10)
    daemon = None
    doc = check_document("vmlease inspect --json", ["inspect", "--json", top])
    check(doc and doc.get("owners") is None and doc.get("verdict") == "unknown",
          "inspect --json without vmleased: owners null, verdict unknown", str(doc)[:300])
finally:
    for p in (holder, daemon):
        if p:
            p.kill()
            p.wait()
    shutil.rmtree(root, ignore_errors=True)

# ---- install -----------------------------------------------------------------

options = json.loads(subprocess.run(["meson", "introspect", "--buildoptions", build],
                                    check=True, capture_output=True, text=True).stdout)
opt = {o["name"]: o["value"] for o in options}
dest = tempfile.mkdtemp(prefix="vmlease-destdir-")
try:
    r = subprocess.run(["meson", "install", "-C", build, "--no-rebuild", "--quiet",
                        "--destdir", dest], capture_output=True, text=True)
    check(r.returncode == 0, "meson install --destdir works", r.stdout[-500:] + r.stderr[-500:])
    mandir = os.path.join(opt["prefix"], opt["mandir"])
    for page in PAGES:
        installed = dest + os.path.join(mandir, "man" + page.rsplit(".", 1)[1], page)
        same = os.path.exists(installed) and \
            open(installed, "rb").read() == open(os.path.join(man_build, page), "rb").read()
        check(same, "meson install puts %s in MANDIR/man%s" % (page, page.rsplit(".", 1)[1]),
              installed)
    docdir = dest + os.path.join(opt["prefix"], opt["datadir"], "doc", "vmlease")
    guide_path = os.path.join(docdir, "admin-guide.md")
    guide = read(guide_path) if os.path.exists(guide_path) else ""
    check(guide, "the admin guide is installed", guide_path)
    named = set(re.findall(r"([\w.-]+\.(?:md|varlink))(?![\w.])", guide))
    named |= set(re.findall(r"\b(libvirtd-requires-vmleased\.conf)\b", guide))
    missing = sorted(n for n in named if not os.path.exists(os.path.join(docdir, n)))
    check(named and not missing, "every document the admin guide names is installed beside it",
          "not installed: %s" % " ".join(missing))
    check("DESIGN" not in guide and "still to come" not in guide,
          "the admin guide names no design file outside the tree and nothing 'to come'")
    for page in PAGES:
        name, section = page.rsplit(".", 1)
        check("%s(%s)" % (name, section) in guide,
              "the admin guide points to %s(%s)" % (name, section))
finally:
    shutil.rmtree(dest, ignore_errors=True)

print("1..%d" % len(results))
for n, (verdict, what, detail) in enumerate(results, 1):
    if verdict == "skip":
        print("ok %d - %s # SKIP %s" % (n, what, detail))
        continue
    print("%s %d - %s" % (verdict, n, what))
    if verdict != "ok" and detail:
        detail = str(detail)
        if len(detail) > 2000:
            detail = detail[:2000] + " ..."
        for line in detail.splitlines() or [""]:
            print("# " + line)
sys.exit(0 if all(v != "not ok" for v, _, _ in results) else 1)
