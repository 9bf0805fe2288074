"""Markdown → plain text for classification, and small text helpers.

Everything here runs on untrusted text (a document's markdown), so every pass
is a single left-to-right scan: linear in the input, whatever it holds.
Regular expressions that need a closing delimiter (``<!--.*?-->``,
``\\[[^\\]]*\\]\\(...\\)``, ``\\*\\*.+?\\*\\*``) are quadratic under ``re.sub``:
every unclosed opener rescans the rest of the input. The scanners below find a
closer at most once per closer kind, remembering the last one found
(:class:`_NextIndex`), which is what makes them linear. The two regular
expressions left are linear by construction (bounded or single-class
repetitions; see tests/worker/extract/test_regex_audit.py).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

# ^ plus bounded repetitions, then one greedy run that always succeeds: linear.
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+", re.MULTILINE)
# One repeated character: linear.
_BLANK_RUNS = re.compile(r"\n{3,}")


class _NextIndex:
    """``next(at)``: the first index ``>= at`` where ``match`` holds, or -1.

    Queries must come with non-decreasing ``at`` (scanners move forward); the
    answer to one query stays valid for every later one up to that answer, so
    the whole text is searched at most once.
    """

    def __init__(self, length: int, find: Callable[[int], int]) -> None:
        self._length = length
        self._find = find
        self._from = 0
        self._found = -2  # nothing searched yet

    def next(self, at: int) -> int:
        if self._found != -2 and self._from <= at and (self._found == -1 or at <= self._found):
            return self._found
        self._from = at
        self._found = self._find(at) if at <= self._length else -1
        return self._found


def _strip_comments(text: str) -> str:
    """``<!--.*?-->`` (DOTALL) removed; an unclosed ``<!--`` stays as it is."""
    out: list[str] = []
    pos = 0
    while True:
        start = text.find("<!--", pos)
        if start == -1:
            break
        end = text.find("-->", start + 4)
        if end == -1:  # no closer after this opener, so none after any later one either
            break
        out.append(text[pos:start])
        pos = end + 3
    out.append(text[pos:])
    return "".join(out)


def _is_table_cell(cell: str) -> bool:
    """``:?-{3,}:?`` (the cell already stripped of spaces and tabs)."""
    core = cell[1:] if cell.startswith(":") else cell
    core = core[:-1] if core.endswith(":") else core
    return len(core) >= 3 and core.count("-") == len(core)


def _is_table_rule(line: str) -> bool:
    """A markdown table's delimiter row, e.g. ``| --- | :---: |`` (a whole line)."""
    body = line.strip(" \t")
    body = body[1:] if body.startswith("|") else body
    body = body[:-1] if body.endswith("|") else body
    return all(_is_table_cell(cell.strip(" \t")) for cell in body.split("|"))


def _strip_table_rules(text: str) -> str:
    """Drop delimiter rows with their line break (lines end at ``\\n`` only, as ``$`` does)."""
    *lines, last = text.split("\n")
    kept = [line + "\n" for line in lines if not ("---" in line and _is_table_rule(line))]
    if not ("---" in last and _is_table_rule(last)):
        kept.append(last)
    return "".join(kept)


def _strip_links(text: str, *, images: bool) -> str:
    """``[label](target)`` → ``label`` (``![alt](src)`` → ``alt`` with ``images``)."""
    opener = "![" if images else "["
    close_bracket = _NextIndex(len(text), lambda at: text.find("]", at))
    close_paren = _NextIndex(len(text), lambda at: text.find(")", at))
    out: list[str] = []
    pos = scan = 0
    while True:
        start = text.find(opener, scan)
        if start == -1:
            break
        label_start = start + len(opener)
        bracket = close_bracket.next(label_start)
        if bracket == -1:
            break  # no "]" after this opener: none after a later one either
        if text.startswith("(", bracket + 1):
            paren = close_paren.next(bracket + 2)
            if paren == -1:
                break
            out += [text[pos:start], text[label_start:bracket]]
            pos = scan = paren + 1
        else:
            scan = start + 1
    out.append(text[pos:])
    return "".join(out)


