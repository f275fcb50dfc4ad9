"""Autobahn|Testsuite against wsgate: the echo server, the proxy in front of it, the client.

Usage: python benchmarks/autobahn.py          every case (9.* too, ~1 h; --parallel ~30 min),
                                              then docs/autobahn.md
       python benchmarks/autobahn.py --ci     what CI runs (a few minutes): no 9.*, and of
                                              12.*/13.* the small and fragmented messages

Three suites, each judged case by case:

- direct: Autobahn's fuzzingclient against ``wsgate echo --raw --deflate``;
- proxy: the same, through ``wsgate proxy`` in front of another such echo server; every
  case must end as it does directly (the proxy is meant to be transparent), OK and
  NON-STRICT counting as one (see :func:`outcome`);
- client: Autobahn's fuzzingserver against the client engine of ``wsgate connect``
  (benchmarks/autobahn_client.py, which opens its connections as ``wsgate connect`` does).

A case passes as OK, NON-STRICT or INFORMATIONAL; anything else (FAILED, UNIMPLEMENTED...)
fails the run, except a known failure of a library wsgate uses (KNOWN_FAILURES, each with
its reason). The exit status is 1 on any failure.

Autobahn|Testsuite is Python 2 code: it runs in a Python 2.7 virtualenv built on first use
from pyenv's 2.7.18, with the pins below, in a cache folder reused by later runs
($WSGATE_AUTOBAHN_CACHE, default ~/.cache/wsgate-autobahn; $WSGATE_PYTHON27 names another
interpreter). Every server listens on a port the OS picks, and every process started here
is stopped when the run ends, however it ends.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WSGATE = str(Path(sys.executable).parent / "wsgate")
DOC = ROOT / "docs" / "autobahn.md"

AUTOBAHN = "autobahntestsuite==25.10.1"
PINS = """\
# What autobahntestsuite's own pins need, at their last releases for Python 2.7
# (autobahntestsuite pins Twisted, autobahn, cryptography... itself).
Automat==22.10.0
PyHamcrest==1.10.1
argparse==1.4.0
attrs==21.4.0
cffi==1.15.1
constantly==15.1.0
enum34==1.1.10
hyperlink==21.0.0
idna==2.10
ipaddress==1.0.23
linecache2==1.0.0
pyasn1==0.5.1
pyasn1-modules==0.3.0
pycparser==2.21
traceback2==1.4.0
typing==3.10.0.0
ujson==2.0.3
wsaccel==0.6.6
"""
VIRTUALENV_PINS = """\
# virtualenv 20.15 still runs on Python 2.7 (the 2.7 install has no venv module).
virtualenv==20.15.1
configparser==4.0.2
contextlib2==0.6.0.post1
distlib==0.4.4
filelock==3.2.1
importlib-metadata==2.1.3
importlib-resources==3.3.1
pathlib2==2.3.7.post1
platformdirs==2.0.2
scandir==1.10.0
singledispatch==3.7.0
six==1.17.0
typing==3.10.0.0
zipp==1.2.0
"""

PASSING = ("OK", "NON-STRICT", "INFORMATIONAL")
_FRAGMENTS = ("websockets fails a message of 4096 fragments or more with 1009 \"too many "
              "fragments\" (its WEBSOCKETS_MAX_FRAGMENTS, read at import, guards against "
              "fragment floods); these cases send 4 MiB in 64- to 1024-byte fragments")
KNOWN_FAILURES = {
    "client": {
        "7.1.5": "websockets (the client's protocol library) fails a connection whose Close "
                 "arrives in the middle of a fragmented message with 1002 where Autobahn "
                 "wants the Close echoed; its maintainers document this "
                 "(websockets' compliance/README.rst: the RFC only says an endpoint "
                 "\"typically\" echoes the code)",
        **{case: _FRAGMENTS for case in ("9.3.1", "9.3.2", "9.3.3", "9.4.1", "9.4.2", "9.4.3")},
    },
}
GROUPS = {
    "1": "Framing", "2": "Pings/Pongs", "3": "Reserved Bits", "4": "Opcodes",
    "5": "Fragmentation", "6": "UTF-8 Handling", "7": "Close Handling",
    "9": "Limits/Performance", "10": "Miscellaneous",
    "12": "Compression (different payloads)", "13": "Compression (different parameters)",
}
DEFLATE_GROUPS = [f"12.{n}" for n in range(1, 6)] + [f"13.{n}" for n in range(1, 8)]
CI_DEFLATE_CASES = (1, 11)
"""Of the 18 cases of each compression group, CI runs two: 1000 messages of 16 bytes, and
of 8 KiB sent in 256-byte fragments (past the smallest window, 512 bytes). The other
sixteen (up to 128 KiB a message) take Autobahn ~15 minutes of CPU per suite and test
the same code."""

FUZZINGSERVER = """\
import json, sys
from twisted.internet import reactor
from autobahntestsuite.fuzzing import FuzzingServerFactory
factory = FuzzingServerFactory(json.load(open(sys.argv[1])))
port = reactor.listenTCP(0, factory, interface="127.0.0.1")
sys.stdout.write("Listening on ws://127.0.0.1:%d\\n" % port.getHost().port)
sys.stdout.flush()
reactor.run()
"""
"""wstest's fuzzingserver mode, on a port the OS picks (wstest itself wants a fixed one)."""


