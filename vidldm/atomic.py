"""Atomic writes: every file and folder vidldm makes appears whole or not at all.

Each write goes to a hidden temporary name in the destination folder (so the final
`os.replace` is a rename on one file system), unique per writer:
`.NAME.tmp-<pid>-<random><suffix>`. Two writers of one output never share a temporary
name, and the last rename wins with a complete file. A temporary left by a writer that was
killed (SIGKILL cannot be caught) carries its pid, so the next write to the same target
removes it once that process is gone.

Temporary names stay within the file system's 255-byte limit however long the target's
name is: the target's part of the name is shortened, never the unique tail.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

NAME_MAX = 255  # bytes in one path component on Linux, macOS and Windows file systems
_TAIL = re.compile(r"\.tmp-(\d+)-[0-9a-f]{8}")


def _stem_for(target: Path, suffix: str) -> str:
    """`.NAME.tmp-` with NAME cut so the whole temporary name fits in NAME_MAX bytes."""
    room = NAME_MAX - len(f"..tmp-{os.getpid()}-00000000{suffix}".encode())
    name = target.name.encode()[:max(room, 1)].decode(errors="ignore")
    return f".{name}.tmp-"


def temp_path(target: Path, suffix: str = "") -> Path:
    """A fresh hidden name next to `target` for this process (not created)."""
    return target.parent / f"{_stem_for(target, suffix)}{os.getpid()}-{secrets.token_hex(4)}{suffix}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def sweep_stale(target: Path) -> None:
    """Remove temporaries of `target` whose writer process no longer runs (left by kill -9)."""
    prefix = _stem_for(target, "")[: -len(".tmp-")]
    with contextlib.suppress(OSError):
        for entry in target.parent.iterdir():
            if not entry.name.startswith(prefix):
                continue
            match = _TAIL.match(entry.name, len(prefix))
            if match is None or int(match.group(1)) == os.getpid() or _alive(int(match.group(1))):
                continue
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                with contextlib.suppress(OSError):
                    entry.unlink()


def make_temp_file(target: Path, suffix: str | None = None) -> Path:
    """Create an empty temporary file next to `target` (keeping its suffix, so encoders see the format).

    Not `tempfile.mkstemp`: it creates files with mode 0600, which the final file would inherit;
    `os.open` with 0o666 honours the user's umask."""
    suffix = target.suffix if suffix is None else suffix
    while True:
        tmp = temp_path(target, suffix)
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp


def make_temp_dir(target: Path) -> Path:
    while True:
        tmp = temp_path(target)
        try:
            tmp.mkdir()
        except FileExistsError:
            continue
        return tmp


def write_file(target: Path, write: Callable[[Path], None]) -> Path:
    """Run `write(tmp)` on a temporary file next to `target`, then rename it onto `target`.

    Any exception, Ctrl-C and a SIGTERM turned into an exception by the CLI included, removes
    the temporary file and leaves `target` as it was."""
    target = Path(target)
    sweep_stale(target)
    tmp = make_temp_file(target)
    try:
        write(tmp)
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    return target


def write_text(target: Path, text: str) -> Path:
    return write_file(Path(target), lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_bytes(target: Path, data: bytes) -> Path:
    return write_file(Path(target), lambda tmp: tmp.write_bytes(data))


@contextlib.contextmanager
def replace_folder(target: Path) -> Iterator[Path]:
    """Yield a temporary folder to fill; on success it replaces `target` (a folder or nothing).

    The old folder is renamed aside first and removed after, so at every moment `target` is the
    complete old folder or the complete new one (a kill between the two renames leaves no
    `target` and the old one under its hidden temporary name, never a half-written folder)."""
    target = Path(target)
    sweep_stale(target)
    tmp = make_temp_dir(target)
    try:
        yield tmp
        if target.is_dir() and not target.is_symlink():
            old = temp_path(target)
            os.replace(target, old)
            os.replace(tmp, target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
