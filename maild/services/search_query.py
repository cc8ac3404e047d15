"""The search query language: any user string to a valid FTS5 expression, and snippet highlighting.

Owns: phrases, prefix `auth*`, AND/OR/NOT, parentheses and `subject:`/`body:` filters work as in
FTS5; everything else is quoted or dropped, so a query never fails. Also the Python snippet maker
used for prefix queries. Does not run queries (search.py) or know who may read what (visibility.py).
"""

from __future__ import annotations

import re
import unicodedata

MAX_QUERY_CHARS = 1000
MAX_QUERY_TERMS = 64
MAX_PAREN_DEPTH = 8
OPERATORS = ("AND", "OR", "NOT")
_COLUMNS = {"subject": "subject", "body": "body_md", "body_md": "body_md"}

_LEX = re.compile(
    r'(?:(?P<pcol>[A-Za-z_]+):)?"(?P<phrase>[^"]*)"?(?P<pstar>\*)?'  # a phrase (maybe body:"…"); an
    # unbalanced quote runs to the end
    r"|(?P<open>\()|(?P<close>\))"
    r'|(?P<word>[^\s"()]+)'
)


def _quote(text: str) -> str:
    return '"' + text.replace('"', '""') + '"'


def _searchable(text: str) -> bool:
    # unicode61 indexes letters and digits only; a string without any yields an empty phrase.
    return any(ch.isalnum() for ch in text)


def _lex(query: str) -> list[tuple[str, str]]:
    """Tokens: ("term", fts text) | ("op", AND/OR/NOT) | ("(", "") | (")", "")."""
    tokens: list[tuple[str, str]] = []
    terms = 0
    for found in _LEX.finditer(query[:MAX_QUERY_CHARS]):
        if found["open"]:
            tokens.append(("(", ""))
            continue
        if found["close"]:
            tokens.append((")", ""))
            continue
        if terms >= MAX_QUERY_TERMS:
            continue
        word = found["word"]
        if word is None:
            phrase = found["phrase"] or ""
            prefix = (found["pcol"] or "").lower()
            if prefix and prefix not in _COLUMNS and _searchable(prefix):  # `foo:"x"`: two plain terms
                tokens.append(("term", _quote(prefix)))
                terms += 1
            if _searchable(phrase):
                text = _quote(phrase) + ("*" if found["pstar"] else "")
                tokens.append(("term", f"{{{_COLUMNS[prefix]}}} : {text}" if prefix in _COLUMNS else text))
                terms += 1
            continue
        if word in OPERATORS:  # FTS5 operators are case-sensitive; `and` is just a word
            tokens.append(("op", word))
            continue
        column = None
        prefix, sep, rest = word.partition(":")
        if sep and prefix.lower() in _COLUMNS and _searchable(rest):
            column, word = _COLUMNS[prefix.lower()], rest
        star = word.endswith("*")
        core = word.rstrip("*")
        if not _searchable(core):
            continue  # bare `*`, `.`, `?`, `--`: nothing a tokenizer would index
        # Quoting makes FTS5 tokenize the chunk itself: `POL-358` becomes the phrase "POL 358".
        text = _quote(core) + ("*" if star else "")
        tokens.append(("term", f"{{{column}}} : {text}" if column else text))
        terms += 1
    return tokens


