"""test_docs.py - the documentation says what the code does.

Guards four promises (Python 3 standard library only; run by `make check`
with GOPHERMQ_SRCDIR set, or by hand from anywhere in the tree):

  * every option of the shipped etc/gophermq.conf (its `#name = value`
    lines) is documented in gophermq.conf(5) with the same default, and the
    manual documents no option the file lacks;
  * both agree with the option table in src/config.c (name, default, and
    whether a reload applies the option);
  * the manual says of every option whether a reload applies it;
  * the man pages render without a single warning: `groff -man -ww -z` is
    silent, and so is `mandoc -T lint -W warning` where mandoc is installed.
"""

import os
import re
import shutil
import subprocess
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SRCDIR = os.environ.get("GOPHERMQ_SRCDIR") or os.path.dirname(os.path.dirname(HERE))
CONF_FILE = os.path.join(SRCDIR, "etc", "gophermq.conf")
CONFIG_SOURCE = os.path.join(SRCDIR, "src", "config.c")
MAN_PAGES = [
    os.path.join(SRCDIR, "man", "gophermqd.8.in"),
    os.path.join(SRCDIR, "man", "gophermq.conf.5.in"),
    os.path.join(SRCDIR, "man", "gophermq.1.in"),
]
CONF_MAN_PAGE = MAN_PAGES[1]

# What `make` substitutes into the .in files; the values do not matter to
# the formatters, only that no @placeholder@ is left.
SUBSTITUTIONS = {
    "@sbindir@": "/usr/sbin",
    "@sysconfdir@": "/etc",
    "@localstatedir@": "/var",
    "@docdir@": "/usr/share/doc/gophermq",
    "@VERSION@": "0.0.0",
}

RELOAD_TEXT = "Applied on reload."
RESTART_TEXT = "Needs a restart."

# `#name = value` (commented out, as shipped) or `name = value`, with an
# optional trailing comment after the value.
CONF_OPTION_RE = re.compile(r'^#?\s?([a-z][a-z0-9_]*)\s*=\s*("(?:[^"\\]|\\.)*"|[^\s#]+)\s*(?:#.*)?$')
# The tag of an option paragraph in gophermq.conf(5): .B "name = default"
MAN_OPTION_RE = re.compile(r'^\.B\s+"([a-z][a-z0-9_]*) = (.*)"\s*$')
# One entry of option_table[] in src/config.c:
#   OPTION(name, KIND, "default", minimum, maximum, RELOAD|RESTART),
CODE_OPTION_RE = re.compile(
    r'OPTION(?:_CHOICE)?\(\s*([a-z][a-z0-9_]*)\s*,\s*\w+\s*,\s*"((?:[^"\\]|\\.)*)"\s*,'
    r'(?:[^,()]*,[^,()]*,)?\s*(RELOAD|RESTART)\s*\)')


def read(path):
    with open(path, encoding="utf-8") as stream:
        return stream.read()


def conf_file_options():
    """Returns [(name, default text)] from the shipped gophermq.conf, in order."""
    options = []
    for line in read(CONF_FILE).splitlines():
        match = CONF_OPTION_RE.match(line.strip())
        if match:
            options.append((match.group(1), match.group(2)))
    return options


def roff_unescape(text):
    """Turns the few roff escapes used in option tags back into plain text."""
    for escape, plain in (("\\(dq", '"'), ("\\-", "-"), ("\\&", ""), ("\\%", ""), ("\\e", "\\")):
        text = text.replace(escape, plain)
    return text


def man_options():
    """Returns {name: (default text, reloadable or None)} from gophermq.conf(5),
    and the list of names in order of appearance."""
    lines = read(CONF_MAN_PAGE).splitlines()
    options = {}
    order = []
    for index, line in enumerate(lines):
        match = MAN_OPTION_RE.match(line)
        if not match or index == 0 or lines[index - 1].strip() != ".TP":
            continue
        name, default = match.group(1), roff_unescape(match.group(2))
        # The option's paragraph runs to the next .TP/.SS/.SH.
        body = []
        for following in lines[index + 1:]:
            if following.startswith((".TP", ".SS", ".SH")):
                break
            body.append(following)
        body_text = "\n".join(body)
        reload_said = RELOAD_TEXT in body_text
        restart_said = RESTART_TEXT in body_text
        reloadable = reload_said if reload_said != restart_said else None
        order.append(name)
        options.setdefault(name, (default, reloadable))
    return options, order


