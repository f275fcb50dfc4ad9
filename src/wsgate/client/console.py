"""Where a session's lines come from and go to: a prompt on a terminal, or plain pipes.

On a terminal (stdin and stdout both ttys) it is wscat's screen: a ``> `` prompt with line
editing and persistent history (prompt_toolkit), incoming messages as ``< msg`` printed
above the line being typed, wscat's colours. Otherwise it is pipe mode: every stdin line
is a message, every incoming message is one bare stdout line, and status lines go to
stderr (or nowhere with ``--quiet``), so output can be fed to other programs. What a peer
sent reaches a terminal with its control characters escaped (it must not be able to drive
the terminal); pipe mode passes messages on byte for byte.

Both consoles turn CTRL+C and SIGTERM into :attr:`Console.quit`, which sessions answer
with a clean close; a second one while closing cancels the main task (exit 130).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

from prompt_toolkit import PromptSession
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.patch_stdout import patch_stdout

from wsgate.client.options import pipe_bytes, terminal_text
from wsgate.terminal import escape

GREEN = "\x1b[32m"
BLUE = "\x1b[34m"
YELLOW = "\x1b[33m"
DEFAULT = "\x1b[39m"

Line = str | bytes


def default_history_path() -> Path:
    """``$XDG_STATE_HOME/wsgate/history``, else ``~/.local/state/wsgate/history``."""
    state = os.environ.get("XDG_STATE_HOME", "")
    base = Path(state) if os.path.isabs(state) else Path.home() / ".local" / "state"
    return base / "wsgate" / "history"


def is_terminal() -> bool:
    """Whether to be interactive: both ends of the session are a person at a terminal."""
    return all(stream is not None and stream.isatty() for stream in (sys.stdin, sys.stdout))


def wants_color(no_color_flag: bool) -> bool:
    """Colour unless ``--no-color`` or the NO_COLOR convention says otherwise."""
    return not no_color_flag and not os.environ.get("NO_COLOR")


class Console:
    """What sessions print to and read from; see :class:`TerminalConsole`, :class:`PipeConsole`."""

    interactive = False

    def __init__(self, *, json_pretty: bool = False) -> None:
        self.json_pretty = json_pretty
        self.quit = asyncio.Event()
        self._main: asyncio.Task[object] | None = None
        self._ended = False

    async def __aenter__(self) -> Console:
        self._main = asyncio.current_task()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, self._on_signal)
        self._open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self._close()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(signum)

    def _open(self) -> None:
        """Take over the screen, for a console that needs to."""

    async def _close(self) -> None:
        """Stop reading input and give the screen back."""

    def _on_signal(self) -> None:
        """First CTRL+C: close cleanly. Another while closing: give up on the close."""
        if self.quit.is_set():
            if self._main is not None:
                self._main.cancel()
        else:
            self.quit.set()

    def start_input(self) -> None:
        """Begin reading lines (the prompt appears only once there is someone to talk to)."""

    async def _next(self) -> Line | None:
        raise NotImplementedError

    @property
    def input_ended(self) -> bool:
        """Whether the end of input has been read (``next_line`` returned ``None``)."""
        return self._ended

    async def next_line(self) -> Line | None:
        """The next line typed or piped in; ``None`` once input has ended, and from then on."""
        if self._ended:
            return None
        line = await self._next()
        if line is None:
            self._ended = True
        return line

    def incoming(self, message: str | bytes) -> None:
        """Show a message received from the peer."""
        raise NotImplementedError

    def notice(self, text: str) -> None:
        """Show a line about something received (wscat prints pings like messages)."""
        raise NotImplementedError

    def status(self, text: str) -> None:
        """Show a status line: connected, disconnected, listening, reconnecting."""
        raise NotImplementedError

    def warn(self, text: str) -> None:
        """Show an error that does not end the program (``error: ...``)."""
        raise NotImplementedError


class TerminalConsole(Console):
    """wscat's interactive screen, with prompt_toolkit keeping the typed line intact."""

    interactive = True

    def __init__(
        self, *, color: bool, history_file: str | None, json_pretty: bool = False
    ) -> None:
        super().__init__(json_pretty=json_pretty)
        self.color = color
        self.history_file = history_file
        self._lines: asyncio.Queue[str | None] = asyncio.Queue()
        self._reader: asyncio.Task[None] | None = None
        self._session: PromptSession[str] | None = None
        self._patch: contextlib.AbstractContextManager[None] | None = None

    def _open(self) -> None:
        self._patch = patch_stdout(raw=True)
        self._patch.__enter__()

    async def _close(self) -> None:
        if self._reader is not None:
            if self._session is not None:
                # Leave no empty "> " line behind under the final "Disconnected" line.
                self._session.app.erase_when_done = True
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._patch is not None:
            self._patch.__exit__(None, None, None)

    def _history(self) -> History:
        if not self.history_file:
            return InMemoryHistory()
        path = Path(self.history_file).expanduser()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.touch(exist_ok=True)
        except OSError as error:
            self.warn(f"cannot keep history in {path}: {error.strerror}")
            return InMemoryHistory()
        return FileHistory(str(path))

    def start_input(self) -> None:
        if self._reader is None:
            self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        session: PromptSession[str] = PromptSession(history=self._history())
        self._session = session
        while True:
            try:
                line = await session.prompt_async(
                    "> ", handle_sigint=False, set_exception_handler=False
                )
            except (KeyboardInterrupt, EOFError):
                # CTRL+C and CTRL+D both end the program cleanly, as in wscat.
                self.quit.set()
                self._lines.put_nowait(None)
                return
            self._lines.put_nowait(line)

    async def _next(self) -> Line | None:
        return await self._lines.get()

    def _print(self, text: str, color: str) -> None:
        print(f"{color}{text}{DEFAULT}" if self.color else text, flush=True)

    def incoming(self, message: str | bytes) -> None:
        self._print("< " + terminal_text(message, json_pretty=self.json_pretty), BLUE)

    def notice(self, text: str) -> None:
        self._print("< " + escape(text), BLUE)

    def status(self, text: str) -> None:
        self._print(escape(text), GREEN)

    def warn(self, text: str) -> None:
        self._print("error: " + escape(text), YELLOW)


