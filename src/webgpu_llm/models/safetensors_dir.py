"""Read a Hugging Face model directory: config.json plus one or more .safetensors files.

A safetensors file is an 8-byte little-endian header length N, N bytes of JSON
(`{name: {"dtype", "shape", "data_offsets": [begin, end]}, "__metadata__": {...}}`, offsets
relative to the end of the header), then the tensor bytes. The format is this simple, so we
parse the header ourselves on top of an `mmap`: that gives zero-copy numpy views (bf16
included, which `safetensors.numpy` cannot express) and lets every bound be checked and
reported as one `ModelFileError` line.

Shards: `model.safetensors.index.json` (its `weight_map` names the shard of each tensor)
when present, otherwise every `*.safetensors` file of the directory.
"""

from __future__ import annotations

import json
import mmap
import os
import stat
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from webgpu_llm.errors import ModelFileError
from webgpu_llm.models.gguf_file import TensorEntry, _Mapping, _short

__all__ = ["SafetensorsModel", "read_safetensors_dir"]

INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
MAX_HEADER_BYTES = 100 << 20  # the safetensors library's own limit
MAX_JSON_BYTES = 64 << 20  # config.json / index: far above any real one, below "wrong file"

# safetensors dtype -> (our format, ggml type id, numpy dtype of the view)
_DTYPES: dict[str, tuple[str, int, np.dtype]] = {
    "F32": ("f32", 0, np.dtype("<f4")),
    "F16": ("f16", 1, np.dtype("<f2")),
    "BF16": ("bf16", 30, np.dtype("<u2")),
}
# Integer index buffers that transformers saved with BERT-family weights before 4.31 (arange of the
# positions, zeros of the token types): no weights in them, so they are left out, whatever their dtype
_INDEX_BUFFERS = (".position_ids", ".token_type_ids")
_FETCH_AGAIN = "the download is incomplete or corrupt: fetch it again"
_CORRUPT = "the file is corrupt; fetch it again"


@dataclass(eq=False)
class SafetensorsModel:
    """A model directory: its config and the tensors of all its shards, memory-mapped."""

    path: Path
    config: dict[str, Any]
    tensors: dict[str, TensorEntry]
    files: list[Path] = field(default_factory=list)
    _mappings: list[_Mapping] = field(default_factory=list, repr=False)

    def close(self) -> None:
        for m in self._mappings:
            m.close()

    def __enter__(self) -> SafetensorsModel:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def read_safetensors_dir(path: str | os.PathLike[str]) -> SafetensorsModel:
    """Read config.json and the safetensors headers of a model directory.

    `path` may also be one `.safetensors` file, the index, or config.json: the directory
    is then its parent (and a single `.safetensors` file is read alone).
    """
    p = Path(path)
    directory, only = _resolve(p, os.fspath(path))
    config = _read_json(directory / CONFIG_NAME, "config.json", missing=(
        f"{directory}: no config.json; a Hugging Face model directory needs config.json next to "
        "the .safetensors files, download it too"))
    weight_map: dict[str, str] | None = None
    if only is not None:
        files = [only]
    elif (directory / INDEX_NAME).exists():
        weight_map = _read_index(directory)
        files = [directory / f for f in dict.fromkeys(weight_map.values())]
        for f in files:
            if not f.is_file():
                raise ModelFileError(f"{f}: shard listed in {INDEX_NAME} is missing; {_FETCH_AGAIN}")
    else:
        files = sorted(directory.glob("*.safetensors"))
        if not files:
            raise ModelFileError(f"{directory}: no .safetensors files{_other_formats_hint(directory)}")

    tensors: dict[str, TensorEntry] = {}
    mappings: list[_Mapping] = []
    try:
        for f in files:
            mapping, entries = _read_file(f)
            mappings.append(mapping)
            for e in entries:
                if e.name in tensors:
                    raise ModelFileError(f"{f}: tensor {_short(e.name)} is also in {tensors[e.name].path}; "
                                         "the directory mixes two checkpoints, remove the extra files")
                tensors[e.name] = e
        if weight_map is not None:
            for name, fname in weight_map.items():
                e = tensors.get(name)
                if e is None or e.path != directory / fname:
                    raise ModelFileError(f"{directory / fname}: tensor {_short(name)} listed in {INDEX_NAME} "
                                         f"is not in the file; {_FETCH_AGAIN}")
    except ModelFileError:
        for m in mappings:
            m.close()
        raise
    return SafetensorsModel(directory, config, tensors, files, mappings)


