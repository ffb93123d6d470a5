"""Models already on the machine, found by name: the Hugging Face hub cache and Ollama's store,
laid out in temporary directories as huggingface_hub and Ollama lay them out, with real model
files (the SmolLM2 GGUF, linked; a tiny safetensors model)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import pytest

from model_files import smollm2_or_skip
from webgpu_llm import environment
from webgpu_llm.cli.main import main
from webgpu_llm.errors import ModelFileError, UserError
from webgpu_llm.models.discovery import ModelSearch, list_models, locate

SMOL_REPO = "HuggingFaceTB/SmolLM2-135M-Instruct-GGUF"
TINY_REPO = "TestOrg/Tiny-Llama"


def hf_repo(hub: Path, repo_id: str, files: dict[str, Path], rev: str = "a" * 40, main: bool = True) -> Path:
    """A repository in huggingface_hub's cache layout: blobs/ (named by hash), snapshots/REV/ of
    relative links to them, refs/main. Blobs link to the real files here instead of copying."""
    repo = hub / ("models--" + repo_id.replace("/", "--"))
    snap = repo / "snapshots" / rev
    for rel, src in files.items():
        blob = repo / "blobs" / hashlib.sha256(f"{rev}/{rel}".encode()).hexdigest()
        blob.parent.mkdir(parents=True, exist_ok=True)
        if not blob.exists():
            blob.symlink_to(src.resolve())
        link = snap / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        link.symlink_to(os.path.relpath(blob, link.parent))
    if main:
        (repo / "refs").mkdir(exist_ok=True)
        (repo / "refs" / "main").write_text(rev)
    return snap


def ollama_model(root: Path, name: str, tag: str, gguf: Path, host: str = "registry.ollama.ai",
                 namespace: str = "library") -> Path:
    """A model in Ollama's store: manifests/HOST/NAMESPACE/NAME/TAG naming blobs/sha256-<digest>."""
    digest = hashlib.sha256(gguf.read_bytes()).hexdigest()
    blob = root / "blobs" / f"sha256-{digest}"
    blob.parent.mkdir(parents=True, exist_ok=True)
    if not blob.exists():
        blob.symlink_to(gguf.resolve())
    params = root / "blobs" / ("sha256-" + "1" * 64)
    params.write_text('{"stop": ["<|im_end|>"]}')
    manifest = root / "manifests" / host / namespace / name / tag
    manifest.parent.mkdir(parents=True, exist_ok=True)
    manifest.write_text(json.dumps({
        "schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
        "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "digest": "sha256:" + "2" * 64,
                   "size": 10},
        "layers": [
            {"mediaType": "application/vnd.ollama.image.model", "digest": f"sha256:{digest}",
             "size": gguf.stat().st_size},
            {"mediaType": "application/vnd.ollama.image.params", "digest": "sha256:" + "1" * 64, "size": 24},
        ]}))
    return blob


@pytest.fixture(scope="module")
def smollm2() -> Path:
    return smollm2_or_skip()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("transformers")
    from reference_models import make_tiny_llama

    return make_tiny_llama(tmp_path_factory.mktemp("tiny"), seed=3)


@pytest.fixture
def stores(tmp_path: Path, smollm2: Path, tiny: Path) -> ModelSearch:
    """A hub cache with a safetensors repository and a two-GGUF repository, and an Ollama store
    with SmolLM2 under two names."""
    hub, ollama = tmp_path / "hf" / "hub", tmp_path / "ollama" / "models"
    hf_repo(hub, TINY_REPO, {f.name: f for f in tiny.iterdir() if f.is_file()})
    hf_repo(hub, SMOL_REPO, {"SmolLM2-135M-Instruct.Q4_1.gguf": smollm2,
                             "extra/SmolLM2-135M-Instruct-Q8_0.gguf": smollm2})
    ollama_model(ollama, "smollm2", "135m", smollm2)
    ollama_model(ollama, "smol", "latest", smollm2, namespace="someone")
    return ModelSearch(hf_hub=hub, ollama=(ollama,))


