"""Every regular expression in worker/src is audited: a new one fails this test until it is.

A regular expression on untrusted input that backtracks super-linearly lets a
few hundred bytes hold the GIL for hours (issue 10). The registry below lists
every pattern in the worker's source, where its input comes from, and why it
is linear. Adding a pattern without adding it here fails
``test_every_pattern_is_audited``; a pattern that runs on untrusted input is
also run over long adversarial strings built from its own syntax.

To audit a new pattern: prefer a linear scan (``str.find`` loops, see
``extract/text.py``); otherwise make every repetition unambiguous (one
character class per run, bounded counts, possessive ``*+``/atomic ``(?>...)``)
and add it to ``AUDITED`` with the reason.
"""

from __future__ import annotations

import ast
import re
import time
from pathlib import Path
from typing import Any

import pytest

SOURCE = Path(__file__).resolve().parents[3] / "worker" / "src"
_RE_FUNCTIONS = {"compile", "match", "search", "sub", "subn", "findall", "finditer", "split"}
_RE_FUNCTIONS |= {"fullmatch"}

# (module, pattern or the source of the expression building it) → (untrusted input?, why linear)
AUDITED: dict[tuple[str, str | bytes], tuple[bool, str]] = {
    ("zopilot_worker/extract/detect.py", r"[\x00-\x08\x0e-\x1f\x7f]"): (
        True,
        "one character class, no repetition (counts control characters of an upload)",
    ),
    (
        "zopilot_worker/extract/office.py",
        r"\*Table truncated to first (\d+) rows out of (\d+) total\.\*",
    ): (
        True,
        "literal prefix, single-class digit runs between literals (docstrange's markdown)",
    ),
    ("zopilot_worker/extract/office.py", r"^#\n(## )"): (True, "fixed length"),
    ("zopilot_worker/extract/ooxml.py", r"\A\ufeff?(?:\s|<!--.*?-->|<\?.*?\?>)*+<[A-Za-z_]"): (
        True,
        "anchored at \\A, possessive loop (no backtracking into it), on a 4 KiB window",
    ),
    ("zopilot_worker/extract/ooxml.py", r"ppt/slides/slide\d+\.xml"): (
        True,
        "fullmatch of a zip entry name: one digit run between literals",
    ),
    ("zopilot_worker/extract/ooxml.py", r"xl/worksheets/sheet\d+\.xml"): (
        True,
        "fullmatch of a zip entry name: one digit run between literals",
    ),
    ("zopilot_worker/extract/text.py", r"^\s{0,3}#{1,6}\s+"): (
        True,
        "bounded counts, then one greedy run that ends the match (markdown headings)",
    ),
    ("zopilot_worker/extract/text.py", r"\n{3,}"): (True, "one repeated character"),
    (
        "zopilot_worker/extract/sheets.py",
        rb"<(?:[A-Za-z_][\w.-]{0,31}:)?(row|c)([\s/>][^<>]{0,1024})",
    ): (
        True,
        "starts at '<', bounded runs that cannot pass the next '<' (worksheet XML)",
    ),
    ("zopilot_worker/extract/sheets.py", rb"\sr\s*=\s*[\"']([A-Za-z]{0,3})([0-9]{0,7})[\"']"): (
        True,
        "literal-separated single-class runs, on one tag's attributes (at most 1 KiB)",
    ),
    ("zopilot_worker/extract/sheets.py", rb"<(?:[A-Za-z_][\w.-]{0,31}:)?si[\s/>]"): (
        True,
        "starts at '<', one bounded prefix run (shared strings XML)",
    ),
    ("zopilot_worker/jobrunner/fetch.py", r"^[-._a-zA-Z0-9]+$"): (
        True,
        "anchored, one character class (a ConfigMap key from the job spec)",
    ),
    ("zopilot_worker/jobrunner/output.py", r"[^A-Za-z0-9._-]+"): (
        True,
        "one character class run (document names made safe for file names)",
    ),
    ("zopilot_worker/service/context.py", r"^[A-Za-z0-9._:\-]{1,128}$"): (
        True,
        "anchored, bounded single class (X-Request-ID header)",
    ),
    ("zopilot_worker/service/schemas.py", "LABEL_PATTERN"): (
        False,  # untrusted, but built from constants: test_label_pattern_is_linear runs it
        "anchored; an edge class, then one run whose class contains the edge class, then "
        "the edge class at $: one backtracking pass; labels are also capped at 63 characters",
    ),
    ("zopilot_worker/classify/scoring.py", "f'(?<!\\\\w){re.escape(label.lower())}(?!\\\\w)'"): (
        False,
        "an escaped literal label with one-character lookarounds, on the model's own output",
    ),
    (
        "zopilot_worker/testing/documents.py",
        rb"(<dcterms:modified[^>]*>)[^<]*(</dcterms:modified>)",
    ): (
        False,
        "test document generator: runs on XML that openpyxl just wrote",
    ),
}  # fmt: skip