def _resolve(p: Path, label: str) -> tuple[Path, Path | None]:
    """-> (model directory, the single file to read or None for the whole directory)."""
    try:
        st = p.stat()
    except FileNotFoundError:
        raise ModelFileError(f"{label}: no such directory; check the path") from None
    except OSError as e:
        raise ModelFileError(f"{label}: cannot access ({e.strerror}); check the path") from None
    if stat.S_ISDIR(st.st_mode):
        return p, None
    if p.name.endswith(".safetensors"):
        return p.parent, p
    if p.name in (INDEX_NAME, CONFIG_NAME):
        return p.parent, None
    raise ModelFileError(f"{label}: not a model directory; pass the directory holding config.json "
                         "and the .safetensors files (or a .gguf file)")


def _other_formats_hint(directory: Path) -> str:
    if any(directory.glob("*.gguf")):
        return "; it holds a .gguf file: pass that file instead"
    if any(directory.glob("*.bin")) or any(directory.glob("*.pt")) or any(directory.glob("*.pth")):
        return "; PyTorch .bin/.pt checkpoints are not supported, download the safetensors version"
    return "; download the model's .safetensors files into it"


def _no_dup_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json keeps the last of duplicate keys silently; in a header that hides corruption.
    d: dict[str, Any] = {}
    for k, v in pairs:
        if k in d:
            raise ValueError(f"duplicate key {_short(k)}")
        d[k] = v
    return d


def _read_json(path: Path, what: str, missing: str) -> dict[str, Any]:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{path}: {what} is not a regular file")
        if st.st_size > MAX_JSON_BYTES:
            raise ModelFileError(f"{path}: {what} is {st.st_size} bytes, too large to be one; {_CORRUPT}")
        text = path.read_bytes()
    except FileNotFoundError:
        raise ModelFileError(missing) from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read {what} ({e.strerror})") from None
    try:
        obj = json.loads(text.decode("utf-8"), object_pairs_hook=_no_dup_keys)
    except UnicodeDecodeError:
        raise ModelFileError(f"{path}: {what} is not UTF-8 text; {_CORRUPT}") from None
    except json.JSONDecodeError as e:
        raise ModelFileError(f"{path}: {what} is not valid JSON ({e.msg} at line {e.lineno}); "
                             f"{_FETCH_AGAIN}") from None
    except (ValueError, RecursionError) as e:
        raise ModelFileError(f"{path}: {what} is not valid ({e}); {_CORRUPT}") from None
    if not isinstance(obj, dict):
        raise ModelFileError(f"{path}: {what} must hold a JSON object; {_CORRUPT}")
    return obj


def _read_index(directory: Path) -> dict[str, str]:
    path = directory / INDEX_NAME
    index = _read_json(path, INDEX_NAME, missing=f"{path}: missing")
    wm = index.get("weight_map")
    if not isinstance(wm, dict) or not wm or not all(isinstance(v, str) for v in wm.values()):
        raise ModelFileError(f"{path}: no valid \"weight_map\" (tensor name -> shard file); {_CORRUPT}")
    for fname in set(wm.values()):
        # Shards live next to the index: a path elsewhere is corruption or mischief.
        if fname in ("", ".", "..") or "/" in fname or "\\" in fname or "\0" in fname:
            raise ModelFileError(f"{path}: shard name {_short(fname)} is not a file name in the directory; {_CORRUPT}")
    return wm


def _read_file(path: Path) -> tuple[_Mapping, list[TensorEntry]]:
    try:
        st = path.stat()
        if not stat.S_ISREG(st.st_mode):
            raise ModelFileError(f"{path}: not a regular file; remove it from the model directory")
        size = st.st_size
        if size < 8:
            raise ModelFileError(f"{path}: truncated: {size} bytes, too short for a safetensors header; "
                                 f"{_FETCH_AGAIN}")
        with open(path, "rb") as f:
            mm = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except FileNotFoundError:
        raise ModelFileError(f"{path}: missing; {_FETCH_AGAIN}") from None
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror}); check its permissions") from None
    except ValueError as e:  # mmap: emptied meanwhile, or too large for the address space
        raise ModelFileError(f"{path}: cannot map the file ({e})") from None
    mapping = _Mapping(path, mm)
    try:
        return mapping, _parse(path, mm, mapping)
    except ModelFileError:
        mapping.close()
        raise


