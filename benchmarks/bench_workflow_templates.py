"""workflow_templates: parameter validation with a cached compiled schema vs compiling per call,
instantiate() end to end, and discover() over 5,000 templates on SQLite vs PostgreSQL.

Suites:

- ``workflow_templates-validate``: validate one parameter set against an nf-core-style
  schema (15 parameters, patterns, enums, ``$defs``): our schema compiled once per
  version vs ``jsonschema.validate`` (the naive peer: meta-checks and compiles the schema
  on every call) vs a ``Draft202012Validator`` built per call (compiles, no meta-check).
- ``workflow_templates-instantiate``: ``TemplateRegistry.instantiate`` (validate, apply
  defaults, render steps, insert a usage event) vs the naive path: read the template
  document, ``jsonschema.validate``, insert the usage event; both on in-memory SQLite.
- ``workflow_templates-discover``: ``discover()`` first page (50) and a page deep inside,
  by tag and by text, over 5,000 template versions (2,500 names × 2 versions) on SQLite
  and PostgreSQL (``DATABASE_URL``; a private schema, dropped at the end).
"""

from __future__ import annotations

import os
import socket
import tempfile
import uuid
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import jsonschema
import sqlalchemy as sa

from benchmarks._harness import Suite
from gennet_toolkit.workflow_templates import SqlTemplateStore, Step, Template, TemplateRegistry
from gennet_toolkit.workflow_templates._schema import CompiledSchema

PG_URL = os.environ.get("DATABASE_URL", "postgresql://127.0.0.1:5432/test")
N_NAMES = 2_500  # × 2 versions = 5,000 template versions

SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "variant calling",
    "type": "object",
    "$defs": {
        "path": {"type": "string", "pattern": r"^([\S\s]*\/)?[^\s\/]+\.(fa|fasta)(\.gz)?$"},
        "reads": {"type": "string", "pattern": r"^\S+\.f(ast)?q\.gz$"},
    },
    "properties": {
        "input": {"$ref": "#/$defs/reads"},
        "fasta": {"$ref": "#/$defs/path"},
        "outdir": {"type": "string", "minLength": 1, "default": "results"},
        "genome": {"type": "string", "enum": ["GRCh38", "GRCm39", "R64-1-1"], "default": "GRCh38"},
        "email": {"type": "string", "format": "email"},
        "aligner": {"type": "string", "enum": ["bwa-mem", "bwa-mem2", "dragmap"]},
        "tools": {
            "type": "array",
            "items": {"type": "string", "pattern": r"^[a-z0-9_]+$"},
            "maxItems": 10,
            "default": ["haplotypecaller"],
        },
        "min_mapq": {"type": "integer", "minimum": 0, "maximum": 60, "default": 20},
        "max_cpus": {"type": "integer", "minimum": 1, "maximum": 256, "default": 16},
        "max_memory": {
            "type": "string",
            "pattern": r"^\d+(\.\d+)?\.?\s*(K|M|G|T)?B$",
            "default": "128.GB",
        },
        "skip_qc": {"type": "boolean", "default": False},
        "intervals": {"type": "string", "pattern": r"^\S+\.(bed|interval_list)$"},
        "ploidy": {"type": "integer", "enum": [1, 2], "default": 2},
        "sample_id": {"type": "string", "pattern": r"^[A-Za-z0-9_-]{1,64}$"},
        "seed": {"type": "integer", "default": 42},
    },
    "required": ["input", "fasta", "aligner", "sample_id"],
}
PARAMS: dict[str, Any] = {
    "input": "s3/run1/sample_R1.fastq.gz",
    "fasta": "refs/GRCh38.fa.gz",
    "email": "lab@example.org",
    "aligner": "bwa-mem2",
    "tools": ["haplotypecaller", "deepvariant"],
    "min_mapq": 30,
    "intervals": "targets.bed",
    "sample_id": "NA12878_1",
}
STEPS = [
    Step("qc", uses="fastqc", inputs={"reads": "${params.input}"}),
    Step(
        "align",
        uses="bwa-mem2",
        inputs={"reads": "${params.input}", "ref": "${params.fasta}", "cpus": "${params.max_cpus}"},
        depends_on=["qc"],
    ),
    Step(
        "call",
        uses="gatk",
        inputs={"tools": "${params.tools}", "ploidy": "${params.ploidy}"},
        depends_on=["align"],
    ),
]


