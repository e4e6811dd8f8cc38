"""Alert rules: their PromQL form, their in-process value, the Prometheus state machine."""

from __future__ import annotations

import enum
import math
import operator
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Final

from gennet_toolkit.exceptions import ConfigurationError
from gennet_toolkit.monitoring import _windows as w
from gennet_toolkit.monitoring._windows import MetricKind

if TYPE_CHECKING:
    from gennet_toolkit.monitoring._windows import Metric

__all__ = ()

_NAME_RE: Final = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")
_LABEL_RE: Final = re.compile(r"[a-zA-Z_][a-zA-Z0-9_]*")
_VALUE_RE: Final = re.compile(r"\{\{\s*\$value\s*\}\}")
_LABELS_RE: Final = re.compile(r"\{\{[^}]*\$labels")

OPS: Final[Mapping[str, Callable[[float, float], bool]]] = MappingProxyType(
    {
        ">": operator.gt,
        ">=": operator.ge,
        "<": operator.lt,
        "<=": operator.le,
        "==": operator.eq,
        "!=": operator.ne,
    }
)

#: aggregation -> (metric kind it applies to, PromQL template). ``{m}`` is the metric
#: name, ``{r}`` the range, ``{q}`` the quantile, ``{d}`` the denominator metric.
AGGREGATIONS: Final[Mapping[str, tuple[MetricKind, str]]] = MappingProxyType(
    {
        "rate": ("counter", "sum(rate({m}[{r}]))"),
        "increase": ("counter", "sum(increase({m}[{r}]))"),
        "ratio": ("counter", "sum(rate({m}[{r}])) / sum(rate({d}[{r}]))"),
        "last": ("gauge", "sum({m})"),
        "avg_over_time": ("gauge", "avg(avg_over_time({m}[{r}]))"),
        "max_over_time": ("gauge", "max(max_over_time({m}[{r}]))"),
        "min_over_time": ("gauge", "min(min_over_time({m}[{r}]))"),
        "quantile": ("histogram", "histogram_quantile({q}, sum by (le) (rate({m}_bucket[{r}])))"),
        "mean": ("histogram", "sum(rate({m}_sum[{r}])) / sum(rate({m}_count[{r}]))"),
        "count_rate": ("histogram", "sum(rate({m}_count[{r}]))"),
    }
)

_UNITS: Final = (("w", 604_800_000), ("d", 86_400_000), ("h", 3_600_000), ("m", 60_000))


def prom_duration(ms: int) -> str:
    """Milliseconds as a Prometheus duration in one unit: ``300000`` -> ``"5m"``."""
    if ms == 0:
        return "0s"
    for unit, size in _UNITS:
        if ms % size == 0:
            return f"{ms // size}{unit}"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


def prom_float(value: float) -> str:
    """A float that PromQL parses back to the same double."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def go_value(value: float) -> str:
    """``$value`` as Go's text/template prints a float64 (``%v``)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if value == int(value) and abs(value) < 1e21:
        return str(int(value))
    text = repr(value)
    if "e" in text:
        mantissa, _, exp = text.partition("e")
        sign = "-" if exp.startswith("-") else "+"
        text = f"{mantissa}e{sign}{exp.lstrip('+-').rjust(2, '0')}"
    elif abs(value) >= 1e21 or abs(value) < 1e-4:
        text = f"{value:e}"
    return text


def is_number(value: object) -> bool:
    """A real int or float (bool excluded), not NaN."""
    return isinstance(value, int | float) and not isinstance(value, bool) and not math.isnan(value)


def is_name(value: object) -> bool:
    """A valid Prometheus metric name."""
    return isinstance(value, str) and _NAME_RE.fullmatch(value) is not None


def _duration_ms(value: float, what: str, rule: str, *, positive: bool = False) -> int:
    if not is_number(value):
        raise ConfigurationError(f"alert rule {rule!r}: {what} must be a number of seconds")
    if value < 0 or (positive and value == 0) or math.isinf(value):
        need = "> 0" if positive else ">= 0"
        raise ConfigurationError(f"alert rule {rule!r}: {what} must be finite and {need}")
    ms = value * 1000
    if ms != round(ms):
        raise ConfigurationError(f"alert rule {rule!r}: {what} must be whole milliseconds")
    return round(ms)