def code_options():
    """Returns {name: (default text, reloadable)} from option_table[] in
    src/config.c, or None when there is no source tree."""
    if not os.path.exists(CONFIG_SOURCE):
        return None
    options = {}
    for match in CODE_OPTION_RE.finditer(read(CONFIG_SOURCE)):
        default = match.group(2).replace('\\"', '"').replace("\\\\", "\\")
        options[match.group(1)] = (default, match.group(3) == "RELOAD")
    return options


def substituted(path):
    text = read(path)
    for placeholder, value in SUBSTITUTIONS.items():
        text = text.replace(placeholder, value)
    return text


class ConfigurationIsDocumented(unittest.TestCase):
    def test_shipped_file_lists_options(self):
        self.assertGreaterEqual(len(conf_file_options()), 10,
                                "found almost no `#name = value` lines in %s" % CONF_FILE)

    def test_shipped_file_lists_each_option_once(self):
        names = [name for name, _ in conf_file_options()]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        self.assertEqual(duplicates, [], "options listed more than once in %s" % CONF_FILE)

    def test_manual_documents_each_option_once(self):
        _, order = man_options()
        duplicates = sorted({name for name in order if order.count(name) > 1})
        self.assertEqual(duplicates, [], "options documented more than once in %s" % CONF_MAN_PAGE)

    def test_every_shipped_option_is_in_the_manual_with_the_same_default(self):
        documented, _ = man_options()
        for name, default in conf_file_options():
            with self.subTest(option=name):
                self.assertIn(name, documented, "%s is in gophermq.conf but not in gophermq.conf(5)" % name)
                self.assertEqual(documented[name][0], default,
                                 "%s: default in gophermq.conf(5) differs from the shipped file" % name)

    def test_every_documented_option_is_in_the_shipped_file(self):
        documented, _ = man_options()
        shipped = {name for name, _ in conf_file_options()}
        missing = sorted(set(documented) - shipped)
        self.assertEqual(missing, [], "documented in gophermq.conf(5) but missing from gophermq.conf")

    def test_manual_says_whether_reload_applies_each_option(self):
        documented, _ = man_options()
        unclear = sorted(name for name, (_, reloadable) in documented.items() if reloadable is None)
        self.assertEqual(unclear, [], "options whose paragraph says neither %r nor %r (or both)"
                         % (RELOAD_TEXT, RESTART_TEXT))

    def test_manual_matches_the_option_table_in_the_code(self):
        code = code_options()
        if code is None:
            self.skipTest("no src/config.c in %s" % SRCDIR)
        self.assertTrue(code, "found no OPTION(...) entries in %s: update this test's "
                        "CODE_OPTION_RE to the table's new shape" % CONFIG_SOURCE)
        documented, _ = man_options()
        self.assertEqual(sorted(documented), sorted(code),
                         "options in gophermq.conf(5) and in src/config.c differ")
        for name, (default, reloadable) in code.items():
            with self.subTest(option=name):
                self.assertEqual(documented[name][0], default, "%s: default differs from the code" % name)
                self.assertEqual(documented[name][1], reloadable,
                                 "%s: the manual says %s, the code says %s" % (
                                     name, RELOAD_TEXT if documented[name][1] else RESTART_TEXT,
                                     "RELOAD" if reloadable else "RESTART"))


class ManPagesRenderClean(unittest.TestCase):
    def run_formatter(self, command, page):
        result = subprocess.run(command, input=substituted(page), stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, universal_newlines=True, timeout=60)
        return result.returncode, result.stdout

    def test_no_placeholder_is_left_unknown(self):
        for page in MAN_PAGES:
            with self.subTest(page=os.path.basename(page)):
                left = sorted(set(re.findall(r"@[A-Za-z_]+@", substituted(page))))
                self.assertEqual(left, [], "placeholders `make` does not substitute")

    def test_groff_renders_without_warnings(self):
        if shutil.which("groff") is None:
            self.skipTest("groff is not installed (Debian: groff-base); man pages not checked")
        for page in MAN_PAGES:
            with self.subTest(page=os.path.basename(page)):
                status, output = self.run_formatter(["groff", "-man", "-ww", "-z"], page)
                self.assertEqual((status, output), (0, ""), "groff -man -ww -z complained")

    def test_mandoc_lint_finds_no_warnings(self):
        if shutil.which("mandoc") is None:
            self.skipTest("mandoc is not installed; lint not run")
        for page in MAN_PAGES:
            with self.subTest(page=os.path.basename(page)):
                status, output = self.run_formatter(["mandoc", "-man", "-T", "lint", "-W", "warning"], page)
                self.assertEqual((status, output), (0, ""), "mandoc -T lint complained")


if __name__ == "__main__":
    unittest.main(verbosity=2)
