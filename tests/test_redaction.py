"""The redactor masks secrets and personal data, and leaves ordinary text alone."""

from __future__ import annotations

import time

import pytest

from llmobs.telemetry.redaction import DEFAULT_KINDS, Redactor, luhn

R = Redactor()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("mail john.doe+tag@example.co.uk now", "mail [REDACTED:email] now"),
        ("Jane_D@sub.example.org.", "[REDACTED:email]."),
        ("visa 4111 1111 1111 1111 ok", "visa [REDACTED:card_number] ok"),
        ("amex 3782-822463-10005", "amex [REDACTED:card_number]"),
        ("4242424242424242", "[REDACTED:card_number]"),
        ("call +1 (555) 123-4567", "call [REDACTED:phone]"),
        ("call 555-123-4567 or (555) 123-4567", "call [REDACTED:phone] or [REDACTED:phone]"),
        ("uk +44 20 7946 0958", "uk [REDACTED:phone]"),
        ("key sk-proj-Ab3dEfGhIjKlMnOpQrStUvWx_yz-0123", "key [REDACTED:api_key]"),
        ("sk-abcdefghijklmnop1234", "[REDACTED:api_key]"),
        ("sk-ant-api03-abcdefghijklmnopqrstuv", "[REDACTED:api_key]"),
        ("aws AKIAIOSFODNN7EXAMPLE", "aws [REDACTED:aws_access_key]"),
        ("ghp_abcdefghijklmnopqrstuvwxyz0123456789", "[REDACTED:github_token]"),
        ("github_pat_11ABCDEFG0abcdefghijkl_mnopqrstuv", "[REDACTED:github_token]"),
        ("xoxb-1234567890-abcdefghij", "[REDACTED:slack_token]"),
        ("xoxp-1234567890-abcdefghij", "[REDACTED:slack_token]"),
        ("AIzaSyA1234567890abcdefghijklmnopqrstuv", "[REDACTED:google_api_key]"),
        ("sk_live_abcdefghijklmnop1234", "[REDACTED:stripe_key]"),
        ("hf_abcdefghijklmnopqrstuvwxyz12345", "[REDACTED:huggingface_token]"),
        ("Authorization: Bearer abc.def-ghi_jkl", "Authorization: Bearer [REDACTED:bearer_token]"),
        ("authorization: bearer 0123456789", "authorization: bearer [REDACTED:bearer_token]"),
        ("Basic dXNlcjpwYXNzd29yZA==", "Basic [REDACTED:basic_auth]"),
        (
            "t eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
            "t [REDACTED:jwt]",
        ),
        ("api_key=0123456789abcdef0123", "api_key=[REDACTED:secret]"),
        ("X-API-KEY: f00dfeedcafe", "X-API-KEY: [REDACTED:secret]"),
        ("token: 'deadbeefcafe1234'", "token: '[REDACTED:secret]'"),
        ('{"password": "hunter22"}', '{"password": "[REDACTED:secret]"}'),
        ("url?access_token=abcdef123456&x=1", "url?access_token=[REDACTED:secret]&x=1"),
        ("my_client_secret = s3cr3t-value", "my_client_secret = [REDACTED:secret]"),
        ("ip 192.168.1.20 and 10.0.0.1.", "ip [REDACTED:ip_address] and [REDACTED:ip_address]."),
        (
            "-----BEGIN RSA PRIVATE KEY-----\nMIIabc\n-----END RSA PRIVATE KEY----- done",
            "[REDACTED:private_key] done",
        ),
    ],
)
def test_masks(text: str, expected: str) -> None:
    assert R.redact(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "a normal sentence about tokens, keys and secrets",
        "the token is short; tokens: 12; password: none",  # values under six characters
        "mytoken=abcdefghij and topsecret: abcdefghij",  # a key name inside a longer word
        "version 3.11.4 costs $12.50 at 10:30, pi=3.14159",
        "order 12345678 shipped 2024-01-15 12:00:00",
        "card-like but not Luhn: 4111 1111 1111 1112",
        "1234567 apples and 555-1234",
        "semver 1.2.3.4.5 and v10.0.0.1",
        "task-abcdefghijklmnopqrstu and desk-abcdefghijklmnopqrstuv",  # sk- inside a word
        "@handle, a@b, user@localhost",
        "AKIA is a prefix; XAKIAIOSFODNN7EXAMPLE is not one",
        "bearer of bad news",
        "",
    ],
)
def test_leaves_ordinary_text_alone(text: str) -> None:
    assert R.redact(text) == text


