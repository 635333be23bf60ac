"""Reading a user's file without trusting it: regular files only, and never more than a limit.

A path can name a FIFO (a read blocks until someone writes), /dev/zero (a read never ends), or
a file that grows while it is read or whose size is misreported (/proc): neither `stat` nor
`read_bytes` bound what is read, so every read here is capped by bytes actually read.
"""

from __future__ import annotations

import errno as _errno
import os
import stat
from typing import Optional, Union

# A FIFO opened for reading waits for a writer unless non-blocking; a terminal would become our
# controlling terminal without O_NOCTTY. Windows has neither (nor needs them) but would
# translate line ends without O_BINARY.
_FLAGS = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | getattr(os, "O_BINARY", 0)

_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


class Refused(Exception):
    """A file that cannot or must not be read; str() says why, without the path."""

    def __init__(self, message: str, errno: Optional[int] = None):
        super().__init__(message)
        self.errno = errno


class TooLarge(Refused):
    """More bytes than the limit: `size` is what stat reported, or None when the read found more."""

    def __init__(self, size: Optional[int], limit: int):
        what = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
        super().__init__(f"file is {what}")
        self.size, self.limit = size, limit


def _unreadable(e: OSError) -> Refused:
    return Refused(f"cannot read the file: {e.strerror or e}", e.errno)


def _check_kind(mode: int) -> None:
    if stat.S_ISREG(mode):
        return
    if stat.S_ISDIR(mode):
        raise Refused("cannot read the file: it is a folder", _errno.EISDIR)
    kind = next((f" ({word})" for test, word in _KINDS if test(mode)), "")
    raise Refused(f"not a regular file{kind}")


def _open(path: Union[str, os.PathLike]) -> tuple[int, os.stat_result]:
    """A read-only descriptor of the regular file at `path`, and its fstat; Refused otherwise.

    Stat comes before open because opening some devices acts on them (a tape rewinds, a watchdog
    arms); fstat after open catches a path swapped in between.
    """
    try:
        _check_kind(os.stat(path).st_mode)
        fd = os.open(path, _FLAGS)
    except OSError as e:
        raise _unreadable(e) from None
    except ValueError as e:  # a NUL byte in the path
        raise Refused(f"cannot read the file: {e}") from None
    try:
        st = os.fstat(fd)
        _check_kind(st.st_mode)
    except BaseException:
        os.close(fd)
        raise
    return fd, st


def check_regular(path: Union[str, os.PathLike]) -> os.stat_result:
    """The stat of `path` if it is a regular file this process can open; Refused otherwise."""
    fd, st = _open(path)
    os.close(fd)
    return st


def read_bounded(path: Union[str, os.PathLike], limit: int) -> bytes:
    """All bytes of the regular file at `path`, if there are at most `limit`; Refused otherwise.

    Reads at most limit + 1 bytes whatever the file claims its size is.
    """
    fd, st = _open(path)
    try:
        if st.st_size > limit:
            raise TooLarge(st.st_size, limit)
        chunks: list[bytes] = []
        got = 0
        while got <= limit:
            chunk = os.read(fd, limit + 1 - got)
            if not chunk:
                break
            chunks.append(chunk)
            got += len(chunk)
        if got > limit:
            raise TooLarge(None, limit)
        return b"".join(chunks)
    except OSError as e:
        raise _unreadable(e) from None
    finally:
        os.close(fd)