def _pg_url() -> str:
    parts = urlsplit(PG_URL)
    scheme = (
        parts.scheme.split("+")[0]
        .replace("postgres", "postgresql")
        .replace("postgresqlql", "postgresql")
    )
    return urlunsplit((f"{scheme}+psycopg", *parts[1:]))


def postgres_available() -> bool:
    """Whether the benchmark PostgreSQL accepts connections."""
    parts = urlsplit(PG_URL)
    try:
        with socket.create_connection((parts.hostname or "127.0.0.1", parts.port or 5432), 1):
            return True
    except OSError:
        return False


def validate_suite() -> Suite:
    """Cached compiled schema vs compiling on every call."""
    compiled = CompiledSchema(Template("v", "1.0.0", STEPS, parameters=SCHEMA).parameters)
    filled = compiled.validate(PARAMS)  # the peers validate the same, defaults filled
    jsonschema.validate(filled, SCHEMA)
    suite = Suite(
        "workflow_templates-validate",
        description="validate one parameter set (15 parameters, patterns, $defs)",
    )
    suite.add("ours (compiled once)", lambda: compiled.validate(PARAMS))
    suite.add("jsonschema.validate per call", lambda: jsonschema.validate(filled, SCHEMA))
    suite.add(
        "Draft202012Validator per call",
        lambda: jsonschema.Draft202012Validator(SCHEMA).validate(filled),
    )
    suite.note(
        "ours also fills defaults and maps errors to pointers; the peers get the filled dict"
    )
    suite.compare("ours (compiled once)", "jsonschema.validate per call")
    suite.compare("ours (compiled once)", "Draft202012Validator per call")
    return suite


def instantiate_suite() -> tuple[Suite, TemplateRegistry]:
    """instantiate() end to end vs the naive fetch + validate + insert on SQLite."""
    # In-memory SQLite: on a file, each call's commit waits for fsync and the disk, not
    # the code, decides the ratio.
    store = SqlTemplateStore.in_memory()
    engine = store.engine
    registry = TemplateRegistry(store)
    tpl = registry.create(Template("variant-calling", "1.0.0", STEPS, parameters=SCHEMA))
    docs = store._s.documents
    usage = store._s.usage

    def naive() -> None:
        with engine.begin() as conn:
            doc = conn.execute(
                sa.select(docs.c.document).where(
                    docs.c.name == tpl.name, docs.c.version == tpl.version
                )
            ).scalar_one()
            import json

            jsonschema.validate(PARAMS, json.loads(doc)["parameters"])
            conn.execute(
                usage.insert().values(
                    name=tpl.name,
                    version=tpl.version,
                    run_id=uuid.uuid4().hex,
                    created_at=sa.func.current_timestamp(),
                )
            )

    suite = Suite(
        "workflow_templates-instantiate",
        description="one instantiation incl. a usage-event insert (in-memory SQLite)",
        rounds=9,
    )
    suite.add(
        "ours instantiate(version pinned)",
        lambda: registry.instantiate("variant-calling", PARAMS, "1.0.0"),
    )
    suite.add("ours instantiate(latest)", lambda: registry.instantiate("variant-calling", PARAMS))
    suite.add("naive fetch + jsonschema.validate + insert", naive)
    suite.compare("ours instantiate(version pinned)", "naive fetch + jsonschema.validate + insert")
    suite.compare("ours instantiate(latest)", "naive fetch + jsonschema.validate + insert")
    return suite, registry


