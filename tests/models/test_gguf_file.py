"""GGUF reader: real file, files written by gguf.GGUFWriter, hand-made bad files, fuzzing."""

from __future__ import annotations

import mmap
import random
import struct
from pathlib import Path

import gguf
import numpy as np
import pytest
from gguf.constants import GGMLQuantizationType as T
from gguf.constants import GGUFValueType as V
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from model_files import SMOLLM2_MISSING, smollm2_file, smollm2_or_skip
from webgpu_llm.errors import ModelFileError
from webgpu_llm.kernels.formats import FORMATS
from webgpu_llm.models.gguf_file import read_gguf

SMOLLM2 = smollm2_file()
needs_smollm2 = pytest.mark.skipif(SMOLLM2 is None, reason=SMOLLM2_MISSING)


# --- hand-made GGUF bytes ------------------------------------------------------------------


def gstr(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv(key: str | bytes, vtype: int, payload: bytes) -> bytes:
    return gstr(key) + struct.pack("<I", vtype) + payload


def kv_str(key: str, value: str) -> bytes:
    return kv(key, V.STRING, gstr(value))


def kv_u32(key: str, value: int) -> bytes:
    return kv(key, V.UINT32, struct.pack("<I", value))


def tinfo(name: str | bytes, ne: list[int], ttype: int, offset: int) -> bytes:
    return (gstr(name) + struct.pack("<I", len(ne)) + b"".join(struct.pack("<Q", d) for d in ne)
            + struct.pack("<IQ", ttype, offset))


def make(kvs: list[bytes], infos: list[bytes], data: bytes = b"", *, version: int = 3,
         n_kv: int | None = None, n_tensors: int | None = None, magic: bytes = b"GGUF",
         alignment: int = 32) -> bytes:
    head = magic + struct.pack("<IQQ", version, len(infos) if n_tensors is None else n_tensors,
                               len(kvs) if n_kv is None else n_kv)
    body = head + b"".join(kvs) + b"".join(infos)
    body += b"\0" * (-len(body) % alignment)
    return body + data


def good_parts() -> tuple[list[bytes], list[bytes], bytes]:
    """A small valid file: an f32 (2, 4) matrix at 0 and a q4_0 (2, 32) matrix at 32."""
    kvs = [kv_str("general.architecture", "llama"), kv_u32("llama.block_count", 1)]
    infos = [tinfo("a", [4, 2], T.F32, 0), tinfo("b", [32, 2], T.Q4_0, 32)]
    data = np.arange(8, dtype=np.float32).tobytes() + bytes(range(36))
    return kvs, infos, data


def write(tmp_path: Path, data: bytes, name: str = "model.gguf") -> Path:
    p = tmp_path / name
    p.write_bytes(data)
    return p


def expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ModelFileError) as ei:
        read_gguf(path)
    msg = str(ei.value)
    assert "\n" not in msg
    assert msg.startswith(str(path)), msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


# --- valid files ----------------------------------------------------------------------------


