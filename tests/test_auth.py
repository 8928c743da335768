"""Researcher access: password hashing and the choice of access mode (core.auth)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core import auth

REPO = Path(__file__).resolve().parents[1]
FAST = 1_000  # iterations: keeps the suite fast; the format is the same as the default


def test_hash_roundtrip_and_format():
    stored = auth.hash_password("correct horse", iterations=FAST)
    algorithm, iterations, salt, digest = stored.split("$")
    assert algorithm == "pbkdf2_sha256" and int(iterations) == FAST and salt and digest
    assert "correct horse" not in stored
    assert auth.verify_password("correct horse", stored)
    assert auth.is_valid_hash(stored)


def test_default_iterations_are_strong():
    stored = auth.hash_password("pw-12345678")
    assert int(stored.split("$")[1]) >= 600_000
    assert auth.verify_password("pw-12345678", stored)


def test_salt_makes_hashes_differ_and_fixed_salt_is_deterministic():
    a = auth.hash_password("same password", iterations=FAST)
    b = auth.hash_password("same password", iterations=FAST)
    assert a != b
    salt = b"0123456789abcdef"
    assert auth.hash_password("pw", iterations=FAST, salt=salt) == auth.hash_password(
        "pw", iterations=FAST, salt=salt
    )


@pytest.mark.parametrize("attempt", ["wrong", "correct horse ", "Correct horse", "", "correct"])
def test_wrong_passwords_are_rejected(attempt):
    stored = auth.hash_password("correct horse", iterations=FAST)
    assert not auth.verify_password(attempt, stored)


@pytest.mark.parametrize(
    "stored",
    [
        None,
        "",
        "correct horse",  # a plain-text password pasted by mistake
        "md5$1000$abc$def",
        "pbkdf2_sha256$notanumber$abc$def",
        "pbkdf2_sha256$10$c2FsdA$" + "A" * 43,  # too few iterations
        "pbkdf2_sha256$1000$c2FsdA$c2hvcnQ",  # digest of the wrong length
        "pbkdf2_sha256$1000$c2FsdA",
    ],
)
def test_malformed_hashes_never_verify(stored):
    assert not auth.verify_password("correct horse", stored)
    assert not auth.is_valid_hash(stored)


def test_tampered_digest_is_rejected():
    stored = auth.hash_password("correct horse", iterations=FAST)
    head, digest = stored.rsplit("$", 1)
    flipped = ("B" if digest[0] != "B" else "C") + digest[1:]
    assert not auth.verify_password("correct horse", f"{head}${flipped}")


def test_hash_password_rejects_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        auth.hash_password("")
    with pytest.raises(ValueError, match="iterations=10"):
        auth.hash_password("pw", iterations=10)


@pytest.mark.parametrize(
    ("address", "loopback"),
    [
        (None, False),  # unset: Streamlit binds every interface
        ("", False),
        ("0.0.0.0", False),
        ("::", False),
        ("192.168.1.20", False),
        ("10.0.0.1", False),
        ("example.org", False),
        ("localhost", True),
        ("LOCALHOST", True),
        ("127.0.0.1", True),
        ("127.1.2.3", True),
        ("::1", True),
        ("[::1]", True),
        ("::ffff:127.0.0.1", True),
    ],
)
def test_is_loopback_address(address, loopback):
    assert auth.is_loopback_address(address) is loopback


@pytest.mark.parametrize(
    ("auth_configured", "password_hash", "address", "mode"),
    [
        (True, "pbkdf2_sha256$1$a$b", "0.0.0.0", "login"),  # identity provider wins
        (True, None, None, "login"),
        (False, "pbkdf2_sha256$1$a$b", None, "password"),
        (False, "pbkdf2_sha256$1$a$b", "127.0.0.1", "password"),
        (False, None, "127.0.0.1", "localhost"),
        (False, "", "::1", "localhost"),  # an empty hash counts as not configured
        (False, None, "localhost", "localhost"),
        (False, None, None, "denied"),
        (False, None, "0.0.0.0", "denied"),
        (False, None, "192.168.1.20", "denied"),
    ],
)
def test_access_mode(auth_configured, password_hash, address, mode):
    assert auth.access_mode(auth_configured, password_hash, address) == mode


def test_researcher_allow_list():
    assert auth.is_researcher_email("anyone@example.org", None)
    allow = ["Ada@Example.org", "grace@example.org"]
    assert auth.is_researcher_email("ada@example.org", allow)
    assert auth.is_researcher_email(" GRACE@example.org ", allow)
    assert not auth.is_researcher_email("mallory@example.org", allow)
    assert not auth.is_researcher_email(None, allow)
    assert not auth.is_researcher_email("ada@example.org", [])


def _cli(stdin: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "core.auth", "hash", "--iterations", str(FAST)],
        input=stdin,
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=60,
    )


def test_cli_prints_a_verifiable_hash():
    result = _cli("a long password\n")
    assert result.returncode == 0, result.stderr
    stored = result.stdout.strip()
    assert auth.verify_password("a long password", stored)
    assert "researcher_password_hash" in result.stderr


def test_cli_refuses_short_passwords():
    result = _cli("short\n")
    assert result.returncode == 2
    assert result.stdout == ""
    assert "at least" in result.stderr


def test_password_lockout_after_repeated_failures_then_a_fresh_count():
    lock = auth.PasswordLockout()
    assert lock.max_failures == auth.MAX_PASSWORD_FAILURES and lock.lockout_s == auth.LOCKOUT_S
    for _ in range(auth.MAX_PASSWORD_FAILURES - 1):
        assert lock.failure(now=100.0) is False
    assert lock.may_try(now=100.0) and lock.remaining_s(now=100.0) == 0.0
    assert lock.failure(now=100.0) is True  # the last allowed failure locks
    assert lock.failures == 0 and lock.locked_until == 100.0 + auth.LOCKOUT_S
    assert not lock.may_try(now=130.0) and lock.remaining_s(now=130.0) == auth.LOCKOUT_S - 30.0
    assert lock.may_try(now=100.0 + auth.LOCKOUT_S) and lock.remaining_s(now=1e9) == 0.0


def test_password_lockout_success_resets_the_count():
    lock = auth.PasswordLockout(failures=3, max_failures=4, lockout_s=5.0)
    lock.success()
    assert lock.failures == 0
    assert [lock.failure(now=0.0) for _ in range(4)] == [False, False, False, True]
    assert lock.locked_until == 5.0
