"""Tables (SQLAlchemy 2) and request bodies (pydantic, with the toolkit's domain types)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from sqlalchemy import CheckConstraint, DateTime, ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from gennet_toolkit.validation import GeneSymbol, NonEmptyStr, Probability

__all__ = [
    "Base",
    "Gene",
    "GeneIn",
    "Interaction",
    "InteractionIn",
    "Network",
    "NetworkIn",
    "RunIn",
    "gene_dict",
    "interaction_dict",
    "network_dict",
]


def _now() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Declarative base of the GRN tables."""


class Network(Base):
    """A named gene regulatory network of one organism."""

    __tablename__ = "grn_networks"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(128), unique=True)
    organism: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(1000), default="")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), default=_now)


class Gene(Base):
    """A node: one gene of a network."""

    __tablename__ = "grn_genes"
    __table_args__ = (UniqueConstraint("network_id", "symbol"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("grn_networks.id"), index=True)
    symbol: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(1000), default="")


class Interaction(Base):
    """An edge: ``regulator`` activates or represses ``target``."""

    __tablename__ = "grn_interactions"
    __table_args__ = (
        UniqueConstraint("network_id", "regulator", "target"),
        CheckConstraint("sign IN ('activation', 'repression')", name="ck_grn_sign"),
        CheckConstraint("weight >= 0 AND weight <= 1", name="ck_grn_weight"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    network_id: Mapped[int] = mapped_column(ForeignKey("grn_networks.id"), index=True)
    regulator: Mapped[str] = mapped_column(String(64))
    target: Mapped[str] = mapped_column(String(64))
    sign: Mapped[str] = mapped_column(String(16))
    weight: Mapped[float] = mapped_column(default=1.0)
    evidence: Mapped[str] = mapped_column(String(256), default="")


class NetworkIn(BaseModel):
    """Body of ``POST /v1/networks``."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,128}$")
    organism: NonEmptyStr
    description: str = Field(default="", max_length=1000)


class GeneIn(BaseModel):
    """Body of ``POST /v1/networks/{id}/genes``."""

    model_config = ConfigDict(extra="forbid")
    symbol: GeneSymbol
    description: str = Field(default="", max_length=1000)


class InteractionIn(BaseModel):
    """One regulatory interaction, as posted alone or in a batch."""

    model_config = ConfigDict(extra="forbid")
    regulator: GeneSymbol
    target: GeneSymbol
    sign: Literal["activation", "repression"]
    weight: Probability = 1.0
    evidence: str = Field(default="", max_length=256)


class RunIn(BaseModel):
    """Body of ``POST /v1/workflows/{name}/runs``: the template's parameters."""

    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = {}
    version: str | None = None


def network_dict(n: Network) -> dict[str, Any]:
    """JSON form of a network."""
    return {"id": n.id, "name": n.name, "organism": n.organism, "description": n.description}


def gene_dict(g: Gene) -> dict[str, Any]:
    """JSON form of a gene."""
    return {
        "id": g.id,
        "network_id": g.network_id,
        "symbol": g.symbol,
        "description": g.description,
    }


def interaction_dict(i: Interaction) -> dict[str, Any]:
    """JSON form of an interaction."""
    return {
        "id": i.id,
        "network_id": i.network_id,
        "regulator": i.regulator,
        "target": i.target,
        "sign": i.sign,
        "weight": i.weight,
        "evidence": i.evidence,
    }
