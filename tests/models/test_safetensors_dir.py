"""Safetensors model directories: single file, shards with an index, bf16, errors, fuzzing."""

from __future__ import annotations

import json
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.numpy import save_file

from webgpu_llm.errors import ModelFileError
from webgpu_llm.models.safetensors_dir import read_safetensors_dir

CONFIG = {"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": 8}


def raw_safetensors(path: Path, tensors: dict[str, tuple[str, list[int], bytes]],
                    header: dict[str, Any] | None = None) -> None:
    """Write a safetensors file by hand (for bf16, and for broken headers)."""
    h: dict[str, Any] = {"__metadata__": {"format": "pt"}}
    blob = b""
    for name, (dtype, shape, data) in tensors.items():
        h[name] = {"dtype": dtype, "shape": shape, "data_offsets": [len(blob), len(blob) + len(data)]}
        blob += data
    if header is not None:
        h = header
    hb = json.dumps(h).encode()
    hb += b" " * (-len(hb) % 8)
    path.write_bytes(struct.pack("<Q", len(hb)) + hb + blob)


def model_dir(tmp_path: Path, config: dict[str, Any] | None = CONFIG) -> Path:
    d = tmp_path / "model"
    d.mkdir(exist_ok=True)
    if config is not None:
        (d / "config.json").write_text(json.dumps(config))
    return d


def expect_error(path: Path, *fragments: str) -> str:
    with pytest.raises(ModelFileError) as ei:
        read_safetensors_dir(path)
    msg = str(ei.value)
    assert "\n" not in msg
    for f in fragments:
        assert f in msg, f"{f!r} not in {msg!r}"
    return msg