def _check_labels(mapping: Mapping[str, str] | None, what: str, rule: str) -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in (mapping or {}).items():
        if not _LABEL_RE.fullmatch(str(key)) or str(key).startswith("__"):
            raise ConfigurationError(
                f"alert rule {rule!r}: {what} name {key!r} must match [a-zA-Z_][a-zA-Z0-9_]* "
                "and not start with '__'"
            )
        if not isinstance(value, str):
            raise ConfigurationError(f"alert rule {rule!r}: {what} {key!r} must be a string")
        out[key] = value
    return out


@dataclass(frozen=True, eq=True)
class AlertRule:
    """One alert: ``<aggregation of metric over window> <op> <threshold>`` held ``for_seconds``.

    ::

        AlertRule("HighLatencyP99", "http_request_duration_seconds", ">", 0.5,
                  for_seconds=300, severity="page", aggregation="quantile", quantile=0.99)
        AlertRule("ErrorBudgetBurn", "http_errors_total", ">", 0.0144, 0, "page",
                  aggregation="ratio", denominator="http_requests_total",
                  window=3600, short_window=300)

    ``aggregation`` picks the metric kind and the PromQL form (see :data:`AGGREGATIONS`):
    ``rate``/``increase``/``ratio`` for counters, ``last``/``avg_over_time``/
    ``max_over_time``/``min_over_time`` for gauges, ``quantile``/``mean``/``count_rate``
    for histograms; ``kind`` (optional) states the metric kind and must agree. With
    ``short_window`` the condition must hold over both windows
    (multiwindow alerts). ``labels`` and ``annotations`` go on the alert; annotations may
    use ``{{ $value }}`` (``$labels`` would be empty: the expressions aggregate to one
    series, so it is refused). Bad values raise
    :class:`~gennet_toolkit.exceptions.ConfigurationError` here, not at evaluation.
    """

    name: str
    metric: str
    op: str
    threshold: float
    for_seconds: float = 0.0
    severity: str = "warning"
    keep_firing_for: float = 0.0
    aggregation: str = "last"
    window: float = 300.0
    short_window: float | None = None
    quantile: float | None = None
    denominator: str | None = None
    kind: MetricKind | None = None
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        name = self.name
        if not is_name(name):
            raise ConfigurationError(
                f"alert rule name {name!r} must match [a-zA-Z_:][a-zA-Z0-9_:]*"
            )
        if not is_name(self.metric):
            raise ConfigurationError(
                f"alert rule {name!r}: metric {self.metric!r} is not a valid metric name"
            )
        if self.op not in OPS:
            raise ConfigurationError(
                f"alert rule {name!r}: op {self.op!r} is not one of {', '.join(OPS)}"
            )
        if not is_number(self.threshold):
            raise ConfigurationError(f"alert rule {name!r}: threshold must be a number")
        if self.aggregation not in AGGREGATIONS:
            raise ConfigurationError(
                f"alert rule {name!r}: unknown aggregation {self.aggregation!r}; "
                f"supported: {', '.join(AGGREGATIONS)}"
            )
        expected = AGGREGATIONS[self.aggregation][0]
        if self.kind is None:
            object.__setattr__(self, "kind", expected)
        elif self.kind not in w.METRIC_KINDS:
            raise ConfigurationError(
                f"alert rule {name!r}: unknown metric kind {self.kind!r}; "
                f"supported: {', '.join(w.METRIC_KINDS)}"
            )
        elif self.kind != expected:
            raise ConfigurationError(
                f"alert rule {name!r}: aggregation {self.aggregation!r} reads a {expected}, "
                f"not a {self.kind}"
            )
        _duration_ms(self.for_seconds, "for_seconds", name)
        _duration_ms(self.keep_firing_for, "keep_firing_for", name)
        window_ms = _duration_ms(self.window, "window", name, positive=True)
        if self.short_window is not None:
            short_ms = _duration_ms(self.short_window, "short_window", name, positive=True)
            if short_ms >= window_ms:
                raise ConfigurationError(
                    f"alert rule {name!r}: short_window must be shorter than window"
                )
        if self.aggregation == "quantile":
            q = self.quantile
            if q is None or not is_number(q) or not 0 <= q <= 1:
                raise ConfigurationError(
                    f"alert rule {name!r}: aggregation 'quantile' needs quantile in [0, 1]"
                )
        elif self.quantile is not None:
            raise ConfigurationError(
                f"alert rule {name!r}: quantile only applies to aggregation 'quantile'"
            )
        if self.aggregation == "ratio":
            if not is_name(self.denominator):
                raise ConfigurationError(
                    f"alert rule {name!r}: aggregation 'ratio' needs a valid denominator metric"
                )
        elif self.denominator is not None:
            raise ConfigurationError(
                f"alert rule {name!r}: denominator only applies to aggregation 'ratio'"
            )
        if not self.severity or not isinstance(self.severity, str):
            raise ConfigurationError(f"alert rule {name!r}: severity must be a non-empty string")
        labels = _check_labels(self.labels, "label", name)
        if "severity" in labels or "alertname" in labels:
            raise ConfigurationError(
                f"alert rule {name!r}: 'severity' and 'alertname' are set by the rule itself"
            )
        # Frozen: store read-only copies so a caller's dict cannot change a live rule.
        object.__setattr__(self, "labels", MappingProxyType(labels))
        annotations = _check_labels(self.annotations, "annotation", name)
        for key, text in annotations.items():
            if _LABELS_RE.search(text):
                # Prometheus fills $labels from the expression's output series, and these
                # expressions aggregate to one series without labels: it would print "".
                raise ConfigurationError(
                    f"alert rule {name!r}: annotation {key!r} uses $labels, which is empty "
                    "for these aggregated expressions; write the value itself"
                )
        object.__setattr__(self, "annotations", MappingProxyType(annotations))

    def __hash__(self) -> int:
        return hash((self.name, self.metric, self.op, self.threshold, self.aggregation))

    @property
    def metrics(self) -> tuple[str, ...]:
        """Names of the metrics the rule reads."""
        return (self.metric,) if self.denominator is None else (self.metric, self.denominator)

    @property
    def all_labels(self) -> dict[str, str]:
        """Labels of the alert: the rule's labels plus ``severity``."""
        return {**self.labels, "severity": self.severity}

    @property
    def longest_window(self) -> float:
        """The longest range the rule reads, in seconds (for history retention)."""
        return self.window if self.aggregation != "last" else w.LOOKBACK_MS / 1000

    def _query(self, range_s: float) -> str:
        template = AGGREGATIONS[self.aggregation][1]
        return template.format(
            m=self.metric,
            d=self.denominator,
            r=prom_duration(round(range_s * 1000)),
            q=prom_float(self.quantile) if self.quantile is not None else "",
        )

    def promql(self) -> str:
        """The PromQL alert expression, e.g. ``sum(rate(x_total[5m])) > 2.0``."""
        cond = f"{self._query(self.window)} {self.op} {prom_float(self.threshold)}"
        if self.short_window is None:
            return cond
        short = f"{self._query(self.short_window)} {self.op} {prom_float(self.threshold)}"
        return f"({cond}) and ({short})"

    def compute(self, metrics: Mapping[str, Metric], at_ms: int) -> float | None:
        """The value of the condition's left side at ``at_ms``; None when it has no data.

        With a short window, None unless the condition also holds over it (PromQL ``and``).
        """
        value = self._value(metrics, at_ms, round(self.window * 1000))
        if value is None or self.short_window is None:
            return value
        short = self._value(metrics, at_ms, round(self.short_window * 1000))
        if short is None or not OPS[self.op](short, self.threshold):
            return None
        return value

    def holds(self, value: float) -> bool:
        """Whether a computed value meets the condition (NaN never does)."""
        return OPS[self.op](value, self.threshold)

    def _value(self, metrics: Mapping[str, Metric], at_ms: int, range_ms: int) -> float | None:
        metric = metrics.get(self.metric)
        if metric is None:
            return None
        agg = self.aggregation
        if agg in ("rate", "increase", "ratio"):
            if not isinstance(metric, w.Counter):  # Monitor.add_rule checks kinds
                return None
            value = w.extrapolated_rate(metric._history, at_ms, range_ms, is_rate=agg != "increase")
            if agg != "ratio" or value is None:
                return value
            den = metrics.get(self.denominator or "")
            if not isinstance(den, w.Counter):
                return None
            den_value = w.extrapolated_rate(den._history, at_ms, range_ms, is_rate=True)
            return None if den_value is None else w.divide(value, den_value)
        if isinstance(metric, w.Gauge):
            if agg == "last":
                return w.instant(metric._history, at_ms)
            return w.over_time(metric._history, at_ms, range_ms, agg)
        if not isinstance(metric, w.Histogram):
            return None
        if agg == "quantile":
            return w.histogram_quantile(metric, float(self.quantile or 0), at_ms, range_ms)
        count = w.extrapolated_rate(metric._count_history, at_ms, range_ms, is_rate=True)
        if agg == "count_rate" or count is None:
            return count
        total = w.extrapolated_rate(metric._sum_history, at_ms, range_ms, is_rate=True)
        return None if total is None else w.divide(total, count)

    def render(self, text: str, value: float) -> str:
        """Fill ``{{ $value }}`` in an annotation as Prometheus prints it; leave the rest."""
        return _VALUE_RE.sub(lambda _: go_value(value), text)


