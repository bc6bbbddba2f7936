"""The words a person reads in a server's error answer, without the page around them."""

from __future__ import annotations

import html
import json
import re
from html.parser import HTMLParser
from typing import List, Optional, Tuple

__all__ = ["error_text"]

# Enough for a reason in a sentence or two; a page's worth is never wanted.
_MAX_TEXT = 500
_SPACE = re.compile(r"\s+")
# Content never read as text.
_SKIPPED = {"script", "style", "head", "title", "noscript", "template"}
_VOID = {
    "area",
    "base",
    "br",
    "col",
    "embed",
    "hr",
    "img",
    "input",
    "link",
    "meta",
    "source",
    "wbr",
}


class _ErrorPageText(HTMLParser):
    """Collect the text of a page, and apart from it that of its first error block.

    Error pages put the reason in an element marked as an error: JupyterHub's
    ``error.html`` in ``<div class="error">``, its spawn form in
    ``<p class="spawn-error-msg alert alert-danger">``; the rest is
    navigation, forms and scripts.
    """

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.all: List[str] = []
        self.error: List[str] = []
        self._skip = 0
        self._depth = 0
        self._error_depth = 0
        self._error_done = False

    def handle_starttag(self, tag: str, attrs: List[Tuple[str, Optional[str]]]) -> None:
        if tag in _VOID:
            return
        self._depth += 1
        if tag in _SKIPPED:
            self._skip += 1
        classes = (dict(attrs).get("class") or "").split()
        marked = any("error" in c or c == "alert-danger" for c in classes)
        if marked and not self._error_depth and not self._error_done:
            self._error_depth = self._depth

    def handle_endtag(self, tag: str) -> None:
        if tag in _VOID:
            return
        if tag in _SKIPPED and self._skip:
            self._skip -= 1
        if self._error_depth and self._depth == self._error_depth:
            self._error_depth = 0
            self._error_done = bool(_squeeze(self.error))
        self._depth = max(self._depth - 1, 0)

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        self.all.append(data)
        if self._error_depth:
            self.error.append(data)


def _squeeze(parts: List[str]) -> str:
    return _SPACE.sub(" ", " ".join(parts)).strip()


def _shorten(text: str) -> str:
    return text if len(text) <= _MAX_TEXT else text[: _MAX_TEXT - 3] + "..."


def error_text(body: str) -> str:
    """Return the message of an error answer in a line of plain words.

    A JSON body gives its ``message`` (or ``reason``, ``detail``); an HTML
    page the text of its first element marked as an error (a class naming
    an error, as JupyterHub's pages have) or else of the whole page; any
    other body its text. White space is collapsed and the result shortened
    to a few hundred characters.

    Parameters
    ----------
    body
        The response body (already redacted).

    Returns
    -------
    str
        The text, or an empty string when there is none.
    """
    text = body.strip()
    if not text:
        return ""
    if text[:1] in "{[":
        try:
            data = json.loads(text)
        except ValueError:
            data = None
        if isinstance(data, dict):
            for key in ("message", "reason", "detail", "error"):
                value = data.get(key)
                if isinstance(value, str) and value.strip():
                    return _shorten(_squeeze([value]))
    if "<" in text and ">" in text:
        parser = _ErrorPageText()
        try:
            parser.feed(text)
            parser.close()
        except Exception:  # html.parser is lenient; never fail a report on it
            return _shorten(_squeeze([html.unescape(re.sub(r"<[^>]*>", " ", text))]))
        return _shorten(_squeeze(parser.error) or _squeeze(parser.all))
    return _shorten(_squeeze([text]))