def say(text: str) -> None:
    print(text, flush=True)


# -- the Python 2.7 environment -----------------------------------------------------------------

def python27() -> str:
    """pyenv's 2.7.18, or $WSGATE_PYTHON27, or a python2.7 on PATH."""
    named = os.environ.get("WSGATE_PYTHON27")
    candidates = [named] if named else []
    root = os.environ.get("PYENV_ROOT") or str(Path.home() / ".pyenv")
    candidates += [f"{root}/versions/2.7.18/bin/python", shutil.which("python2.7") or ""]
    for candidate in candidates:
        if candidate and os.access(candidate, os.X_OK):
            return candidate
    raise SystemExit("autobahn: no Python 2.7 (pyenv's 2.7.18, or set WSGATE_PYTHON27)")


def cache_folder() -> Path:
    named = os.environ.get("WSGATE_AUTOBAHN_CACHE")
    if named:
        return Path(named)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "wsgate-autobahn"


def pip(python: str | Path, *args: str, log: Path) -> None:
    with log.open("ab") as out:
        result = subprocess.run([str(python), "-m", "pip", "--disable-pip-version-check",
                                 "--no-input", *args], stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, timeout=900, check=False)
    if result.returncode != 0:
        tail = log.read_text(errors="replace").splitlines()[-15:]
        raise SystemExit("autobahn: pip failed:\n" + "\n".join(tail))


def pins_stamp(interpreter: str) -> str:
    """What the environment was built from: another interpreter or pin rebuilds it."""
    text = f"{interpreter}\n{AUTOBAHN}\n{PINS}\n{VIRTUALENV_PINS}"
    return hashlib.sha256(text.encode()).hexdigest()


