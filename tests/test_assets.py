from pathlib import Path

import pytest

from smallfleet import assets
from smallfleet.errors import ModelUnavailableError


def test_verify_detects_corruption_and_caches_success(tmp_path: Path) -> None:
    f = tmp_path / "m.gguf"
    f.write_bytes(b"hello")
    good = assets.sha256_file(f)
    assets.verify_file(f, good)
    assert assets.is_verified(f, good)
    f.write_bytes(b"hellO")  # same size, new content and mtime: the stamp no longer matches
    with pytest.raises(ModelUnavailableError, match="corrupted"):
        assets.verify_file(f, good)


def test_missing_package_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = assets.PackagedModel("nope", "nope", ("no_such_module_xyz",), "*.bin", None, ("no-such-pkg==1",), "1 MB")
    with pytest.raises(ModelUnavailableError) as e:
        assets.find_parts(fake)
    assert "pip install no-such-pkg==1" in (e.value.hint or "")


def test_assemble_small_model_and_status(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SMALLFLEET_CACHE_DIR", str(tmp_path))
    path = assets.ensure_packaged("qwen2.5-coder-0.5b")
    assert path.parent == tmp_path and path.stat().st_size > 400_000_000
    st = assets.status("qwen2.5-coder-0.5b")
    assert st.installed and st.verified
    with path.open("r+b") as fh:  # flip one byte: verification must fail on the next check
        fh.seek(1000)
        b = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([b[0] ^ 0xFF]))
    with pytest.raises(ModelUnavailableError, match="corrupted"):
        assets.verify_file(path, assets.PACKAGED_MODELS["qwen2.5-coder-0.5b"].sha256)
