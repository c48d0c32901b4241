"""Reading NumPy ``.npz`` archives that may be damaged or hostile, without pickle and without surprises.

``numpy.load(path, allow_pickle=False)`` already refuses object arrays, but it trusts the
rest of the file: a member whose header claims a shape of ``(10**12, 4, 10)`` makes it
allocate that much before reading a byte, and a member whose bytes were damaged fails with
``zipfile.BadZipFile`` (a CRC mismatch) rather than an error naming the file. Here every
member's header is read first and checked against the bytes the archive really holds for it;
only then is the array allocated and read. Every problem is a :class:`ValueError` naming the
file, the member and what is wrong.

Used for the command line's data files and for policy files
(:mod:`eenet_sklearn._policy_file`).
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import numpy as np
from numpy.lib import format as npy_format

__all__ = ["NpzReader", "open_npz", "starts_as_zip"]

#: Deflate expands at most about 1032 times; a member claiming more than this many bytes per
#: compressed byte is a lie (or a bomb) and is refused before anything is allocated.
_MAX_DEFLATE_RATIO = 1100
#: Header readers of the ``.npy`` format versions written by NumPy for non-structured arrays.
_HEADER_READERS = {
    (1, 0): npy_format.read_array_header_1_0,
    (2, 0): npy_format.read_array_header_2_0,
}
#: How a zip archive starts: a member's local header, or the end record of an empty archive.
_ZIP_STARTS = (b"PK\x03\x04", b"PK\x05\x06")
#: Arrays are read in blocks of this many bytes, so that reading one needs no second copy of it.
_READ_BLOCK = 1 << 24
#: Array kinds a data or policy file may hold: booleans, integers, floats, bytes and text.
#: Object arrays (``"O"``) are pickles and are never read; structured dtypes are refused too.
_KINDS = "biufSU"


class NpzReader:
    """The members of an open ``.npz`` archive, each read only after its header checks out.

    Parameters
    ----------
    archive : zipfile.ZipFile
        The open archive.
    path : str
        Its path, for error messages.

    Attributes
    ----------
    files : list of str
        The names of the ``.npy`` members, without their suffix (as ``numpy.load`` names them).
    """

    def __init__(self, archive: zipfile.ZipFile, path: str):
        self._archive = archive
        self._path = path
        self._infos = {info.filename: info for info in archive.infolist()}
        if len(self._infos) != len(archive.infolist()):
            # Which one a reader gets then depends on the tool: zipfile takes the last.
            names = [info.filename for info in archive.infolist()]
            twice = sorted({name for name in names if names.count(name) > 1})
            raise ValueError(f"{path} holds several members named {', '.join(map(repr, twice))}")
        self._size = Path(path).stat().st_size
        self.files = [name[: -len(".npy")] for name in self._infos if name.endswith(".npy")]

    def __contains__(self, key: str) -> bool:
        return f"{key}.npy" in self._infos

    def member_names(self) -> list[str]:
        """Every member of the archive, ``.npy`` or not, in the archive's order."""
        return list(self._infos)

    def check_stored(self) -> None:
        """Refuse compressed members: each then holds exactly the bytes the file does.

        For files this library writes uncompressed (policy files), so that a small file
        cannot expand into a large allocation (a deflated member may claim ~1000 times its
        size).
        """
        compressed = [name for name, info in self._infos.items() if info.compress_type != zipfile.ZIP_STORED]
        if compressed:
            raise ValueError(
                f"{self._path}: members {', '.join(map(repr, compressed))} are compressed; this file "
                "type is written and read uncompressed"
            )

    def read_bytes(self, name: str, max_size: int) -> bytes:
        """The raw bytes of member ``name`` (not an array), refused above ``max_size`` bytes.

        Raises
        ------
        ValueError
            If the member is missing, larger than ``max_size`` or damaged.
        """
        info = self._infos.get(name)
        if info is None:
            raise ValueError(f"{self._path} has no member {name!r}")
        if info.file_size > max_size:
            raise ValueError(
                f"{self._path}: member {name!r} claims {info.file_size} bytes, more than the "
                f"{max_size} allowed"
            )
        self._check_claimed_size(info)
        with self._reading(name) as member:
            data = member.read(max_size + 1)
        if len(data) != info.file_size:
            raise ValueError(f"{self._path}: member {name!r} is truncated")
        return data

    def header(self, key: str) -> tuple[tuple[int, ...], np.dtype]:
        """Shape and dtype of the array ``key``, from its header alone (nothing else is read)."""
        with self._reading(f"{key}.npy") as member:
            shape, _, dtype, _ = self._read_header(key, member)
        return shape, dtype

    def __getitem__(self, key: str) -> np.ndarray:
        """The array ``key``, read after its header has been checked against the member's size.

        Raises
        ------
        KeyError
            If the archive has no such array.
        ValueError
            If the member is damaged (bad CRC, truncated), is not a ``.npy`` array, holds
            objects (pickles) or a structured dtype, or its header claims more or fewer
            bytes than the member holds.
        """
        name = f"{key}.npy"
        if name not in self._infos:
            raise KeyError(key)
        with self._reading(name) as member:
            shape, fortran_order, dtype, n_bytes = self._read_header(key, member)
            buffer = bytearray(n_bytes)
            # Filled block by block; the CRC is checked when the member's end is read.
            view = memoryview(buffer)
            filled = 0
            while filled < n_bytes:
                count = member.readinto(view[filled : filled + _READ_BLOCK])  # type: ignore[attr-defined]
                if not count:
                    break
                filled += count
            if filled != n_bytes or member.read(1):
                raise ValueError(f"{self._path}: array {key!r} does not match its header (truncated?)")
        return np.ndarray(shape, dtype=dtype, buffer=buffer, order="F" if fortran_order else "C")

    def _check_claimed_size(self, info: zipfile.ZipInfo) -> None:
        """Refuse a member whose claimed size its compressed bytes cannot hold."""
        if info.header_offset + info.compress_size > self._size:
            plausible = False
        elif info.compress_type == zipfile.ZIP_STORED:
            plausible = info.file_size == info.compress_size
        else:
            plausible = info.file_size <= _MAX_DEFLATE_RATIO * info.compress_size + 1024
        if not plausible:
            raise ValueError(
                f"{self._path}: member {info.filename!r} claims {info.file_size} bytes from "
                f"{info.compress_size} stored: it is damaged"
            )

    def _read_header(self, key: str, member: IO[bytes]) -> tuple[tuple[int, ...], bool, np.dtype, int]:
        """Shape, order, dtype and data size of an array member, checked against the member's size."""
        info = self._infos[f"{key}.npy"]
        self._check_claimed_size(info)
        try:
            version = npy_format.read_magic(member)
            reader = _HEADER_READERS.get(version)
            if reader is None:
                raise ValueError(f"unsupported .npy format version {version}")
            shape, fortran_order, dtype = reader(member)
        except ValueError as exc:
            raise ValueError(f"{self._path}: array {key!r} has no valid .npy header ({exc})") from None
        if dtype.hasobject or dtype.fields is not None or dtype.kind not in _KINDS:
            raise ValueError(
                f"{self._path}: array {key!r} holds dtype {dtype}, which is not read (objects "
                "would need pickle; only booleans, numbers and text are allowed)"
            )
        n_bytes = math.prod(shape) * dtype.itemsize
        available = info.file_size - member.tell()
        if n_bytes != available:
            raise ValueError(
                f"{self._path}: array {key!r} claims shape {shape} of {dtype} ({n_bytes} bytes) but "
                f"its member holds {max(available, 0)} bytes: the file is damaged"
            )
        return shape, fortran_order, dtype, n_bytes

    @contextmanager
    def _reading(self, name: str) -> Iterator[IO[bytes]]:
        """Open member ``name``, turning zip-level damage into a ``ValueError`` naming it."""
        try:
            with self._archive.open(name) as member:
                yield member
        except (zipfile.BadZipFile, EOFError, OSError, RuntimeError, NotImplementedError) as exc:
            # BadZipFile: a CRC mismatch or a bad local header; EOFError: cut short;
            # RuntimeError: encrypted; NotImplementedError: unknown compression.
            raise ValueError(f"{self._path}: member {name!r} is damaged ({exc})") from None