def wstest_environment() -> Path:
    """The Python 2.7 virtualenv with Autobahn|Testsuite: reused when its pins are the
    current ones (the stamp is written last, so an interrupted build is redone)."""
    cache = cache_folder()
    cache.mkdir(parents=True, exist_ok=True)
    interpreter = python27()
    stamp_text = pins_stamp(interpreter)
    venv, stamp = cache / "venv", cache / "venv" / "wsgate-pins"
    with (cache / "lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two runs at once build it once
        if stamp.exists() and stamp.read_text() == stamp_text:
            return venv
        say(f"autobahn: building the Python 2.7 environment in {cache} (once)")
        started = time.monotonic()
        tools, log = cache / "tools", cache / "build.log"
        shutil.rmtree(venv, ignore_errors=True)
        shutil.rmtree(tools, ignore_errors=True)
        log.write_text("")
        (cache / "virtualenv-pins.txt").write_text(VIRTUALENV_PINS)
        (cache / "pins.txt").write_text(PINS)
        pip(interpreter, "install", "--quiet", "--target", str(tools),
            "-c", str(cache / "virtualenv-pins.txt"), "virtualenv", log=log)
        with log.open("ab") as out:
            subprocess.run([interpreter, "-m", "virtualenv", "--quiet", "--no-periodic-update",
                            str(venv)], env={**os.environ, "PYTHONPATH": str(tools)},
                           stdout=out, stderr=subprocess.STDOUT, check=True, timeout=300)
        pip(venv / "bin" / "python", "install", "--quiet", "-c", str(cache / "pins.txt"),
            AUTOBAHN, log=log)
        stamp.write_text(stamp_text)
        say(f"autobahn: built in {time.monotonic() - started:.0f} s")
        return venv


# -- processes ----------------------------------------------------------------------------------

class Processes:
    """Every process of the run, each in its own session, with its output in a file: all
    are stopped (their whole process group: the proxy's workers too) at the end."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.running: list[subprocess.Popen[bytes]] = []
        self.lock = threading.Lock()
        self.closed = False

    def start(self, name: str, argv: list[str],
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start a process, unless the run is ending (a suite's thread may still be going)."""
        with self.lock, (self.folder / f"{name}.log").open("wb") as out:
            if self.closed:
                raise RuntimeError("the run is ending")
            proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, env=env, cwd=self.folder,
                                    start_new_session=True)
            self.running.append(proc)
        return proc

    def port(self, name: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
        """The port from the first "Listening on ...://host:PORT" line the process prints."""
        log = self.folder / f"{name}.log"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"Listening on \w+://[^\s]+:(\d+)", log.read_text(errors="replace"))
            if found:
                return int(found.group(1))
            if proc.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"{name} did not start:\n{log.read_text(errors='replace')[-2000:]}")

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)  # any child the leader left behind

    def stop_all(self) -> None:
        with self.lock:
            self.closed = True
            procs, self.running = self.running, []
        for proc in reversed(procs):
            self.stop(proc)


# -- the suites ---------------------------------------------------------------------------------

@dataclass
class Suite:
    name: str
    testee: str
    results: dict[str, dict[str, object]] = field(default_factory=dict)
    seconds: float = 0.0
    error: str | None = None


def case_selection(ci: bool) -> tuple[list[str], list[str]]:
    """Autobahn's "cases" and "exclude-cases" (exact IDs: its patterns match prefixes)."""
    if not ci:
        return ["*"], []
    skipped = [f"{group}.{n}" for group in DEFLATE_GROUPS for n in range(1, 19)
               if n not in CI_DEFLATE_CASES]
    return ["*"], ["9.*", *skipped]


def echo_server(procs: Processes, name: str) -> int:
    """``wsgate echo --raw --deflate``: without keepalive pings, which Autobahn would count
    as part of a case's answer, and with Autobahn's largest message (16 MiB) allowed."""
    proc = procs.start(name, [WSGATE, "echo", "--port", "0", "--raw", "--deflate", "--quiet",
                              "--ping-interval", "0", "--max-size", "64m"])
    return procs.port(name, proc)


def wait(procs: Processes, proc: subprocess.Popen[bytes], timeout: float, what: str) -> None:
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        procs.stop(proc)
        raise RuntimeError(f"{what} did not finish within {timeout:.0f} s") from None


def read_results(outdir: Path, agent: str) -> dict[str, dict[str, object]]:
    index = outdir / "index.json"
    if not index.exists():
        raise RuntimeError(f"no report in {outdir}")
    results: dict[str, dict[str, object]] = json.loads(index.read_text())[agent]
    return results


def run_fuzzingclient(suite: Suite, procs: Processes, venv: Path, folder: Path, ci: bool,
                      timeout: float) -> None:
    """Autobahn's fuzzingclient against an echo server, directly or through the proxy."""
    port = echo_server(procs, f"{suite.name}-echo")
    if suite.name == "proxy":
        proxy = procs.start("proxy", [WSGATE, "proxy", "--listen", "127.0.0.1:0", "--upstream",
                                      f"127.0.0.1:{port}", "--access-log", "off"])
        port = procs.port("proxy", proxy)
    cases, excluded = case_selection(ci)
    outdir = folder / suite.name
    spec = {"outdir": str(outdir), "servers": [{"agent": suite.name,
                                                 "url": f"ws://127.0.0.1:{port}"}],
            "cases": cases, "exclude-cases": excluded, "exclude-agent-cases": {}}
    spec_file = folder / f"{suite.name}-spec.json"
    spec_file.write_text(json.dumps(spec))
    wstest = procs.start(f"{suite.name}-wstest", [str(venv / "bin" / "wstest"), "-m",
                                                   "fuzzingclient", "-s", str(spec_file)])
    wait(procs, wstest, timeout, f"{suite.name}: wstest")
    suite.results = read_results(outdir, suite.name)