def _is_word(ch: str) -> bool:
    """``\\w`` of Python's ``re`` (Unicode): alphanumeric or the underscore."""
    return ch.isalnum() or ch == "_"


def _strip_strong(text: str) -> str:
    """``(\\*\\*|__)(.+?)\\1`` → the inner text; never across a line break."""
    n = len(text)

    def finder(needle: str) -> _NextIndex:
        return _NextIndex(n, lambda at: text.find(needle, at))

    newline = finder("\n")
    # Separate searches for openers and closers: each sees non-decreasing positions.
    openers = {d: finder(d) for d in ("**", "__")}
    closers = {d: finder(d) for d in ("**", "__")}

    def next_opener(at: int) -> int:
        found = [i for i in (o.next(at) for o in openers.values()) if i != -1]
        return min(found, default=-1)

    out: list[str] = []
    pos = 0
    i = next_opener(0)
    while i != -1:
        delim = text[i : i + 2]
        close = closers[delim].next(i + 3)
        line_end = newline.next(i + 2)
        if close == -1 or (line_end != -1 and line_end < close):
            i = next_opener(i + 1)
            continue
        out += [text[pos:i], text[i + 2 : close]]
        pos = close + 2
        i = next_opener(pos)
    out.append(text[pos:])
    return "".join(out)


def _strip_em(text: str) -> str:
    """Single-star emphasis, as ``(?<![\\w*])\\*(?![\\s*])(.+?)(?<![\\s*])\\*(?![\\w*])``."""
    n = len(text)

    def is_closer(j: int) -> bool:
        before, after = text[j - 1], text[j + 1 : j + 2]
        return not (
            before.isspace() or before == "*" or (after and (_is_word(after) or after == "*"))
        )

    def find_closer(at: int) -> int:
        j = text.find("*", at)
        while j != -1 and not is_closer(j):
            j = text.find("*", j + 1)
        return j

    newline = _NextIndex(n, lambda at: text.find("\n", at))
    closer = _NextIndex(n, find_closer)
    out: list[str] = []
    pos = 0
    i = text.find("*")
    while i != -1 and i < n - 1:
        before = text[i - 1] if i else ""
        after = text[i + 1]
        if not (before and (_is_word(before) or before == "*")) and not (
            after.isspace() or after == "*"
        ):
            close = closer.next(i + 2)
            line_end = newline.next(i + 1)
            if close != -1 and (line_end == -1 or close < line_end):
                out += [text[pos:i], text[i + 1 : close]]
                pos = close + 1
                i = text.find("*", pos)
                continue
        i = text.find("*", i + 1)
    out.append(text[pos:])
    return "".join(out)


def markdown_to_text(markdown: str) -> str:
    """Strip markdown syntax (headings, tables, links, emphasis, comments), keep the words."""
    text = _strip_comments(markdown)
    text = _strip_table_rules(text)
    text = _HEADING.sub("", text)
    text = _strip_links(text, images=True)
    text = _strip_links(text, images=False)
    text = _strip_strong(text)
    text = _strip_em(text)
    lines = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("|") and stripped.endswith("|"):
            # A table row: cells separated by tabs keep columns apart for the classifier.
            line = "\t".join(cell.strip() for cell in stripped[1:-1].split("|"))
        lines.append(line.rstrip())
    return _BLANK_RUNS.sub("\n\n", "\n".join(lines)).strip()


def non_space_chars(text: str) -> int:
    """Characters other than whitespace (``str.split`` runs in C: fast on big pages)."""
    return sum(map(len, text.split()))


def page_ranges(pages: Iterable[int]) -> str:
    """``[1, 2, 3, 5]`` → ``"1-3, 5"``."""
    out: list[str] = []
    run: list[int] = []
    for page in sorted(pages):
        if run and page == run[-1] + 1:
            run.append(page)
            continue
        if run:
            out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
        run = [page]
    if run:
        out.append(f"{run[0]}-{run[-1]}" if len(run) > 1 else str(run[0]))
    return ", ".join(out)
