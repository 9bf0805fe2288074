"""The text scanners are linear: same output as the regexes they replace, fast on hostile text.

``_regex_markdown_to_text`` is the conversion as it was written with regular
expressions (quadratic on unclosed delimiters); on short inputs it is the
oracle the linear scanners must agree with exactly. The long adversarial
inputs are the ones that froze the regex version; their time bound is a
generous safety net (seconds for ~100k characters that now take milliseconds),
not a speed assertion.
"""

from __future__ import annotations

import re
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from zopilot_worker.extract.detect import detect_kind
from zopilot_worker.extract.text import markdown_to_text

_COMMENT = re.compile(r"<!--.*?-->", re.DOTALL)
_TABLE_RULE = re.compile(
    r"^[ \t]*\|?[ \t]*:?-{3,}:?[ \t]*(\|[ \t]*:?-{3,}:?[ \t]*)*\|?[ \t]*$\n?", re.MULTILINE
)
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]*)\]\([^)]*\)")
_STRONG = re.compile(r"(\*\*|__)(.+?)\1")
_EM = re.compile(r"(?<![\w*])\*(?![\s*])(.+?)(?<![\s*])\*(?![\w*])")
_BLANK_RUNS = re.compile(r"\n{3,}")


def _regex_markdown_to_text(markdown: str) -> str:
    """The former implementation (oracle for short inputs only)."""
    text = _COMMENT.sub("", markdown)
    text = _TABLE_RULE.sub("", text)
    text = _HEADING.sub("", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _STRONG.sub(r"\2", text)
    text = _EM.sub(r"\1", text)
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            line = "\t".join(cell.strip() for cell in stripped[1:-1].split("|"))
        lines.append(line.rstrip())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


# Markdown-ish alphabet: every delimiter the scanners care about, plus words and spaces.
_PIECES = st.sampled_from(
    ["*", "**", "_", "__", "[", "]", "(", ")", "![", "<!--", "-->", "-", "---", ":", "|",
     "#", "# ", "\n", " ", "\t", "\r", "a", "b c", "é", "\x0c", "\u2028", "1"]
)  # fmt: skip
_MARKDOWN = st.lists(_PIECES, max_size=40).map("".join)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_MARKDOWN)
def test_scanners_agree_with_the_regexes(markdown: str) -> None:
    assert markdown_to_text(markdown) == _regex_markdown_to_text(markdown)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_scanners_agree_on_any_text(markdown: str) -> None:
    assert markdown_to_text(markdown) == _regex_markdown_to_text(markdown)


@pytest.mark.parametrize(
    "example",
    [
        "# Title\n\nSome **bold** and *em* text with a [link](http://x) and ![img](a.png).",
        "| a | b |\n| --- | :---: |\n| 1 | 2 |\n",
        "<!-- page 1 -->\n\nText **a** __b__ *c* d*e*f ***g*** [x [y](z)",
        "a\n---",
    ],
)
def test_examples_agree(example: str) -> None:
    assert markdown_to_text(example) == _regex_markdown_to_text(example)


N = 100_000
# Each froze (or would freeze) the regex version for seconds to hours.
ADVERSARIAL_MARKDOWN = {
    "unclosed comments": "<!--" * (N // 4),
    "unclosed links": "[" * N,
    "links without target": "[a]" * (N // 3),
    "unclosed targets": "[a](" * (N // 4),
    "unclosed images": "![" * (N // 2),
    "unclosed strong": "**a" * (N // 3),
    "unclosed underscores": "__a" * (N // 3),
    "unclosed emphasis": "*a" * (N // 2),
    "emphasis without closer": "*a " * (N // 3) + "*",
    "spaces before a rule": " " * N + "x",
    "tabs and pipes": "|\t" * (N // 2) + "-",
    "long rule": "|" + "---|" * (N // 4) + "x",
    "heading hashes": "#" * N,
    "blank lines": "\n" * N,
    "strong across a newline": "**a" * (N // 6) + "\n" + "a**" * (N // 6),
}


@pytest.mark.parametrize("name", list(ADVERSARIAL_MARKDOWN))
def test_adversarial_markdown_is_linear(name: str) -> None:
    text = ADVERSARIAL_MARKDOWN[name]
    start = time.perf_counter()
    markdown_to_text(text)
    markdown_to_text(text * 4)  # 400k characters
    assert time.perf_counter() - start < 10.0, f"{name}: markdown_to_text is not linear"


ADVERSARIAL_TEXT = {
    "unclosed comments": b"<!--" * (N // 4),
    "comment runs": b"<!-- -->" * (N // 8) + b"x",
    "comments and spaces": b" <!---->" * (N // 8),
    "almost doctype": b"<!doctype " + b" " * N,
    "spaces": b" " * N,
}


@pytest.mark.parametrize("name", list(ADVERSARIAL_TEXT))
def test_adversarial_html_start_is_linear(name: str) -> None:
    data = ADVERSARIAL_TEXT[name]
    start = time.perf_counter()
    for content_type in (None, "text/plain", "text/html"):
        assert detect_kind(data, "upload", content_type) in ("text", "html")
    assert time.perf_counter() - start < 10.0, f"{name}: type detection is not linear"


_HTML_START = re.compile(
    rb"^\s*(<!--.*?-->\s*)*<(!doctype\s+html|html[\s>]|head[\s>]|body[\s>])",
    re.IGNORECASE | re.DOTALL,
)
_HTML_PIECES = st.sampled_from(
    [b"<!--", b"-->", b"<!-- c -->", b" ", b"\n", b"\t", b"<", b">", b"html", b"HTML",
     b"<html>", b"<head ", b"<body>", b"<!DOCTYPE html>", b"<!doctype", b"x", b"\xef\xbb\xbf"]
)  # fmt: skip


@settings(max_examples=1000, deadline=None)
@given(st.lists(_HTML_PIECES, max_size=12).map(b"".join))
def test_html_start_agrees_with_the_regex(data: bytes) -> None:
    from zopilot_worker.extract.detect import looks_like_html

    regex = bool(_HTML_START.match(data[:4096].lstrip(b"\xef\xbb\xbf")))
    # The regex could stretch a comment to a later "-->"; HTML (and the scan) ends it at the first.
    first_close_only = data.count(b"-->") <= 1
    if first_close_only:
        assert looks_like_html(data) == regex
    elif looks_like_html(data):
        assert regex