def run_fuzzingserver(suite: Suite, procs: Processes, venv: Path, folder: Path, ci: bool,
                      timeout: float) -> None:
    """Autobahn's fuzzingserver, and the client engine playing every case against it."""
    cases, excluded = case_selection(ci)
    outdir = folder / suite.name
    spec = {"url": "ws://127.0.0.1:0", "outdir": str(outdir), "cases": cases,
            "exclude-cases": excluded, "exclude-agent-cases": {}}
    spec_file = folder / f"{suite.name}-spec.json"
    spec_file.write_text(json.dumps(spec))
    script = folder / "fuzzingserver.py"
    script.write_text(FUZZINGSERVER)
    server = procs.start("client-fuzzingserver",
                         [str(venv / "bin" / "python"), str(script), str(spec_file)])
    port = procs.port("client-fuzzingserver", server)
    client = procs.start("client", [sys.executable, str(HERE / "autobahn_client.py"),
                                    f"ws://127.0.0.1:{port}", suite.name])
    wait(procs, client, timeout, "client: autobahn_client.py")
    if client.returncode != 0:
        log = (folder / "client.log").read_text(errors="replace")[-2000:]
        raise RuntimeError(f"autobahn_client.py exited with {client.returncode}:\n{log}")
    suite.results = read_results(outdir, suite.name)


def run_suite(suite: Suite, procs: Processes, venv: Path, folder: Path, ci: bool,
              timeout: float) -> None:
    started = time.monotonic()
    try:
        if suite.name == "client":
            run_fuzzingserver(suite, procs, venv, folder, ci, timeout)
        else:
            run_fuzzingclient(suite, procs, venv, folder, ci, timeout)
    except (RuntimeError, OSError, subprocess.SubprocessError, json.JSONDecodeError,
            KeyError) as error:
        suite.error = str(error)
    suite.seconds = time.monotonic() - started


# -- judging and reporting ----------------------------------------------------------------------

def case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def group_of(case: str) -> str:
    return case.split(".")[0]


def behavior(result: dict[str, object]) -> str:
    return str(result.get("behavior"))


def outcome(result: dict[str, object]) -> str:
    """A case's result for comparing the proxy with the echo server alone: OK and NON-STRICT
    are one, as which of the two some cases get depends on how frames fall into reads
    (4.1.3: picows reads one frame ahead, so a text message followed at once by a bad
    frame is failed before it is echoed), and the proxy changes that timing."""
    found = behavior(result)
    return "pass" if found in ("OK", "NON-STRICT") else found


def problems(suites: dict[str, Suite]) -> tuple[list[str], list[str]]:
    """What fails the run, and notes (known failures seen, or gone)."""
    failures: list[str] = []
    notes: list[str] = []
    for suite in suites.values():
        if suite.error is not None:
            failures.append(f"{suite.name}: {suite.error}")
            continue
        if not suite.results:
            failures.append(f"{suite.name}: no case ran")
        known = KNOWN_FAILURES.get(suite.name, {})
        for case in sorted(suite.results, key=case_key):
            result = suite.results[case]
            if behavior(result) in PASSING:
                if case in known:
                    notes.append(f"{suite.name} {case}: passes now; drop it from KNOWN_FAILURES")
            elif case in known:
                notes.append(f"{suite.name} {case}: {behavior(result)} (known: {known[case]})")
            else:
                failures.append(f"{suite.name} {case}: {behavior(result)}, close "
                                f"{result.get('behaviorClose')}, code "
                                f"{result.get('remoteCloseCode')}")
    direct, proxy = suites.get("direct"), suites.get("proxy")
    if direct and proxy and direct.error is None and proxy.error is None:
        for case in sorted(set(direct.results) | set(proxy.results), key=case_key):
            mine = direct.results.get(case)
            theirs = proxy.results.get(case)
            if mine is None or theirs is None or outcome(mine) != outcome(theirs):
                failures.append(f"proxy {case}: "
                                f"{behavior(theirs) if theirs else 'not run'} through the proxy, "
                                f"{behavior(mine) if mine else 'not run'} directly")
    return failures, notes