def starts_as_zip(path: str | Path) -> bool:
    """Whether the file starts as a zip archive (an ``.npz``), reading its first four bytes only.

    ``False`` for a file that cannot be read. ``numpy.load`` tells an ``.npz`` from a pickle
    this way; so do :func:`open_npz` and the command line.
    """
    try:
        with open(path, "rb") as file:
            return file.read(4) in _ZIP_STARTS
    except OSError:
        return False


@contextmanager
def open_npz(path: str | Path) -> Iterator[NpzReader]:
    """Open a ``.npz`` archive for checked reading.

    Parameters
    ----------
    path : str or Path
        The archive.

    Yields
    ------
    NpzReader
        Its members.

    Raises
    ------
    FileNotFoundError
        If there is no such file.
    IsADirectoryError
        If ``path`` is a folder.
    ValueError
        If the file does not start as a zip archive (data before the archive, as in a
        pickle with an archive appended, is refused as ``numpy.load`` refuses it), is not
        one, or is truncated (a zip archive's directory is at its end), or holds two
        members of one name; naming the file.
    """
    path = str(path)
    if Path(path).is_dir():
        raise IsADirectoryError(f"{path} is a folder, not a .npz file")
    if not Path(path).is_file():
        raise FileNotFoundError(f"no such file: {path}")
    if not starts_as_zip(path):
        # zipfile would find an archive after other data (a pickle, say), where numpy.load
        # and this library's command line see no archive: one answer for every reader.
        raise ValueError(f"{path} is not a NumPy .npz archive: it does not start as a zip archive")
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, ValueError) as exc:
        raise ValueError(
            f"{path} is not a NumPy .npz archive, or is truncated ({exc})"
        ) from None
    with archive:
        yield NpzReader(archive, path)