def _parse(path: Path, mm: mmap.mmap, mapping: _Mapping) -> list[TensorEntry]:
    size = len(mm)
    n = struct.unpack_from("<Q", mm, 0)[0]
    if mm[8:9] not in (b"{", b" ", b"\n", b"\t", b"\r", b""):
        hint = "it is a GGUF file: pass the .gguf file itself" if mm[:4] == b"GGUF" else _CORRUPT
        raise ModelFileError(f"{path}: not a safetensors file (no JSON header); {hint}")
    if n > MAX_HEADER_BYTES:
        raise ModelFileError(f"{path}: header length {n} is implausible; {_CORRUPT}")
    if 8 + n > size:
        raise ModelFileError(f"{path}: truncated: the header ends at byte {8 + n} but the file has "
                             f"{size} bytes; {_FETCH_AGAIN}")
    try:
        header = json.loads(mm[8:8 + n].decode("utf-8"), object_pairs_hook=_no_dup_keys)
    except (ValueError, RecursionError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise ModelFileError(f"{path}: the header is not valid JSON ({e}); {_CORRUPT}") from None
    if not isinstance(header, dict):
        raise ModelFileError(f"{path}: the header is not a JSON object; {_CORRUPT}")
    data_start = 8 + n
    data_len = size - data_start
    entries: list[TensorEntry] = []
    for name, info in header.items():
        if name == "__metadata__":
            continue
        what = f"tensor {_short(name)}"
        if not isinstance(info, dict):
            raise ModelFileError(f"{path}: {what} has no dtype/shape/data_offsets; {_CORRUPT}")
        dtype, shape, offs = info.get("dtype"), info.get("shape"), info.get("data_offsets")
        if not isinstance(dtype, str):
            raise ModelFileError(f"{path}: {what} has no dtype; {_CORRUPT}")
        if dtype not in _DTYPES and dtype.startswith(("I", "U")) and name.endswith(_INDEX_BUFFERS):
            continue
        if dtype not in _DTYPES:
            raise ModelFileError(f"{path}: {what} has dtype {_short(dtype)}, which is not supported (only F32, "
                                 "F16, BF16); use an unquantized float checkpoint or a GGUF file")
        if not (isinstance(shape, list) and all(_is_uint(d) for d in shape)):
            raise ModelFileError(f"{path}: {what} has invalid shape {_short(shape)}; {_CORRUPT}")
        if not (isinstance(offs, list) and len(offs) == 2 and all(_is_uint(o) for o in offs)
                and offs[0] <= offs[1]):
            raise ModelFileError(f"{path}: {what} has invalid data_offsets {_short(offs)}; {_CORRUPT}")
        fmt, ggml_type, dt = _DTYPES[dtype]
        count, span = 1, 1
        for d in shape:
            count *= d
            span *= max(d, 1)
        if span >= 1 << 62:  # numpy could not even shape a view of it (zero-size ones included)
            raise ModelFileError(f"{path}: {what} has shape {_short(shape)} whose size overflows; {_CORRUPT}")
        nbytes = count * dt.itemsize
        if offs[1] - offs[0] != nbytes:
            raise ModelFileError(f"{path}: {what} of shape {_short(shape)} and dtype {dtype} needs {nbytes} bytes "
                                 f"but its data_offsets span {offs[1] - offs[0]}; {_CORRUPT}")
        if offs[1] > data_len:
            raise ModelFileError(f"{path}: truncated: {what} data ends at byte {data_start + offs[1]} but "
                                 f"the file has {size} bytes; {_FETCH_AGAIN}")
        entries.append(TensorEntry(name, fmt, ggml_type, dtype, tuple(shape), nbytes,
                                   data_start + offs[0], mapping))
    return entries


def _is_uint(x: object) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and x >= 0