def _patterns() -> list[tuple[str, str | bytes]]:
    found = []
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and isinstance(node.func.value, ast.Name)
                and node.func.value.id == "re"
                and node.func.attr in _RE_FUNCTIONS
                and node.args
            ):
                continue
            arg = node.args[0]
            if isinstance(arg, ast.Constant) and isinstance(arg.value, str | bytes):
                pattern: str | bytes = arg.value
            else:
                pattern = ast.unparse(arg)
            found.append((path.relative_to(SOURCE).as_posix(), pattern))
    return found


def test_every_pattern_is_audited() -> None:
    found = set(_patterns())
    unaudited = sorted(found - set(AUDITED), key=repr)
    assert not unaudited, f"audit these patterns (see this module's docstring): {unaudited}"
    stale = sorted(set(AUDITED) - found, key=repr)
    assert not stale, f"these audited patterns are gone; remove them from AUDITED: {stale}"


def test_no_other_regex_entry_points() -> None:
    """``from re import ...`` or ``regex``/``re2`` would slip past the scan above."""
    for path in sorted(SOURCE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom) and node.module in ("re", "regex", "re2"):
                pytest.fail(f"{path}: import the module (import re) so the audit sees its calls")
            if isinstance(node, ast.Import):
                names = {alias.name for alias in node.names}
                assert not names & {"regex", "re2"}, f"{path}: audit the regex engine first"


N = 100_000


def _adversarial(pattern: str | bytes) -> list[str]:
    """Long strings made of the pattern's own syntax characters, runs and repetitions."""
    source = pattern.decode("latin-1") if isinstance(pattern, bytes) else pattern
    specials = sorted({c for c in source if not c.isalnum()} | {" ", "a", "0", "\n", "r", "c"})
    pieces = [*specials, "<!--", "<?", "-->", "**", "[a](", "|---", "#" * 7]
    strings = [piece * (N // len(piece)) for piece in pieces]
    strings += ["".join(specials) * (N // len(specials))]
    strings += [piece * (N // len(piece) // 2) + "!" for piece in pieces]  # no final match
    return strings


@pytest.mark.parametrize(
    "key", [k for k, (untrusted, _) in AUDITED.items() if untrusted], ids=lambda k: repr(k[1])[:40]
)
def test_untrusted_patterns_are_linear_on_adversarial_input(key: tuple[str, str | bytes]) -> None:
    pattern = key[1]
    flags = re.MULTILINE | re.DOTALL if pattern[:1] in ("^", b"^") else 0
    compiled: re.Pattern[Any] = re.compile(pattern, flags)
    start = time.perf_counter()
    for string in _adversarial(pattern):
        text: str | bytes = string.encode("latin-1") if isinstance(pattern, bytes) else string
        for _ in compiled.finditer(text):
            pass
        compiled.match(text)
        compiled.fullmatch(text)
        # A generous bound: linear patterns take milliseconds here, quadratic ones minutes.
        assert time.perf_counter() - start < 20.0, f"{pattern!r} is super-linear on {string[:20]!r}"


def test_label_pattern_is_linear() -> None:
    """Classification labels come from requests: the schema's pattern, run as the service
    runs it (re.search), over long strings of its own syntax."""
    from zopilot_worker.service.schemas import LABEL_PATTERN

    compiled = re.compile(LABEL_PATTERN)
    start = time.perf_counter()
    for string in _adversarial(LABEL_PATTERN):
        compiled.search(string)
        compiled.search(string + ",")
        assert time.perf_counter() - start < 20.0, (
            f"LABEL_PATTERN is super-linear on {string[:20]!r}"
        )