def counts(results: dict[str, dict[str, object]]) -> collections.Counter[str]:
    return collections.Counter(behavior(r) if behavior(r) in PASSING else "FAILED"
                               for r in results.values())


def summary_line(suite: Suite) -> str:
    if suite.error is not None:
        return f"{suite.name:6}  error: {suite.error.splitlines()[0]}"
    tally = counts(suite.results)
    parts = ", ".join(f"{tally[kind]} {kind}" for kind in (*PASSING, "FAILED"))
    return (f"{suite.name:6}  {len(suite.results)} cases: {parts}  "
            f"({suite.seconds:.0f} s; {suite.testee})")


def versions() -> str:
    from importlib.metadata import version

    return (f"{AUTOBAHN.replace('==', ' ')} (Python 2.7), wsgate {version('wsgate')}, "
            f"picows {version('picows')}, websockets {version('websockets')}")


def render(suites: dict[str, Suite], failures: list[str], notes: list[str],
           seconds: float, together: bool) -> str:
    lines = [
        "# Autobahn|Testsuite",
        "",
        "Written by `python benchmarks/autobahn.py` (the whole suite, 9.* included: about 30 "
        "minutes on 2 cores with `--parallel`, an hour without): don't edit by hand. CI runs "
        "`python benchmarks/autobahn.py --ci` "
        "(no 9.*, and 2 of the 18 cases of each compression group) and fails on any case "
        "that is not OK, NON-STRICT or INFORMATIONAL, or that ends differently through the "
        "proxy (OK and NON-STRICT counting as one: which of the two some cases get depends "
        "on how frames fall into reads, and the proxy changes that).",
        "",
        "- **direct**: Autobahn's fuzzingclient against `wsgate echo --raw --deflate "
        "--ping-interval 0` (no keepalive pings: Autobahn would count them in a case's "
        "answer). Without `--deflate`, 12.* and 13.* are UNIMPLEMENTED, the rest the same.",
        "- **proxy**: the same, through `wsgate proxy --upstream` in front of another such "
        "echo server.",
        "- **client**: Autobahn's fuzzingserver against the client engine of `wsgate connect` "
        "(websockets' asyncio client, opened by `wsgate.client.dial` as `wsgate connect` "
        "opens it; `benchmarks/autobahn_client.py`).",
        "",
        f"Versions: {versions()}. The run took {seconds / 60:.0f} minutes, the suites "
        f"{'at once (--parallel)' if together else 'one after the other'}.",
        "",
    ]
    for suite in suites.values():
        lines += [f"## {suite.name}", ""]
        if suite.error is not None:
            lines += [f"The suite did not run: {suite.error}", ""]
            continue
        by_group: dict[str, list[dict[str, object]]] = collections.defaultdict(list)
        for case, result in suite.results.items():
            by_group[group_of(case)].append(result)
        lines += ["| group | cases | OK | NON-STRICT | INFORMATIONAL | FAILED |",
                  "| --- | ---: | ---: | ---: | ---: | ---: |"]
        total: collections.Counter[str] = collections.Counter()
        for group in sorted(by_group, key=int):
            tally = counts({str(i): r for i, r in enumerate(by_group[group])})
            total += tally
            lines.append(f"| {group} {GROUPS.get(group, '')} | {len(by_group[group])} | "
                         + " | ".join(str(tally[kind]) for kind in (*PASSING, "FAILED"))
                         + " |")
        lines.append(f"| **all** | **{len(suite.results)}** | "
                     + " | ".join(f"**{total[kind]}**" for kind in (*PASSING, "FAILED"))
                     + " |")
        lines.append("")
        others = [f"{case} {behavior(suite.results[case])}"
                  for case in sorted(suite.results, key=case_key)
                  if behavior(suite.results[case]) != "OK"]
        if others:
            lines += [f"Not OK: {', '.join(others)}.", ""]
    lines += ["## Notes", ""]
    lines += [f"- {line}" for line in (*failures, *notes)] or ["- Every case passed."]
    lines += [
        "- NON-STRICT, echo server: 6.4.1-6.4.4 because it checks a text message's UTF-8 "
        "once the message is whole, so an invalid fragment fails the connection a frame "
        "later than Autobahn's fail-fast reading wants (RFC 6455 allows it); 4.1.3-4.1.5 "
        "and 4.2.3-4.2.5 when the message and the frame with a reserved opcode after it "
        "arrive in one read, as picows parses one frame ahead and fails the connection "
        "before delivering the message (so some runs get OK).",
        "- NON-STRICT, client: websockets notices some protocol errors (3.2-3.4, 4.*.3-4.*.5, "
        "5.15) before the application echoes the frame before them, and 6.4.* a frame late; "
        "its maintainers document both (websockets' compliance/README.rst).",
        "- INFORMATIONAL cases (7.1.6, 7.13.*) have no pass mark.",
        "",
    ]
    return "\n".join(lines)


