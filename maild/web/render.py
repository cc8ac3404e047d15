"""Turning agents' text into safe HTML: markdown via markdown-it-py, then bleach's allow-list.

Raw HTML in markdown is not parsed as HTML (markdown-it escapes it). The full path sends whatever
the renderer emits through bleach: a short list of tags and attributes, links only to http(s) and
mailto, images only from our own origin (the CSP forbids remote ones anyway). The fast path skips
bleach for bodies whose tokens can only yield that allow-list and emits what bleach would (proved
equal on a corpus by tests/test_render.py); anything else takes the full path. `esc` escapes plain
text for templates; `snippet` keeps only the search snippets' <mark> tags.
"""

from __future__ import annotations

import html
import re
from functools import lru_cache

import bleach
from markdown_it import MarkdownIt

TAGS = frozenset({
    "p", "br", "hr", "h1", "h2", "h3", "h4", "h5", "h6", "strong", "em", "del", "s", "code", "pre",
    "blockquote", "ul", "ol", "li", "a", "img", "table", "thead", "tbody", "tr", "th", "td",
})
ATTRIBUTES = {"a": ["href", "title"], "img": ["src", "alt", "title"],
              "ol": ["start"]}
PROTOCOLS = frozenset({"http", "https", "mailto"})

_md = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False}).enable("table")
_md.enable("strikethrough")
# The fast path's parser: the same rules; xhtmlOut off because bleach writes `<br>`, not `<br />`.
_fast = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False,
                                  "xhtmlOut": False}).enable("table")
_fast.enable("strikethrough")
_cleaner = bleach.Cleaner(tags=TAGS, attributes=ATTRIBUTES, protocols=PROTOCOLS, strip=True,
                          strip_comments=True)


def _safe_img(html_text: str) -> str:
    # bleach allows <img src="https://..."> by protocol; a remote image would leak that the page was
    # read (and the CSP blocks it anyway). Keep only same-origin (relative) images.
    if "<img" not in html_text:
        return html_text
    cleaner = bleach.Cleaner(tags=TAGS, attributes={**ATTRIBUTES, "img": _img_attr}, protocols=PROTOCOLS,
                             strip=True, strip_comments=True)
    return str(cleaner.clean(html_text))


def _img_attr(_tag: str, name: str, value: str) -> bool:
    if name == "src":
        return value.startswith("/") and not value.startswith("//")
    return name in ("alt", "title")


@lru_cache(maxsize=2048)
def markdown(text: str) -> str:
    """Sanitised HTML for a message body (cached: threads are re-rendered on every live update)."""
    fast = markdown_fast(text)
    return fast if fast is not None else markdown_full(text)


def markdown_full(text: str) -> str:
    """markdown-it, then bleach's allow-list: right for any input, ~1 ms a message."""
    return _safe_img(str(_cleaner.clean(_md.render(text))))


# Token types whose HTML is inside the allow-list (with html off, markdown-it emits nothing else).
_FAST_TOKENS = frozenset({
    "paragraph_open", "paragraph_close", "heading_open", "heading_close", "bullet_list_open",
    "bullet_list_close", "ordered_list_open", "ordered_list_close", "list_item_open", "list_item_close",
    "blockquote_open", "blockquote_close", "hr", "code_block", "fence", "inline", "table_open",
    "table_close", "thead_open", "thead_close", "tbody_open", "tbody_close", "tr_open", "tr_close",
    "th_open", "th_close", "td_open", "td_close", "text", "softbreak", "hardbreak", "code_inline",
    "strong_open", "strong_close", "em_open", "em_close", "s_open", "s_close", "link_open", "link_close",
})
# Characters html5lib rewrites or reports (controls, CR, noncharacters, lone surrogates): such a body
# takes the full path rather than us re-implementing what the parser does with them.
_ODD_CHARS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff]")
_SAFE_SCHEME = re.compile(r"(?:https?://|mailto:)", re.IGNORECASE)


def _safe_href(href: str) -> bool:
    # Stricter than bleach: http(s), mailto, or a relative URL with no scheme-like prefix at all.
    if _SAFE_SCHEME.match(href):
        return True
    head = re.split(r"[/?#]", href, maxsplit=1)[0]
    return ":" not in head and "&" not in head


def markdown_fast(text: str) -> str | None:
    """The allow-list's HTML without bleach, or None when the body needs the full path (an image,
    an unusual link, an odd character). Equal to `markdown_full` wherever it answers."""
    if _ODD_CHARS.search(text):
        return None
    tokens = _fast.parse(text)
    for token in tokens:
        if token.type not in _FAST_TOKENS:
            return None
        if token.type == "fence":
            token.info = ""  # bleach drops the language class; so does this path
        elif token.type in ("th_open", "td_open"):
            token.attrs.pop("style", None)  # column alignment: bleach drops style attributes
        elif token.type == "ordered_list_open" and set(token.attrs) - {"start"}:
            return None
        for child in token.children or ():
            if child.type not in _FAST_TOKENS:
                return None
            if child.type == "link_open":
                href = str(child.attrs.get("href", ""))
                if set(child.attrs) - {"href", "title"} or not _safe_href(href):
                    return None
    return str(_fast.renderer.render(tokens, _fast.options, {}))


def esc(value: object) -> str:
    return html.escape("" if value is None else str(value), quote=True)


def snippet(text: str | None) -> str:
    """A search snippet (raw text with <mark> … </mark> around hits) as safe HTML."""
    return esc(text or "").replace("&lt;mark&gt;", "<mark>").replace("&lt;/mark&gt;", "</mark>")