class PipeConsole(Console):
    """Lines in, lines out: stdin lines are messages, messages are bare stdout lines.

    stdin is read by a daemon thread with ``os.read`` (pipes, files and ttys alike, and no
    buffered-reader lock held at exit); a semaphore keeps it at most 256 lines ahead.
    """

    def __init__(self, *, quiet: bool, read_stdin: bool = True, json_pretty: bool = False) -> None:
        super().__init__(json_pretty=json_pretty)
        self.quiet = quiet
        self.read_stdin = read_stdin
        self._lines: asyncio.Queue[bytes | None] = asyncio.Queue()
        self._slots = threading.BoundedSemaphore(256)
        self._thread: threading.Thread | None = None
        self._stdout_gone = False

    def start_input(self) -> None:
        if self.read_stdin and self._thread is None:
            loop = asyncio.get_running_loop()
            self._thread = threading.Thread(
                target=self._read, args=(loop,), name="wsgate-stdin", daemon=True
            )
            self._thread.start()

    def _read(self, loop: asyncio.AbstractEventLoop) -> None:
        pending = b""
        try:
            fd: int | None = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):  # started with stdin closed
            fd = None
        while fd is not None:
            try:
                chunk = os.read(fd, 65536)
            except OSError:
                chunk = b""
            if not chunk:
                break
            *lines, pending = (pending + chunk).split(b"\n")
            for line in lines:
                if not self._deliver(loop, line):
                    return
        if pending:
            self._deliver(loop, pending)
        self._deliver(loop, None)

    def _deliver(self, loop: asyncio.AbstractEventLoop, line: bytes | None) -> bool:
        self._slots.acquire()
        try:
            loop.call_soon_threadsafe(self._lines.put_nowait, line)
        except RuntimeError:  # the loop is closed: the program is ending
            return False
        return True

    async def _next(self) -> Line | None:
        if not self.read_stdin:
            await asyncio.Future()
        line = await self._lines.get()
        self._slots.release()
        if line is not None and line.endswith(b"\r"):
            line = line[:-1]
        return line

    def _write(self, data: bytes) -> None:
        if self._stdout_gone or sys.stdout is None:
            return
        try:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        except BrokenPipeError:
            # Nobody reads our output any more (``| head``): stop, and keep Python's
            # final flush from complaining about the closed pipe.
            self._stdout_gone = True
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            os.close(devnull)
            self.quit.set()

    def incoming(self, message: str | bytes) -> None:
        self._write(pipe_bytes(message, json_pretty=self.json_pretty))

    def notice(self, text: str) -> None:
        self._write(text.encode("utf-8", "replace") + b"\n")

    def status(self, text: str) -> None:
        if not self.quiet:
            _to_stderr(escape(text))

    def warn(self, text: str) -> None:
        _to_stderr(f"error: {escape(text)}")


def _to_stderr(line: str) -> None:
    # print(file=None) would write to stdout: started with stderr closed, say nothing.
    if sys.stderr is not None:
        print(line, file=sys.stderr, flush=True)


@dataclass(frozen=True)
class ConsoleOptions:
    """Which console a command gets and how it shows things, decided from its flags."""

    interactive: bool
    color: bool = False
    quiet: bool = False
    history_file: str | None = None
    json_pretty: bool = False
    #: False with ``-x``: the messages come from the command line, stdin is not read.
    read_stdin: bool = True


def make_console(options: ConsoleOptions) -> Console:
    """The prompt for a person at a terminal, the line-per-message pipe otherwise."""
    if options.interactive:
        return TerminalConsole(color=options.color, history_file=options.history_file,
                               json_pretty=options.json_pretty)
    return PipeConsole(quiet=options.quiet, read_stdin=options.read_stdin,
                       json_pretty=options.json_pretty)
