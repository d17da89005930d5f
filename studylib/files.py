"""Where the project's files live, how caches are keyed, and writing files safely when several processes
share a folder: the project home, content keys, atomic writes and folder locks.

`home()`: the project home, `$STUDYLIB_HOME` or else the current directory. The study's sources are read
from it (`notebooks/`, `configs/`) and its outputs written into it (`data/` for generated data and
checkpoints, `reports/` for run records and pages), never next to the installed package, so a wheel
install works like a checkout.

`key(obj)`: the content key of every cache (data, benchmark records, evaluations, teachers, recovered
students, trimmed language models, sweep run ids): the first hex digits of sha256 over `obj` as canonical
JSON. A cache's folder or file name carries the key of everything its content depends on.

`atomic_write(path, text)`: readers of `path` see either its old content or the whole new content, never
a part; a failed write (disk full, read-only folder) leaves the old file as it was and no temporary file.

`lock(path, what)`: an exclusive lock held through `fcntl.flock` on the file `path` for the duration of a
`with` block, across processes on one machine (and on network file systems whose flock works across
machines). The kernel drops the lock when its holder dies, even by kill -9, so a lock never outlives its
process; the lock file itself is removed on release (one left by a killed process is taken over).
"""

from __future__ import annotations

import errno
import os
import time
from contextlib import contextmanager
from pathlib import Path


def home() -> Path:
    """The project home: `$STUDYLIB_HOME` if set, else the current directory (absolute)."""
    return Path(os.environ.get("STUDYLIB_HOME") or os.getcwd()).expanduser().resolve()


def key(obj, length: int = 10) -> str:
    """sha256 of `obj` as JSON (keys sorted, values JSON does not know written with str), as `length` hex
    digits: two inputs get the same key only if their JSON is the same."""
    import hashlib
    import json

    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


class Busy(ValueError):
    """Another live process holds the lock (a ValueError: the command line reports it as a usage error)."""


def atomic_write(path: str | Path, text: str) -> None:
    """Write `text` to `path` atomically: into a temporary file in the same folder, named after this
    process (so two writers never share it), flushed to disk, then renamed over `path` (os.replace).

    On any error the temporary file is removed and `path` keeps its previous content (or stays absent);
    the OSError propagates."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            tmp.unlink()
        except OSError:
            pass
        raise


def write_json(path: str | Path, obj) -> Path:
    """`obj` as indented JSON (values JSON does not know written with str), atomically, creating the folder."""
    import json

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, json.dumps(obj, indent=1, default=str))
    return path


def _holder(path: Path) -> str:
    try:
        pid = path.read_text().strip()
    except OSError:
        pid = ""
    return f"pid {pid}" if pid else "another process"


@contextmanager
def lock(path: str | Path, what: str, wait: float | None = 0.0, poll: float = 0.5, log=None):
    """Hold an exclusive lock on the file `path` (created if missing; this process's pid is written into it)
    for the `with` block. `what` names what the lock protects, for the error message.

    `wait`: 0 (default) refuses at once if another process holds the lock, raising `Busy` with a message that
    names `what`, the holder's pid and what to do; a number waits up to that many seconds first; None waits
    as long as the holder lives. `log` (e.g. print), if given, is told once that this process is waiting.

    The lock is per open file, so a second `lock` on the same path in the same process is refused too.
    Raises OSError if the lock file cannot be created (e.g. a read-only folder)."""
    import fcntl

    path = Path(path)
    deadline = None if wait is None else time.monotonic() + wait
    told = False
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            os.close(fd)
            if e.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                raise
            holder = _holder(path)
            if deadline is not None and time.monotonic() >= deadline:
                waited = f" (waited {wait:g} s)" if wait else ""
                raise Busy(f"{what} is in use by {holder}{waited} (lock file {path}): wait for that process to "
                           "finish, or use another output folder (--out)") from None
            if log and not told:
                log(f"waiting for {holder}, which holds {what} (lock file {path})")
                told = True
            time.sleep(poll)
            continue
        # the previous holder removes the file on release: lock only a file that is still the one at `path`
        try:
            same = os.stat(path).st_ino == os.fstat(fd).st_ino
        except FileNotFoundError:
            same = False
        if same:
            break
        os.close(fd)
    try:
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield path
    finally:
        try:
            path.unlink()  # while still holding it, so no one locks a file that is about to vanish
        except OSError:
            pass
        os.close(fd)