# -- the run ------------------------------------------------------------------------------------

def interrupted(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt  # SIGTERM unwinds like ^C: every process is stopped


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ci", action="store_true",
                        help="the short run: no 9.*, two cases per compression group; "
                             "print a summary, write no document")
    parser.add_argument("--suite", action="append", choices=["direct", "proxy", "client"],
                        help="run only this suite (repeat for several; default: all three)")
    parser.add_argument("--sequential", action="store_true",
                        help="one suite after the other (the default of the full run: 9.* "
                             "measures speed; --ci runs the three at once)")
    parser.add_argument("--parallel", action="store_true",
                        help="the three suites at once in the full run too (half the time; "
                             "9.*'s durations then share the cores)")
    parser.add_argument("--reports", type=Path, metavar="DIR",
                        help="keep Autobahn's reports (HTML and JSON) and the logs here")
    parser.add_argument("--output", type=Path, default=DOC,
                        help=f"the document of the full run (default: {DOC.relative_to(ROOT)})")
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, interrupted)

    started = time.monotonic()
    venv = wstest_environment()
    names = args.suite or ["direct", "proxy", "client"]
    testees = {"direct": "wsgate echo --raw --deflate",
               "proxy": "wsgate proxy -> wsgate echo --raw --deflate",
               "client": "wsgate connect's engine"}
    suites = {name: Suite(name, testees[name]) for name in names}
    timeout = 1800.0 if args.ci else 7200.0
    together = (args.ci or args.parallel) and not args.sequential
    folder = Path(tempfile.mkdtemp(prefix="wsgate-autobahn-"))
    procs = Processes(folder)
    try:
        runs = [threading.Thread(target=run_suite, args=(suite, procs, venv, folder, args.ci,
                                                         timeout), daemon=True)
                for suite in suites.values()]
        for run in runs:
            run.start()
            while not together and run.is_alive():
                run.join(0.5)
        for run in runs:
            while run.is_alive():
                run.join(0.5)
    except KeyboardInterrupt:
        say("autobahn: interrupted; stopping every process")
        return 130
    finally:
        procs.stop_all()
        if args.reports is not None:
            shutil.rmtree(args.reports, ignore_errors=True)
            shutil.copytree(folder, args.reports)
        shutil.rmtree(folder, ignore_errors=True)

    seconds = time.monotonic() - started
    failures, notes = problems(suites)
    for suite in suites.values():
        say(f"autobahn {summary_line(suite)}")
    for line in notes:
        say(f"autobahn note: {line}")
    for line in failures:
        say(f"autobahn FAILED: {line}")
    if not args.ci:
        args.output.write_text(render(suites, failures, notes, seconds, together))
        say(f"autobahn: wrote {args.output}")
    say(f"autobahn: {'failed' if failures else 'passed'} in {seconds:.0f} s")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
