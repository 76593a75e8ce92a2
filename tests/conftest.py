"""Shared fixtures. Model tests use the smallest models that do the job: SmolLM2-135M as the small
tier and Qwen2.5-Coder-0.5B as the large tier (both installed by `make test`)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from smallfleet.config import Config, load_config

TINY_TOML = """
[fleet]
tiers = ["small", "large", "frontier"]

[models.smollm2]
backend = "llamacpp"
path = "package:smollm2-135m"
tier = "small"
price_in = 0.01
price_out = 0.02
context = 2048
threads = 2

[models.qwen05]
backend = "llamacpp"
path = "package:qwen2.5-coder-0.5b"
tier = "large"
price_in = 0.02
price_out = 0.04
context = 4096
threads = 2
"""


@pytest.fixture(autouse=True, scope="session")
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory):
    """No test reads or writes the user's data dir (ledger, keys, learned routes, trace store)."""
    old = os.environ.get("XDG_DATA_HOME")
    os.environ["XDG_DATA_HOME"] = str(tmp_path_factory.mktemp("xdg-data"))
    yield
    if old is None:
        os.environ.pop("XDG_DATA_HOME", None)
    else:
        os.environ["XDG_DATA_HOME"] = old


def write_config(tmp: Path, extra: str = "") -> Path:
    tmp.mkdir(parents=True, exist_ok=True)
    p = tmp / "smallfleet.toml"
    # the 135M model writes valid JSON with wrong content: facts are extracted by the 0.5B
    memory = "" if "[memory]" in extra else f'\n[memory]\npath = "{tmp / "memory.db"}"\nmodel = "qwen05"\n'
    p.write_text(TINY_TOML + extra + f'\n[ledger]\npath = "{tmp / "ledger.db"}"\n' + memory)
    return p


@pytest.fixture
def tiny_config(tmp_path: Path) -> Config:
    return load_config(write_config(tmp_path), env={})


@pytest.fixture(scope="session")
def shared_fleet(tmp_path_factory: pytest.TempPathFactory):
    """One loaded fleet for the whole session: loading models once keeps CI short."""
    from smallfleet.fleet import Fleet

    tmp = tmp_path_factory.mktemp("fleet")
    cfg = load_config(write_config(tmp), env={})
    return Fleet(cfg)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Gateway:
    def __init__(self, base: str, proc: subprocess.Popen, ledger: Path) -> None:
        self.base, self.proc, self.ledger = base, proc, ledger
        self.dir = ledger.parent

    def knowledge(self, name: str, index: Path) -> str:
        """Install a built index as the gateway's knowledge base NAME (declared in its config); returns NAME."""
        import shutil

        dest = self.dir / f"kb-{name}.db"
        if not dest.exists():  # never under a store the gateway has open
            shutil.copy(index, dest)
        return name


@pytest.fixture(scope="session")
def gateway(tmp_path_factory: pytest.TempPathFactory):
    """A real `smallfleet serve` process on a free port, serving the tiny fleet."""
    tmp = tmp_path_factory.mktemp("gw")
    # requests name knowledge bases; the operator declares their files (tests install them with gateway.knowledge)
    cfg = write_config(tmp, "".join(f'\n[knowledge.{n}]\npath = "{tmp / f"kb-{n}.db"}"\n' for n in ("tower", "returns")))
    proc, base = start_serve(cfg, tmp / "serve.log")
    yield Gateway(base, proc, tmp / "ledger.db")
    stop_serve(proc)


