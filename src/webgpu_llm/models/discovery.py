"""Models already on this machine, found by name: the Hugging Face hub cache and Ollama's store.

`--model` takes a path, or a name that is looked up here (nothing is downloaded):

* a Hugging Face repository id, `ORG/NAME`, in the hub cache that `huggingface_hub` fills
  (`models--ORG--NAME/snapshots/<revision>/`, the revision `refs/main` names, else the newest
  snapshot): the snapshot directory when it holds config.json and .safetensors files, else its
  one .gguf file; `ORG/NAME:FILE.gguf` or `ORG/NAME:QUANT` (`:Q4_K_M`, any case) picks one of
  several GGUF files;
* an Ollama model, `NAME[:TAG]`, `NAMESPACE/NAME[:TAG]` or `HOST/NAMESPACE/NAME[:TAG]`
  (`smollm2:135m`, `library/qwen2.5:0.5b`, `hf.co/ORG/NAME:Q4_K_M`), from Ollama's manifests
  (`manifests/HOST/NAMESPACE/NAME/TAG`, JSON) whose model layer names a GGUF blob
  (`blobs/sha256-<digest>`).

Where to look (`ModelSearch`) comes from `environment.model_search()`; this module reads no
environment variable.
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ModelFileError, UserError

OLLAMA_HOST = "registry.ollama.ai"
OLLAMA_NAMESPACE = "library"
OLLAMA_MODEL_LAYER = "application/vnd.ollama.image.model"
GGUF_MAGIC = b"GGUF"

# what a model name can look like: [HOST/][NAMESPACE/]NAME[:TAG or :FILE.gguf or :QUANT]
_NAME_RE = re.compile(r"^[A-Za-z0-9][\w.\-]*(/[\w.\-]+){0,2}(:[\w.\-/]+)?$")
_HF_HOSTS = ("hf.co", "huggingface.co")


@dataclass(frozen=True)
class ModelSearch:
    """Where models already on the machine are looked for."""

    hf_hub: Path | None = None  # huggingface_hub's cache (holds models--ORG--NAME/)
    ollama: tuple[Path, ...] = ()  # Ollama model stores (each holds manifests/ and blobs/)

    def places(self, conj: str = "or") -> str:
        """The places searched, for messages."""
        where = []
        if self.hf_hub is not None:
            where.append(f"the Hugging Face cache ({self.hf_hub})")
        if self.ollama:
            where.append(f"Ollama's models ({', '.join(str(p) for p in self.ollama)})")
        return f" {conj} ".join(where) or "no model store"


@dataclass(frozen=True)
class Located:
    """A model found: the path to open and, for a name, the name it was found under."""

    path: Path
    name: str | None = None  # the name given (None for a path)
    source: str = "path"  # "path" | "huggingface" | "ollama" | "bundled"


@dataclass(frozen=True)
class FoundModel:
    """One model of `list_models`: the name `--model` takes and where its weights are."""

    name: str
    source: str  # "huggingface" | "ollama"
    path: Path  # a .gguf file, an Ollama blob (a GGUF file) or a safetensors directory
    kind: str  # "gguf" | "hf"


def looks_like_name(text: str) -> bool:
    return bool(_NAME_RE.match(text)) and not text.endswith(("/", ".safetensors"))


def locate(model: str, search: ModelSearch) -> Located:
    """The model a `--model` value names: an existing path, else a name in the stores of
    `search`. One-line `UserError` naming what was searched when there is none."""
    p = Path(model).expanduser()
    if p.exists():
        return Located(p)
    if not looks_like_name(model):
        raise UserError(f"{model}: no such file or directory (pass a .gguf file, a Hugging Face model "
                        "directory, or the name of a model in the Hugging Face cache or Ollama)")
    base, _, selector = model.partition(":")
    parts = base.split("/")
    problem: UserError | None = None
    hf_id = "/".join(parts[1:]) if len(parts) == 3 and parts[0].lower() in _HF_HOSTS else base
    if search.hf_hub is not None and hf_id.count("/") == 1:
        try:
            found = _hf_locate(search.hf_hub, hf_id, selector)
        except UserError as e:  # the repository is there but nothing in it fits: say so, unless Ollama has it
            problem, found = e, None
        if found is not None:
            return Located(found, model, "huggingface")
    found = _ollama_locate(search.ollama, parts, selector or "latest")
    if found is not None:
        return Located(found, model, "ollama")
    if problem is not None:
        raise problem
    raise UserError(f"{model}: no such file or directory, and no model of that name in {search.places()}; "
                    "`webgpu-llm list` shows the models found")


# -- the Hugging Face hub cache ----------------------------------------------------------------


def _hf_repo_dir(hub: Path, repo_id: str) -> Path | None:
    want = "models--" + repo_id.replace("/", "--")
    d = hub / want
    if d.is_dir():
        return d
    if not hub.is_dir():
        return None
    for other in hub.iterdir():  # hub ids are matched without regard to case, as the hub does
        if other.name.lower() == want.lower() and other.is_dir():
            return other
    return None


def _hf_snapshot(repo: Path) -> Path | None:
    """The snapshot `refs/main` names, else the most recent one."""
    ref = repo / "refs" / "main"
    if ref.is_file():
        snap = repo / "snapshots" / ref.read_text(encoding="utf-8", errors="replace").strip()
        if snap.is_dir():
            return snap
    snaps = [s for s in (repo / "snapshots").glob("*") if s.is_dir()]
    return max(snaps, key=lambda s: s.stat().st_mtime) if snaps else None


def _has_safetensors(d: Path) -> bool:
    return (d / "config.json").is_file() and any(f.is_file() for f in d.glob("*.safetensors"))


def _ggufs(d: Path) -> list[Path]:
    return sorted(f for f in d.rglob("*.gguf") if f.is_file())  # is_file: a snapshot's link to a blob that is there


def _labels(f: Path) -> set[str]:
    """The words of a GGUF file's name that can select it: `Model-7B-Q4_K_M` -> model, 7b, q4_k_m."""
    return {w.lower() for w in re.split(r"[-.]", f.name[: -len(".gguf")]) if w}


