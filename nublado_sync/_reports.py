"""Error reports for Slack and Sentry, built from an exception's attributes.

``rubin-nublado-client`` gets ``to_slack()`` and ``to_sentry()`` from Safir,
a Rubin framework that does not install on older Pythons. These are the same
reports built with the standard library only: a Slack message that renders
to Block Kit JSON, and the tags, contexts and attachments of a Sentry event,
which `sentry_before_send` adds to events when ``sentry_sdk`` is in use.
Nothing here imports Slack or Sentry code until a report is sent.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, List, Optional, Union

from ._redact import strip_ansi

if TYPE_CHECKING:
    from ._exceptions import NubladoError

__all__ = [
    "SentryEventInfo",
    "SlackCodeBlock",
    "SlackMessage",
    "SlackTextBlock",
    "SlackTextField",
    "sentry_before_send",
    "sentry_info",
    "slack_message",
]

# Slack refuses a section whose text is longer than 3,000 characters, and a
# section with more than 10 fields.
_MAX_SECTION_TEXT = 3000
_MAX_FIELDS = 10


def format_time(when: datetime.datetime) -> str:
    """Format a time for a report: UTC, to the millisecond, as Safir does."""
    when = when.astimezone(datetime.timezone.utc)
    text = when.strftime("%Y-%m-%d %H:%M:%S")
    if when.microsecond:
        text += f".{when.microsecond // 1000:03d}"
    return text


def _shorten(text: str, limit: int, *, keep_end: bool = False) -> str:
    if len(text) <= limit:
        return text
    if keep_end:
        # Tracebacks and logs say what went wrong at their end.
        return "..." + text[-(limit - 3) :]
    return text[: limit - 3] + "..."


def _mrkdwn(text: str) -> Dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


@dataclass
class SlackTextBlock:
    """A block of text under a heading.

    Parameters
    ----------
    heading
        Heading, shown in bold.
    text
        The text.
    """

    heading: str
    text: str

    def to_slack(self) -> Dict[str, Any]:
        """Return the Block Kit section for this block.

        Returns
        -------
        dict
            A ``section`` block.
        """
        body = f"*{self.heading}*\n"
        text = _shorten(self.text, _MAX_SECTION_TEXT - len(body))
        return {"type": "section", "text": _mrkdwn(body + text)}


@dataclass
class SlackCodeBlock:
    """A block of preformatted text (a traceback, code) under a heading.

    Parameters
    ----------
    heading
        Heading, shown in bold.
    code
        The text; a long one keeps its end, where a traceback's error is.
    """

    heading: str
    code: str

    def to_slack(self) -> Dict[str, Any]:
        """Return the Block Kit section for this block.

        Returns
        -------
        dict
            A ``section`` block.
        """
        body = f"*{self.heading}*\n```\n"
        code = _shorten(self.code, _MAX_SECTION_TEXT - len(body) - 4, keep_end=True)
        return {"type": "section", "text": _mrkdwn(f"{body}{code}\n```")}


@dataclass
class SlackTextField:
    """A short field (a time, a name) shown beside the others.

    Parameters
    ----------
    heading
        Heading, shown in bold.
    text
        The value.
    """

    heading: str
    text: str

    def to_slack(self) -> Dict[str, Any]:
        """Return the Block Kit text object for this field.

        Returns
        -------
        dict
            A ``mrkdwn`` text object.
        """
        return _mrkdwn(_shorten(f"*{self.heading}*\n{self.text}", 2000))


SlackBlock = Union[SlackTextBlock, SlackCodeBlock]


@dataclass
class SlackMessage:
    """A Slack message reporting an error, with the shape of Safir's.

    Parameters
    ----------
    message
        The summary line.
    blocks
        Blocks shown after the summary.
    fields
        Short fields shown after the blocks.
    attachments
        Blocks shown as an attachment (collapsed when long).
    """

    message: str
    blocks: List[SlackBlock] = field(default_factory=list)
    fields: List[SlackTextField] = field(default_factory=list)
    attachments: List[SlackBlock] = field(default_factory=list)

    def to_slack(self) -> Dict[str, Any]:
        """Return the message as Slack Block Kit JSON.

        Post it as the JSON body of a request to a Slack incoming webhook.

        Returns
        -------
        dict
            ``text`` (the notification text), ``blocks`` and, when there
            are attachments, ``attachments``.
        """
        summary = _shorten(self.message, _MAX_SECTION_TEXT)
        blocks: List[Dict[str, Any]] = [{"type": "section", "text": _mrkdwn(summary)}]
        blocks.extend(block.to_slack() for block in self.blocks)
        for start in range(0, len(self.fields), _MAX_FIELDS):
            chunk = self.fields[start : start + _MAX_FIELDS]
            blocks.append({"type": "section", "fields": [f.to_slack() for f in chunk]})
        result: Dict[str, Any] = {"text": summary, "blocks": blocks}
        if self.attachments:
            result["attachments"] = [{"blocks": [a.to_slack() for a in self.attachments]}]
        return result


@dataclass
class SentryEventInfo:
    """What an exception adds to a Sentry event, with the shape of Safir's.

    Parameters
    ----------
    tags
        Indexed, searchable tags.
    contexts
        Named groups of details.
    attachments
        Files to attach, by name.
    """

    tags: Dict[str, str] = field(default_factory=dict)
    contexts: Dict[str, Dict[str, Any]] = field(default_factory=dict)
    attachments: Dict[str, str] = field(default_factory=dict)

    def add_to_event(self, event: Dict[str, Any], hint: Dict[str, Any]) -> None:
        """Add the tags, contexts and attachments to a Sentry event.

        Parameters
        ----------
        event
            The event, as ``sentry_sdk`` passes it to ``before_send``.
        hint
            The hint passed with it; attachments go to its
            ``attachments`` list (needs ``sentry_sdk``).
        """
        event.setdefault("tags", {}).update(self.tags)
        contexts = event.setdefault("contexts", {})
        for name, values in self.contexts.items():
            contexts.setdefault(name, {}).update(values)
        if self.attachments:
            from sentry_sdk.attachments import Attachment

            files = hint.setdefault("attachments", [])
            for name, text in self.attachments.items():
                files.append(Attachment(bytes=text.encode(), filename=name))


def sentry_before_send(event: Dict[str, Any], hint: Dict[str, Any]) -> Dict[str, Any]:
    """Add a `NubladoError`'s report to the Sentry event that reports it.

    Pass it to ``sentry_sdk.init(before_send=sentry_before_send)`` (or call
    it from your own ``before_send``): every event captured for a
    `NubladoError` then carries the tags, contexts and attachments of
    `NubladoError.to_sentry`, as Safir's handler does for
    ``rubin-nublado-client``. Other events pass unchanged.

    Parameters
    ----------
    event
        The event about to be sent.
    hint
        Sentry's hint, with the exception in ``exc_info``.

    Returns
    -------
    dict
        The event.
    """
    from ._exceptions import NubladoError

    exc_info = hint.get("exc_info")
    exc = exc_info[1] if exc_info else None
    if isinstance(exc, NubladoError):
        exc.to_sentry().add_to_event(event, hint)
    return event


def _context_tags(exc: NubladoError) -> Dict[str, str]:
    context = exc.context
    pairs = [
        ("image", context.image),
        ("node", context.node),
        ("notebook", context.notebook),
        ("cell", context.cell),
        ("cell_number", context.cell_number),
    ]
    return {name: value for name, value in pairs if value}


def sentry_info(exc: NubladoError) -> SentryEventInfo:
    """Build the Sentry additions for an exception (see `NubladoError.to_sentry`)."""
    from ._exceptions import (
        NubladoExecutionError,
        NubladoExecutionTimeoutError,
        NubladoRedirectError,
        NubladoSpawnError,
        NubladoWebError,
        NubladoWebSocketError,
    )

    info = SentryEventInfo(tags=_context_tags(exc))
    if exc.started_at:
        info.contexts["info"] = {"started_at": format_time(exc.started_at)}
    if isinstance(exc, (NubladoExecutionError, NubladoExecutionTimeoutError)):
        status = getattr(exc, "status", None)
        if status and status != "error":  # as str(): a plain failure has no tag
            info.tags["status"] = status
        error = getattr(exc, "error", None)
        if error:
            info.attachments["nublado_error.txt"] = strip_ansi(error)
        if exc.code:
            info.attachments["nublado_code.txt"] = exc.code
    if isinstance(exc, NubladoSpawnError):
        info.attachments["spawn_log.txt"] = "\n".join(strip_ansi(m) for m in exc.log)
    if isinstance(exc, NubladoRedirectError):
        info.tags["httpx_request_method"] = "GET"
        info.tags["httpx_request_url"] = exc.url
    if isinstance(exc, NubladoWebError):
        # Upstream's tag names (from its httpx layer), kept so that Sentry
        # searches and alerts written for it still match.
        if exc.method:
            info.tags["httpx_request_method"] = exc.method
        if exc.url:
            info.tags["httpx_request_url"] = exc.url
        if exc.status:
            info.tags["httpx_request_status"] = str(exc.status)
        if exc.body:
            info.attachments["httpx_response_body"] = exc.body
    if isinstance(exc, NubladoWebSocketError):
        if exc.code:
            info.tags["code"] = str(exc.code)
        if exc.body:
            info.attachments["body.txt"] = exc.body
    return info


def _context_blocks(exc: NubladoError) -> List[SlackBlock]:
    context = exc.context
    blocks: List[SlackBlock] = []
    if context.node:
        blocks.append(SlackTextBlock("Node", context.node))
    if context.notebook and context.cell:
        text = f"`{context.notebook}` cell `{context.cell}`"
        if context.cell_number:
            text += f" ({context.cell_number})"
        blocks.append(SlackTextBlock("Cell", text))
    elif context.notebook:
        blocks.append(SlackTextBlock("Notebook", context.notebook))
    elif context.cell:
        text = context.cell
        if context.cell_number:
            text += f" ({context.cell_number})"
        blocks.append(SlackTextBlock("Cell", text))
    return blocks


def _fields(exc: NubladoError) -> List[SlackTextField]:
    fields = []
    if exc.started_at:
        fields.append(SlackTextField("Started at", format_time(exc.started_at)))
    fields.append(SlackTextField("Failed at", format_time(exc.failed_at)))
    fields.append(SlackTextField("Exception type", type(exc).__name__))
    if exc.user:
        fields.append(SlackTextField("User", exc.user))
    if exc.context.image:
        fields.append(SlackTextField("Image", exc.context.image))
    return fields


def _execution_summary(exc: NubladoError, what: str) -> str:
    context = exc.context
    if context.notebook:
        summary = f"{what} `{context.notebook}`"
        if context.cell:
            summary += f" cell `{context.cell}`"
    else:
        summary = f"{what} code"
    status = getattr(exc, "status", None)
    if status and status != "error":
        summary += f" (status: {status})"
    return summary


def slack_message(exc: NubladoError) -> SlackMessage:
    """Build the Slack message for an exception (see `NubladoError.to_slack`)."""
    from ._exceptions import (
        NubladoExecutionError,
        NubladoExecutionTimeoutError,
        NubladoRedirectError,
        NubladoSpawnError,
        NubladoWebError,
        NubladoWebSocketError,
    )

    message = SlackMessage(exc.message, blocks=_context_blocks(exc), fields=_fields(exc))
    code: Optional[str] = None
    if isinstance(exc, NubladoExecutionError):
        message.message = _execution_summary(exc, "Error while running")
        code = exc.code
        if exc.error:
            message.attachments.append(SlackCodeBlock("Error", strip_ansi(exc.error)))
    elif isinstance(exc, NubladoExecutionTimeoutError):
        message.message = _execution_summary(exc, "Timed out running")
        message.fields.append(SlackTextField("Timeout", f"{exc.timeout.total_seconds():g}s"))
        code = exc.code
    if code:
        message.attachments.append(SlackCodeBlock("Code executed", code))
    if isinstance(exc, NubladoRedirectError):
        message.blocks.append(SlackTextBlock("URL", f"GET {exc.url}"))
    if isinstance(exc, NubladoWebError):
        if exc.url:
            text = f"{exc.method} {exc.url}" if exc.method else exc.url
            message.blocks.append(SlackTextBlock("URL", text))
        if exc.body:
            message.attachments.append(SlackCodeBlock("Response", exc.body))
    if isinstance(exc, NubladoSpawnError) and exc.log:
        log = "\n".join(strip_ansi(m) for m in exc.log)
        message.attachments.append(SlackCodeBlock("Spawn log", log))
    if isinstance(exc, NubladoWebSocketError):
        if exc.code:
            message.fields.append(SlackTextField("Code", str(exc.code)))
        if exc.body:
            message.attachments.append(SlackTextBlock("Body", exc.body))
    return message