def test_luhn() -> None:
    assert luhn("4111111111111111") and luhn("4111-1111-1111-1111") and luhn("378282246310005")
    assert not luhn("4111111111111112")
    assert not luhn("0000 0000 0000")  # 12 digits: too short for a card


def test_several_kinds_in_one_text() -> None:
    text = "I am ann@example.com, card 4111111111111111, key sk-abcdefghijklmnopqrstuv, +1 555 123 4567."
    assert R.redact(text) == (
        "I am [REDACTED:email], card [REDACTED:card_number], key [REDACTED:api_key], [REDACTED:phone]."
    )


def test_overlapping_matches_mask_once() -> None:
    # api_key and secret both match the value: one mask (the more specific kind), the key name kept.
    assert R.redact("api_key=sk-abcdefghijklmnopqrstuv") == "api_key=[REDACTED:api_key]"
    assert R.redact("Bearer sk-abcdefghijklmnopqrstuv") == "Bearer [REDACTED:bearer_token]"


def test_disabled_passes_through() -> None:
    off = Redactor(enabled=False)
    text = "ann@example.com sk-abcdefghijklmnopqrstuv"
    assert off.redact(text) == text
    assert off.redact_value({"a": [text]}) == {"a": [text]}


def test_kinds_pick_rules() -> None:
    only_email = Redactor(kinds=["email"])
    assert only_email.redact("ann@example.com 192.168.1.1") == "[REDACTED:email] 192.168.1.1"
    no_ip = Redactor(kinds=[kind for kind in DEFAULT_KINDS if kind != "ip_address"])
    assert no_ip.redact("host 192.168.1.1") == "host 192.168.1.1"
    with pytest.raises(ValueError, match="unknown redaction rule 'ssn'"):
        Redactor(kinds=["ssn"])


def test_extra_patterns() -> None:
    r = Redactor(extra_patterns=[r"\bEMP-\d{6}\b", r"(?i)project\s+bluebird"])
    assert r.redact("ask EMP-123456 about Project Bluebird") == "ask [REDACTED:custom] about [REDACTED:custom]"
    assert r.redact("and ann@example.com") == "and [REDACTED:email]"  # built-ins still on


@pytest.mark.parametrize(("pattern", "message"), [("(unclosed", "invalid regex '\\(unclosed'"), ("x*", "empty string")])
def test_bad_extra_pattern_names_it(pattern: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Redactor(extra_patterns=[pattern])


def test_redact_value_walks_json_and_keeps_keys() -> None:
    value = [{"role": "user", "parts": [{"type": "text", "content": "ann@example.com"}], "n": 3, "ok": True}]
    assert R.redact_value(value) == [
        {"role": "user", "parts": [{"type": "text", "content": "[REDACTED:email]"}], "n": 3, "ok": True}
    ]
    assert R.redact_value({"ann@example.com": 1}) == {"ann@example.com": 1}  # keys are structure


def test_fast_on_ordinary_text() -> None:
    prose = "Hello, this is a normal prompt about tokens with numbers like 12 and 2024-01-15. " * 800  # ~64 KiB
    started = time.perf_counter()
    assert R.redact(prose) == prose
    assert time.perf_counter() - started < 0.05  # measured ~3 ms; generous for slow CI
