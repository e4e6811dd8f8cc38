"""The GenNetError family and its RFC 9457 rendering."""

from __future__ import annotations

import pydantic
import pytest

from gennet_toolkit import exceptions as ex


def test_every_public_error_derives_from_gennet_error() -> None:
    for name in ex.__all__:
        obj = getattr(ex, name)
        if isinstance(obj, type) and issubclass(obj, Exception):
            assert issubclass(obj, ex.GenNetError), name


@pytest.mark.parametrize(
    ("cls", "status", "code"),
    [
        (ex.BadRequest, 400, "bad_request"),
        (ex.InvalidJSON, 400, "invalid_json"),
        (ex.Unauthorized, 401, "unauthorized"),
        (ex.Forbidden, 403, "forbidden"),
        (ex.NotFound, 404, "not_found"),
        (ex.MethodNotAllowed, 405, "method_not_allowed"),
        (ex.Conflict, 409, "conflict"),
        (ex.ConcurrencyError, 409, "concurrency_conflict"),
        (ex.Gone, 410, "gone"),
        (ex.PayloadTooLarge, 413, "payload_too_large"),
        (ex.UnsupportedMediaType, 415, "unsupported_media_type"),
        (ex.ValidationFailed, 422, "validation_failed"),
        (ex.RateLimitExceeded, 429, "rate_limited"),
        (ex.UpstreamError, 502, "upstream_error"),
        (ex.ServiceUnavailable, 503, "service_unavailable"),
        (ex.CircuitOpenError, 503, "circuit_open"),
        (ex.GenNetError, 500, "internal_error"),
    ],
)
def test_defaults_render_a_complete_problem(
    cls: type[ex.GenNetError], status: int, code: str
) -> None:
    body = cls().to_problem(instance="/v1/networks/1", correlation_id="abc")
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == ex.PROBLEM_TYPE_PREFIX + code
    assert body["title"]
    assert body["detail"]
    assert body["instance"] == "/v1/networks/1"
    assert body["correlation_id"] == "abc"


def test_instance_overrides_win_over_class_defaults() -> None:
    err = ex.GenNetError(
        "Teapot.",
        status_code=418,
        code="teapot",
        type_uri="https://example.org/teapot",
        title="I'm a teapot",
        extra={"brew": "earl grey"},
    )
    body = err.to_problem()
    assert body == {
        "type": "https://example.org/teapot",
        "title": "I'm a teapot",
        "status": 418,
        "detail": "Teapot.",
        "code": "teapot",
        "brew": "earl grey",
    }
    # The class default is untouched.
    assert ex.GenNetError().status_code == 500


def test_extra_cannot_overwrite_reserved_members() -> None:
    with pytest.raises(ValueError, match="reserved"):
        ex.NotFound(extra={"status": 200})


def test_status_code_outside_error_range_is_refused() -> None:
    with pytest.raises(ValueError, match="4xx or 5xx"):
        ex.GenNetError(status_code=200)


def test_rate_limit_retry_after_rounds_up_to_whole_seconds() -> None:
    assert ex.RateLimitExceeded(retry_after=0.2).headers["Retry-After"] == "1"
    assert ex.RateLimitExceeded(retry_after=3).headers["Retry-After"] == "3"
    assert ex.RateLimitExceeded(retry_after=-1).retry_after == 0


def test_unauthorized_always_names_a_scheme() -> None:
    assert ex.Unauthorized().headers == {"WWW-Authenticate": "Bearer"}
    err = ex.Unauthorized(scheme="ApiKey", headers={"X-Extra": "1"})
    assert err.headers == {"WWW-Authenticate": "ApiKey", "X-Extra": "1"}


def test_service_unavailable_retry_after_is_optional() -> None:
    assert "Retry-After" not in ex.ServiceUnavailable().headers
    assert ex.CircuitOpenError(retry_after=30).headers["Retry-After"] == "30"


def test_validation_errors_carry_pointers_and_never_input() -> None:
    class Interaction(pydantic.BaseModel):
        weight: float
        genes: list[int]

    with pytest.raises(pydantic.ValidationError) as info:
        Interaction.model_validate({"weight": "s3cr3t-value", "genes": [1, "x/y~z"]})
    err = ex.ValidationFailed.from_pydantic(info.value)
    body = err.to_problem()
    pointers = sorted(e["pointer"] for e in body["errors"])
    assert pointers == ["#/genes/1", "#/weight"]
    assert "s3cr3t-value" not in str(body)
    assert "x/y~z" not in str(body)


def test_query_errors_name_the_parameter() -> None:
    errors = ex.field_errors_from_pydantic(
        [{"loc": ("query", "limit"), "msg": "too big", "type": "less_than_equal"}]
    )
    assert errors[0].to_dict() == {
        "detail": "too big",
        "location": "query",
        "parameter": "limit",
        "code": "less_than_equal",
    }


def test_json_pointer_escapes_tilde_and_slash() -> None:
    assert ex.json_pointer(["a/b", "c~d", 0]) == "/a~1b/c~0d/0"


def test_configuration_error_is_also_a_value_error() -> None:
    with pytest.raises(ValueError, match="bad"):
        raise ex.ConfigurationError("bad option")


def test_custom_validator_message_quoting_the_input_is_replaced() -> None:
    class Gene(pydantic.BaseModel):
        symbol: str

        @pydantic.field_validator("symbol")
        @classmethod
        def known(cls, v: str) -> str:
            raise ValueError(f"{v} is not a known gene")

    with pytest.raises(pydantic.ValidationError) as info:
        Gene.model_validate({"symbol": "private-token-xyz"})
    body = ex.ValidationFailed.from_pydantic(info.value).to_problem()
    assert "private-token-xyz" not in str(body)
    assert body["errors"][0]["pointer"] == "#/symbol"


def test_a_body_field_named_like_a_location_keeps_its_pointer() -> None:
    class Route(pydantic.BaseModel):
        path: int

    with pytest.raises(pydantic.ValidationError) as info:
        Route.model_validate({"path": "x"})
    err = ex.ValidationFailed.from_pydantic(info.value)
    assert err.errors[0].pointer == "/path"
