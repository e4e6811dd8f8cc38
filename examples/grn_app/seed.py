"""A small, shipped data set: the E. coli lac and ara operons and their regulators.

Curated from textbook knowledge (RegulonDB-style signs); nothing is downloaded.
"""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.ext.asyncio import AsyncEngine

from .models import Gene, Interaction, Network

__all__ = ["GENES", "INTERACTIONS", "seed"]

GENES: dict[str, str] = {
    "lacI": "lac repressor",
    "lacZ": "beta-galactosidase",
    "lacY": "lactose permease",
    "lacA": "galactoside O-acetyltransferase",
    "crp": "cAMP receptor protein (CAP), global activator",
    "cyaA": "adenylate cyclase",
    "araC": "arabinose operon regulator",
    "araB": "ribulokinase",
    "araA": "L-arabinose isomerase",
    "araD": "L-ribulose-5-phosphate 4-epimerase",
    "araE": "arabinose-proton symporter",
    "araF": "arabinose ABC transporter binding protein",
    "galR": "galactose operon repressor",
    "galS": "galactose isorepressor",
    "galE": "UDP-glucose 4-epimerase",
    "galT": "galactose-1-phosphate uridylyltransferase",
    "galK": "galactokinase",
    "malT": "maltose regulon activator",
    "malE": "maltose ABC transporter binding protein",
    "fis": "nucleoid protein Fis",
}

# (regulator, target, sign, weight, evidence)
INTERACTIONS: list[tuple[str, str, str, float, str]] = [
    ("lacI", "lacZ", "repression", 0.95, "genetic; footprinting"),
    ("lacI", "lacY", "repression", 0.95, "genetic; operon co-transcription"),
    ("lacI", "lacA", "repression", 0.95, "genetic; operon co-transcription"),
    ("crp", "lacZ", "activation", 0.9, "footprinting; in vitro transcription"),
    ("crp", "lacY", "activation", 0.9, "operon co-transcription"),
    ("crp", "lacA", "activation", 0.9, "operon co-transcription"),
    ("cyaA", "crp", "activation", 0.6, "cAMP synthesis (indirect)"),
    ("crp", "cyaA", "repression", 0.5, "expression analysis"),
    ("crp", "crp", "repression", 0.5, "autoregulation; footprinting"),
    ("araC", "araB", "activation", 0.9, "genetic; footprinting"),
    ("araC", "araA", "activation", 0.9, "operon co-transcription"),
    ("araC", "araD", "activation", 0.9, "operon co-transcription"),
    ("araC", "araE", "activation", 0.85, "footprinting"),
    ("araC", "araF", "activation", 0.85, "footprinting"),
    ("araC", "araC", "repression", 0.8, "autoregulation; DNA looping"),
    ("crp", "araB", "activation", 0.8, "footprinting"),
    ("crp", "araE", "activation", 0.7, "expression analysis"),
    ("crp", "araC", "activation", 0.7, "footprinting"),
    ("galR", "galE", "repression", 0.9, "genetic; DNA looping"),
    ("galR", "galT", "repression", 0.85, "operon co-transcription"),
    ("galR", "galK", "repression", 0.85, "operon co-transcription"),
    ("galS", "galE", "repression", 0.6, "expression analysis"),
    ("galR", "galS", "repression", 0.7, "footprinting"),
    ("crp", "galE", "activation", 0.75, "in vitro transcription"),
    ("crp", "galS", "activation", 0.7, "footprinting"),
    ("crp", "malT", "activation", 0.8, "footprinting"),
    ("malT", "malE", "activation", 0.9, "genetic; footprinting"),
    ("crp", "malE", "activation", 0.7, "expression analysis"),
    ("fis", "crp", "repression", 0.5, "footprinting"),
    ("fis", "cyaA", "repression", 0.4, "expression analysis"),
]


async def seed(engine: AsyncEngine) -> int | None:
    """Load the ``ecoli-carbon`` network once; returns its id, or None if it existed."""
    async with engine.begin() as conn:
        if (await conn.execute(select(func.count()).select_from(Network))).scalar_one():
            return None
        result = await conn.execute(
            insert(Network).values(
                name="ecoli-carbon",
                organism="Escherichia coli K-12",
                description="lac, ara, gal and mal operons with CRP, the textbook GRN",
            )
        )
        network_id = int(result.inserted_primary_key[0])  # type: ignore[index]
        await conn.execute(
            insert(Gene),
            [{"network_id": network_id, "symbol": s, "description": d} for s, d in GENES.items()],
        )
        await conn.execute(
            insert(Interaction),
            [
                {
                    "network_id": network_id,
                    "regulator": r,
                    "target": t,
                    "sign": s,
                    "weight": w,
                    "evidence": e,
                }
                for r, t, s, w, e in INTERACTIONS
            ],
        )
    return network_id
