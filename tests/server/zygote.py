"""`omendb serve` processes forked from one that has already imported the server (`make test-fast`).

Each start of a real engine process costs about 1.2 s of CPU, most of it importing fastapi, pydantic, numba
and numpy, and the fast tier starts about a hundred of them. With OMENDB_TEST_ZYGOTE=1 each pytest worker
starts one zygote: a clean interpreter (never the worker, whose module state tests may have changed) that
imports what `omendb serve` imports and then waits. Every server is a fork of it that runs exactly what
`python -m omendb.cli serve` runs (`omendb.cli.main`) in its own working directory, environment and log
file. It is still a real engine process over real sockets and files; only the interpreter start-up is
shared. `make test` starts every server from a fresh interpreter.

The zygote is the forked servers' parent, so it reaps them and answers for their exit status; `Forked`
offers the part of subprocess.Popen the tests use (pid, poll, wait, send_signal, kill, returncode).

Protocol: one JSON line each way on the zygote's stdin and stdout.
  {"spawn": [argv...], "env": {...}, "cwd": "...", "log": "..."}  ->  {"pid": N}
  {"poll": N}                                                     ->  {"returncode": int or null}
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

ENV = "OMENDB_TEST_ZYGOTE"
REPO = Path(__file__).resolve().parents[2]


def enabled() -> bool:
    return os.environ.get(ENV) == "1"


# ---- the zygote process ---------------------------------------------------------------------------------

def _child(request: dict[str, Any]) -> None:
    """In the forked child: become `omendb serve` (never returns)."""
    code = 1
    try:
        null = os.open(os.devnull, os.O_RDONLY)
        log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.closerange(3, os.sysconf("SC_OPEN_MAX"))  # the zygote's pipes are not the server's
        sys.stdin = open(0, closefd=False)  # noqa: SIM115 - the process's own descriptors, for its lifetime
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        os.chdir(request["cwd"])
        os.environ.clear()
        os.environ.update(request["env"])
        signal.signal(signal.SIGPIPE, signal.SIG_IGN)  # as a fresh interpreter has it
        from omendb import cli

        sys.argv = ["omendb", *request["spawn"]]
        code = cli.main(request["spawn"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        try:
            import atexit

            atexit._run_exitfuncs()  # what interpreter exit would run (logging's flush among them)
            sys.stdout.flush()
            sys.stderr.flush()
        finally:
            os._exit(code)


def main() -> None:
    import gc

    gc.disable()  # as omendb.cli does before the server's imports; serve() turns it back on
    import omendb.cli  # noqa: F401
    import omendb.server.lifecycle  # noqa: F401 - everything `omendb serve` imports

    exited: dict[int, int] = {}
    out = sys.stdout
    for line in sys.stdin:
        request = json.loads(line)
        if "spawn" in request:
            pid = os.fork()
            if pid == 0:
                _child(request)
            answer: dict[str, Any] = {"pid": pid}
        else:
            pid = int(request["poll"])
            if pid not in exited:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    exited[pid] = os.waitstatus_to_exitcode(status)
            answer = {"returncode": exited.get(pid)}
        out.write(json.dumps(answer) + "\n")
        out.flush()


# ---- the test side ----------------------------------------------------------------------------------------

class _Zygote:
    def __init__(self) -> None:
        env = {k: v for k, v in os.environ.items() if k != ENV}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.server.zygote"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, cwd=REPO, env=env, text=True)
        self.lock = threading.Lock()

    def ask(self, request: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        with self.lock:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
            line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the test zygote exited ({self.proc.poll()}); run without {ENV}=1 to see why")
        answer: dict[str, Any] = json.loads(line)
        return answer


_zygote: _Zygote | None = None
_zygote_lock = threading.Lock()


def _the_zygote() -> _Zygote:
    global _zygote
    with _zygote_lock:
        if _zygote is None or _zygote.proc.poll() is not None:
            _zygote = _Zygote()
        return _zygote


class Forked:
    """A server forked by the zygote, with the part of subprocess.Popen the tests use."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path, log: Path) -> None:
        self.args = args
        self._zygote = _the_zygote()
        self.pid: int = self._zygote.ask({"spawn": args, "env": env, "cwd": str(cwd), "log": str(log)})["pid"]
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None:
            self.returncode = self._zygote.ask({"poll": self.pid})["returncode"]
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while (code := self.poll()) is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout or 0)
            time.sleep(0.02)
        return code

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)


if __name__ == "__main__":
    main()
