"""TemplateRegistry on SQLite and PostgreSQL: publish, immutability, discovery, instantiation,
usage, concurrency and failure."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from gennet_toolkit.exceptions import (
    BadRequest,
    ConfigurationError,
    Conflict,
    NotFound,
    PayloadTooLarge,
    ServiceUnavailable,
    ValidationFailed,
)
from gennet_toolkit.workflow_templates import (
    InvalidCursor,
    InvalidTemplate,
    SqlTemplateStore,
    Step,
    Template,
    TemplateRegistry,
    WorkflowRun,
)
from gennet_toolkit.workflow_templates._sql import DiscoverQuery
from tests.services import Database, closed_port_url

SECRET = "hunter2-do-not-echo"

PARAMS = {
    "type": "object",
    "properties": {
        "reads": {"type": "string", "pattern": r"^\S+\.f(ast)?q\.gz$"},
        "genome": {"type": "string", "enum": ["hg38", "mm10"], "default": "hg38"},
        "threads": {"type": "integer", "minimum": 1, "maximum": 64, "default": 4},
    },
    "required": ["reads"],
}

STEPS = [
    Step(
        "align",
        uses="bwa-mem",
        inputs={"reads": "${params.reads}", "t": "${params.threads}"},
        depends_on=["qc"],
    ),
    Step("qc", uses="fastqc", inputs={"reads": "${params.reads}"}),
    Step("call", uses="gatk", inputs={"ref": "ref/${params.genome}.fa"}, depends_on=["align"]),
]


def template(version: str = "1.0.0", name: str = "variant-calling", **kw: Any) -> Template:
    return Template(
        name,
        version,
        kw.pop("steps", STEPS),
        parameters=kw.pop("parameters", PARAMS),
        tags=kw.pop("tags", ("genomics", "ngs")),
        description=kw.pop("description", "Call variants from reads"),
        **kw,
    )


@pytest.fixture
def store(database: Database) -> Iterator[SqlTemplateStore]:
    engine = database.engine()
    s = SqlTemplateStore(engine)
    s.create_tables()
    yield s
    engine.dispose()


@pytest.fixture
def registry(store: SqlTemplateStore) -> TemplateRegistry:
    return TemplateRegistry(store)


# --------------------------------------------------------------------------- publishing


def test_published_template_round_trips_with_its_digest(registry: TemplateRegistry) -> None:
    t = registry.create(template())
    got = registry.get("variant-calling", "1.0.0")
    assert got == t
    assert got.digest == t.digest
    assert got.digest.startswith("sha256:")
    assert len(got.digest) == 71


def test_latest_is_the_highest_semver_release_not_the_lexically_largest(
    registry: TemplateRegistry,
) -> None:
    for v in ("1.9.0", "1.10.0", "1.2.0", "2.0.0-rc.1"):
        registry.create(template(v))
    assert registry.get("variant-calling").version == "1.10.0"
    assert registry.versions("variant-calling") == ["1.2.0", "1.9.0", "1.10.0", "2.0.0-rc.1"]
    registry.create(template("0.1.0-alpha", name="only-pre"))
    registry.create(template("0.1.0-alpha.10", name="only-pre"))
    registry.create(template("0.1.0-alpha.9", name="only-pre"))
    assert registry.get("only-pre").version == "0.1.0-alpha.10"


def test_sql_version_order_matches_semver_precedence(registry: TemplateRegistry) -> None:
    spec = [
        "1.0.0-alpha",
        "1.0.0-alpha.1",
        "1.0.0-alpha.beta",
        "1.0.0-beta",
        "1.0.0-beta.2",
        "1.0.0-beta.11",
        "1.0.0-rc.1",
        "1.0.0",
        "1.0.1",
        "1.9.0",
        "1.10.0",
        "10.0.0",
    ]
    for v in reversed(spec):
        registry.create(template(v))
    assert registry.versions("variant-calling") == spec
    page = registry.discover(all_versions=True, limit=200)
    assert [i.version for i in page.items] == spec


def test_republishing_identical_content_is_idempotent(registry: TemplateRegistry) -> None:
    first = registry.create(template())
    again = registry.create(template())
    assert again.digest == first.digest
    assert registry.versions("variant-calling") == ["1.0.0"]


def test_republishing_a_version_with_different_content_is_409(registry: TemplateRegistry) -> None:
    registry.create(template())
    with pytest.raises(Conflict) as info:
        registry.create(template(description="sneaky edit"))
    assert info.value.status_code == 409
    assert registry.get("variant-calling").description == "Call variants from reads"


def test_concurrent_publishes_of_one_version_have_exactly_one_winner(
    registry: TemplateRegistry,
) -> None:
    n = 6
    barrier = threading.Barrier(n)
    outcomes: list[str] = []
    lock = threading.Lock()

    def publish(i: int) -> None:
        barrier.wait()
        try:
            registry.create(template(description=f"writer {i}"))
            result = f"won {i}"
        except Conflict:
            result = "conflict"
        with lock:
            outcomes.append(result)

    threads = [threading.Thread(target=publish, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [o for o in outcomes if o.startswith("won")]
    assert len(winners) == 1, outcomes
    assert outcomes.count("conflict") == n - 1
    assert registry.get("variant-calling").description == "writer " + winners[0].split()[1]


def test_concurrent_identical_publishes_all_succeed(registry: TemplateRegistry) -> None:
    barrier = threading.Barrier(4)
    errors: list[BaseException] = []

    def publish() -> None:
        barrier.wait()
        try:
            registry.create(template())
        except BaseException as exc:  # collected for the assertion below
            errors.append(exc)

    threads = [threading.Thread(target=publish) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []


def test_unknown_template_or_version_is_404(registry: TemplateRegistry) -> None:
    registry.create(template())
    for call in (
        lambda: registry.get("nope"),
        lambda: registry.get("variant-calling", "9.9.9"),
        lambda: registry.get("variant-calling", "not-a-version"),
        lambda: registry.instantiate("nope", {"reads": "a.fq.gz"}),
        lambda: registry.instantiate("variant-calling", {"reads": "a.fq.gz"}, "2.0.0"),
        lambda: registry.usage("nope"),
        lambda: registry.versions("nope"),
    ):
        with pytest.raises(NotFound) as info:
            call()
        assert info.value.status_code == 404


@pytest.mark.parametrize("bad", ["a\x00b", "\ud800", "lone \udfff surrogate"])
def test_text_no_database_can_take_is_a_4xx_never_a_driver_error(
    registry: TemplateRegistry, bad: str
) -> None:
    # NUL (PostgreSQL refuses it in text) and lone surrogates (a JSON body's "\\ud800";
    # no driver encodes them) from a path, query or body: a 4xx before any SQL runs.
    registry.create(template())
    for call in (
        lambda: registry.get(bad),
        lambda: registry.get("variant-calling", bad),
        lambda: registry.instantiate(bad, {"reads": "a.fq.gz"}),
        lambda: registry.usage(bad),
        lambda: registry.versions(bad),
    ):
        with pytest.raises(NotFound):
            call()
    for kwargs in ({"tag": bad}, {"text": bad}):
        with pytest.raises(BadRequest) as info:
            registry.discover(**kwargs)
        assert info.value.status_code == 400
    fingerprint = DiscoverQuery.fingerprint(None, None, False)
    for position in ({"n": bad, "k": "x"}, {"n": "a", "k": bad}):
        raw = json.dumps({"v": 1, "f": fingerprint, **position}).encode()
        with pytest.raises(InvalidCursor):
            registry.discover(cursor=base64.urlsafe_b64encode(raw).decode().rstrip("="))
    with pytest.raises(InvalidTemplate):
        registry.create(template("2.0.0", description=bad))
    if "\x00" not in bad:
        with pytest.raises(InvalidTemplate):
            registry.create(template("2.0.0", steps=[Step("qc", uses=bad)], parameters=None))
        with pytest.raises(ValidationFailed) as failed:
            registry.instantiate("variant-calling", {"reads": "a.fq.gz", bad: 1})
        with pytest.raises(ValidationFailed) as failed:
            registry.instantiate("variant-calling", {"reads": bad})
        assert failed.value.status_code == 422
    assert registry.versions("variant-calling") == ["1.0.0"]


# --------------------------------------------------------------------------- instantiation


def test_instantiate_applies_defaults_renders_steps_and_records_provenance(
    registry: TemplateRegistry,
) -> None:
    t = registry.create(template())
    run = registry.instantiate("variant-calling", {"reads": "s1.fastq.gz"})
    assert isinstance(run, WorkflowRun)
    assert run.params == {"reads": "s1.fastq.gz", "genome": "hg38", "threads": 4}
    assert [s.name for s in run.steps] == ["qc", "align", "call"]
    align = run.steps[1]
    assert align.inputs == {"reads": "s1.fastq.gz", "t": 4}  # a whole reference keeps its type
    assert run.steps[2].inputs == {"ref": "ref/hg38.fa"}
    assert run.provenance["template"] == "variant-calling"
    assert run.provenance["version"] == "1.0.0"
    assert run.provenance["digest"] == t.digest
    assert run.params_digest.startswith("sha256:")
    assert json.loads(json.dumps(run.to_dict()))["steps"][0]["uses"] == "fastqc"


def test_a_run_pins_the_concrete_version_it_was_made_from(registry: TemplateRegistry) -> None:
    registry.create(template("1.0.0"))
    old = registry.instantiate("variant-calling", {"reads": "a.fq.gz"})
    registry.create(template("1.1.0", description="newer"))
    new = registry.instantiate("variant-calling", {"reads": "a.fq.gz"})
    pinned = registry.instantiate("variant-calling", {"reads": "a.fq.gz"}, old.version)
    assert (old.version, new.version, pinned.version) == ("1.0.0", "1.1.0", "1.0.0")
    assert pinned.digest == old.digest != new.digest


def test_invalid_params_are_422_with_pointers_and_never_the_values(
    registry: TemplateRegistry,
) -> None:
    registry.create(template())
    with pytest.raises(ValidationFailed) as info:
        registry.instantiate(
            "variant-calling", {"reads": SECRET, "genome": SECRET, "threads": SECRET}
        )
    problem = info.value.to_problem()
    assert problem["status"] == 422
    assert sorted(e["pointer"] for e in problem["errors"]) == ["#/genome", "#/reads", "#/threads"]
    assert SECRET not in json.dumps(problem)
    with pytest.raises(ValidationFailed) as info:
        registry.instantiate("variant-calling", {"genome": "mm10", "typo": 1})
    assert sorted(e.pointer for e in info.value.errors) == ["/reads", "/typo"]  # type: ignore[type-var]


@pytest.mark.parametrize(
    "params",
    [
        [1, 2],
        "reads",
        {"reads": float("nan")},
        {"reads": {"x": object()}},
        {"k" * 300: 1},
    ],
)
def test_malformed_params_are_422(registry: TemplateRegistry, params: Any) -> None:
    registry.create(template())
    with pytest.raises(ValidationFailed):
        registry.instantiate("variant-calling", params)


def test_deeply_nested_params_are_422_not_a_recursion_error(registry: TemplateRegistry) -> None:
    registry.create(template())
    deep: Any = "x"
    for _ in range(10_000):
        deep = [deep]
    with pytest.raises(ValidationFailed):
        registry.instantiate("variant-calling", {"reads": deep})


def test_oversized_params_are_413(store: SqlTemplateStore) -> None:
    registry = TemplateRegistry(store, max_params_bytes=1024)
    registry.create(template())
    with pytest.raises(PayloadTooLarge) as info:
        registry.instantiate("variant-calling", {"reads": "a.fq.gz", "pad": "x" * 2000})
    assert info.value.status_code == 413
    assert registry.usage("variant-calling").total == 0


def test_schema_is_compiled_once_per_version(store: SqlTemplateStore) -> None:
    registry = TemplateRegistry(store)
    registry.create(template("1.0.0"))
    registry.create(template("1.1.0"))
    for _ in range(5):
        registry.instantiate("variant-calling", {"reads": "a.fq.gz"})
        registry.instantiate("variant-calling", {"reads": "a.fq.gz"}, "1.0.0")
    assert registry.compilations == 2
    other = TemplateRegistry(store, cache_size=1)  # a second process: compiles its own
    other.instantiate("variant-calling", {"reads": "a.fq.gz"})
    assert other.compilations == 1


def test_usage_is_counted_per_version_in_sql(
    registry: TemplateRegistry, store: SqlTemplateStore
) -> None:
    registry.create(template("1.0.0"))
    registry.create(template("1.10.0"))
    registry.create(template("1.2.0"))
    for version, n in (("1.0.0", 3), ("1.10.0", 2)):
        for _ in range(n):
            registry.instantiate("variant-calling", {"reads": "a.fq.gz"}, version)
    with pytest.raises(ValidationFailed):
        registry.instantiate("variant-calling", {"reads": "bad"})  # refused runs do not count
    usage = registry.usage("variant-calling")
    assert usage.total == 5
    assert usage.by_version == {"1.0.0": 3, "1.10.0": 2}
    assert list(usage.by_version) == ["1.0.0", "1.10.0"]
    with store.engine.connect() as conn:  # append-only events, not a hot counter row
        n = conn.execute(sa.text("SELECT count(*) FROM gennet_wf_template_usage")).scalar()
    assert n == 5


def test_submit_hook_receives_the_run(store: SqlTemplateStore) -> None:
    submitted: list[WorkflowRun] = []
    registry = TemplateRegistry(store, submit=submitted.append)
    registry.create(template())
    run = registry.instantiate("variant-calling", {"reads": "a.fq.gz"})
    assert submitted == [run]
    per_call: list[str] = []
    registry.instantiate(
        "variant-calling", {"reads": "a.fq.gz"}, submit=lambda r: per_call.append(r.id)
    )
    assert len(per_call) == 1
    assert len(submitted) == 1


def test_async_submit_hook_is_refused_by_the_sync_registry(store: SqlTemplateStore) -> None:
    async def hook(run: WorkflowRun) -> None:
        return None

    with pytest.raises(ConfigurationError):
        TemplateRegistry(store, submit=hook)
    registry = TemplateRegistry(store)
    registry.create(template())
    with pytest.raises(ConfigurationError):
        registry.instantiate("variant-calling", {"reads": "a.fq.gz"}, submit=hook)


def test_from_env_reads_limits(monkeypatch: pytest.MonkeyPatch, store: SqlTemplateStore) -> None:
    monkeypatch.setenv("GENNET_WORKFLOW_MAX_PARAMS_BYTES", "100")
    registry = TemplateRegistry.from_env(store)
    registry.create(template())
    with pytest.raises(PayloadTooLarge):
        registry.instantiate("variant-calling", {"reads": "a.fq.gz", "x": "y" * 200})
    monkeypatch.setenv("GENNET_WORKFLOW_CACHE_SIZE", "many")
    with pytest.raises(ConfigurationError):
        TemplateRegistry.from_env(store)


# --------------------------------------------------------------------------- discovery


def _publish_catalogue(registry: TemplateRegistry) -> None:
    for i in range(7):
        tags = ("grn", "simulation") if i % 2 else ("grn",)
        registry.create(
            template("1.0.0", name=f"tpl-{i}", tags=tags, description=f"Net {i} 100%_done")
        )
        registry.create(template("1.1.0", name=f"tpl-{i}", tags=tags, description=f"Net {i} v2"))
    registry.create(template("0.1.0", name="other", tags=("misc",), description="Unrelated"))


def test_discover_pages_every_match_exactly_once(registry: TemplateRegistry) -> None:
    _publish_catalogue(registry)
    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = registry.discover(tag="grn", limit=2, cursor=cursor)
        seen.extend((i.name, i.version) for i in page.items)
        if not page.has_next:
            break
        cursor = page.next_cursor
    assert seen == [(f"tpl-{i}", "1.1.0") for i in range(7)]
    sims = registry.discover(tag="simulation", limit=50)
    assert [i.name for i in sims.items] == ["tpl-1", "tpl-3", "tpl-5"]
    assert sims.items[0].tags == ("grn", "simulation")


def test_discover_by_text_is_case_insensitive_and_escapes_wildcards(
    registry: TemplateRegistry,
) -> None:
    _publish_catalogue(registry)
    assert [i.name for i in registry.discover(text="UNRELATED").items] == ["other"]
    # The latest versions say "v2"; "100%_done" only exists in 1.0.0.
    assert registry.discover(text="%_").items == []
    hits = registry.discover(text="100%_done", all_versions=True).items
    assert {(i.name, i.version) for i in hits} == {(f"tpl-{i}", "1.0.0") for i in range(7)}
    assert registry.discover(text="n_t").items == []  # "_" is not a wildcard


def test_discover_all_versions_pages_in_name_then_semver_order(registry: TemplateRegistry) -> None:
    _publish_catalogue(registry)
    seen: list[tuple[str, str]] = []
    cursor = None
    while True:
        page = registry.discover(all_versions=True, limit=3, cursor=cursor)
        seen.extend((i.name, i.version) for i in page.items)
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    expected = [("other", "0.1.0")] + [
        (f"tpl-{i}", v) for i in range(7) for v in ("1.0.0", "1.1.0")
    ]
    assert seen == expected


@pytest.mark.parametrize(
    "kwargs",
    [
        {"limit": 0},
        {"limit": 10_000},
        {"limit": "5"},
        {"text": "x" * 500},
        {"tag": ""},
        {"cursor": "not base64!!"},
        {"cursor": "eyJ4IjoxfQ"},
        {"cursor": "x" * 5000},
    ],
)
def test_bad_discovery_arguments_are_400(
    registry: TemplateRegistry, kwargs: dict[str, Any]
) -> None:
    with pytest.raises(BadRequest) as info:
        registry.discover(**kwargs)
    assert info.value.status_code == 400
    assert "x" * 50 not in json.dumps(info.value.to_problem())


def test_a_cursor_from_another_query_is_refused(registry: TemplateRegistry) -> None:
    _publish_catalogue(registry)
    cursor = registry.discover(tag="grn", limit=2).next_cursor
    assert cursor is not None
    with pytest.raises(InvalidCursor):
        registry.discover(tag="simulation", limit=2, cursor=cursor)
    with pytest.raises(InvalidCursor):
        registry.discover(tag="grn", limit=2, cursor=cursor[:-3] + "AAA")
    assert registry.discover(tag="grn", limit=5, cursor=cursor).items  # page size may change


# --------------------------------------------------------------------------- failure


def test_database_down_is_503_and_recovers_with_a_working_engine(tmp_path: Any) -> None:
    url = closed_port_url("postgresql+psycopg")
    down = SqlTemplateStore(sa.create_engine(url, connect_args={"connect_timeout": 2}))
    registry = TemplateRegistry(down)
    with pytest.raises(ServiceUnavailable) as info:
        registry.get("anything")
    assert info.value.status_code == 503
    with pytest.raises(ServiceUnavailable):
        registry.create(template())
    assert "127.0.0.1" not in json.dumps(info.value.to_problem())


def test_in_memory_store_behaves_like_the_sql_store() -> None:
    registry = TemplateRegistry(SqlTemplateStore.in_memory())
    registry.create(template())
    assert registry.instantiate("variant-calling", {"reads": "a.fq.gz"}).version == "1.0.0"
    assert registry.usage("variant-calling").by_version == {"1.0.0": 1}


def test_store_from_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Any) -> None:
    monkeypatch.delenv("GENNET_DATABASE_URL", raising=False)
    monkeypatch.delenv("GENNET_WORKFLOW_DATABASE_URL", raising=False)
    with pytest.raises(ConfigurationError):
        SqlTemplateStore.from_env()
    monkeypatch.setenv("GENNET_DATABASE_URL", f"sqlite:///{tmp_path}/env.db")
    monkeypatch.setenv("GENNET_WORKFLOW_TABLE_PREFIX", "wf_")
    store = SqlTemplateStore.from_env()
    store.create_tables()
    TemplateRegistry(store).create(template())
    assert sa.inspect(store.engine).has_table("wf_templates")
    store.engine.dispose()
    monkeypatch.setenv("GENNET_WORKFLOW_TABLE_PREFIX", "bad prefix;")
    with pytest.raises(ConfigurationError):
        SqlTemplateStore.from_env()


def run_docs_example(
    page: str, driver: str, cwd: Path, *, block: int = 0
) -> subprocess.CompletedProcess[str]:
    """Run Python block ``block`` of ``docs/<page>``, then ``driver``, in a fresh process."""
    text = (Path(__file__).resolve().parents[1] / "docs" / page).read_text(encoding="utf-8")
    code = text.split("```python\n")[block + 1].split("\n```", 1)[0]
    return subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code + "\n" + textwrap.dedent(driver)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_docs_example_runs_as_printed(tmp_path: Path) -> None:
    out = run_docs_example("workflow_templates.md", "", tmp_path)
    assert out.returncode == 0, out.stderr
    errors, discovered, usage = out.stdout.splitlines()
    assert "'#/network'" in errors
    assert "'#/noise'" in errors
    assert "no spaces" not in errors
    assert discovered == "[('grn-knockout-sim', '1.1.0')] None"
    assert "total=1, by_version={'1.1.0': 1}" in usage