def test_where_the_stores_are() -> None:
    home = {"HOME": "/home/u"}
    assert environment.hf_hub_cache(home) == Path("/home/u/.cache/huggingface/hub")
    assert environment.hf_hub_cache({**home, "XDG_CACHE_HOME": "/c"}) == Path("/c/huggingface/hub")
    assert environment.hf_hub_cache({**home, "HF_HOME": "/h"}) == Path("/h/hub")
    assert environment.hf_hub_cache({**home, "HF_HOME": "/h", "HF_HUB_CACHE": "/x"}) == Path("/x")
    assert environment.ollama_models(home)[0] == Path("/home/u/.ollama/models")
    assert environment.ollama_models({**home, "OLLAMA_MODELS": "/o"}) == (Path("/o"),)
    s = environment.model_search({**home, "HF_HUB_CACHE": "/x", "OLLAMA_MODELS": "/o"})
    assert s == ModelSearch(Path("/x"), (Path("/o"),))


def test_hugging_face_ids(stores: ModelSearch) -> None:
    hub = stores.hf_hub
    assert hub is not None
    snap = hub / "models--TestOrg--Tiny-Llama" / "snapshots" / ("a" * 40)
    assert locate(TINY_REPO, stores).path == snap
    assert locate(TINY_REPO.lower(), stores).path == snap  # hub ids are not case-sensitive
    smol = hub / "models--HuggingFaceTB--SmolLM2-135M-Instruct-GGUF" / "snapshots" / ("a" * 40)
    with pytest.raises(UserError, match=r"has 2 GGUF files .*:QUANT"):
        locate(SMOL_REPO, stores)
    assert locate(f"{SMOL_REPO}:q4_1", stores).path == smol / "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert locate(f"{SMOL_REPO}:Q8_0", stores).path == smol / "extra" / "SmolLM2-135M-Instruct-Q8_0.gguf"
    assert locate(f"{SMOL_REPO}:SmolLM2-135M-Instruct.Q4_1.gguf", stores).path.name == "SmolLM2-135M-Instruct.Q4_1.gguf"
    assert locate(f"hf.co/{SMOL_REPO}:Q8_0", stores).path.name == "SmolLM2-135M-Instruct-Q8_0.gguf"
    with pytest.raises(UserError, match=r"no GGUF file matching 'Q5_K'.*Q4_1\.gguf"):
        locate(f"{SMOL_REPO}:Q5_K", stores)
    with pytest.raises(UserError, match="matches 2 GGUF files"):
        locate(f"{SMOL_REPO}:instruct", stores)


def test_refs_main_picks_the_snapshot(tmp_path: Path, smollm2: Path) -> None:
    hub = tmp_path / "hub"
    hf_repo(hub, "o/m", {"old-Q4_1.gguf": smollm2}, rev="1" * 40)
    hf_repo(hub, "o/m", {"new-Q4_1.gguf": smollm2}, rev="2" * 40)
    (hub / "models--o--m" / "refs" / "main").write_text("1" * 40)
    assert locate("o/m", ModelSearch(hub)).path.name == "old-Q4_1.gguf"
    shutil.rmtree(hub / "models--o--m" / "refs")  # no ref: the newest snapshot
    os.utime(hub / "models--o--m" / "snapshots" / ("2" * 40), (2e9, 2e9))
    assert locate("o/m", ModelSearch(hub)).path.name == "new-Q4_1.gguf"


def test_ollama_names(stores: ModelSearch) -> None:
    blob = locate("smollm2:135m", stores).path
    assert blob.parent.name == "blobs" and blob.name.startswith("sha256-") and blob.read_bytes()[:4] == b"GGUF"
    assert locate("library/smollm2:135m", stores).path == blob
    assert locate("registry.ollama.ai/library/smollm2:135m", stores).path == blob
    assert locate("someone/smol", stores).path == blob  # tag latest
    with pytest.raises(UserError, match="no model of that name"):
        locate("smollm2", stores)  # no :latest
    assert locate("smollm2:135m", stores).source == "ollama"


def test_broken_ollama_entries(tmp_path: Path, smollm2: Path) -> None:
    root = tmp_path / "models"
    blob = ollama_model(root, "m", "1", smollm2)
    s = ModelSearch(None, (root,))
    blob.unlink()
    with pytest.raises(ModelFileError, match=r"missing.*ollama pull"):
        locate("m:1", s)
    blob.write_bytes(b"\x00" * 64)
    with pytest.raises(ModelFileError, match="not a GGUF file"):
        locate("m:1", s)
    (root / "manifests" / "registry.ollama.ai" / "library" / "m" / "1").write_text("{not json")
    with pytest.raises(ModelFileError, match="not an Ollama manifest"):
        locate("m:1", s)


