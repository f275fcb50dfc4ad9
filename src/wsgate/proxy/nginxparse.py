"""Reading an nginx config with crossplane, nginx's own Python parser: the file and its
includes as crossplane's statement lists, or the first mistake as one ConfigError line in
nginx's form (``unexpected "}" in x.conf:3``, ``open() "/x/y.conf" failed (2: No such file
or directory) in nginx.conf:5``), never a traceback.

Relative includes are resolved against the main file's folder, as nginx resolves them
against its conf prefix (the folder of the file given with -c); a glob that matches nothing
is fine and a missing plain file is an error, as in nginx.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import crossplane  # type: ignore[import-untyped]
from crossplane.errors import (  # type: ignore[import-untyped]
    NgxParserBaseException,
    NgxParserSyntaxError,
)

from wsgate.errors import ConfigError

Stmt = dict[str, Any]


def _keep(error: BaseException) -> BaseException:
    """crossplane's onerror: keep the exception, so a failed open() keeps its errno."""
    return error


def load(path: Path) -> list[Stmt]:
    """crossplane's parse of every file, or the first error in nginx's words.

    Includes are found by crossplane (single=False) but not spliced in (combine=False): the
    walk splices them, so each statement keeps its own file and an include of a file from
    inside itself is an error rather than crossplane's endless recursion. Context and
    argument counts are not checked here (check_ctx, check_args) but per statement during
    the walk, with crossplane's analyzer: crossplane would check an included file against
    the context of its first include only, and cannot know that a snippet's top level is
    http. Unknown directives are the walk's to refuse (strict=False)."""
    payload = crossplane.parse(str(path), onerror=_keep, catch_errors=True, single=False,
                               comments=False, strict=False, combine=False,
                               check_ctx=False, check_args=False)
    configs: list[Stmt] = payload["config"]
    for config in configs:
        name = config["file"]
        problems: list[tuple[int, bool, str]] = []
        syntax = _syntax_error(name)
        if syntax is not None:
            problems.append((syntax[0], False, syntax[1]))
        for error in payload["errors"]:
            if error["file"] != name:
                continue
            cause, line = error.get("callback"), error["line"]
            if isinstance(cause, OSError):
                problems.append((line or 0, True, _open_failed(cause, name, line)))
            elif syntax is None and isinstance(cause, NgxParserBaseException):
                problems.append((line or 0, True, str(cause)))
            elif syntax is None:
                problems.append((line or 0, True, f"cannot parse: {error['error']} in {name}"))
        if problems:
            raise ConfigError(min(problems)[2])
    return configs


def _open_failed(error: OSError, file: str, line: int | None) -> str:
    where = f" in {file}:{line}" if line else ""
    return f'open() "{error.filename}" failed ({error.errno}: {error.strerror}){where}'


def _syntax_error(file: str) -> tuple[int, str] | None:
    """nginx's statement errors that crossplane's parser passes over or trips on (a
    directive ended by "}" or by the end of the file, a stray ";" or "{", an include
    without exactly one file), from crossplane's tokens."""
    words: list[str] = []
    last = 0
    try:
        for token, line, quoted in crossplane.lex(file):
            last = line
            if quoted or token not in ("{", ";", "}"):
                if quoted or not token.startswith("#"):
                    words.append(token)
            elif token != "}" and not words:
                return line, f'unexpected "{token}" in {file}:{line}'
            elif token == "}" and words:
                return line, f'unexpected "}}" in {file}:{line}'
            elif words[:1] == ["include"] and len(words) != 2:
                return line, f'invalid number of arguments in "include" directive in {file}:{line}'
            else:
                words = []
    except NgxParserSyntaxError as error:
        return error.lineno or 0, str(error)
    except OSError as error:
        return 0, _open_failed(error, file, None)
    if words:
        return last, f'unexpected end of file, expecting ";" or "}}" in {file}:{last}'
    return None
