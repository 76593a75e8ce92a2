"""The gateway's surface as a new user meets it (#20): unknown paths, one model, embeddings, CORS, HEAD."""

from __future__ import annotations

import base64
import struct

import httpx
import numpy as np
from openai import NotFoundError, OpenAI


def test_unknown_paths_are_404_in_openais_shape_whatever_the_method(scripted_gateway_shared) -> None:
    gw = scripted_gateway_shared
    for method in ("GET", "POST", "PUT", "DELETE"):
        r = httpx.request(method, gw.base + "/v1/no/such/thing", json={})
        assert r.status_code == 404, method
        err = r.json()["error"]
        assert err["type"] == "invalid_request_error" and err["code"] == "not_found" and "/v1/models" in err["message"]


def test_one_model_by_id(scripted_gateway_shared) -> None:
    gw = scripted_gateway_shared
    client = OpenAI(base_url=gw.base + "/v1", api_key="unused", max_retries=0)
    m = client.models.retrieve("qwen05")
    assert m.id == "qwen05" and m.object == "model"
    assert client.models.retrieve("auto").owned_by == "smallfleet"
    try:
        client.models.retrieve("gpt-17")
        raise AssertionError("an unknown model must be a 404")
    except NotFoundError as e:
        assert "GET /v1/models" in str(e)
    assert httpx.post(gw.base + "/v1/models/qwen05").status_code == 405


def test_embeddings_through_the_openai_client(scripted_gateway_shared) -> None:
    client = OpenAI(base_url=scripted_gateway_shared.base + "/v1", api_key="unused", max_retries=0)
    r = client.embeddings.create(model="all-MiniLM-L6-v2", input=["The cat sat on the mat.", "A cat was sitting on a rug.",
                                                                  "Quarterly revenue rose by 4 %."])
    v = np.array([d.embedding for d in r.data])
    assert v.shape == (3, 384) and np.allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-3)
    assert v[0] @ v[1] > v[0] @ v[2] + 0.2  # the paraphrase is nearer than the unrelated sentence
    assert r.usage.prompt_tokens > 10 and r.model == "all-MiniLM-L6-v2"
    # the SDK asks for base64 by default when numpy is present; the float list and base64 agree
    raw = httpx.post(scripted_gateway_shared.base + "/v1/embeddings",
                     json={"model": "all-MiniLM-L6-v2", "input": "The cat sat on the mat.", "encoding_format": "base64"}).json()
    decoded = struct.unpack("<384f", base64.b64decode(raw["data"][0]["embedding"]))
    assert np.allclose(decoded, v[0], atol=1e-6)
    assert "all-MiniLM-L6-v2" in [m.id for m in client.models.list().data]


def test_embeddings_refuse_bad_input_with_a_4xx(scripted_gateway_shared) -> None:
    url = scripted_gateway_shared.base + "/v1/embeddings"
    cases = [
        ({"model": "text-embedding-3-small", "input": "x"}, 404, "all-MiniLM-L6-v2"),
        ({"model": "all-MiniLM-L6-v2"}, 400, "'input'"),
        ({"model": "all-MiniLM-L6-v2", "input": [[1, 2, 3]]}, 400, "token arrays"),
        ({"model": "all-MiniLM-L6-v2", "input": ["x"] * 257}, 400, "at most 256"),
        ({"model": "all-MiniLM-L6-v2", "input": "x" * 40_000}, 400, "characters"),
        ({"model": "all-MiniLM-L6-v2", "input": "x", "dimensions": 1536}, 400, "384"),
        ({"model": "all-MiniLM-L6-v2", "input": "x", "encoding_format": "int8"}, 400, "encoding_format"),
        (["not", "an", "object"], 400, "JSON object"),
    ]
    for body, status, words in cases:
        r = httpx.post(url, json=body)
        assert r.status_code == status and words in r.json()["error"]["message"], (body if not isinstance(body, dict) else
                                                                                   str(body)[:80], r.text[:200])


def test_head_answers_like_get_without_a_body(scripted_gateway_shared) -> None:
    gw = scripted_gateway_shared
    with httpx.Client() as c:
        for path in ("/health", "/v1/models", "/v1/models/auto", "/"):
            h, g = c.head(gw.base + path), c.get(gw.base + path)
            assert h.status_code == g.status_code == 200, path
            assert h.content == b"" and h.headers["content-type"] == g.headers["content-type"]


def test_cors_is_off_by_default(scripted_gateway_shared) -> None:
    """A page on another origin is refused (and told why), with no CORS headers for the browser to act on."""
    r = httpx.get(scripted_gateway_shared.base + "/v1/models", headers={"origin": "http://localhost:3000"})
    assert r.status_code == 403 and "cross-site" in r.json()["error"]["message"]
    assert "access-control-allow-origin" not in r.headers
    pre = httpx.options(scripted_gateway_shared.base + "/v1/chat/completions",
                        headers={"origin": "http://localhost:3000", "access-control-request-method": "POST"})
    assert pre.status_code == 405 and "access-control-allow-origin" not in pre.headers


def test_cors_for_the_origins_the_operator_allows(scripted_gateway) -> None:
    gw = scripted_gateway(extra='\n[server]\ncors_origins = ["http://localhost:3000"]\n')
    ok, other = {"origin": "http://localhost:3000"}, {"origin": "http://evil.example"}
    pre = httpx.options(gw.base + "/v1/chat/completions",
                        headers={**ok, "access-control-request-method": "POST",
                                 "access-control-request-headers": "authorization, content-type, x-stainless-os"})
    assert pre.status_code == 204
    assert pre.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "POST" in pre.headers["access-control-allow-methods"]
    assert pre.headers["access-control-allow-headers"] == "authorization, content-type, x-stainless-os"
    r = httpx.post(gw.base + "/v1/chat/completions", headers=ok,
                   json={"model": "auto", "messages": [{"role": "user", "content": "hello"}]})
    assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://localhost:3000"
    assert "x-smallfleet-tier" in r.headers["access-control-expose-headers"]
    bad = httpx.post(gw.base + "/v1/chat/completions", headers=other,
                     json={"model": "auto", "messages": [{"role": "user", "content": "hello"}]})
    assert bad.status_code == 403 and "access-control-allow-origin" not in bad.headers
    assert "access-control-allow-origin" not in httpx.options(gw.base + "/v1/models", headers=other).headers
    # a header list that is not only names is not echoed
    odd = httpx.options(gw.base + "/v1/models", headers={**ok, "access-control-request-headers": "x\"; <script>"})
    assert odd.headers["access-control-allow-headers"] == "authorization, content-type"


def test_cors_any_origin_needs_a_key_of_its_own(scripted_gateway) -> None:
    """With "*", a page anywhere may call with a key it holds, never on the local gateway's loopback trust."""
    gw = scripted_gateway(extra='\n[server]\ncors_origins = ["*"]\n')
    body = {"model": "auto", "messages": [{"role": "user", "content": "hello"}]}
    r = httpx.post(gw.base + "/v1/chat/completions", headers={"origin": "http://anywhere.example"}, json=body)
    assert r.status_code == 403 and r.headers["access-control-allow-origin"] == "*"


def test_the_readme_lists_every_header_the_gateway_reads_or_sends() -> None:
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    src = {h for p in (root / "smallfleet").rglob("*.py") for h in re.findall(r"x-smallfleet-[a-z][a-z-]*[a-z]", p.read_text())}
    readme = set(re.findall(r"x-smallfleet-[a-z][a-z-]*[a-z]", (root / "README.md").read_text()))
    assert src and not src - readme, sorted(src - readme)
