"""A fork server for fault tests: real `vidldm` processes to kill, without paying for imports each time.

`python -m vidldm ...` spends 10-30 s on 2 busy cores importing torch, diffusers, transformers and
accelerate before it does anything, and a kill test starts many processes. The zygote (`python -m
tests.zygote`) imports them once, runs no torch code (so no thread pool exists to break in a fork), and
forks one child per request that runs `vidldm.cli.main(argv)`: the code path of `python -m vidldm`,
in a real process with its own pid, which `kill -9` or SIGINT reach as they would the command.

Protocol: JSON lines. The client writes `{"argv": [...], "log": path, "cwd": path}`; the zygote answers
`{"started": pid}`, and later `{"exited": pid, "code": code}` (negative: killed by that signal). Signals go
through the zygote too (`{"signal": sig, "pid": pid}` -> `{"signalled": pid, "sent": bool}`): it alone knows
whether a pid is still its unreaped child, so a signal never reaches a reused pid.
"""

from __future__ import annotations

import json
import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _child(request: dict) -> None:
    """In the forked child: stdout and stderr to the log, then the CLI, then exit with its code."""
    log = os.open(request["log"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.dup2(os.open(os.devnull, os.O_RDONLY), 0)
    os.chdir(request.get("cwd") or ".")
    signal.signal(signal.SIGINT, signal.default_int_handler)
    code = 1
    try:
        from vidldm.cli import main

        code = main(request["argv"])
    except SystemExit as err:
        code = err.code if isinstance(err.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


class LineReader:
    """Lines from a pipe with a timeout. Not `select` + `readline` on a buffered file: readline may pull two
    lines into its buffer and return one, and select, which sees only the pipe, then waits for the next."""

    def __init__(self, fd: int):
        self.fd, self.buffer, self.closed = fd, b"", False

    def read(self, timeout: float) -> str | None:
        """The next line; "" once the other end has closed; None if none came within `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while b"\n" not in self.buffer:
            if self.closed:
                return ""
            readable, _, _ = select.select([self.fd], [], [], max(deadline - time.monotonic(), 0))
            if not readable:
                return None
            chunk = os.read(self.fd, 65536)
            self.closed = not chunk
            self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()


def serve() -> None:
    import accelerate  # noqa: F401
    import diffusers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401

    import vidldm.cli  # noqa: F401
    import vidldm.io  # noqa: F401
    import vidldm.loading  # noqa: F401
    import vidldm.train.trainer  # noqa: F401

    def say(message: dict) -> None:
        sys.stdout.write(json.dumps(message) + "\n")
        sys.stdout.flush()

    children: set[int] = set()
    lines = LineReader(sys.stdin.fileno())
    say({"ready": os.getpid()})
    while True:
        line = lines.read(timeout=0.02)
        if line is not None:
            if not line:
                return
            request = json.loads(line)
            if "signal" in request:
                sent = request["pid"] in children  # not reaped yet: ours, alive or a zombie
                if sent:
                    os.kill(request["pid"], request["signal"])
                say({"signalled": request["pid"], "sent": sent})
                continue
            pid = os.fork()
            if pid == 0:
                _child(request)
            children.add(pid)
            say({"started": pid})
        while True:  # reap promptly: a zombie still counts as alive to kill(pid, 0), which atomic.py asks
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            children.discard(pid)
            say({"exited": pid, "code": os.waitstatus_to_exitcode(status)})


class Zygote:
    """The client: `start(argv, log)` -> pid, `wait(pid, timeout)` -> exit code or None, `kill(pid, sig)`."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.zygote"], cwd=ROOT, env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.lines = LineReader(self.proc.stdout.fileno())
        self.exits: dict[int, int] = {}
        self.running: set[int] = set()
        ready = self._read(timeout=600)
        assert ready is not None and "ready" in ready, "the zygote did not start"

    def _read(self, timeout: float) -> dict | None:
        line = self.lines.read(timeout)
        if line is None:
            return None
        assert line, "the zygote ended"
        message = json.loads(line)
        if "exited" in message:
            self.exits[message["exited"]] = message["code"]
            self.running.discard(message["exited"])
        return message

    def _ask(self, request: dict, answer: str) -> dict:
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        while True:
            message = self._read(timeout=60)
            assert message is not None, f"the zygote did not answer {request}"
            if answer in message:
                return message

    def start(self, argv: list[str], log: Path, cwd: Path | None = None) -> int:
        request = {"argv": [str(a) for a in argv], "log": str(log), "cwd": str(cwd or ROOT)}
        pid = self._ask(request, "started")["started"]
        self.running.add(pid)
        return pid

    def wait(self, pid: int, timeout: float) -> int | None:
        """The exit code of `pid` (negative: the signal that ended it), or None if it runs past `timeout` s."""
        deadline = time.monotonic() + timeout
        while pid not in self.exits:
            if self._read(timeout=deadline - time.monotonic()) is None and time.monotonic() >= deadline:
                return None
        return self.exits[pid]

    def kill(self, pid: int, sig: int = signal.SIGKILL) -> bool:
        """Send `sig` to our child `pid` unless it has been reaped; whether the signal ended it, its exit code says."""
        return self._ask({"signal": int(sig), "pid": pid}, "signalled")["sent"]

    def close(self) -> None:
        for pid in list(self.running):  # only the processes this zygote started
            self.kill(pid)
            self.wait(pid, timeout=30)
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    serve()
