"""The ``wsgate`` command line as a whole: subcommands, wscat habits, the one error form,
plain --help texts, lazy imports, closed streams."""

from __future__ import annotations

import json
import re
import subprocess
import sys

import pytest

from conftest import run_wsgate, wsgate_command
from proxy_helpers import closed_port
from wsgate import cli, echo
from wsgate.errors import ConfigError, Failure, UsageError


def test_no_command_prints_help_and_exits_2() -> None:
    result = run_wsgate()
    assert result.returncode == 2
    for command in ("up", "proxy", "echo", "connect", "listen", "bench"):
        assert command in result.stderr


def test_wscat_flags_before_c_still_mean_connect() -> None:
    port = closed_port()
    result = run_wsgate("-H", "X-Test: 1", "-c", f"127.0.0.1:{port}")
    assert result.returncode == 1
    assert result.stderr.strip().endswith(f"error: connection refused: 127.0.0.1:{port}")


# -- one error form ------------------------------------------------------------------------------


def test_unknown_command_is_one_line_pointing_at_wsgate_help() -> None:
    result = run_wsgate("serve")
    assert result.returncode == 2
    assert re.fullmatch(r"error: argument COMMAND: invalid choice: 'serve' \(.*\) "
                        r"\(see wsgate --help\)\n", result.stderr)


def test_a_flag_mistake_points_at_the_commands_help() -> None:
    result = run_wsgate("echo", "--ping-interval", "soon")
    assert result.returncode == 2
    assert result.stderr == (
        'error: argument --ping-interval: must be a duration like "60s", "5m" or "500ms", '
        'got "soon" (see wsgate echo --help)\n'
    )


def test_a_usage_error_from_a_command_points_at_its_help() -> None:
    result = run_wsgate("echo", "--raw", "--prefix", "x")
    assert result.returncode == 2
    assert result.stderr == (
        "error: --raw and --prefix cannot be used together (see wsgate echo --help)\n"
    )


@pytest.mark.parametrize(
    ("error", "status", "line"),
    [
        (UsageError("bad\x1b[2J flag"), 2, "error: bad\\x1b[2J flag (see wsgate echo --help)\n"),
        (ConfigError("w.toml: listen: bad"), 2, "error: w.toml: listen: bad\n"),
        (Failure('HTTP 502 Bad\nGateway\x07'), 1, "error: HTTP 502 Bad\\nGateway\\x07\n"),
    ],
)
def test_each_kind_of_error_is_one_line_with_its_status(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    error: Exception, status: int, line: str,
) -> None:
    def fail(args: object) -> int:
        raise error

    monkeypatch.setattr(echo, "run", fail)
    assert cli.main(["echo"]) == status
    assert capsys.readouterr().err == line


# -- --help ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", [*cli.COMMANDS, None])
def test_help_is_plain_text(command: str | None, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main([command, "--help"] if command else ["--help"])
    assert exited.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith(f"usage: wsgate {command or ''}".rstrip())
    assert "``" not in text
    assert not re.search(r":[a-z]+:`", text), text


def test_duration_flags_say_time_in_their_help(capsys: pytest.CaptureFixture[str]) -> None:
    for command, flag in (("echo", "--ping-interval"), ("connect", "--timeout"),
                          ("listen", "--ping-interval"), ("bench", "--seconds")):
        with pytest.raises(SystemExit):
            cli.main([command, "--help"])
        assert f"{flag} TIME" in capsys.readouterr().out, command


_IMPORTS = """
import contextlib, io, json, sys
from wsgate.cli import main
with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
    with contextlib.suppress(SystemExit):
        main(sys.argv[1:])
print(json.dumps(sorted(sys.modules)))
"""

_HEAVY = ("prompt_toolkit", "picows", "websockets", "wsgate.client", "wsgate.proxy",
          "wsgate.echo", "wsgate.bench", "wsgate.up")


@pytest.mark.parametrize(
    ("argv", "not_imported"),
    [
        ([], _HEAVY),
        (["--help"], _HEAVY),
        (["proxy", "--help"], ("prompt_toolkit", "picows", "wsgate.client", "wsgate.echo",
                               "wsgate.bench")),
        (["echo", "--help"], ("prompt_toolkit", "wsgate.client", "wsgate.proxy",
                              "wsgate.bench")),
        (["bench", "--help"], ("prompt_toolkit", "picows", "wsgate.proxy", "wsgate.echo")),
        (["connect", "--help"], ("picows", "wsgate.proxy", "wsgate.echo", "wsgate.bench")),
    ],
)
def test_only_the_command_run_is_imported(argv: list[str], not_imported: tuple[str, ...]) -> None:
    result = subprocess.run([sys.executable, "-c", _IMPORTS, *argv], capture_output=True,
                            text=True, timeout=30, check=True)
    modules = json.loads(result.stdout)
    loaded = [name for name in modules
              if any(name == heavy or name.startswith(heavy + ".") for heavy in not_imported)]
    assert loaded == []


# -- signals and streams -------------------------------------------------------------------------


def test_closed_standard_streams_do_not_crash_a_server() -> None:
    # Started with stdin closed, the first socket would otherwise get fd 0. The signal
    # comes right after the "Listening" line: the handlers must already be in place.
    with subprocess.Popen(
        [*wsgate_command(), "echo", "--port", "0"], stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: __import__("os").close(0),
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline() == "Server started\n"
            assert proc.stdout.readline().startswith("Listening on ws://127.0.0.1:")
            proc.terminate()
            assert proc.wait(timeout=10) == 0
        finally:
            proc.kill()
