"""charter.scrub: credentials out of free text, ordinary text left alone."""

from __future__ import annotations

import json
import os
import re
import time
from urllib.parse import quote

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from charter.scrub import REDACTED, scrub, scrub_value

R = REDACTED
SK = "sk-proj-Abc123Def456Ghi789Jkl012Mno345Pqr"
_SECRET_ENV = re.compile(r"KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIAL|AUTH", re.I)


@pytest.fixture(autouse=True)
def _no_secrets_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Whatever the machine running the tests holds, these tests see no secret variables."""
    for name in list(os.environ):
        if _SECRET_ENV.search(name):
            monkeypatch.delenv(name)


# -- Authorization and other credential headers ----------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Authorization: Bearer abc.def-ghi", f"Authorization: Bearer {R}"),
        ("authorization: bearer abc", f"authorization: bearer {R}"),
        ("AUTHORIZATION:Basic dXNlcjpwYXNzd29yZA==", f"AUTHORIZATION:Basic {R}"),
        ("Authorization: Token 0123456789", f"Authorization: Token {R}"),
        ("Authorization: opaque-credential", f"Authorization: {R}"),
        ("Authorization: Custom abc", f"Authorization: {R}"),  # unknown scheme: all of it
        ("Proxy-Authorization: Basic Zm9vOmJhcg==", f"Proxy-Authorization: Basic {R}"),
        (
            'Proxy-Authorization: Digest username="bob", realm="x", response="6629fae4"',
            f"Proxy-Authorization: Digest {R}",
        ),
        (
            "Authorization: AWS4-HMAC-SHA256 Credential=AKID/20260302/s3, Signature=fe5f80f7",
            f"Authorization: AWS4-HMAC-SHA256 {R}",
        ),
        ("Cookie: session=abc123; theme=dark", f"Cookie: {R}"),
        ("Set-Cookie: sid=31d4d96e407aad42; Path=/; Secure", f"Set-Cookie: {R}"),
        # JSON and Python-repr echoes
        ('{"authorization": "Bearer sk-x", "n": 1}', f'{{"authorization": "Bearer {R}", "n": 1}}'),
        (
            "{'Authorization': 'Bearer abc', 'Host': 'h'}",
            f"{{'Authorization': 'Bearer {R}', 'Host': 'h'}}",
        ),
        ('{\\"Authorization\\": \\"Bearer abc\\"}', f'{{\\"Authorization\\": \\"Bearer {R}\\"}}'),
        ('"proxy-authorization":"Basic Zm9v"', f'"proxy-authorization":"Basic {R}"'),
        # inside a quoted message: the value stops at the quote
        (
            "{'message': 'Request had Authorization: Bearer abc123 in it', 'type': 'x'}",
            f"{{'message': 'Request had Authorization: Bearer {R}', 'type': 'x'}}",
        ),
    ],
)
def test_authorization_headers(text: str, expected: str) -> None:
    assert scrub(text) == expected


def test_a_header_dump_keeps_every_other_header() -> None:
    dump = (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\n"
        "Authorization: Bearer opaque-value-1\r\nX-Api-Key: opaque-value-2\r\n"
        "Content-Type: application/json\r\nIdempotency-Key: run_1:3\r\n"
    )
    assert scrub(dump) == (
        "POST /v1/chat/completions HTTP/1.1\r\nHost: api.example.com\r\n"
        f"Authorization: Bearer {R}\r\nX-Api-Key: {R}\r\n"
        "Content-Type: application/json\r\nIdempotency-Key: run_1:3\r\n"
    )


# -- secret-named fields -----------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "x-api-key",
        "api-key",
        "api_key",
        "apikey",
        "ApiKey",
        "access_token",
        "refresh_token",
        "id_token",
        "client_secret",
        "password",
        "passwd",
        "secret",
        "token",
        "openai_api_key",
        "X-Auth-Token",
        "aws_secret_access_key",
        "db_password",
        "credentials",
    ],
)
def test_secret_names_as_headers_keys_and_parameters(name: str) -> None:
    value = "v4lue-0f-the-secret"
    assert scrub(f"{name}: {value}\nnext: 1") == f"{name}: {R}\nnext: 1"
    assert scrub(f'{{"{name}": "{value}", "ok": true}}') == f'{{"{name}": "{R}", "ok": true}}'
    assert scrub(f"{{'{name}': '{value}'}}") == f"{{'{name}': '{R}'}}"
    assert scrub(f"https://h/p?{name}={value}&x=1") == f"https://h/p?{name}={R}&x=1"
    assert scrub(f"a=1&{name}={value}") == f"a=1&{name}={R}"


def test_query_parameters_end_at_the_next_parameter() -> None:
    assert scrub("GET /v1/models?api_key=abc123&x=1 HTTP/1.1") == (
        f"GET /v1/models?api_key={R}&x=1 HTTP/1.1"
    )
    assert scrub("?token=abc#frag") == f"?token={R}"  # '#' may be part of a password
    assert scrub("user=bob&password=hunter2&remember=1") == f"user=bob&password={R}&remember=1"


def test_a_scheme_in_a_secret_field_is_kept_and_the_credential_masked() -> None:
    assert scrub("token=Bearer abc") == f"token=Bearer {R}"
    assert scrub('"access_token": "Bearer abc"') == f'"access_token": "Bearer {R}"'


@pytest.mark.parametrize(
    "text",
    [
        "max_tokens: 300",
        '{"prompt_tokens": 1200, "completion_tokens": 80, "total_tokens": 1280}',
        "tokens=5",
        "token_type: bearer",
        "Idempotency-Key: run_1:2",
        '{"key": "orders/2026/42"}',
        '{"password": null, "token": "", "secret": true}',
        "passwords must be at least 12 characters",
    ],
)
def test_names_that_are_not_secrets_or_values_that_are_not_credentials(text: str) -> None:
    assert scrub(text) == text


# -- key shapes anywhere -------------------------------------------------------------------------
@pytest.mark.parametrize(
    "key",
    [
        "sk-Abc123Def456Ghi789Jkl012Mno345Pqr678Stu",  # OpenAI (legacy)
        SK,  # OpenAI project key
        "sk-svcacct-Abc123Def456Ghi789Jkl012Mno345",
        "sk-ant-api03-Abc123Def456Ghi789Jkl012Mno345Pqr678-Stu_AA",  # Anthropic
        "sk_live_4eC39HqLyjWDarjtT1zdp7dc",  # Stripe
        "rk_test_4eC39HqLyjWDarjtT1zdp7dc",
        "AKIAIOSFODNN7EXAMPLE",  # AWS access key id
        "ASIAY34FZKBOKMUTVV7A",
        "ghp_" + "a1B2c3D4e5" * 3 + "f6G7h8",  # GitHub
        "gho_" + "Z9y8X7w6V5" * 4,
        "ghs_" + "0" * 36,
        "github_pat_11ABCDEFG0123456789_abcdefghijklmnopqrstuvwxyz0123456789ABCDEFGH",
        "xoxb-123456789012-1234567890123-AbCdEfGhIjKlMnOpQrStUvWx",  # Slack
        "xoxp-1234-5678-9012-abcdef",
        # JWT
        "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
        "AIzaSyA-1234567890abcdefghijklmnopqrstu",  # Google
    ],
)
def test_well_known_key_shapes_anywhere(key: str) -> None:
    for text in (
        f"the key {key} was rejected",
        f"({key})",
        f'"{key}"',
        f"key={key}.",
        f"key:{key}\n",
    ):
        scrubbed = scrub(text)
        assert key not in scrubbed and R in scrubbed, text
        assert scrubbed == text.replace(key, R)


def test_a_private_key_block() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7\nq1w2e3r4\n-----END RSA PRIVATE KEY-----"
    assert scrub(f"loaded {pem} ok") == f"loaded {R} ok"
    assert scrub("-----BEGIN PRIVATE KEY-----\nMIIEv (cut off") == R


# -- passwords in URLs ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("https://bob:hunter2@api.example.com/v1", f"https://bob:{R}@api.example.com/v1"),
        (
            "could not connect to postgresql://app:s3cr%40t@db:5432/charter",
            f"could not connect to postgresql://app:{R}@db:5432/charter",
        ),
        ("redis://:only-a-password@cache:6379/0", f"redis://:{R}@cache:6379/0"),
        ("amqp://guest:guest@localhost//", f"amqp://guest:{R}@localhost//"),
    ],
)
def test_passwords_in_urls(text: str, expected: str) -> None:
    assert scrub(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "http://127.0.0.1:8080/v1/chat/completions",
        "https://bob@example.com/path?q=1",
        "ssh://git@github.com:22/org/repo.git",
        "mailto:ann@example.com",
    ],
)
def test_urls_without_passwords_are_left_alone(text: str) -> None:
    assert scrub(text) == text


# -- secrets this process holds ------------------------------------------------------------------
@pytest.mark.parametrize(
    "name",
    [
        "MY_SERVICE_KEY",
        "GATEWAY_TOKEN",
        "WEBHOOK_SECRET",
        "DB_PASSWORD",
        "LDAP_PASSWD",
        "GOOGLE_CREDENTIALS",
        "BASIC_AUTH",
        "lowercase_api_key",
    ],
)
def test_values_of_secret_environment_variables(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "no-recognisable-shape-42"
    assert scrub(f"upstream said {secret}!") == f"upstream said {secret}!"
    monkeypatch.setenv(name, secret)  # read at call time, not at import
    assert scrub(f"upstream said {secret}!") == f"upstream said {R}!"
    assert scrub(f"x{secret}x") == f"x{R}x"  # exact value, wherever it is
    monkeypatch.delenv(name)
    assert scrub(f"upstream said {secret}!") == f"upstream said {secret}!"


def test_environment_values_are_also_found_escaped(monkeypatch: pytest.MonkeyPatch) -> None:
    secret = 'p@ss w"rd/\\with+odd&chars'
    monkeypatch.setenv("SERVICE_PASSWORD", secret)
    assert scrub(f"got {secret}") == f"got {R}"
    assert scrub(json.dumps({"msg": f"got {secret}"})) == json.dumps({"msg": f"got {R}"})
    assert scrub(f"url=/x?q={quote(secret, safe='')}") == f"url=/x?q={R}"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("SHORT_TOKEN", "abc1234"),  # fewer than 8 characters
        ("FEATURE_AUTH", "disabled"),  # a configuration word
        ("SOME_KEY_ENABLED", "true"),
        ("AUTH_HOST", "localhost"),
        ("GIT_AUTHOR_NAME", "Ann Example"),  # AUTHOR is not AUTH
        ("PLAIN_SETTING", "no-recognisable-shape-42"),  # name says nothing secret
    ],
)
def test_environment_values_that_are_not_treated_as_secrets(
    name: str, value: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(name, value)
    assert scrub(f"value is {value} here") == f"value is {value} here"


# -- what must be left alone ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "text",
    [
        "The customer asked for a refund of order ORD-2026-00042 placed on 2026-03-02.",
        "Refund 129.99 EUR to IBAN DE89 3704 0044 0532 0130 00 (BIC COBADEFFXXX).",
        "IBAN GB29NWBK60161331926819",
        "Contact ann@example.com or bob.smith+billing@mail.example.co.uk",
        "order_id=A1B2C3D4E5F6 invoice INV-20260001 ticket T-998877",
        "sk is not a key, nor is sk-learn, sk-1234, risk-assessment-policy-v2",
        "task-sk-ab12: ask-me-anything-about-everything-here",
        "run_01HZX3K9Q2W8E4R6T8Y0U1I3O5 step 3 attempt 2",
        "550e8400-e29b-41d4-a716-446655440000",
        "HTTP 429 RateLimitError: Rate limit reached for gpt-4o-mini; retry after 20s",
        "openai:gpt-4o-mini: HTTP 401 AuthenticationError: Incorrect API key provided",
        "The secret to good service is listening.",
        "A token of appreciation; two tokens; tokenised text",
        "",
    ],
)
def test_ordinary_text_is_left_alone(text: str) -> None:
    assert scrub(text) == text


# -- properties ----------------------------------------------------------------------------------
_PROSE = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=200)


@settings(max_examples=300, deadline=None)
@given(_PROSE, _PROSE)
def test_an_openai_key_never_survives_whatever_surrounds_it(before: str, after: str) -> None:
    # separated from the neighbours, as a key in any real text is
    assert SK not in scrub(f"{before} {SK} {after}")
    assert SK not in scrub(f"{before}Authorization: Bearer {SK}\n{after}")


@settings(max_examples=300, deadline=None)
@given(_PROSE)
def test_scrub_is_idempotent(text: str) -> None:
    once = scrub(text)
    assert scrub(once) == once


@pytest.mark.parametrize(
    "text",
    [
        f'{{"authorization": "Bearer {SK}", "api_key": "{SK}"}}',
        f"Authorization: Basic {SK}\r\nCookie: a=b\r\n?token={SK}&x=1 https://u:{SK}@h",
    ],
)
def test_scrubbing_twice_changes_nothing(text: str) -> None:
    once = scrub(text)
    assert SK not in once
    assert scrub(once) == once


def test_it_is_fast_enough_for_error_texts() -> None:
    text = (
        "lorem ipsum dolor sit amet, token_count 1234 https://example.com/a?b=c "
        "Authorization: Bearer abc\n"
    ) * 1500  # ~130 KB, far more than any error message
    started = time.perf_counter()
    scrub(text)
    assert time.perf_counter() - started < 2.0


# -- structures ----------------------------------------------------------------------------------
def test_scrub_value_scrubs_every_string_value_and_returns_a_copy() -> None:
    value = {
        "message": f"bad key {SK}",
        "headers": {"Authorization": "Bearer abc", "api_key": "abc", "token_type": "bearer"},
        "list": [f"{SK}", 1.5, None, True, ("x-api-key: abc",)],
        SK: "keys are left as they are",
    }
    out = scrub_value(value)
    assert out == {
        "message": f"bad key {R}",
        "headers": {"Authorization": f"Bearer {R}", "api_key": R, "token_type": "bearer"},
        "list": [R, 1.5, None, True, (f"x-api-key: {R}",)],
        SK: "keys are left as they are",
    }
    assert value["message"] == f"bad key {SK}"  # the input is untouched
    assert scrub_value("Authorization: Bearer abc") == f"Authorization: Bearer {R}"
    assert scrub_value(42) == 42