def _select(files: list[Path], selector: str, root: Path) -> list[Path]:
    s = selector.lower()
    if s.endswith(".gguf"):
        return [f for f in files if f.name.lower() == s or f.relative_to(root).as_posix().lower() == s]
    return [f for f in files if s in _labels(f)]


def _hf_locate(hub: Path, repo_id: str, selector: str) -> Path | None:
    repo = _hf_repo_dir(hub, repo_id)
    if repo is None:
        return None
    snap = _hf_snapshot(repo)
    if snap is None:
        raise UserError(f"{repo_id} is in the Hugging Face cache ({repo}) but has no snapshot: download it again")
    ggufs = _ggufs(snap)
    names = ", ".join(f.relative_to(snap).as_posix() for f in ggufs)
    if selector:
        picked = _select(ggufs, selector, snap)
        if len(picked) == 1:
            return picked[0]
        if picked:
            raise UserError(f"{repo_id}:{selector} matches {len(picked)} GGUF files ({', '.join(f.name for f in picked)}): "
                            f"name one, e.g. {repo_id}:{picked[0].name}")
        raise UserError(f"{repo_id} in the Hugging Face cache has no GGUF file matching {selector!r}"
                        + (f" (it has {names})" if ggufs else " (it has no .gguf files)"))
    if _has_safetensors(snap):
        return snap
    if len(ggufs) == 1:
        return ggufs[0]
    if ggufs:
        raise UserError(f"{repo_id} has {len(ggufs)} GGUF files ({names}): pick one with {repo_id}:QUANT "
                        f"or {repo_id}:FILE.gguf")
    raise UserError(f"{repo_id} is in the Hugging Face cache ({snap}) but holds no .gguf file and no "
                    "config.json with .safetensors files: download the weights")


def _hf_models(hub: Path) -> list[FoundModel]:
    out: list[FoundModel] = []
    if not hub.is_dir():
        return out
    for repo in sorted(hub.glob("models--*--*")):
        snap = _hf_snapshot(repo) if repo.is_dir() else None
        if snap is None:
            continue
        repo_id = repo.name[len("models--"):].replace("--", "/", 1)
        ggufs = _ggufs(snap)
        if _has_safetensors(snap):
            out.append(FoundModel(repo_id, "huggingface", snap, "hf"))
        for f in ggufs:
            if len(ggufs) == 1 and not _has_safetensors(snap):
                name = repo_id
            else:  # the shortest word of its name that picks it alone, else the file name
                words = sorted((w for w in _labels(f) if len(_select(ggufs, w, snap)) == 1), key=len)
                name = f"{repo_id}:{words[0].upper() if words else f.relative_to(snap).as_posix()}"
            out.append(FoundModel(name, "huggingface", f, "gguf"))
    return out


# -- Ollama ------------------------------------------------------------------------------------


def _ollama_parts(parts: list[str]) -> tuple[str, str, str] | None:
    if len(parts) == 1:
        return OLLAMA_HOST, OLLAMA_NAMESPACE, parts[0]
    if len(parts) == 2:
        return OLLAMA_HOST, parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    return None


