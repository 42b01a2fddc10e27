"""Which modules a child loads before its first message: the ``preload`` list, or the app's static requires.

A child that loads the app's modules while it waits (a ``prefork`` spare, or
a new child before its first message is written to it) answers that
message without paying for them. The default list is found without running
any of the app's code: :func:`find_requires` reads the app's source with a
small JavaScript tokenizer and keeps every ``require('name')`` whose only
argument is a plain string literal. Comments, strings, template literals and
regular expressions are skipped as such, so text that merely looks like a
call is not taken; a require whose argument is computed
(``require('./' + name)``, a template with a substitution, a variable) is
left for the app to load when it runs. Requires inside functions count too:
toolkit apps conventionally wrap their whole body in a function.
"""

from __future__ import annotations

import re

#: after these keywords a ``/`` starts a regular expression, not a division
_REGEX_AFTER_WORDS = frozenset({
    "return", "typeof", "case", "do", "else", "in", "of", "new", "delete", "void", "throw",
    "instanceof", "yield", "await",
})
_IDENT_START = re.compile(r"[A-Za-z_$\u0080-\uffff]")
_IDENT = re.compile(r"[A-Za-z0-9_$\u0080-\uffff]*")
_NUMBER = re.compile(r"[0-9.][0-9A-Za-z_.]*")
_SPACE = re.compile(r"(?:\s+|//[^\n]*|/\*.*?\*/)*", re.S)
_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "v": "\v", "0": "\0"}


class _Scanner:
    """One pass over JavaScript source, recording static ``require('...')`` calls."""

    def __init__(self, source: str) -> None:
        self.src = source
        self.pos = 0
        self.found: list[str] = []
        # What came before, for telling a regex from a division and a call from a method call.
        self.last = ""

    def scan(self) -> list[str]:
        self._code(until_brace=False)
        return list(dict.fromkeys(self.found))

    def _code(self, until_brace: bool) -> None:
        src = self.src
        depth = 0
        while self.pos < len(src):
            ch = src[self.pos]
            if ch.isspace():
                self.pos += 1
            elif src.startswith("//", self.pos):
                end = src.find("\n", self.pos)
                self.pos = len(src) if end < 0 else end
            elif src.startswith("/*", self.pos):
                end = src.find("*/", self.pos + 2)
                self.pos = len(src) if end < 0 else end + 2
            elif ch in "'\"":
                self._string(ch)
                self.last = "literal"
            elif ch == "`":
                self._template()
                self.last = "literal"
            elif ch == "/":
                if self._regex_allowed():
                    self._regex()
                    self.last = "literal"
                else:
                    self.pos += 1
                    self.last = "/"
            elif _IDENT_START.match(ch):
                start = self.pos
                self.pos = _IDENT.match(src, self.pos + 1).end()  # type: ignore[union-attr]
                word = src[start:self.pos]
                method = self.last == "."
                self.last = word
                if word == "require" and not method:
                    self._maybe_require()
            elif ch.isdigit() or (ch == "." and src[self.pos + 1:self.pos + 2].isdigit()):
                self.pos = _NUMBER.match(src, self.pos).end()  # type: ignore[union-attr]
                self.last = "literal"
            else:
                self.pos += 1
                if ch == "{":
                    depth += 1
                elif ch == "}":
                    if until_brace and depth == 0:
                        return
                    depth -= 1
                self.last = ch

    def _regex_allowed(self) -> bool:
        last = self.last
        if last in ("", "literal", ")", "]", "}"):
            # `}` may end a block (then a regex may follow), but a division is the safer guess:
            # misreading a regex as division only risks missing a require, never inventing one.
            return last == ""
        if _IDENT_START.match(last[0]):
            return last in _REGEX_AFTER_WORDS
        return True

    def _string(self, quote: str) -> str | None:
        """Skip a quoted string; return its value, or None when it has line breaks or odd escapes."""
        src = self.src
        self.pos += 1
        parts: list[str] = []
        plain = True
        while self.pos < len(src):
            ch = src[self.pos]
            if ch == quote:
                self.pos += 1
                return "".join(parts) if plain else None
            if ch == "\\":
                nxt = src[self.pos + 1:self.pos + 2]
                if nxt in ("\\", "'", '"', "/"):
                    parts.append(nxt)
                elif nxt in _SIMPLE_ESCAPES:
                    parts.append(_SIMPLE_ESCAPES[nxt])
                else:
                    plain = False
                self.pos += 2
                continue
            if ch == "\n":
                # An unterminated string: stop it here, as the engine would refuse it anyway.
                return None
            parts.append(ch)
            self.pos += 1
        return None

    def _template(self) -> str | None:
        """Skip a template literal (substitutions scanned as code); its text when it has none."""
        src = self.src
        self.pos += 1
        parts: list[str] = []
        plain = True
        while self.pos < len(src):
            ch = src[self.pos]
            if ch == "`":
                self.pos += 1
                return "".join(parts) if plain else None
            if ch == "\\":
                plain = False
                self.pos += 2
                continue
            if src.startswith("${", self.pos):
                plain = False
                self.pos += 2
                self.last = ""
                self._code(until_brace=True)  # stops just past the closing brace
                continue
            parts.append(ch)
            self.pos += 1
        return None

    def _regex(self) -> None:
        src = self.src
        self.pos += 1
        in_class = False
        while self.pos < len(src):
            ch = src[self.pos]
            if ch == "\\":
                self.pos += 2
                continue
            if ch == "\n":
                return
            if in_class:
                in_class = ch != "]"
            elif ch == "[":
                in_class = True
            elif ch == "/":
                self.pos += 1
                self.pos = _IDENT.match(src, self.pos).end()  # type: ignore[union-attr]  # flags
                return
            self.pos += 1

    def _maybe_require(self) -> None:
        """After the word ``require``: record ``( 'literal' )``, else leave the scan where it was."""
        src = self.src
        after = _SPACE.match(src, self.pos).end()  # type: ignore[union-attr]
        if not src.startswith("(", after):
            return
        start = _SPACE.match(src, after + 1).end()  # type: ignore[union-attr]
        if start >= len(src) or src[start] not in "'\"`":
            return
        saved = self.pos
        self.pos = start
        value = self._template() if src[start] == "`" else self._string(src[start])
        close = _SPACE.match(src, self.pos).end()  # type: ignore[union-attr]
        if value and src.startswith(")", close):
            self.found.append(value)
            self.pos = close + 1
            self.last = ")"
        else:
            # Not a plain call (e.g. require('a' + b)): rescan the argument as ordinary code.
            self.pos = saved
            self.last = "require"


def find_requires(source: str) -> list[str]:
    """The module names ``source`` requires with a string literal, in order of first appearance.

    No code is run; comments, strings, template literals and regular
    expressions are recognised, so ``// require('x')`` or
    ``"require('x')"`` do not count, nor does ``obj.require('x')`` or a
    require with a computed argument.
    """
    return _Scanner(source).scan()