def test_single_file(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    d = model_dir(tmp_path)
    ts = {"w": rng.standard_normal((3, 8)).astype(np.float32),
          "h": rng.standard_normal((2, 3, 4)).astype(np.float16),
          "v": rng.standard_normal(5).astype(np.float32)}
    save_file(ts, d / "model.safetensors")
    with read_safetensors_dir(d) as m:
        assert m.path == d and m.config == CONFIG and m.files == [d / "model.safetensors"]
        assert set(m.tensors) == set(ts)
        w, h = m.tensors["w"], m.tensors["h"]
        assert (w.fmt, w.ggml_type, w.type_name, w.shape, w.nbytes) == ("f32", 0, "F32", (3, 8), 96)
        assert (h.fmt, h.ggml_type, h.shape) == ("f16", 1, (2, 3, 4))
        for name, a in ts.items():
            v = m.tensors[name].data()
            assert v.dtype == a.dtype and not v.flags.writeable
            np.testing.assert_array_equal(v, a)
        assert w.path == d / "model.safetensors"
        kept = w.data()
    np.testing.assert_array_equal(kept, ts["w"])  # a view outlives close()
    with pytest.raises(ValueError, match="closed"):
        m.tensors["w"].data()
    # the file itself, or config.json, names the same model
    assert set(read_safetensors_dir(d / "model.safetensors").tensors) == set(ts)
    assert set(read_safetensors_dir(d / "config.json").tensors) == set(ts)


def test_bf16_and_scalar(tmp_path: Path) -> None:
    d = model_dir(tmp_path)
    bits = np.array([[0x3F80, 0xC000], [0x0000, 0x7F80]], np.uint16)  # 1, -2, 0, inf
    raw_safetensors(d / "model.safetensors", {
        "b": ("BF16", [2, 2], bits.tobytes()),
        "s": ("F32", [], np.float32(3.5).tobytes()),
        "e": ("F16", [0, 4], b""),
    })
    m = read_safetensors_dir(d)
    b = m.tensors["b"]
    assert (b.fmt, b.ggml_type, b.type_name, b.shape) == ("bf16", 30, "BF16", (2, 2))
    np.testing.assert_array_equal(b.data(), bits)
    as_f32 = (b.data().astype(np.uint32) << 16).view(np.float32)
    assert as_f32.tolist() == [[1.0, -2.0], [0.0, float("inf")]]
    assert m.tensors["s"].shape == () and float(m.tensors["s"].data()) == 3.5
    assert m.tensors["e"].data().shape == (0, 4)


def test_sharded_with_index(tmp_path: Path) -> None:
    d = model_dir(tmp_path)
    a = {"l0.w": np.ones((2, 4), np.float32), "l0.b": np.zeros(4, np.float32)}
    b = {"l1.w": np.full((4, 4), 2, np.float16)}
    save_file(a, d / "model-00001-of-00002.safetensors")
    save_file(b, d / "model-00002-of-00002.safetensors")
    wm = {**dict.fromkeys(a, "model-00001-of-00002.safetensors"), **dict.fromkeys(b, "model-00002-of-00002.safetensors")}
    (d / "model.safetensors.index.json").write_text(json.dumps({"metadata": {"total_size": 1}, "weight_map": wm}))
    # a stray file not in the index is not read (with the index, only listed shards count)
    save_file({"l0.w": np.ones(1, np.float32)}, d / "consolidated.safetensors")
    m = read_safetensors_dir(d)
    assert set(m.tensors) == {"l0.w", "l0.b", "l1.w"} and len(m.files) == 2
    assert m.tensors["l1.w"].path == d / "model-00002-of-00002.safetensors"
    np.testing.assert_array_equal(m.tensors["l1.w"].data(), b["l1.w"])
    m.close()

    # without the index every *.safetensors file is read, so the stray one collides
    (d / "model.safetensors.index.json").unlink()
    expect_error(d, "tensor 'l0.w' is also in", "remove the extra files")
    (d / "consolidated.safetensors").unlink()
    assert len(read_safetensors_dir(d).tensors) == 3


def test_index_errors(tmp_path: Path) -> None:
    d = model_dir(tmp_path)
    save_file({"x": np.ones(2, np.float32)}, d / "s1.safetensors")
    index = d / "model.safetensors.index.json"
    index.write_text(json.dumps({"weight_map": {"x": "s1.safetensors", "y": "s2.safetensors"}}))
    expect_error(d, "s2.safetensors: shard listed in model.safetensors.index.json is missing", "fetch it again")
    index.write_text(json.dumps({"weight_map": {"x": "s1.safetensors", "y": "s1.safetensors"}}))
    expect_error(d, "tensor 'y' listed in model.safetensors.index.json is not in the file")
    index.write_text(json.dumps({"metadata": {}}))
    expect_error(d, "weight_map")
    index.write_text(json.dumps({"weight_map": {}}))
    expect_error(d, "weight_map")
    index.write_text(json.dumps({"weight_map": {"x": "../s1.safetensors"}}))
    expect_error(d, "is not a file name in the directory")
    index.write_text("{not json")
    expect_error(d, "model.safetensors.index.json is not valid JSON")


def test_directory_errors(tmp_path: Path) -> None:
    expect_error(tmp_path / "missing", "no such directory")
    (tmp_path / "notes.txt").write_text("hi")
    expect_error(tmp_path / "notes.txt", "not a model directory")
    d = model_dir(tmp_path, config=None)
    save_file({"x": np.ones(2, np.float32)}, d / "model.safetensors")
    expect_error(d, "no config.json", "download it too")
    (d / "config.json").write_text('{"a": 1,')
    expect_error(d, "config.json is not valid JSON")
    (d / "config.json").write_text("[1, 2]")
    expect_error(d, "config.json must hold a JSON object")
    (d / "config.json").write_text('{"a": 1, "a": 2}')
    expect_error(d, "duplicate key 'a'")
    (d / "config.json").write_bytes(b'{"a": "\xff"}')
    expect_error(d, "not UTF-8")
    (d / "config.json").write_text(json.dumps(CONFIG))
    (d / "model.safetensors").unlink()
    expect_error(d, "no .safetensors files", "download the model's .safetensors files")
    (d / "pytorch_model.bin").write_bytes(b"x")
    expect_error(d, "PyTorch .bin")
    (d / "m.gguf").write_bytes(b"GGUF")
    expect_error(d, "pass that file instead")


def test_file_errors(tmp_path: Path) -> None:
    d = model_dir(tmp_path)
    f = d / "model.safetensors"
    ok = {"w": ("F32", [2, 3], np.arange(6, dtype=np.float32).tobytes()),
          "v": ("F16", [3], np.ones(3, np.float16).tobytes())}
    raw_safetensors(f, ok)
    good = f.read_bytes()
    assert read_safetensors_dir(d).tensors["w"].data().tolist() == [[0, 1, 2], [3, 4, 5]]

    f.write_bytes(good[:-1])  # tensor data cut short
    msg = expect_error(f, "truncated: tensor 'v' data ends at byte", f"but the file has {len(good) - 1} bytes",
                       "fetch it again")
    assert msg.startswith(str(f))
    f.write_bytes(good[:20])
    expect_error(f, "truncated: the header ends at byte")
    f.write_bytes(good[:5])
    expect_error(f, "truncated: 5 bytes, too short")
    f.write_bytes(struct.pack("<Q", 1 << 60) + b"{}")
    expect_error(f, "header length", "implausible")
    f.write_bytes(struct.pack("<Q", 4) + b"{[}]")
    expect_error(f, "header is not valid JSON")
    f.write_bytes(struct.pack("<Q", 2) + b"[]")
    expect_error(f, "not a safetensors file")
    f.write_bytes(b"GGUF" + b"\3\0\0\0" + b"\0" * 16)
    expect_error(f, "it is a GGUF file")

    raw_safetensors(f, {"q": ("I32", [2], b"\0" * 8)})
    expect_error(f, "tensor 'q' has dtype 'I32', which is not supported", "F32, F16, BF16")
    # BERT checkpoints' integer position ids are an index buffer, not a weight: left out
    raw_safetensors(f, {**ok, "embeddings.position_ids": ("I64", [1, 2], b"\0" * 16)})
    assert sorted(read_safetensors_dir(d).tensors) == ["v", "w"]
    raw_safetensors(f, {"embeddings.position_ids": ("F8_E4M3", [2], b"\0" * 2)})
    expect_error(f, "dtype 'F8_E4M3'")
    raw_safetensors(f, {"q": ("F8_E4M3", [2], b"\0" * 2)})
    expect_error(f, "dtype 'F8_E4M3'")

    def header(**info: Any) -> dict[str, Any]:
        base = {"dtype": "F32", "shape": [2, 3], "data_offsets": [0, 24]}
        return {"w": {**base, **info}}

    blob = {"w": ("F32", [2, 3], b"\0" * 24)}
    for bad_shape in ([-1, 3], [2, "3"], [True, 3], "2x3", [2**40, 2**40]):
        raw_safetensors(f, blob, header(shape=bad_shape))
        expect_error(f, "tensor 'w'", "shape")
    for bad_offs in ([0], [24, 0], [0, -24], "0-24", [0, 24.0]):
        raw_safetensors(f, blob, header(data_offsets=bad_offs))
        expect_error(f, "tensor 'w' has invalid data_offsets")
    raw_safetensors(f, blob, header(data_offsets=[0, 20]))
    expect_error(f, "needs 24 bytes but its data_offsets span 20")
    raw_safetensors(f, blob, header(data_offsets=[8, 32]))  # out of bounds of the data
    expect_error(f, "truncated: tensor 'w' data ends at byte")
    raw_safetensors(f, blob, header(shape=[0, 2**70], data_offsets=[0, 0]))
    expect_error(f, "overflows")
    raw_safetensors(f, blob, {"w": [1, 2]})
    expect_error(f, "tensor 'w' has no dtype/shape/data_offsets")
    raw_safetensors(f, blob, {"w": {"shape": [1], "data_offsets": [0, 4]}})
    expect_error(f, "tensor 'w' has no dtype")
    hb = b'{"w": {"dtype": "F32", "shape": [1], "data_offsets": [0, 4]}, "w": {}}'
    f.write_bytes(struct.pack("<Q", len(hb)) + hb + b"\0" * 4)
    expect_error(f, "duplicate key 'w'")


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz(tmp_path: Path, data: st.DataObject) -> None:
    d = model_dir(tmp_path)
    f = d / "model.safetensors"
    raw_safetensors(f, {"w": ("F32", [2, 3], b"\1" * 24), "b": ("BF16", [4], b"\2" * 8)})
    buf = bytearray(f.read_bytes())
    for _ in range(data.draw(st.integers(1, 4))):
        buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(buf)))
    f.unlink()
    f.write_bytes(bytes(buf[:cut]))
    size = len(buf[:cut])
    try:
        m = read_safetensors_dir(d)
    except ModelFileError as e:
        assert "\n" not in str(e)
        return
    with m:
        for t in m.tensors.values():
            assert t.offset + t.nbytes <= size
            assert t.data().nbytes == t.nbytes
