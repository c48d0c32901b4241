"""Files written whole or not at all: a temporary file in the target's folder, renamed into place.

The one home of the library's output files (policy files, the command line's predictions and
tables): an error or Ctrl-C while writing leaves the file that was there before (or none), never
a partial one. The new file gets the permissions writing it in place would have given it: those
of the file it replaces, else the process's umask; a symbolic link is written through, as
``open(path, "w")`` does. (A Ctrl-C that arrives during the final rename surfaces just after
it: the file is then the new one, whole.)
"""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import IO

__all__ = ["atomic_write"]


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike[str], text: bool = False) -> Iterator[IO]:
    """Open a temporary file for writing ``path``; rename it into place when the block succeeds.

    Parameters
    ----------
    path : str or os.PathLike
        The file to write (replaced if it exists; a symbolic link is followed).
    text : bool, default=False
        Open in text mode (UTF-8, ``newline=""`` as the ``csv`` module wants) instead of binary.

    Yields
    ------
    file object
        The temporary file, open for writing.

    Raises
    ------
    FileNotFoundError
        If the folder of ``path`` does not exist (the message names it).
    IsADirectoryError
        If ``path`` is a folder.
    """
    target = Path(os.path.realpath(path))  # through a symbolic link, as open() writes
    if target.is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a file")
    if not target.parent.is_dir():
        raise FileNotFoundError(f"no such folder: {Path(path).absolute().parent} (to write {path})")
    temporary = target.parent / f".{target.name}.{secrets.token_hex(6)}.tmp"
    # Created with 0o666 less the umask, as open() creates files (mkstemp's 0o600 would keep a
    # serving account from reading a policy file written by another).
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o666)
    try:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(temporary, stat.S_IMODE(target.stat().st_mode))  # the mode of the file replaced
        file: IO = (
            os.fdopen(handle, "w", encoding="utf-8", newline="") if text else os.fdopen(handle, "wb")
        )
        with file:
            handle = -1
            yield file
        os.replace(temporary, target)
    except BaseException:
        if handle != -1:
            os.close(handle)
        temporary.unlink(missing_ok=True)
        raise
