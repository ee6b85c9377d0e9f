"""An ``.npz`` archive read with limits: every member's zip entry and ``.npy`` header before any data.

``np.load`` inflates a member before anyone can look at it. Here, in order:

1. the end-of-central-directory record: at most ``max_members`` entries (a
   central directory is parsed whole, so its size is checked first);
2. every zip entry: no encryption (flag bit 0 or 6), compression ``stored``
   or ``deflate`` only (what ``np.savez`` writes), no repeated names, names
   ending in ``.npy``;
3. on request, one member's ``.npy`` header (magic, version 1.0 or 2.0, the
   ``descr``, ``fortran_order``, ``shape`` dict; at most
   :data:`NPY_HEADER_LIMIT` bytes are inflated for it), whose data size must
   be the entry's declared uncompressed size exactly;
4. on request, its data: exactly that many bytes, the CRC checked at the end.

A member is never inflated past its declared size, so a member that would
inflate to gigabytes costs nothing until its header has been judged.
Errors are :class:`FxpsimError` naming the member; the caller adds the file.
"""

from __future__ import annotations

import math
import struct
import warnings
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import numpy as np
from numpy.lib import format as npy_format

from .errors import FxpsimError

NPY_HEADER_LIMIT = 16 << 10
"""Longest ``.npy`` header read (numpy writes 128 bytes for a weight array; its own limit is 10000)."""
_NPY_PREFIX = 8 + 4  # magic string + version, then the header length (2 or 4 bytes)
_EOCD, _EOCD64_LOCATOR, _EOCD64 = b"PK\x05\x06", b"PK\x06\x07", b"PK\x06\x06"
_ENCRYPTED = 0x0001 | 0x0040  # traditional PKWARE and strong encryption
_METHODS = {zipfile.ZIP_STORED: "stored", zipfile.ZIP_DEFLATED: "deflate"}
_OTHER_METHODS = {1: "shrink", 6: "implode", 9: "deflate64", 12: "bzip2", 14: "lzma", 93: "zstandard",
                  95: "xz", 98: "ppmd", 99: "AES-encrypted"}
_ZIP_ERRORS = (zipfile.BadZipFile, zlib.error, EOFError, OSError, struct.error, NotImplementedError,
               RuntimeError, ValueError, OverflowError)
"""What zipfile raises on a damaged archive (RuntimeError: encryption, NotImplementedError: a feature)."""


@dataclass(frozen=True)
class Member:
    """One ``.npy`` member as its zip entry and header declare it (no data read)."""

    name: str
    """Entry name without ``.npy`` (as ``np.load`` names it)."""
    info: zipfile.ZipInfo
    dtype: np.dtype
    shape: tuple[int, ...]
    fortran_order: bool
    header_bytes: int
    """Magic, version, length and header dict: the data starts after them."""

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize


class _Prefix:
    """The first ``limit`` bytes of a member: numpy's header reader reads through this."""

    def __init__(self, fh, limit: int) -> None:
        self.fh, self.left, self.exhausted = fh, limit, False

    def read(self, n: int = -1) -> bytes:
        if n < 0 or n > self.left:
            n, self.exhausted = self.left, True
        data = self.fh.read(n)
        self.left -= len(data)
        return data


def _central_directory_size(fh) -> tuple[int, int] | None:
    """(entries, bytes) of the central directory from the end record (zip64 too); None if there is none."""
    fh.seek(0, 2)
    size = fh.tell()
    tail_len = min(size, 22 + 0xFFFF)
    fh.seek(size - tail_len)
    tail = fh.read(tail_len)
    pos = tail.rfind(_EOCD)
    if pos < 0 or len(tail) - pos < 22:
        return None  # zipfile says what is wrong
    entries, cd_bytes = struct.unpack("<HI", tail[pos + 10:pos + 16])
    if (entries == 0xFFFF or cd_bytes == 0xFFFFFFFF) and pos >= 20 and tail[pos - 20:pos - 16] == _EOCD64_LOCATOR:
        (offset,) = struct.unpack("<Q", tail[pos - 12:pos - 4])
        fh.seek(min(offset, size))
        record = fh.read(56)
        if len(record) == 56 and record[:4] == _EOCD64:
            entries, cd_bytes = struct.unpack("<QQ", record[32:48])
    return entries, cd_bytes


