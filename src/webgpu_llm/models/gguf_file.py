"""Read a GGUF model file: metadata as plain Python, tensors as memory-mapped numpy views.

Why our own parser instead of `gguf.GGUFReader`: the reader builds a numpy view per field
part (several per vocabulary string), which takes seconds for a 49k-token vocabulary on a
small machine, and on a corrupt file it raises whatever numpy or struct raise (ValueError,
IndexError, KeyError ...), sometimes after allocating arrays sized by the corrupt counts.
This parser follows the GGUF v2/v3 layout (ggml's gguf.cpp checks included) on top of an
`mmap`, takes the type tables from the `gguf` package, checks every count and length
against the bytes left in the file before acting on it, and reports each problem as one
`ModelFileError` line that names the file. Work and memory are bounded by the file size.

Layout (all little-endian):
    magic "GGUF" | u32 version | u64 n_tensors | u64 n_kv
    n_kv x (string key, u32 value type, value)
    n_tensors x (string name, u32 n_dims, n_dims x u64 ne, u32 ggml type, u64 offset)
    padding to `general.alignment` (default 32) | tensor data (offsets relative to here)
where a string is u64 length + UTF-8 bytes, and an array value is u32 item type + u64 count
+ items.
"""

from __future__ import annotations

import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from webgpu_llm.errors import ModelFileError
from webgpu_llm.kernels.formats import FORMATS, GGML_TYPES

__all__ = ["GgufFile", "TensorEntry", "read_gguf"]

MAGIC = b"GGUF"
SUPPORTED_VERSIONS = (2, 3)
MAX_DIMS = 4  # GGML_MAX_DIMS
MAX_ARRAY_DEPTH = 8  # arrays of arrays: real files use none; the limit keeps recursion shallow
DEFAULT_ALIGNMENT = 32

_U32 = struct.Struct("<I")
_U64 = struct.Struct("<Q")

# Scalar value types: struct format and numpy dtype of an array of them.
_SCALARS: dict[int, tuple[struct.Struct, np.dtype]] = {
    GGUFValueType.UINT8: (struct.Struct("<B"), np.dtype("<u1")),
    GGUFValueType.INT8: (struct.Struct("<b"), np.dtype("<i1")),
    GGUFValueType.UINT16: (struct.Struct("<H"), np.dtype("<u2")),
    GGUFValueType.INT16: (struct.Struct("<h"), np.dtype("<i2")),
    GGUFValueType.UINT32: (struct.Struct("<I"), np.dtype("<u4")),
    GGUFValueType.INT32: (struct.Struct("<i"), np.dtype("<i4")),
    GGUFValueType.FLOAT32: (struct.Struct("<f"), np.dtype("<f4")),
    GGUFValueType.BOOL: (struct.Struct("<B"), np.dtype("<u1")),
    GGUFValueType.UINT64: (struct.Struct("<Q"), np.dtype("<u8")),
    GGUFValueType.INT64: (struct.Struct("<q"), np.dtype("<i8")),
    GGUFValueType.FLOAT64: (struct.Struct("<d"), np.dtype("<f8")),
}
_INT_TYPES = {GGUFValueType.UINT8, GGUFValueType.INT8, GGUFValueType.UINT16, GGUFValueType.INT16,
              GGUFValueType.UINT32, GGUFValueType.INT32, GGUFValueType.UINT64, GGUFValueType.INT64}
_STRING, _ARRAY = int(GGUFValueType.STRING), int(GGUFValueType.ARRAY)
# Fewest bytes an item of each kind can take: used to reject counts the file cannot hold
# before looping or allocating.
_MIN_KV_BYTES = 8 + 4 + 1  # key length, value type, smallest value
_MIN_TENSOR_INFO_BYTES = 8 + 4 + 8 + 4 + 8  # name length, n_dims, one dim, type, offset

_FETCH_AGAIN = "the download is incomplete or corrupt: fetch it again"
_CORRUPT = "the file is corrupt; fetch it again"


# --- the mapping shared by a file's tensors ------------------------------------------------