def test_hand_made_good_file(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    p = write(tmp_path, make(kvs, infos, data))
    with read_gguf(p) as g:
        assert g.version == 3 and g.alignment == 32
        assert g.metadata == {"general.architecture": "llama", "llama.block_count": 1}
        a, b = g.tensors["a"], g.tensors["b"]
        assert (a.fmt, a.shape, a.nbytes, a.type_name) == ("f32", (2, 4), 32, "F32")
        np.testing.assert_array_equal(a.data(), np.arange(8, dtype=np.float32).reshape(2, 4))
        assert (b.fmt, b.shape, b.nbytes) == ("q4_0", (2, 32), 36)
        assert b.data().shape == (2, 18) and b.data().dtype == np.uint8
        assert b.data().tobytes() == bytes(range(36))
        assert a.offset == g.data_offset and b.offset == g.data_offset + 32


def test_writer_roundtrip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    p = tmp_path / "w.gguf"
    w = gguf.GGUFWriter(p, "llama")
    w.add_uint8("t.u8", 200)
    w.add_int8("t.i8", -5)
    w.add_uint16("t.u16", 60000)
    w.add_int16("t.i16", -30000)
    w.add_uint32("t.u32", 4_000_000_000)
    w.add_int32("t.i32", -2_000_000_000)
    w.add_uint64("t.u64", 1 << 60)
    w.add_int64("t.i64", -(1 << 60))
    w.add_float32("t.f32", 0.5)
    w.add_float64("t.f64", 1e-300)
    w.add_bool("t.bool", True)
    w.add_string("t.str", "héllo ✓")
    w.add_array("t.strs", ["a", "", "ü"])
    w.add_array("t.ints", [1, 2, 3])
    w.add_array("t.floats", [0.25, 1.5])
    f32 = rng.standard_normal((3, 8)).astype(np.float32)
    f16 = rng.standard_normal((2, 3, 4)).astype(np.float16)
    bf16 = rng.integers(0, 1 << 16, (5, 4), dtype=np.uint16)
    q8 = rng.integers(0, 256, (4, 2 * 34), dtype=np.uint8)  # 4 rows of 64 values
    q6k = rng.integers(0, 256, (2, 210), dtype=np.uint8)  # 2 rows of 256 values
    iq2 = rng.integers(0, 256, (3, 74), dtype=np.uint8)  # unsupported by us: IQ2_XS
    vec = rng.standard_normal(8).astype(np.float32)
    w.add_tensor("f32", f32)
    w.add_tensor("f16", f16)
    w.add_tensor("bf16", bf16, raw_dtype=T.BF16)
    w.add_tensor("q8", q8, raw_dtype=T.Q8_0)
    w.add_tensor("q6k", q6k, raw_dtype=T.Q6_K)
    w.add_tensor("iq2", iq2, raw_dtype=T.IQ2_XS)
    w.add_tensor("vec", vec)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()

    with read_gguf(p) as g:
        m = g.metadata
        assert m["general.architecture"] == "llama"
        assert (m["t.u8"], m["t.i8"], m["t.u16"], m["t.i16"]) == (200, -5, 60000, -30000)
        assert (m["t.u32"], m["t.i32"], m["t.u64"], m["t.i64"]) == (4_000_000_000, -2_000_000_000, 1 << 60, -(1 << 60))
        assert m["t.f32"] == 0.5 and m["t.f64"] == 1e-300 and m["t.bool"] is True
        assert m["t.str"] == "héllo ✓" and m["t.strs"] == ["a", "", "ü"]
        assert list(m["t.ints"]) == [1, 2, 3] and list(m["t.floats"]) == [0.25, 1.5]
        t = g.tensors
        assert t["f32"].shape == (3, 8) and t["f32"].fmt == "f32"
        np.testing.assert_array_equal(t["f32"].data(), f32)
        assert t["f16"].shape == (2, 3, 4) and t["f16"].data().dtype == np.float16
        np.testing.assert_array_equal(t["f16"].data(), f16)
        assert (t["bf16"].fmt, t["bf16"].ggml_type, t["bf16"].shape) == ("bf16", 30, (5, 4))
        np.testing.assert_array_equal(t["bf16"].data(), bf16)
        assert (t["q8"].fmt, t["q8"].shape, t["q8"].nbytes) == ("q8_0", (4, 64), q8.nbytes)
        assert t["q8"].data().shape == (4, FORMATS["q8_0"].row_bytes(64))
        np.testing.assert_array_equal(t["q8"].data(), q8)
        assert (t["q6k"].fmt, t["q6k"].shape) == ("q6_k", (2, 256))
        np.testing.assert_array_equal(t["q6k"].data(), q6k)
        iq = t["iq2"]
        assert (iq.fmt, iq.ggml_type, iq.type_name, iq.shape) == (None, T.IQ2_XS, "IQ2_XS", (3, 256))
        np.testing.assert_array_equal(iq.data(), iq2)  # raw bytes, for the loader to refuse by name
        assert t["vec"].shape == (8,)
        np.testing.assert_array_equal(t["vec"].data(), vec)
        view = t["f32"].data()
        assert not view.flags.writeable
    # a view taken before close stays valid; new views are refused
    np.testing.assert_array_equal(view, f32)
    with pytest.raises(ValueError, match="closed"):
        g.tensors["f32"].data()


def test_custom_alignment_and_no_tensors(tmp_path: Path) -> None:
    kvs = [kv_str("general.architecture", "llama"), kv_u32("general.alignment", 64)]
    infos = [tinfo("a", [4], T.F32, 0), tinfo("b", [4], T.F32, 64)]
    data = np.ones(4, np.float32).tobytes() + b"\0" * 48 + np.full(4, 2, np.float32).tobytes()
    g = read_gguf(write(tmp_path, make(kvs, infos, data, alignment=64)))
    assert g.alignment == 64 and g.data_offset % 64 == 0
    assert g.tensors["b"].data().tolist() == [2, 2, 2, 2]
    g.close()
    g.close()  # idempotent
    g = read_gguf(write(tmp_path, make(kvs[:1], []), "vocab.gguf"))
    assert g.tensors == {} and g.metadata == {"general.architecture": "llama"}


@needs_smollm2
def test_smollm2() -> None:
    assert SMOLLM2 is not None
    size = SMOLLM2.stat().st_size
    with read_gguf(SMOLLM2) as g:
        m = g.metadata
        assert g.version == 3 and m["general.architecture"] == "llama"
        assert m["llama.block_count"] == 30 and m["llama.embedding_length"] == 576
        tokens = m["tokenizer.ggml.tokens"]
        assert isinstance(tokens, list) and len(tokens) == 49152 and tokens[:2] == ["<|endoftext|>", "<|im_start|>"]
        assert all(isinstance(x, str) for x in tokens)
        assert len(m["tokenizer.ggml.merges"]) == 48900 and len(m["tokenizer.ggml.token_type"]) == 49152
        assert isinstance(m["tokenizer.chat_template"], str) and m["tokenizer.ggml.add_bos_token"] is False
        assert len(g.tensors) == 272
        emb = g.tensors["token_embd.weight"]
        assert (emb.fmt, emb.type_name, emb.shape) == ("q8_0", "Q8_0", (49152, 576))
        assert emb.data().shape == (49152, 612)
        # reading the header reads no weights: the tensors are views of the file's mapping
        base = emb.data()
        while isinstance(base, (np.ndarray, memoryview)):
            base = base.base if isinstance(base, np.ndarray) else base.obj
        assert isinstance(base, mmap.mmap)
        up = g.tensors["blk.0.ffn_up.weight"]
        assert (up.fmt, up.shape, up.data().shape) == ("q4_1", (1536, 576), (1536, 18 * 20))
        norm = g.tensors["output_norm.weight"].data()
        assert norm.shape == (576,) and np.isfinite(norm).all()
        for t in g.tensors.values():
            assert t.offset + t.nbytes <= size and t.data().nbytes == t.nbytes


# --- bad files: one test per problem, message content checked --------------------------------


def test_missing_directory_empty(tmp_path: Path) -> None:
    expect_error(tmp_path / "nope.gguf", "no such file")
    expect_error(tmp_path, "is a directory")
    expect_error(write(tmp_path, b""), "empty", "fetch it again")


@pytest.mark.parametrize(("content", "fragment"), [
    (b"PK\x03\x04" + b"\0" * 40, "not a GGUF file"),
    (b"<!DOCTYPE html><html>404</html>", "HTML"),
    (b"version https://git-lfs.github.com/spec/v1\noid sha256:00\n", "git lfs pull"),
    (struct.pack("<Q", 2) + b'{}', "safetensors"),
    (b"GGU", "not a GGUF file"),
])
def test_wrong_magic(tmp_path: Path, content: bytes, fragment: str) -> None:
    expect_error(write(tmp_path, content), fragment)


def test_versions(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    for v in (1, 4, 0xFFFF):
        expect_error(write(tmp_path, make(kvs, infos, data, version=v)), f"version {v} is not supported")
    assert read_gguf(write(tmp_path, make(kvs, infos, data, version=2))).version == 2
    p = tmp_path / "be.gguf"
    w = gguf.GGUFWriter(p, "llama", endianess=gguf.GGUFEndian.BIG)
    w.add_tensor("a", np.ones(4, np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    expect_error(p, "big-endian")


def test_truncated_everywhere(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    full = make(kvs, infos, data)
    meta_end = 24 + len(b"".join(kvs))
    for cut in range(1, len(full)):
        msg = expect_error(write(tmp_path, full[:cut]), "truncated" if cut >= 4 else "not a GGUF file")
        if cut >= 4:
            assert "fetch it again" in msg
        if 24 < cut < meta_end:
            assert "metadata" in msg
        elif meta_end < cut < len(full) - len(data):
            assert "tensor" in msg
    # the data section cut short: the message names the tensor and both sizes
    msg = expect_error(write(tmp_path, full[:-1]),
                       f"truncated: tensor 'b' data ends at byte {len(full)} but the file has {len(full) - 1} bytes",
                       "fetch it again")
    assert msg.count(";") == 1


def test_huge_counts(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    expect_error(write(tmp_path, make(kvs, infos, data, n_kv=1 << 62)), "declares 4611686018427387904 metadata entries")
    expect_error(write(tmp_path, make(kvs, infos, data, n_tensors=1 << 40)), "declares 1099511627776 tensors")
    expect_error(write(tmp_path, make(kvs, infos, data, n_tensors=2**64 - 1)), "tensors but only")
    # a count that fits the bound but not the actual entries
    expect_error(write(tmp_path, make(kvs, infos, data, n_kv=5)), "truncated")


def test_huge_lengths(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    bad_key = struct.pack("<Q", 1 << 63) + b"x"
    expect_error(write(tmp_path, make([bad_key, *kvs[1:]], infos, data, n_kv=2)), "truncated", "metadata key 1 of 2")
    bad_str = kv("s", V.STRING, struct.pack("<Q", 2**64 - 1) + b"abc")
    expect_error(write(tmp_path, make([*kvs, bad_str], infos, data)), "truncated", "metadata 's'")
    for itype in (V.UINT8, V.UINT64, V.STRING, V.ARRAY):
        bad_arr = kv("arr", V.ARRAY, struct.pack("<IQ", itype, 1 << 61))
        expect_error(write(tmp_path, make([*kvs, bad_arr], infos, data)), "metadata 'arr'", "claims")
    bad_name = struct.pack("<Q", 1 << 50)
    expect_error(write(tmp_path, make(kvs, [infos[0], bad_name], data)), "truncated", "name of tensor 2 of 2")


def test_invalid_types(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    expect_error(write(tmp_path, make([*kvs, kv("x", 13, b"\0" * 8)], infos, data)), "metadata 'x'", "invalid value type 13")
    expect_error(write(tmp_path, make([*kvs, kv("x", 2**32 - 1, b"")], infos, data)), "invalid value type")
    bad_arr = kv("x", V.ARRAY, struct.pack("<IQ", 77, 1) + b"\0" * 8)
    expect_error(write(tmp_path, make([*kvs, bad_arr], infos, data)), "invalid array item type 77")
    expect_error(write(tmp_path, make([*kvs, kv("b", V.BOOL, b"\x02")], infos, data)), "invalid bool")
    bad_bools = kv("b", V.ARRAY, struct.pack("<IQ", V.BOOL, 3) + b"\x00\x01\x05")
    expect_error(write(tmp_path, make([*kvs, bad_bools], infos, data)), "invalid bool")
    for t in (31, 99, 2**32 - 1):
        expect_error(write(tmp_path, make(kvs, [tinfo("a", [4, 2], t, 0)], data)), "tensor 'a'", f"unknown ggml type {t}")


def test_nested_arrays(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    inner = struct.pack("<IQ", V.INT32, 2) + struct.pack("<ii", 7, 8)
    nested = kv("n", V.ARRAY, struct.pack("<IQ", V.ARRAY, 2) + inner + inner)
    g = read_gguf(write(tmp_path, make([*kvs, nested], infos, data)))
    assert [list(x) for x in g.metadata["n"]] == [[7, 8], [7, 8]]
    deep = struct.pack("<IQ", V.UINT8, 0)
    for _ in range(100):
        deep = struct.pack("<IQ", V.ARRAY, 1) + deep
    expect_error(write(tmp_path, make([*kvs, kv("d", V.ARRAY, deep)], infos, data)), "nested deeper")


def test_duplicates_and_names(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    expect_error(write(tmp_path, make([*kvs, kvs[0]], infos, data)), "duplicate metadata key 'general.architecture'")
    dup = [infos[0], tinfo("a", [32, 2], T.Q4_0, 32)]
    expect_error(write(tmp_path, make(kvs, dup, data)), "duplicate tensor name 'a'")
    expect_error(write(tmp_path, make([kv(b"\xff\xfe", V.UINT8, b"\0"), *kvs], infos, data)), "not valid UTF-8")
    long = "x\n" * 50_000  # names from a corrupt file can be huge: messages stay short and on one line
    msg = expect_error(write(tmp_path, make(kvs, [tinfo(long, [4], T.F32, 0)] * 2, data)), "duplicate tensor name 'x\\nx")
    assert len(msg) < len(str(tmp_path)) + 200
    expect_error(write(tmp_path, make(kvs, [tinfo(b"\xc3(", [4], T.F32, 0)], data)), "not valid UTF-8")
    # invalid UTF-8 in a string *value* keeps its bytes (tokens can be odd), it is not an error
    g = read_gguf(write(tmp_path, make([*kvs, kv_str("v", "x"), kv("w", V.STRING, gstr(b"\xff"))], infos, data)))
    assert g.metadata["w"].encode("utf-8", "surrogateescape") == b"\xff"


def test_dims_and_shapes(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    for n in (0, 5, 2**32 - 1):
        raw = gstr("a") + struct.pack("<I", n) + struct.pack("<Q", 4) * min(n, 5) + struct.pack("<IQ", 0, 0)
        expect_error(write(tmp_path, make(kvs, [raw], data)), "tensor 'a'", f"has {n} dimensions (must be 1 to 4)")
    expect_error(write(tmp_path, make(kvs, [tinfo("a", [2**32, 2**32, 2**32], T.F32, 0)], data)), "overflows")
    expect_error(write(tmp_path, make(kvs, [tinfo("a", [2**63, 0], T.F32, 0)], data)), "overflows")
    expect_error(write(tmp_path, make(kvs, [tinfo("a", [1 << 20, 1 << 20], T.F32, 0)], data)),
                 "truncated: tensor 'a' data ends at byte")
    expect_error(write(tmp_path, make(kvs, [tinfo("a", [4], T.F32, 2**64 - 32)], data)), "truncated: tensor 'a'")
    expect_error(write(tmp_path, make(kvs, [tinfo("q", [48, 2], T.Q4_0, 0)], data)),
                 "tensor 'q' has rows of 48 values, not a multiple of the Q4_0 block size 32")
    expect_error(write(tmp_path, make(kvs, [tinfo("k", [128], T.Q4_K, 0)], data)), "Q4_K block size 256")
    expect_error(write(tmp_path, make(kvs, [infos[0], tinfo("b", [32, 2], T.Q4_0, 40)], data)),
                 "tensor 'b' has data offset 40, not a multiple of the alignment 32")
    # an empty tensor is legal in ggml and gives an empty view
    g = read_gguf(write(tmp_path, make(kvs, [tinfo("e", [0, 3], T.F32, 0)], b"")))
    assert g.tensors["e"].shape == (3, 0) and g.tensors["e"].data().shape == (3, 0)


def test_bad_alignment(tmp_path: Path) -> None:
    kvs, infos, data = good_parts()
    for a in (0, 3, 48):
        expect_error(write(tmp_path, make([*kvs, kv_u32("general.alignment", a)], infos, data)), "general.alignment")
    expect_error(write(tmp_path, make([*kvs, kv_str("general.alignment", "32")], infos, data)), "general.alignment")


# --- fuzzing --------------------------------------------------------------------------------


def check_read(path: Path, size: int) -> bool:
    """read_gguf either raises ModelFileError, or gives views inside the file. -> read ok"""
    try:
        g = read_gguf(path)
    except ModelFileError as e:
        assert "\n" not in str(e) and str(e).startswith(str(path))
        ok = False
    else:
        ok = True
        with g:
            assert isinstance(g.metadata, dict)
            for t in g.tensors.values():
                assert 0 <= t.offset and t.offset + t.nbytes <= size
                v = t.data()
                assert v.nbytes == t.nbytes
                if v.size:  # touch both ends: an out-of-file view would fault here
                    flat = v.reshape(-1)
                    _ = flat[0], flat[-1]
    return ok


@pytest.fixture(scope="module")
def smollm2_head() -> tuple[bytes, int, int, int]:
    """(SmolLM2's bytes up to 64 KiB into the tensor data, where its tensor infos start,
    where its data starts, its full size)."""
    smollm2_or_skip()
    with read_gguf(SMOLLM2) as g:
        data_offset = g.data_offset
        first = next(iter(g.tensors))
    size = SMOLLM2.stat().st_size
    with open(SMOLLM2, "rb") as f:
        head = f.read(data_offset + (64 << 10))
    infos_start = head.rfind(gstr(first), 0, data_offset)
    assert 0 < infos_start < data_offset
    return head, infos_start, data_offset, size


def test_fuzz_truncated_smollm2(tmp_path: Path, smollm2_head: tuple[bytes, int, int, int]) -> None:
    head, infos_start, data_offset, _ = smollm2_head
    rng = random.Random(1)
    cuts = {*range(0, 80), infos_start - 1, infos_start, data_offset - 1, data_offset, data_offset + 1, len(head)}
    cuts |= {rng.randrange(80, 4096) for _ in range(30)}  # small metadata
    cuts |= {rng.randrange(4096, infos_start) for _ in range(15)}  # vocabulary and merges
    cuts |= {rng.randrange(infos_start, data_offset) for _ in range(25)}  # tensor infos, padding
    cuts |= {rng.randrange(data_offset, len(head)) for _ in range(5)}  # tensor data
    for cut in sorted(cuts):
        p = tmp_path / f"cut{cut}.gguf"
        p.write_bytes(head[:cut])
        # no cut of this prefix holds all the weights: every one is an error
        if cut == 0:
            expect_error(p, "empty")
        elif cut < 4:
            expect_error(p, "not a GGUF")
        elif cut < 24:
            expect_error(p, "truncated", "fetch it again")
        elif cut < infos_start:
            expect_error(p, "truncated", "metadata", "fetch it again")
        else:
            expect_error(p, "truncated", "tensor", "fetch it again")
        p.unlink()


def _mutated_copy(path: Path, head: bytes, size: int, positions: list[int], rng: random.Random) -> None:
    buf = bytearray(head)
    for pos in positions:
        if rng.random() < 0.7:
            buf[pos] ^= 1 << rng.randrange(8)
        else:
            buf[pos] = rng.randrange(256)
    with open(path, "wb") as f:
        f.write(buf)
        f.truncate(size)  # sparse: the full size without writing the 98 MB of weights


@pytest.mark.slow  # ~20 s on two small cores: 240 parses of a 49k-token vocabulary
def test_fuzz_bitflips_smollm2(tmp_path: Path, smollm2_head: tuple[bytes, int, int, int]) -> None:
    head, infos_start, data_offset, size = smollm2_head
    rng = random.Random(2)
    # The dense structure (header, scalar metadata, tensor infos) gets most flips; the vocabulary
    # strings, where a flip usually only changes a token, get some.
    regions = [(0, 32), (0, 1100), (0, data_offset), (infos_start, data_offset)]
    outcomes = {"ok": 0, "error": 0}
    for i in range(240):
        lo, hi = regions[i % len(regions)]
        positions = [rng.randrange(lo, hi) for _ in range(rng.choice((1, 1, 2, 4)))]
        p = tmp_path / f"flip{i}.gguf"
        _mutated_copy(p, head, size, positions, rng)
        outcomes["ok" if check_read(p, size) else "error"] += 1
        p.unlink()
    print(outcomes)
    assert outcomes["ok"] > 20 and outcomes["error"] > 20, outcomes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_small_file_hypothesis(tmp_path: Path, data: st.DataObject) -> None:
    kvs, infos, tensor_data = good_parts()
    arr = kv("arr", V.ARRAY, struct.pack("<IQ", V.STRING, 2) + gstr("ab") + gstr("c"))
    good = bytearray(make([*kvs, arr, kv_u32("general.alignment", 32)], infos, tensor_data))
    n = data.draw(st.integers(1, 6))
    for _ in range(n):
        pos = data.draw(st.integers(0, len(good) - 1))
        good[pos] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(1, len(good)))
    p = tmp_path / "h.gguf"
    p.unlink(missing_ok=True)
    p.write_bytes(bytes(good[:cut]))
    check_read(p, cut)