class NpzArchive:
    """The ``.npy`` members of a zip file, checked as in the module docstring (a context manager)."""

    def __init__(self, path: str | Path, max_members: int) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "rb")  # noqa: SIM115 (closed by close()); a missing file stays an OSError
        try:
            self._zip = self._open(max_members)
        except BaseException:
            self._fh.close()
            raise
        self.entries: dict[str, zipfile.ZipInfo] = {}
        try:
            for info in self._zip.infolist():
                self._check_entry(info)
        except BaseException:
            self.close()
            raise

    def _open(self, max_members: int) -> zipfile.ZipFile:
        try:
            counts = _central_directory_size(self._fh)
            if counts is not None:
                entries, cd_bytes = counts
                if entries > max_members or cd_bytes > max_members * 1024:
                    raise FxpsimError(f"its zip directory lists {entries} members in {cd_bytes} bytes, more than "
                                      f"the {max_members} members a model file can have")
            self._fh.seek(0)
            return zipfile.ZipFile(self._fh)
        except FxpsimError:
            raise
        except _ZIP_ERRORS as exc:
            raise FxpsimError(f"corrupt or truncated archive ({type(exc).__name__}: {exc})") from None

    def _check_entry(self, info: zipfile.ZipInfo) -> None:
        name = info.filename
        if info.flag_bits & _ENCRYPTED:
            raise FxpsimError(f"member {name!r} is encrypted (zip flag bits {info.flag_bits:#06x}), which "
                              "fxpsim does not read: save the model again without a password")
        if info.compress_type not in _METHODS:
            method = _OTHER_METHODS.get(info.compress_type, "unknown")
            raise FxpsimError(f"member {name!r} is compressed with zip method {info.compress_type} ({method}); "
                              "fxpsim reads stored and deflate members only (as np.savez writes them)")
        if not name.endswith(".npy"):
            raise FxpsimError(f"member {name!r} is not an .npy array (its name does not end in .npy): "
                              "a model file holds .npy arrays only")
        key = name[: -len(".npy")]
        if key in self.entries:
            raise FxpsimError(f"member {name!r} appears twice in the zip directory: a damaged or forged archive")
        self.entries[key] = info

    def declared_bytes(self) -> int:
        """Sum of the members' declared uncompressed sizes."""
        return sum(info.file_size for info in self.entries.values())

    def member(self, name: str) -> Member:
        """The member ``name``'s ``.npy`` header, checked against its entry's declared size."""
        info = self.entries[name]
        full = _NPY_PREFIX + NPY_HEADER_LIMIT
        limit = min(info.file_size, full)
        prefix = None
        try:
            with self._zip.open(info) as fh, warnings.catch_warnings():
                warnings.simplefilter("ignore")  # numpy's note on headers written by Python 2
                prefix = _Prefix(fh, limit)
                version = npy_format.read_magic(prefix)
                if version not in ((1, 0), (2, 0)):
                    raise FxpsimError(f"member {info.filename!r} has .npy format version {version}: "
                                      "a weight array is version 1.0 or 2.0 (re-save the model with save_model)")
                read_header = npy_format.read_array_header_1_0 if version == (1, 0) \
                    else npy_format.read_array_header_2_0
                shape, fortran_order, dtype = read_header(prefix, max_header_size=NPY_HEADER_LIMIT)
        except FxpsimError:
            raise
        except (*_ZIP_ERRORS, TypeError, SyntaxError, RecursionError) as exc:
            cut = prefix is not None and prefix.exhausted
            if (cut and limit == full) or "max_header_size" in str(exc):
                raise FxpsimError(f"member {info.filename!r} has an .npy header longer than "
                                  f"{NPY_HEADER_LIMIT} bytes (a weight array's is 128): a damaged or forged "
                                  "member") from None
            if cut:
                raise FxpsimError(f"member {info.filename!r} declares {info.file_size} bytes uncompressed, "
                                  "fewer than its own .npy header: a damaged or forged member") from None
            if isinstance(exc, (ValueError, TypeError, SyntaxError, RecursionError)):
                why = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                why = why if len(why) <= 100 else why[:97] + "..."
                raise FxpsimError(f"member {info.filename!r} is not a readable .npy array ({why}): a damaged or "
                                  "forged member") from None
            raise FxpsimError(f"corrupt or truncated archive at member {info.filename!r} "
                              f"({type(exc).__name__}: {exc})") from None
        if dtype.hasobject:
            raise FxpsimError(f"member {info.filename!r} holds pickled object arrays (dtype {dtype}), which "
                              "fxpsim never loads (code could run)")
        if any(d < 0 for d in shape):
            raise FxpsimError(f"member {info.filename!r} declares the negative shape {shape}")
        header_bytes = limit - prefix.left
        found = Member(name, info, dtype, tuple(shape), fortran_order, header_bytes)
        if info.file_size != header_bytes + found.nbytes:
            raise FxpsimError(f"member {info.filename!r} declares {info.file_size} bytes uncompressed, but its "
                              f".npy header says {header_bytes} + {found.nbytes} (shape {found.shape}, "
                              f"{dtype}): a damaged or forged member")
        return found

    def read(self, member: Member) -> np.ndarray:
        """The member's array: exactly ``member.nbytes`` bytes inflated, the CRC checked (writable)."""
        buf = bytearray(member.nbytes)
        view = memoryview(buf)
        try:
            with self._zip.open(member.info) as fh:
                fh.read(member.header_bytes)
                got = 0
                while got < len(buf):
                    chunk = fh.read(min(1 << 20, len(buf) - got))
                    if not chunk:
                        raise EOFError(f"{got} of {len(buf)} data bytes")
                    view[got:got + len(chunk)] = chunk
                    got += len(chunk)
                fh.read(1)  # at the declared end: zipfile compares the CRC
        except _ZIP_ERRORS as exc:
            raise FxpsimError(f"corrupt or truncated archive at member {member.info.filename!r} "
                              f"({type(exc).__name__}: {exc})") from None
        arr = np.frombuffer(buf, dtype=member.dtype)
        return arr.reshape(member.shape, order="F" if member.fortran_order else "C")

    def close(self) -> None:
        self._zip.close()
        self._fh.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