class _Mapping:
    """One read-only mapping of a file; tensor views point into it."""

    def __init__(self, path: Path, mm: mmap.mmap | None) -> None:
        self.path = path
        self.mm = mm

    def view(self, dtype: np.dtype, count: int, offset: int) -> np.ndarray:
        if self.mm is None:
            raise ValueError(f"{self.path}: the model file has been closed")
        if count == 0:  # frombuffer refuses an empty view at the very end of the buffer
            return np.empty(0, dtype)
        return np.frombuffer(self.mm, dtype, count, offset)

    def close(self) -> None:
        mm, self.mm = self.mm, None
        if mm is not None:
            try:
                mm.close()
            except BufferError:
                pass  # views handed out keep the mapping alive; it is unmapped when they go


# --- public types -----------------------------------------------------------------------


@dataclass(eq=False)
class TensorEntry:
    """One tensor of a model file, its bytes still in the file."""

    name: str
    fmt: str | None  # our format name (kernels.formats), None when unsupported
    ggml_type: int
    type_name: str  # "Q4_1", "IQ2_XS", "BF16": for messages
    shape: tuple[int, ...]  # numpy order: (rows, k) for matrices, (k,) for vectors
    nbytes: int
    offset: int = 0  # absolute byte offset of the data in its file
    _map: _Mapping | None = field(default=None, repr=False)

    @property
    def path(self) -> Path | None:
        """The file the data lives in (shards differ)."""
        return self._map.path if self._map is not None else None

    def data(self) -> np.ndarray:
        """Zero-copy read-only view of the data in the mapped file.

        F32/F16: float32/float16 array of `shape`; BF16: uint16 array of `shape`; everything
        else (quantized, and types we do not support): uint8 of (rows, bytes per row), where
        rows = prod(shape[:-1]).
        """
        if self._map is None:
            raise ValueError(f"tensor {self.name!r} is not backed by a file")
        if self.ggml_type in _FLOAT_DTYPES:
            dt = _FLOAT_DTYPES[self.ggml_type]
            n = self.nbytes // dt.itemsize
            return self._map.view(dt, n, self.offset).reshape(self.shape)
        rows = _prod(self.shape[:-1])
        return self._map.view(np.dtype(np.uint8), self.nbytes, self.offset).reshape(rows, _row_bytes(self.ggml_type, self.shape[-1]))


_FLOAT_DTYPES = {0: np.dtype("<f4"), 1: np.dtype("<f2"), 30: np.dtype("<u2")}


def _row_bytes(ggml_type: int, k: int) -> int:
    fmt = GGML_TYPES.get(ggml_type)
    if fmt is not None:
        return FORMATS[fmt].row_bytes(k)
    block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    return k // block * type_size


class GgufFile:
    """A parsed GGUF file. Close it (or use `with`) to release the mapping; tensor views
    already handed out stay valid until they are dropped."""

    def __init__(self, path: Path, version: int, metadata: dict[str, Any],
                 tensors: dict[str, TensorEntry], alignment: int, data_offset: int,
                 mapping: _Mapping) -> None:
        self.path = path
        self.version = version
        self.metadata = metadata
        self.tensors = tensors
        self.alignment = alignment
        self.data_offset = data_offset  # absolute offset of the tensor data section
        self._mapping = mapping

    def close(self) -> None:
        self._mapping.close()

    def __enter__(self) -> GgufFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"GgufFile({str(self.path)!r}, version={self.version}, {len(self.metadata)} keys, {len(self.tensors)} tensors)"


# --- reading ------------------------------------------------------------------------------


def read_gguf(path: str | os.PathLike[str]) -> GgufFile:
    """Parse a GGUF file; raises ModelFileError (one line, names the file) on any problem."""
    p = Path(path)
    label = os.fspath(path)
    mm = _open_mapped(p, label)
    mapping = _Mapping(p, mm)
    try:
        return _Parser(p, label, mm, mapping).parse()
    except ModelFileError:
        mapping.close()
        raise
    except (struct.error, ValueError, OverflowError, IndexError, UnicodeError) as e:
        # Safety net: every check above should have caught the problem first.
        mapping.close()
        detail = " ".join(str(e).split())[:200]
        raise ModelFileError(f"{label}: corrupt GGUF file ({type(e).__name__}: {detail}); {_CORRUPT}") from e


