"""Mail merge with Jinja2: sandboxed, strict about missing variables, HTML escaped, templates compiled once.

The sandbox keeps a template from reaching Python internals (``{{ ''.__class__ }}``): templates may come
from a colleague or a shared drive. ``StrictUndefined`` turns a variable missing from a row into an error
for that row instead of a silent gap ("Hi ,").
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, UndefinedError, meta
from jinja2.exceptions import SecurityError
from jinja2.sandbox import SandboxedEnvironment

from deadpixel.errors import DeadpixelError

__all__ = ["Rendered", "TemplateProblem", "Templates", "fields"]


TOO_DEEP = "nested too deeply to compile (brackets, tags or attribute chains hundreds of levels deep)"


class TemplateProblem(DeadpixelError):
    """A template that cannot be compiled (the whole campaign stops) or rendered (one row fails)."""


@dataclass(frozen=True, slots=True)
class Rendered:
    subject: str
    html: str
    text: str | None


def _environment(autoescape: bool) -> SandboxedEnvironment:
    return SandboxedEnvironment(
        undefined=StrictUndefined, autoescape=autoescape, keep_trailing_newline=True, auto_reload=False
    )


@functools.lru_cache(maxsize=32)
def fields(source: str) -> frozenset[str]:
    """The variables a template reads from its row (``{{ first_name }}``, ``{% if vip %}``), for a preview
    to name those a recipient list lacks before a send stops on them. TemplateProblem if it does not parse.
    Cached: previews of one campaign ask about the same few templates again and again."""
    try:
        return frozenset(meta.find_undeclared_variables(_environment(False).parse(source)))
    except TemplateSyntaxError as exc:
        raise TemplateProblem(f"line {exc.lineno}: {exc.message}") from None
    except RecursionError:
        raise TemplateProblem(TOO_DEEP) from None


class Templates:
    def __init__(self, subject: str, html: str, text: str | None = None) -> None:
        plain, markup = _environment(False), _environment(True)
        self._subject = self._compile(plain, subject, "subject")
        self._html = self._compile(markup, html, "HTML template")
        self._text = self._compile(plain, text, "text template") if text is not None else None

    @staticmethod
    def _compile(env: SandboxedEnvironment, source: str, what: str):  # type: ignore[no-untyped-def]
        try:
            return env.from_string(source)
        except TemplateSyntaxError as exc:
            raise TemplateProblem(f"{what}, line {exc.lineno}: {exc.message}") from None
        except RecursionError:  # Jinja's parser and compiler recurse once per level of nesting
            raise TemplateProblem(f"{what}: {TOO_DEEP}") from None

    def render(self, values: Mapping[str, object]) -> Rendered:
        """Render for one recipient; TemplateProblem names the template and what went wrong."""
        what = "subject"
        try:
            subject = " ".join(self._subject.render(values).split())  # one line, as a header must be
            what = "HTML template"
            html = self._html.render(values)
            what = "text template"
            text = self._text.render(values) if self._text is not None else None
        except UndefinedError as exc:
            raise TemplateProblem(f"{what}: {exc.message}") from None
        except SecurityError as exc:
            raise TemplateProblem(f"{what}: not allowed in the sandbox: {exc}") from None
        except TemplateError as exc:
            raise TemplateProblem(f"{what}: {exc}") from None
        except Exception as exc:  # e.g. a filter fed the wrong type by one row's data
            raise TemplateProblem(f"{what}: {type(exc).__name__}: {exc}") from None
        return Rendered(subject, html, text)