def test_unknown_names_say_where_they_were_looked_for(stores: ModelSearch) -> None:
    with pytest.raises(UserError) as e:
        locate("nobody/nothing:q4", stores)
    msg = str(e.value)
    assert "\n" not in msg and str(stores.hf_hub) in msg and str(stores.ollama[0]) in msg and "webgpu-llm list" in msg
    with pytest.raises(UserError, match="no such file or directory"):
        locate("./not/here.gguf", stores)


def test_list_models(stores: ModelSearch) -> None:
    found = {m.name: m for m in list_models(stores)}
    assert set(found) == {TINY_REPO, f"{SMOL_REPO}:Q4_1", f"{SMOL_REPO}:Q8_0", "smollm2:135m", "someone/smol:latest"}
    for name, m in found.items():  # every name listed finds what the list says
        assert locate(name, stores).path == m.path, name


@pytest.fixture
def env_stores(stores: ModelSearch, monkeypatch: pytest.MonkeyPatch) -> ModelSearch:
    monkeypatch.setenv("HF_HUB_CACHE", str(stores.hf_hub))
    monkeypatch.setenv("OLLAMA_MODELS", str(stores.ollama[0]))
    return stores


def test_list_command(env_stores: ModelSearch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    rows = {r["name"]: r for r in doc["models"]}
    assert rows[TINY_REPO]["architecture"] == "llama" and rows[TINY_REPO]["quant"] == "F32"
    assert rows[TINY_REPO]["size"] == sum(f.stat().st_size for f in Path(rows[TINY_REPO]["path"]).glob("*.safetensors"))
    smol = rows["smollm2:135m"]
    assert (smol["source"], smol["architecture"], smol["quant"]) == ("ollama", "llama", "Q4_1")
    assert smol["size"] == Path(smol["path"]).stat().st_size > 50_000_000
    assert rows[f"{SMOL_REPO}:Q8_0"]["source"] == "huggingface"
    assert doc["searched"] == {"huggingface": str(env_stores.hf_hub), "ollama": [str(env_stores.ollama[0])]}
    assert main(["list"]) == 0
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert lines[0].split() == ["NAME", "SOURCE", "ARCH", "QUANT", "SIZE", "PATH"]
    assert any(line.split()[:4] == ["smollm2:135m", "ollama", "llama", "Q4_1"] for line in lines)
    assert str(env_stores.hf_hub) in err


def test_generate_with_a_hub_id(env_stores: ModelSearch, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "-m", TINY_REPO, "--raw", "--max-tokens", "3", "-t", "0", "--json", "hello"])
    out, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out)
    assert r["model"] == str(locate(TINY_REPO, env_stores).path) and r["name"] == TINY_REPO
    assert 1 <= r["generated_tokens"] <= 3


def test_the_api_takes_names(stores: ModelSearch, wgpu_gpu: object) -> None:
    import webgpu_llm as wl

    llm = wl.load(TINY_REPO, search=stores, gpu=wgpu_gpu, ctx=32, progress=False)
    assert llm.source.path == locate(TINY_REPO, stores).path and llm.config.name == TINY_REPO
    assert len(llm.generate_text("hello", raw=True, max_tokens=2)) >= 0
    llm.close()


@pytest.mark.slow
def test_generate_with_an_ollama_name(env_stores: ModelSearch, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["generate", "-m", "smollm2:135m", "--max-tokens", "2", "-t", "0", "--json", "Hi"])
    out, err = capsys.readouterr()
    assert code == 0, err
    r = json.loads(out)
    assert r["model"] == str(locate("smollm2:135m", env_stores).path)
    assert r["name"] == "Smollm2 135M 8k Lc100K Mix1 Ep2"  # the file's general.name
    assert r["generated_tokens"] == 2


def test_unknown_name_on_the_command_line(env_stores: ModelSearch, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["generate", "-m", "qwen9:1b", "hi"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("error: qwen9:1b:") and str(env_stores.ollama[0]) in err
    assert "Traceback" not in err