def _open_mapped(p: Path, label: str) -> mmap.mmap:
    try:
        st = p.stat()  # stat before open: opening a FIFO would block
    except FileNotFoundError:
        raise ModelFileError(f"{label}: no such file; check the path") from None
    except OSError as e:
        raise ModelFileError(f"{label}: cannot access the file ({e.strerror}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        raise ModelFileError(f"{label}: is a directory, not a .gguf file; pass the path of the .gguf file")
    if not stat.S_ISREG(st.st_mode):
        raise ModelFileError(f"{label}: is not a regular file; pass the path of a .gguf file")
    if st.st_size == 0:
        raise ModelFileError(f"{label}: the file is empty (0 bytes); the download failed, fetch it again")
    try:
        with open(p, "rb") as f:
            return mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise ModelFileError(f"{label}: cannot read the file ({e.strerror}); check its permissions") from None
    except ValueError as e:  # mmap: file emptied meanwhile, or too large for the address space
        raise ModelFileError(f"{label}: cannot map the file ({e})") from None


def _short(x: object, limit: int = 80) -> str:
    """repr for messages: names and values from a corrupt file can be megabytes long."""
    r = repr(x)
    return r if len(r) <= limit else r[:limit - 3] + "..."


def _prod(xs: tuple[int, ...] | list[int]) -> int:
    n = 1
    for x in xs:
        n *= x
    return n


def _type_name(t: int) -> str:
    try:
        return GGMLQuantizationType(t).name
    except ValueError:
        return f"type {t}"


class _Parser:
    def __init__(self, path: Path, label: str, mm: mmap.mmap, mapping: _Mapping) -> None:
        self.path = path
        self.label = label
        self.buf = mm
        self.size = len(mm)
        self.pos = 0
        self.mapping = mapping

    # -- errors and bounds -------------------------------------------------------------
    def fail(self, msg: str) -> ModelFileError:
        return ModelFileError(f"{self.label}: {msg}")

    def need(self, n: int, what: str) -> None:
        if n > self.size - self.pos:
            raise self.fail(f"truncated: {what} at byte {self.pos} needs {n} bytes but the file "
                            f"has {self.size} bytes; {_FETCH_AGAIN}")

    # -- primitives --------------------------------------------------------------------
    def u32(self, what: str) -> int:
        self.need(4, what)
        v = _U32.unpack_from(self.buf, self.pos)[0]
        self.pos += 4
        return v

    def u64(self, what: str) -> int:
        self.need(8, what)
        v = _U64.unpack_from(self.buf, self.pos)[0]
        self.pos += 8
        return v

    def raw_string(self, what: str) -> bytes:
        n = self.u64(f"length of {what}")
        self.need(n, what)
        s = self.buf[self.pos:self.pos + n]
        self.pos += n
        return s

    def name_string(self, what: str) -> str:
        """Keys and tensor names: must be valid UTF-8."""
        start = self.pos
        raw = self.raw_string(what)
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise self.fail(f"{what} at byte {start} is not valid UTF-8; {_CORRUPT}") from None

    # -- the file ----------------------------------------------------------------------
    def parse(self) -> GgufFile:
        self.check_magic()
        version = self.u32("version")
        if version not in SUPPORTED_VERSIONS:
            if version & 0xFFFF == 0 and int.from_bytes(version.to_bytes(4, "little"), "big") in SUPPORTED_VERSIONS:
                raise self.fail("is a big-endian GGUF file, which is not supported; use a little-endian one")
            raise self.fail(f"GGUF version {version} is not supported (only versions 2 and 3); "
                            "convert the model again with a current llama.cpp")
        n_tensors = self.u64("tensor count")
        n_kv = self.u64("metadata count")
        if n_kv > (self.size - self.pos) // _MIN_KV_BYTES:
            raise self.fail(f"truncated or corrupt: the header declares {n_kv} metadata entries, more "
                            f"than a file of {self.size} bytes can hold; {_FETCH_AGAIN}")
        metadata = self.read_metadata(n_kv)
        if n_tensors > (self.size - self.pos) // _MIN_TENSOR_INFO_BYTES:
            raise self.fail(f"truncated or corrupt: the header declares {n_tensors} tensors but only "
                            f"{self.size - self.pos} bytes follow the metadata; {_FETCH_AGAIN}")
        alignment = self.alignment(metadata)
        infos = self.read_tensor_infos(n_tensors)
        data_offset = -(-self.pos // alignment) * alignment
        tensors = {name: self.make_entry(name, *info, alignment, data_offset) for name, info in infos.items()}
        return GgufFile(self.path, version, metadata, tensors, alignment, data_offset, self.mapping)

    def check_magic(self) -> None:
        head = self.buf[:64]
        if head[:4] == MAGIC:
            self.pos = 4
            return
        # Name the usual impostors: a failed download, an LFS pointer, another format.
        low = head.lstrip().lower()
        if low.startswith((b"<!doctype html", b"<html", b"<?xml", b"{\"error", b"<")):
            hint = "it looks like an HTML/XML page, not a model: the download probably failed; fetch it again"
        elif head.startswith(b"version https://git-lfs"):
            hint = "it is a Git LFS pointer, not the model; run `git lfs pull` or download the file itself"
        elif head[8:9] == b"{":
            hint = "it looks like a safetensors file; pass the model directory instead"
        elif head.startswith(b"ggml") or head.startswith(b"lmgg") or head.startswith(b"tjgg"):
            hint = "it is a pre-GGUF ggml/ggjt file; convert it to GGUF with llama.cpp"
        else:
            hint = "expected a .gguf model file (it starts with the bytes 'GGUF')"
        raise self.fail(f"not a GGUF file (starts with {bytes(head[:4])!r}); {hint}")

    # -- metadata ------------------------------------------------------------------------
    def read_metadata(self, n_kv: int) -> dict[str, Any]:
        metadata: dict[str, Any] = {}
        for i in range(n_kv):
            key = self.name_string(f"metadata key {i + 1} of {n_kv}")
            if key in metadata:
                raise self.fail(f"duplicate metadata key {_short(key)}; {_CORRUPT}")
            what = f"metadata {_short(key)}"
            vtype = self.u32(f"type of {what}")
            metadata[key] = self.read_value(vtype, what, 0)
        return metadata

    def read_value(self, vtype: int, what: str, depth: int) -> Any:
        sc = _SCALARS.get(vtype)
        if sc is not None:
            s = sc[0]
            self.need(s.size, what)
            v = s.unpack_from(self.buf, self.pos)[0]
            self.pos += s.size
            if vtype == GGUFValueType.BOOL:
                if v > 1:
                    raise self.fail(f"{what}: invalid bool value {v}; {_CORRUPT}")
                return bool(v)
            return v
        if vtype == _STRING:
            return self.raw_string(what).decode("utf-8", "surrogateescape")
        if vtype == _ARRAY:
            return self.read_array(what, depth)
        raise self.fail(f"{what} has invalid value type {vtype}; {_CORRUPT}")

    def read_array(self, what: str, depth: int) -> Any:
        if depth >= MAX_ARRAY_DEPTH:
            raise self.fail(f"{what}: arrays nested deeper than {MAX_ARRAY_DEPTH}; {_CORRUPT}")
        itype = self.u32(f"item type of {what}")
        n = self.u64(f"length of {what}")
        left = self.size - self.pos
        sc = _SCALARS.get(itype)
        if sc is not None:
            dt = sc[1]
            if n > left // dt.itemsize:
                raise self.fail(f"truncated or corrupt: {what} claims {n} items of {dt.itemsize} bytes "
                                f"at byte {self.pos} but the file has {self.size} bytes; {_FETCH_AGAIN}")
            # A copy, so that metadata does not pin the mapping; bounded by the file size.
            a = np.frombuffer(self.buf, dt, n, self.pos).copy() if n else np.empty(0, dt)
            self.pos += n * dt.itemsize
            if itype == GGUFValueType.BOOL:
                if n and int(a.max()) > 1:
                    raise self.fail(f"{what}: invalid bool value in array; {_CORRUPT}")
                a = a.view(np.bool_)
            return a
        if itype == _STRING:
            if n > left // 8:
                raise self.fail(f"truncated or corrupt: {what} claims {n} strings at byte {self.pos} "
                                f"but the file has {self.size} bytes; {_FETCH_AGAIN}")
            return self.read_string_array(n, what)
        if itype == _ARRAY:
            if n > left // 12:  # item type + length of each inner array
                raise self.fail(f"truncated or corrupt: {what} claims {n} arrays at byte {self.pos} "
                                f"but the file has {self.size} bytes; {_FETCH_AGAIN}")
            return [self.read_array(f"{what}[{i}]", depth + 1) for i in range(n)]
        raise self.fail(f"{what} has invalid array item type {itype}; {_CORRUPT}")

    def read_string_array(self, n: int, what: str) -> list[str]:
        # The hot loop of the reader (vocabularies, merges): locals only, one slice and one
        # decode per string. Values that are not valid UTF-8 keep their bytes recoverable
        # through surrogateescape rather than failing the whole file.
        buf, pos, size, unpack = self.buf, self.pos, self.size, _U64.unpack_from
        out: list[str] = [""] * n
        for i in range(n):
            if pos + 8 > size:
                self.pos = pos
                self.need(8, f"length of string {i} of {what}")
            ln = unpack(buf, pos)[0]
            pos += 8
            end = pos + ln
            if end > size:
                self.pos = pos
                self.need(ln, f"string {i} of {what}")
            out[i] = buf[pos:end].decode("utf-8", "surrogateescape")
            pos = end
        self.pos = pos
        return out

    def alignment(self, metadata: dict[str, Any]) -> int:
        a = metadata.get("general.alignment", DEFAULT_ALIGNMENT)
        if not isinstance(a, int) or isinstance(a, bool) or a <= 0 or a & (a - 1):
            raise self.fail(f"invalid general.alignment {_short(a)} (must be a power of two); {_CORRUPT}")
        return a

    # -- tensor infos ----------------------------------------------------------------------
    def read_tensor_infos(self, n: int) -> dict[str, tuple[list[int], int, int]]:
        infos: dict[str, tuple[list[int], int, int]] = {}
        for i in range(n):
            name = self.name_string(f"name of tensor {i + 1} of {n}")
            if name in infos:
                raise self.fail(f"duplicate tensor name {_short(name)}; {_CORRUPT}")
            what = f"tensor {_short(name)}"
            n_dims = self.u32(f"dimension count of {what}")
            if not 1 <= n_dims <= MAX_DIMS:
                raise self.fail(f"{what} has {n_dims} dimensions (must be 1 to {MAX_DIMS}); {_CORRUPT}")
            ne = [self.u64(f"shape of {what}") for _ in range(n_dims)]
            ttype = self.u32(f"type of {what}")
            offset = self.u64(f"data offset of {what}")
            infos[name] = (ne, ttype, offset)
        return infos

    def make_entry(self, name: str, ne: list[int], ttype: int, offset: int, alignment: int,
                   data_offset: int) -> TensorEntry:
        what = f"tensor {_short(name)}"
        type_name = _type_name(ttype)
        try:
            block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ttype)]
        except (ValueError, KeyError):
            raise self.fail(f"{what} has unknown ggml type {ttype}; the file is corrupt or needs a "
                            "newer gguf package") from None
        shape = tuple(reversed(ne))
        # ggml keeps element counts in int64: larger is corruption, and numpy could not shape it.
        if _prod([max(d, 1) for d in ne]) >= 1 << 63:
            raise self.fail(f"{what} has shape {_short(list(shape))} whose size overflows; {_CORRUPT}")
        k = ne[0]
        if k % block:
            raise self.fail(f"{what} has rows of {k} values, not a multiple of the {type_name} "
                            f"block size {block}; {_CORRUPT}")
        nbytes = _prod(ne[1:]) * (k // block) * type_size
        if offset % alignment:
            raise self.fail(f"{what} has data offset {offset}, not a multiple of the alignment "
                            f"{alignment}; {_CORRUPT}")
        start = data_offset + offset
        if start + nbytes > self.size:
            raise self.fail(f"truncated: {what} data ends at byte {start + nbytes} but the file has "
                            f"{self.size} bytes; {_FETCH_AGAIN}")
        return TensorEntry(name, GGML_TYPES.get(ttype), ttype, type_name, shape, nbytes, start, self.mapping)