def _ollama_blob(root: Path, manifest: Path) -> Path:
    """The GGUF blob an Ollama manifest names as its model layer."""
    try:
        doc = json.loads(manifest.read_text(encoding="utf-8"))
        layers = doc["layers"]
        digest = next(la["digest"] for la in layers if la.get("mediaType") == OLLAMA_MODEL_LAYER)
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ModelFileError(f"{manifest}: not an Ollama manifest ({type(e).__name__}: {e}); "
                             "pull the model again with `ollama pull`") from None
    except StopIteration:
        raise ModelFileError(f"{manifest}: the Ollama manifest has no model layer ({OLLAMA_MODEL_LAYER})") from None
    algo, _, hexdigest = str(digest).partition(":")
    for blob in (root / "blobs" / f"{algo}-{hexdigest}", root / "blobs" / f"{algo}:{hexdigest}"):
        if blob.is_file():
            with open(blob, "rb") as f:
                if f.read(4) != GGUF_MAGIC:
                    raise ModelFileError(f"{blob}: Ollama's model blob is not a GGUF file; only GGUF models can be loaded")
            return blob
    raise ModelFileError(f"{manifest}: its model blob {digest} is missing from {root / 'blobs'}; "
                         "pull the model again with `ollama pull`")


def _ollama_locate(roots: tuple[Path, ...], parts: list[str], tag: str) -> Path | None:
    where = _ollama_parts(parts)
    if where is None:
        return None
    for root in roots:
        for host, ns, name, t in ((*where, tag), tuple(x.lower() for x in (*where, tag))):
            manifest = root / "manifests" / host / ns / name / t
            if manifest.is_file():
                return _ollama_blob(root, manifest)
    return None


def _ollama_models(root: Path) -> list[FoundModel]:
    out: list[FoundModel] = []
    base = root / "manifests"
    if not base.is_dir():
        return out
    for manifest in sorted(base.glob("*/*/*/*")):
        if not manifest.is_file():
            continue
        host, ns, name, tag = manifest.relative_to(base).parts
        shown = (f"{name}:{tag}" if (host, ns) == (OLLAMA_HOST, OLLAMA_NAMESPACE)
                 else f"{ns}/{name}:{tag}" if host == OLLAMA_HOST else f"{host}/{ns}/{name}:{tag}")
        try:
            blob = _ollama_blob(root, manifest)
        except ModelFileError:
            continue  # not a model this engine can load (no GGUF layer, blob missing)
        out.append(FoundModel(shown, "ollama", blob, "gguf"))
    return out


# -- listing -----------------------------------------------------------------------------------


def list_models(search: ModelSearch) -> list[FoundModel]:
    """Every model found in the stores of `search` (the Hugging Face cache first, then Ollama)."""
    out = _hf_models(search.hf_hub) if search.hf_hub is not None else []
    for root in search.ollama:
        out += _ollama_models(root)
    return out


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(f.stat().st_size for f in path.glob("*.safetensors") if f.is_file())
    return path.stat().st_size


def _main_type(tensors: dict[str, Any]) -> str:
    """The type that holds most of the weights' bytes ("Q4_K", "BF16")."""
    c: Counter[str] = Counter()
    for t in tensors.values():
        c[str(t.type_name)] += int(t.nbytes)
    return c.most_common(1)[0][0] if c else "?"


def describe(path: Path) -> dict[str, Any]:
    """Architecture, quantization and size of a model file or directory (headers only)."""
    info: dict[str, Any] = {"architecture": "?", "quant": "?", "size": _size(path)}
    try:
        if path.is_dir():
            from .safetensors_dir import read_safetensors_dir

            with read_safetensors_dir(path) as st:
                info["architecture"] = str(st.config.get("model_type", "?"))
                info["quant"] = _main_type(st.tensors)
        else:
            from .gguf_file import read_gguf

            with read_gguf(path) as g:
                md = g.metadata
                info["architecture"] = str(md.get("general.architecture", "?"))
                info["quant"] = _file_type(md.get("general.file_type")) or _main_type(g.tensors)
    except ModelFileError as e:
        info["error"] = str(e)
    return info


def _file_type(value: Any) -> str | None:
    if value is None:
        return None
    try:
        from gguf import LlamaFileType

        name = LlamaFileType(int(value)).name
    except (ImportError, ValueError, TypeError):
        return None
    return name.removeprefix("MOSTLY_").removeprefix("ALL_")
