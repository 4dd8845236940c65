"""Random access into a dictzip file (dictd's ``.dict.dz``, e.g. GCIDE's).

A dictzip file is a gzip file whose deflate stream is flushed (``Z_FULL_FLUSH``) every CHLEN
bytes of text, and whose header's extra field ``RA`` lists the compressed size of every chunk
(dictzip(1)). Any chunk therefore decompresses on its own: reading a range costs the chunks it
touches, not the stream before it (as a seek in `gzip` does).
"""

from __future__ import annotations

import itertools
import struct
import zlib

_FHCRC, _FEXTRA, _FNAME, _FCOMMENT = 2, 4, 8, 16


class DictzipReader:
    """``read(offset, size)`` of the uncompressed text; keeps the last chunk it inflated, so
    reads in increasing offset order inflate each chunk once."""

    def __init__(self, path: str):
        self._file = open(path, "rb")  # noqa: SIM115 (closed by close / the context manager)
        try:
            self._chunk_size, self._starts = self._read_header(path)
        except BaseException:
            self._file.close()
            raise
        self._cached: tuple[int | None, bytes] = (None, b"")

    def _read_header(self, path: str) -> tuple[int, list[int]]:
        """(CHLEN, file offset of every chunk and of the end of the last)."""
        not_dictzip = ValueError(f"{path}: not a dictzip file (a gzip file with an RA field).")
        header = self._file.read(10)
        magic, method, flags = struct.unpack("<2sBB6x", header.ljust(10, b"\0"))
        if magic != b"\x1f\x8b" or method != 8 or not flags & _FEXTRA:
            raise not_dictzip
        (xlen,) = struct.unpack("<H", self._file.read(2).ljust(2, b"\0"))
        extra, sizes, chunk_size = self._file.read(xlen), None, 0
        while len(extra) >= 4:  # subfields: SI1 SI2, LEN, data
            (length,) = struct.unpack("<H", extra[2:4])
            data = extra[4 : 4 + length]
            if extra[:2] == b"RA" and len(data) >= 6:  # VER, CHLEN, CHCNT, CHCNT sizes
                version, chunk_size, count = struct.unpack("<HHH", data[:6])
                if version != 1 or chunk_size == 0 or len(data) != 6 + 2 * count:
                    raise not_dictzip
                sizes = struct.unpack(f"<{count}H", data[6:])
            extra = extra[4 + length :]
        if sizes is None:
            raise not_dictzip
        for flag in (_FNAME, _FCOMMENT):  # zero-terminated strings
            if flags & flag:
                while self._file.read(1) not in (b"\0", b""):
                    pass
        if flags & _FHCRC:
            self._file.read(2)
        return chunk_size, list(itertools.accumulate(sizes, initial=self._file.tell()))

    @property
    def size(self) -> int:
        """Bytes of text, at most (every chunk but the last is CHLEN long)."""
        return self._chunk_size * (len(self._starts) - 1)

    def _chunk(self, i: int) -> bytes:
        if self._cached[0] != i:
            last = len(self._starts) - 2
            if i > last:
                raise ValueError(f"{self._file.name}: a read past the end of the text.")
            self._file.seek(self._starts[i])
            data = self._file.read(self._starts[i + 1] - self._starts[i])
            text = zlib.decompressobj(-zlib.MAX_WBITS).decompress(data)
            if i < last and len(text) != self._chunk_size:  # reads across chunks rely on it
                raise ValueError(
                    f"{self._file.name}: chunk {i} inflates to {len(text)} bytes, not the "
                    f"header's {self._chunk_size} (a damaged file?)."
                )
            self._cached = (i, text)
        return self._cached[1]

    def read(self, offset: int, size: int) -> bytes:
        if offset < 0 or size < 0:
            raise ValueError(f"read({offset}, {size}): offset and size must be ≥ 0.")
        if size == 0:
            return b""
        first, last = offset // self._chunk_size, (offset + size - 1) // self._chunk_size
        if first == last:  # most reads: no copy of the chunk
            data = self._chunk(first)
        else:
            data = b"".join(self._chunk(i) for i in range(first, last + 1))
        start = offset - first * self._chunk_size
        if start + size > len(data):
            raise ValueError(f"{self._file.name}: a read past the end of the text.")
        return data[start : start + size]

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> DictzipReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