class AlertState(enum.Enum):
    """Where an alert is in the Prometheus lifecycle."""

    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


class Alert:
    """The live state of one rule's alert.

    ``active_at``/``fired_at``/``resolved_at`` are monitor clock seconds (None when unset).
    """

    __slots__ = ("_active_ms", "_fired_ms", "_keep_ms", "_resolved_ms", "annotations", "rule",
                 "state", "value")  # fmt: skip

    def __init__(self, rule: AlertRule) -> None:
        self.rule = rule
        self.state = AlertState.INACTIVE
        self.value = math.nan
        self.annotations: dict[str, str] = {}
        self._active_ms: int | None = None
        self._fired_ms: int | None = None
        self._resolved_ms: int | None = None
        self._keep_ms: int | None = None

    @property
    def active_at(self) -> float | None:
        """When the condition started to hold (the alert became pending)."""
        return None if self._active_ms is None else self._active_ms / 1000

    @property
    def fired_at(self) -> float | None:
        """When the alert went from pending to firing."""
        return None if self._fired_ms is None else self._fired_ms / 1000

    @property
    def resolved_at(self) -> float | None:
        """When a firing alert was last resolved."""
        return None if self._resolved_ms is None else self._resolved_ms / 1000

    def __repr__(self) -> str:
        return f"<Alert {self.rule.name} {self.state.value} value={self.value!r}>"

    def step(self, now_ms: int, value: float | None) -> str | None:
        """Advance by one evaluation; returns ``"firing"``/``"resolved"`` on a transition.

        Prometheus' AlertingRule.Eval, for a rule with one output series.
        """
        rule = self.rule
        if value is not None and rule.holds(value):
            self.value = value
            self.annotations = {k: rule.render(v, value) for k, v in rule.annotations.items()}
            self._keep_ms = None
            if self.state is AlertState.INACTIVE:
                self.state = AlertState.PENDING
                self._active_ms = now_ms
                self._fired_ms = self._resolved_ms = None
        elif self.state is AlertState.FIRING and rule.keep_firing_for > 0:
            if self._keep_ms is None:
                self._keep_ms = now_ms
            if now_ms - self._keep_ms >= round(rule.keep_firing_for * 1000):
                return self._resolve(now_ms)
            return None
        elif self.state is not AlertState.INACTIVE:
            return self._resolve(now_ms)
        else:
            return None
        if (
            self.state is AlertState.PENDING
            and self._active_ms is not None
            and now_ms - self._active_ms >= round(rule.for_seconds * 1000)
        ):
            self.state = AlertState.FIRING
            self._fired_ms = now_ms
            return "firing"
        return None

    def _resolve(self, now_ms: int) -> str | None:
        was_firing = self.state is AlertState.FIRING
        self.state = AlertState.INACTIVE
        self._keep_ms = None
        if not was_firing:  # a pending alert that never fired is dropped silently
            self._active_ms = None
            return None
        self._resolved_ms = now_ms
        return "resolved"