class _Parser:
    """Tolerant recursive descent (NOT > AND > OR, as FTS5); emits a fully parenthesised string."""

    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.depth = 0

    def peek(self) -> tuple[str, str] | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def parse(self) -> str:
        parts = []
        while self.peek() is not None:
            expr = self.parse_or()
            if expr:
                parts.append(expr)
            if self.peek() is not None:  # a stray `)` or a dangling operator: skip it
                self.pos += 1
        return _join(parts, "AND")

    def parse_or(self) -> str:
        parts = [self.parse_and()]
        while self.peek() == ("op", "OR"):
            self.pos += 1
            parts.append(self.parse_and())
        return _join([p for p in parts if p], "OR")

    def parse_and(self) -> str:
        parts: list[str] = []
        while (tok := self.peek()) is not None and tok[0] != ")" and tok != ("op", "OR"):
            if tok == ("op", "AND"):
                self.pos += 1
            elif tok == ("op", "NOT"):
                self.pos += 1
                operand = self.parse_primary()
                # FTS5 has no unary NOT: `NOT x` with nothing on the left is dropped.
                if operand and parts:
                    parts[-1] = f"({parts[-1]} NOT {operand})"
            else:
                operand = self.parse_primary()
                if operand:
                    parts.append(operand)
        return _join(parts, "AND")

    def parse_primary(self) -> str:
        tok = self.peek()
        if tok is None or tok[0] in (")", "op"):
            return ""
        self.pos += 1
        if tok[0] == "term":
            return tok[1]
        self.depth += 1
        inner = self.parse_or()
        self.depth -= 1
        if self.peek() == (")", ""):
            self.pos += 1
        return f"({inner})" if inner else ""


def _join(parts: list[str], op: str) -> str:
    if len(parts) <= 1:
        return parts[0] if parts else ""
    return "(" + f" {op} ".join(parts) + ")"


def sanitize_query(query: str) -> str | None:
    """A valid FTS5 MATCH expression for any input, or None when nothing searchable is left."""
    # FTS5 reads its query as a C string: a NUL would end it inside a quoted term.
    tokens = _lex(query.replace("\x00", " "))
    # Past a sane depth, parentheses are ignored rather than trusted (FTS5 caps depth too).
    depth = 0
    kept = []
    for kind, text in tokens:
        if kind == "(":
            depth += 1
            if depth > MAX_PAREN_DEPTH:
                continue
        elif kind == ")":
            depth -= 1
            if depth >= MAX_PAREN_DEPTH:
                continue
        kept.append((kind, text))
    expr = _Parser(kept).parse()
    return expr or None


_EXPR_TERM = re.compile(r'"((?:[^"]|"")*)"(\*?)')
_WORD = re.compile(r"[^\W_]+")


def _fold(text: str) -> str:
    return "".join(ch for ch in unicodedata.normalize("NFKD", text.casefold()) if not unicodedata.combining(ch))


def _highlighter(expr: str) -> re.Pattern[str] | None:
    """A regex marking the words of `expr`'s terms (prefix terms as prefixes), over folded text."""
    words = []
    for text, star in _EXPR_TERM.findall(expr):
        pieces = _WORD.findall(_fold(text.replace('""', '"')))
        for i, piece in enumerate(pieces):
            prefix = star and i == len(pieces) - 1
            words.append(re.escape(piece) + (r"[^\W_]*" if prefix else r"(?![^\W_])"))
    if not words:
        return None
    return re.compile(r"(?<![^\W_])(?:" + "|".join(sorted(set(words), key=len, reverse=True)) + ")")


def python_snippet(text: str, pattern: re.Pattern[str] | None, max_words: int) -> str:
    """FTS5-style snippet without asking FTS5 again: used for prefix queries, whose expansion
    costs a full term scan on every `MATCH ... AND rowid = ?` probe."""
    words = text.split()
    if not words:
        return ""
    hits = [i for i, w in enumerate(words) if pattern is not None and pattern.search(_fold(w))]
    start = max(0, min(hits[0] - max_words // 4, len(words) - max_words)) if hits else 0
    window = words[start : start + max_words]
    marked = []
    for word in window:
        folded = _fold(word)
        found = pattern.search(folded) if pattern is not None else None
        # Fold-safe: only mark when folding kept the length (true for ASCII and most Latin text).
        if found and len(folded) == len(word):
            a, b = found.start(), found.end()
            marked.append(f"{word[:a]}<mark>{word[a:b]}</mark>{word[b:]}")
        else:
            marked.append(word)
    prefix = "..." if start > 0 else ""
    suffix = "..." if start + max_words < len(words) else ""
    return prefix + " ".join(marked) + suffix
