"""The shared body renderer (maild/web/render.py): the fast path emits exactly what the full
markdown-it + bleach path emits, on real-looking mail, on markdown edge cases and on XSS payloads,
and whatever path a body takes, the HTML holds only the allow-list (every payload stays inert).
"""

from __future__ import annotations

import functools
import html
import random
import re
from html.parser import HTMLParser

from maild.web.render import ATTRIBUTES, TAGS, markdown, markdown_fast, markdown_full
from tests.bench.bench_search import TextMaker

XSS = [
    "<script>alert(1)</script>", "<img src=x onerror=alert(1)>", "<svg onload=alert(1)><circle/></svg>",
    "[x](javascript:alert(1))", "[x](JaVaScRiPt:alert(1))", "[x](  javascript:alert(1)  )",
    "[x](java\tscript:alert(1))", "[x](&#106;avascript:alert(1))", "[x](javascript&colon;alert(1))",
    "[x](vbscript:msgbox(1))", "[x](data:text/html;base64,PHNjcmlwdD5hbGVydCgxKTwvc2NyaXB0Pg==)",
    "[x](<javascript:alert(1)>)", "<javascript:alert(1)>", "<data:text/html,<script>alert(1)</script>>",
    "[x]: javascript:alert(1)\n\n[y][x]", "[ref]\n\n[ref]: <javascript:alert(1)> \"t\"",
    "![x](javascript:alert(1))", "![x](https://evil.example/p.png)", "![x](//evil.example/p.png)",
    "![x\" onerror=\"alert(1)](/ok.png)", "![x](/ok.png \"t\\\" onload=\\\"alert(1)\")",
    "[x](http://ok.example \"t\\\" onmouseover=\\\"alert(1)\")", "[x](http://ok.example/\"onmouseover=alert(1))",
    "[x](/a?b=\"><script>alert(1)</script>)", "<a href='javascript:alert(1)'>y</a>",
    "<iframe src=//evil></iframe>", "<object data=x></object>", "<style>*{}</style>",
    "<math><mi xlink:href=\"javascript:alert(1)\">x</mi></math>", "<!--<script>alert(1)</script>-->",
    "`<script>alert(1)</script>`", "```\n<img src=x onerror=alert(1)>\n```", "```js onclick=alert(1)\nx\n```",
    "| a |\n|---|\n| <script>alert(1)</script> |", "| a |\n|:--|\n| [x](javascript:alert(1)) |",
    "\" onmouseover=\"alert(1)", "&lt;script&gt;alert(1)&lt;/script&gt;", "&#60;script&#62;alert(1)",
    "<http://ok.example/\"onmouseover=\"alert(1)>", "[x](mailto:a@b.c?subject=\"><script>)",
    "[x](ftp://evil.example)", "[x](file:///etc/passwd)", "[x](HTTPS://ok.example)", "[x](#\"onfocus=alert(1))",
    "\x00<script>alert(1)</script>", "x\x0b<svg/onload=alert(1)>", "[x](\u2028javascript:alert(1))",
    "**<img src=x onerror=alert(1)>**", "> <script>alert(1)</script>\n> [x](javascript:alert(1))",
    "1. <b onclick=alert(1)>x</b>\n2. [y](javascript:alert(1))", "[![i](/a.png)](javascript:alert(1))",
]

FRAGMENTS = [
    "Plain words about the release.", "**bold** and *em* and ~~gone~~", "`inline <code> & \"q\"`",
    "- item one\n- item two\n  - nested", "1. first\n2. second", "7. seventh\n8. eighth", "- [ ] todo\n- [x] done",
    "> quoted\n> more", "# Title", "### Small title", "***", "```python\nprint('<x>' & 1)\n```",
    "    indented code", "| a | b |\n|:-|-:|\n| 1 | 2 |", "| c |\n|:-:|\n| 3 |", "[docs](https://example.com/a?b=1&c=2)",
    "[rel](src/app.py#L10)", "[frag](#top)", "[mail](mailto:ops@example.com)", "<https://example.com/x>",
    "[t](https://example.com \"a 'title' & more\")", "![pic](/attachments/a.webp)", "![remote](https://x.example/p.png)",
    "line with two spaces  \nbreak", "back\\\nslash", "&copy; &amp; &nbsp; &#x27; é ü 漢字 🚀", "a < b > c & d",
    "[ftp](ftp://files.example)", "[odd](foo:bar)", "<b>raw html</b>", "\\*not em\\*", "x\r\ny", "tab\tchar",
    "[ref link][r]\n\n[r]: https://example.com/ref", "www.example.com is not linkified", "snake_case_word",
]


@functools.cache
def full(text: str) -> str:
    return markdown_full(text)


@functools.cache
def corpus() -> list[str]:
    maker = TextMaker(seed=19)
    rng = random.Random(19)
    texts = [maker.body() for _ in range(300)]
    texts += ["\n\n".join(rng.sample(FRAGMENTS, rng.randint(1, 5))) for _ in range(250)]
    texts += ["\n".join(rng.sample(FRAGMENTS, rng.randint(2, 4))) for _ in range(100)]
    texts += FRAGMENTS + XSS
    texts += [rng.choice(FRAGMENTS) + "\n\n" + rng.choice(XSS) for _ in range(100)]
    return texts


class _Tags(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.found: list[tuple[str, list[tuple[str, str | None]]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.found.append((tag, attrs))


def assert_inert(source: str, out: str) -> None:
    parser = _Tags()
    parser.feed(out)
    parser.close()
    for tag, attrs in parser.found:
        assert tag in TAGS, (source, out)
        for name, value in attrs:
            assert name in ATTRIBUTES.get(tag, []), (source, out)
            url = re.sub(r"[\s\x00-\x1f]", "", html.unescape(value or "")).lower()
            if name == "href":
                assert not re.match(r"(javascript|vbscript|data|file|ftp):", url), (source, out)
            if name == "src":
                assert url.startswith("/"), (source, out)
                assert not url.startswith("//"), (source, out)


def test_the_fast_path_emits_exactly_what_bleach_emits() -> None:
    texts = corpus()
    fast = 0
    for text in texts:
        quick = markdown_fast(text)
        if quick is not None:
            fast += 1
            assert quick == full(text), text
        assert markdown(text) == full(text), text
    real = TextMaker(seed=5)
    assert all(markdown_fast(real.body()) is not None for _ in range(200)), "real-looking mail takes the fast path"
    assert fast > len(texts) // 2, f"only {fast} of {len(texts)} bodies took the fast path"


def test_every_xss_payload_stays_inert_on_both_paths() -> None:
    for text in XSS + corpus():
        assert_inert(text, markdown(text))
        assert_inert(text, full(text))
    for text in XSS:
        out = markdown(text)
        assert not re.search(r"<(script|svg|iframe|object|style|math)", out, re.I), (text, out)


def test_bodies_the_fast_path_cannot_prove_take_the_full_path() -> None:
    for text in ("![pic](/a.png)", "[x](ftp://files.example)", "[x](foo:bar)", "a\x00b", "a\x0cb"):
        assert markdown_fast(text) is None, text
    assert markdown_fast("```python\nx\n```") == "<pre><code>x\n</code></pre>\n"  # the language class dropped
    assert markdown_fast("| a |\n|:-|\n| 1 |") == markdown_full("| a |\n|:-|\n| 1 |")