@dataclass(frozen=True)
class BurnRateWindow:
    """One multiwindow burn-rate alert of an SLO: consume ``budget_fraction`` of the error
    budget within ``long_window`` (checked again over ``short_window``)."""

    long_window: float
    short_window: float
    budget_fraction: float
    severity: str

    def factor(self, period: float) -> float:
        """The burn rate: how many times faster than sustainable the budget is spent."""
        return self.budget_fraction * period / self.long_window


#: The Google SRE workbook's multiwindow, multi-burn-rate alerts (30-day SLO):
#: page at 14.4x over 1h & 5m and 6x over 6h & 30m; ticket at 3x over 1d & 2h and
#: 1x over 3d & 6h.
DEFAULT_BURN_RATE_WINDOWS: Final[tuple[BurnRateWindow, ...]] = (
    BurnRateWindow(3600, 300, 0.02, "page"),
    BurnRateWindow(6 * 3600, 1800, 0.05, "page"),
    BurnRateWindow(24 * 3600, 7200, 0.10, "ticket"),
    BurnRateWindow(3 * 24 * 3600, 6 * 3600, 0.10, "ticket"),
)

_DAY: Final = 86_400.0


def slo_burn_rate_rules(
    name: str,
    *,
    errors: str,
    total: str,
    objective: float = 0.999,
    period: float = 30 * _DAY,
    windows: Sequence[BurnRateWindow] = DEFAULT_BURN_RATE_WINDOWS,
    labels: Mapping[str, str] | None = None,
    annotations: Mapping[str, str] | None = None,
) -> list[AlertRule]:
    """AlertRules for an availability SLO: ``errors / total`` burning the budget too fast.

    ::

        rules = slo_burn_rate_rules("Api", errors="http_errors_total",
                                    total="http_requests_total", objective=0.999)

    One rule per window, named ``<name>ErrorBudgetBurn<factor>x`` (``14_4x`` for 14.4),
    with threshold ``factor * (1 - objective)`` and the SRE workbook's defaults.
    """
    if not is_number(objective):
        raise ConfigurationError("slo_burn_rate_rules: objective must be a number")
    if not 0 < objective < 1:
        raise ConfigurationError("slo_burn_rate_rules: objective must be between 0 and 1")
    if not period > 0:
        raise ConfigurationError("slo_burn_rate_rules: period must be > 0 seconds")
    if not windows:
        raise ConfigurationError("slo_burn_rate_rules: windows must not be empty")
    budget = 1.0 - objective
    rules: list[AlertRule] = []
    for win in windows:
        factor = win.factor(period)
        suffix = f"{factor:g}".replace(".", "_")
        notes = {
            "summary": f"{name}: error budget burning {factor:g}x too fast",
            "description": (
                f"Error ratio {{{{ $value }}}} over {prom_duration(round(win.long_window * 1000))}"
                f" (SLO {objective:g})."
            ),
        }
        notes.update(annotations or {})
        rules.append(
            AlertRule(
                f"{name}ErrorBudgetBurn{suffix}x",
                errors,
                ">",
                # 12 significant digits: 0.0144, not 0.014400000000000013 from float error.
                float(f"{factor * budget:.12g}"),
                0.0,
                win.severity,
                aggregation="ratio",
                denominator=total,
                window=win.long_window,
                short_window=win.short_window,
                labels={"slo": name, **(labels or {})},
                annotations=notes,
            )
        )
    return rules