def populate(store: SqlTemplateStore) -> None:
    """5,000 template versions in one transaction (the rows publish() writes)."""
    base = Template("seed", "1.0.0", STEPS, parameters=SCHEMA).to_dict()
    tags_cycle = [["grn", "simulation"], ["genomics", "ngs"], ["grn"], ["proteomics"]]
    rows: list[dict[str, Any]] = []
    bodies: list[dict[str, Any]] = []
    tag_rows: list[dict[str, Any]] = []
    for i in range(N_NAMES):
        for version in ("1.0.0", "1.1.0"):
            doc = {
                **base,
                "name": f"tpl-{i:05d}",
                "version": version,
                "tags": tags_cycle[i % 4],
                "description": f"Template {i} for {'knockout' if i % 10 == 0 else 'runs'}",
            }
            row, body, tags = store._s.rows(doc, f"sha256:{i:064d}")
            rows.append(row)
            bodies.append(body)
            tag_rows.extend(tags)
    with store.engine.begin() as conn:
        conn.execute(store._s.templates.insert(), rows)
        conn.execute(store._s.documents.insert(), bodies)
        conn.execute(store._s.tags.insert(), tag_rows)
        if conn.dialect.name == "postgresql":
            for table in (store._s.templates, store._s.documents, store._s.tags):
                conn.execute(sa.text(f'ANALYZE "{table.name}"'))


def discover_suite(stores: list[tuple[str, SqlTemplateStore]]) -> Suite:
    """discover() pages over 5,000 template versions."""
    suite = Suite(
        "workflow_templates-discover",
        description=f"discover() over {2 * N_NAMES} template versions, 50 per page",
        rounds=9,
    )
    for label, store in stores:
        registry = TemplateRegistry(store)
        deep = registry.discover(tag="grn", limit=200)
        for _ in range(2):
            deep = registry.discover(tag="grn", limit=200, cursor=deep.next_cursor)
        deep_cursor = deep.next_cursor  # 600 names in
        assert len(registry.discover(tag="grn", limit=50).items) == 50

        suite.add(f"{label} tag, page 1", lambda r=registry: r.discover(tag="grn", limit=50))
        suite.add(
            f"{label} tag, deep page",
            lambda r=registry, c=deep_cursor: r.discover(tag="grn", limit=50, cursor=c),
        )
        suite.add(f"{label} text", lambda r=registry: r.discover(text="knockout", limit=50))
        suite.add(
            f"{label} all versions", lambda r=registry: r.discover(all_versions=True, limit=50)
        )
    if len(stores) == 2:
        for case in ("tag, page 1", "tag, deep page", "text", "all versions"):
            suite.compare(f"sqlite {case}", f"postgres {case}")
    return suite


def main() -> None:
    """Run the three suites; the PostgreSQL schema is dropped at the end."""
    validate_suite().run()
    with tempfile.TemporaryDirectory(prefix="gnbench-wf-") as tmp:
        suite, registry = instantiate_suite()
        suite.run()
        suite.note(
            f"schema compilations by the registry over the whole run: {registry.compilations}"
        )
        suite.write()
        sqlite = SqlTemplateStore(sa.create_engine(f"sqlite:///{tmp}/discover.db"))
        sqlite.create_tables()
        populate(sqlite)
        stores = [("sqlite", sqlite)]
        schema = f"gnbench_wf_{uuid.uuid4().hex[:8]}"
        admin = None
        if postgres_available():
            admin = sa.create_engine(_pg_url(), isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(sa.text(f'CREATE SCHEMA "{schema}"'))
            pg = SqlTemplateStore(
                sa.create_engine(_pg_url(), connect_args={"options": f"-csearch_path={schema}"})
            )
            pg.create_tables()
            populate(pg)
            stores.append(("postgres", pg))
        else:
            print("PostgreSQL not reachable: skipping the postgres discover cases")
        try:
            discover_suite(stores).run()
        finally:
            for _, store in stores:
                store.engine.dispose()
            if admin is not None:
                with admin.connect() as conn:
                    conn.execute(sa.text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
                admin.dispose()


if __name__ == "__main__":
    main()