def start_serve(cfg: Path, log: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`smallfleet serve --preload ARGS` on a free port with config ``cfg``, output to ``log``; once /health answers,
    the process and its base URL. No frontier API key reaches it."""
    port = free_port()
    full = {**os.environ, "SMALLFLEET_CONFIG": str(cfg), **(env or {})}
    for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "SMALLFLEET_FRONTIER_URL"):
        full.pop(k, None)
    proc = subprocess.Popen([sys.executable, "-m", "smallfleet.cli", "serve", "--port", str(port), "--preload", *args],
                            env=full, stdout=log.open("w"), stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"gateway exited: {log.read_text()}")
        try:
            if httpx.get(base + "/health", timeout=1).status_code == 200:
                return proc, base
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise RuntimeError("gateway did not start in 120 s")


def stop_serve(proc: subprocess.Popen[bytes], wait: float = 10) -> None:
    proc.terminate()
    try:
        proc.wait(wait)
    except subprocess.TimeoutExpired:
        proc.kill()

class ThreadGateway:
    """The real gateway (our uvicorn protocol, limits, keys) in a thread of this process, on a fleet of
    scripted models: fast logic and hostile-input tests without weights."""

    def __init__(self, tmp: Path, answer=None, delay: float = 0.0, extra: str = "", env: dict[str, str] | None = None) -> None:
        import threading

        import uvicorn

        from smallfleet.engine import Engine
        from smallfleet.fleet import Fleet
        from smallfleet.models import FunctionBackend
        from smallfleet.server import Gateway as App
        from smallfleet.server.protocol import protocol_for

        self.cfg = load_config(write_config(tmp, extra), env=env or {})
        fn = answer or (lambda req: "All good: " + str(len(req["messages"])) + " messages read.")
        self.backends = {name: FunctionBackend(spec, fn, delay) for name, spec in self.cfg.models.items()
                         if not spec.stands_in_for}
        self.engine = Engine(self.cfg, fleet=Fleet(self.cfg, backends=self.backends))
        self.app = App(self.engine)
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        lim = self.cfg.limits
        config = uvicorn.Config(self.app, host="127.0.0.1", port=self.port, http=protocol_for(lim), loop="asyncio",
                                log_level="critical", access_log=False, lifespan="on",
                                timeout_keep_alive=max(1, int(lim.keepalive_s)))
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.time() + 20
        while not self.server.started:
            if time.time() > deadline or not self.thread.is_alive():
                raise RuntimeError("scripted gateway did not start")
            time.sleep(0.02)
        self.ledger = self.cfg.ledger_path

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


class Balancer:
    """A TCP load balancer on loopback: each new connection goes to the next backend, round robin,
    and bytes are piped both ways until either side closes (as an L4 balancer in front of replicas)."""

    def __init__(self, ports: list[int], port: int | None = None) -> None:
        import asyncio
        import threading

        self.ports, self.port, self.n = ports, port or free_port(), 0
        ready = threading.Event()

        async def pipe(r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
            try:
                while data := await r.read(65536):
                    w.write(data)
                    await w.drain()
            except (ConnectionError, asyncio.CancelledError):
                pass
            finally:
                w.close()

        async def handle(cr: asyncio.StreamReader, cw: asyncio.StreamWriter) -> None:
            self.n += 1
            try:
                br, bw = await asyncio.open_connection("127.0.0.1", self.ports[self.n % len(self.ports)])
            except OSError:
                cw.close()
                return
            await asyncio.gather(pipe(cr, bw), pipe(br, cw))

        def run() -> None:
            self.loop = asyncio.new_event_loop()
            self.server = self.loop.run_until_complete(asyncio.start_server(handle, "127.0.0.1", self.port))
            ready.set()
            self.loop.run_forever()

        threading.Thread(target=run, daemon=True).start()
        ready.wait(10)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)


class _Summed:
    """One model's scripted backends on every replica, read as one (calls, cancellations)."""

    def __init__(self, parts: list) -> None:  # type: ignore[type-arg]
        self.parts = parts

    @property
    def calls(self) -> list:  # type: ignore[type-arg]
        return self.parts[0].calls  # one list shared by the replicas (see ReplicaGateway): in the order they came

    @property
    def cancelled(self) -> int:
        return sum(p.cancelled for p in self.parts)


class _Both:
    """Both replicas' object as one: reading an attribute reads it on both, calling calls both (the first
    one's result is returned), setting sets on both. So ``gw.engine.capturer.drain()`` drains both."""

    _PLAIN = (str, bytes, int, float, bool, type(None), tuple, list, dict, set, frozenset)

    def __init__(self, objs: list) -> None:  # type: ignore[type-arg]
        object.__setattr__(self, "_objs", objs)

    def __getattr__(self, name: str):  # type: ignore[no-untyped-def]
        vals = [getattr(o, name) for o in self._objs]
        return vals[0] if isinstance(vals[0], self._PLAIN) else _Both(vals)

    def __setattr__(self, name: str, value) -> None:  # type: ignore[no-untyped-def]
        for o in self._objs:
            setattr(o, name, value)

    def __call__(self, *args, **kw):  # type: ignore[no-untyped-def]
        results = [o(*args, **kw) for o in self._objs]  # every replica called, not just the first
        return results[0]


class ReplicaGateway:
    """Two scripted gateways on one PostgreSQL behind a :class:`Balancer`, with ThreadGateway's face:
    ``base`` is the balancer, ``ledger`` the database URL (Ledger opens either), ``backends`` both
    replicas' together. What a test does to "the gateway" it does to the pair."""

    def __init__(self, tmp: Path, url: str, answer=None, delay: float = 0.0, extra: str = "", env: dict[str, str] | None = None) -> None:
        from smallfleet.privacy import new_key

        key = new_key()
        front = free_port()
        # clients name the balancer in Host; a keyless gateway accepts that name only when told
        self.env = {"SMALLFLEET_DATABASE_URL": url, "SMALLFLEET_SESSION_KEY": key, "SMALLFLEET_MEMORY_KEY": key,
                    "SMALLFLEET_ALLOWED_HOSTS": f"127.0.0.1:{front},localhost:{front}", **(env or {})}
        self.replicas = [ThreadGateway(tmp / f"replica{i}", answer, delay, extra, self.env) for i in range(2)]
        self.balancer = Balancer([g.port for g in self.replicas], front)
        self.base = f"http://127.0.0.1:{self.balancer.port}"
        first = self.replicas[0]
        self.cfg, self.app, self.port = first.cfg, first.app, self.balancer.port
        self.engine = _Both([g.engine for g in self.replicas])
        for n in first.backends:  # one call log per model across replicas, in arrival order
            log: list = []  # type: ignore[type-arg]
            for g in self.replicas:
                g.backends[n].calls = log
        self.backends = {n: _Summed([g.backends[n] for g in self.replicas]) for n in first.backends}
        self.ledger = url

    def stop(self) -> None:
        self.balancer.stop()
        for g in self.replicas:
            g.stop()


REPLICAS = os.environ.get("SMALLFLEET_TEST_REPLICAS") == "2"  # `make test-replicas`: the scripted suites on two replicas


def sf(*args: str, cfg: Path | str) -> subprocess.CompletedProcess[str]:
    """The CLI on one config file, wide enough that tables are not folded."""
    return subprocess.run([sys.executable, "-m", "smallfleet.cli", "--config", str(cfg), *args], capture_output=True,
                          text=True, timeout=60, env={**os.environ, "COLUMNS": "200"})


def create_key(gw: ThreadGateway | ReplicaGateway, name: str, *extra: str) -> str:
    """``smallfleet keys create`` through the CLI, then wait until the running gateway sees the key (it
    re-reads its key store at most once a second: a request sent sooner is still served as keyless)."""
    r = sf("keys", "create", name, *extra, cfg=gw.cfg.source)
    assert r.returncode == 0, r.stderr
    key = r.stdout.strip().splitlines()[-1]
    assert key.startswith("sf-"), r.stdout
    deadline, seen = time.monotonic() + 10, 0
    while seen < 4:  # in a row: behind the balancer each replica has its own view
        ok = (httpx.get(gw.base + "/v1/models", timeout=10).status_code == 401
              and httpx.get(gw.base + "/v1/models", headers={"authorization": f"Bearer {key}"}, timeout=10).status_code == 200)
        seen = seen + 1 if ok else 0
        assert time.monotonic() < deadline, "the gateway did not see the new key within 10 s"
        if not ok:
            time.sleep(0.1)
    return key


@pytest.fixture
def scripted_gateway(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    """A scripted gateway per test; ``scripted_gateway(answer=..., delay=..., extra=toml)`` to customise.
    With SMALLFLEET_TEST_REPLICAS=2, two replicas on PostgreSQL behind a balancer instead (the CLI the
    test runs sees the same database)."""
    made: list = []  # type: ignore[type-arg]
    url = None
    if REPLICAS:
        import re

        url = request.getfixturevalue("pg_server").database("r_" + re.sub(r"\W", "_", request.node.name.lower())[:50])

    def make(**kw):  # type: ignore[no-untyped-def]
        if url is None:
            gw = ThreadGateway(tmp_path / f"gw{len(made)}", **kw)
        else:
            gw = ReplicaGateway(tmp_path / f"gw{len(made)}", url, **kw)
            for k, v in gw.env.items():
                monkeypatch.setenv(k, v)
        made.append(gw)
        return gw

    yield make
    for gw in made:
        gw.stop()


@pytest.fixture(scope="module")
def scripted_gateway_shared(tmp_path_factory: pytest.TempPathFactory):
    """One scripted gateway for a module's read-only checks (validation, routes)."""
    gw = ThreadGateway(tmp_path_factory.mktemp("sgw"))
    yield gw
    gw.stop()


@pytest.fixture(scope="session")
def pg_server():
    """A real PostgreSQL server (tests/pg.py), started once per test session."""
    from tests.pg import PgServer, server_bin

    if server_bin() is None:
        pytest.skip("PostgreSQL's server is not installed here: apt-get install postgresql (.ci/run installs it)")
    srv = PgServer()
    yield srv
    srv.close()


@pytest.fixture
def pg_url(pg_server, request: pytest.FixtureRequest) -> str:
    """A fresh database on the test server, named after the test."""
    import re

    return pg_server.database("t_" + re.sub(r"\W", "_", request.node.name.lower())[:50])


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """With SMALLFLEET_TEST_REPLICAS=2 only the tests that run against a scripted gateway are run (on two
    replicas behind a balancer); the rest ran already in the one-process pass."""
    if not REPLICAS:
        return
    keep = [i for i in items if "scripted_gateway" in getattr(i, "fixturenames", ())]
    config.hook.pytest_deselected(items=[i for i in items if i not in keep])
    items[:] = keep
