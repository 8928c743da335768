"""Who may retrain: password hashing and the choice of access mode. No Streamlit here.

Retraining needs the *researcher* role; clinicians only view. The Retrain page picks one of
four modes, in this order of preference:

* ``"login"``: the operator configured an identity provider (an ``[auth]`` section in
  ``.streamlit/secrets.toml``); researchers sign in with ``st.login``.
* ``"password"``: ``researcher_password_hash`` is set in ``secrets.toml`` (a PBKDF2 hash made
  with ``python -m core.auth hash``; the password itself is never stored).
* ``"localhost"``: neither is configured, but the server only listens on a loopback address, so
  only someone at this machine can reach the page.
* ``"denied"``: nothing configured and the server is reachable from other machines.

In ``"password"`` mode, :class:`PasswordLockout` counts wrong passwords and refuses further
tries for a while after too many in a row (the page keeps one per browser session).

Usage::

    python -m core.auth hash        # prompts twice (or reads one line from stdin), prints a hash
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import ipaddress
import secrets
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from core import cli

AccessMode = Literal["login", "password", "localhost", "denied"]
ACCESS_MODES: tuple[str, ...] = ("login", "password", "localhost", "denied")

ALGORITHM = "pbkdf2_sha256"
# OWASP's 2023 recommendation for PBKDF2-HMAC-SHA256; about 0.3 s per check here, which is
# fine for a login and slows offline guessing if secrets.toml leaks.
DEFAULT_ITERATIONS = 600_000
MIN_ITERATIONS = 1_000
SALT_BYTES = 16
MIN_PASSWORD_LENGTH = 8
# Wrong passwords in a row before the form is disabled, and for how long: slows guessing through
# the page to a few tries a minute while a researcher with a typo barely notices.
MAX_PASSWORD_FAILURES = 5
LOCKOUT_S = 60.0


def _b64encode(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def _b64decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def hash_password(
    password: str, *, iterations: int = DEFAULT_ITERATIONS, salt: bytes | None = None
) -> str:
    """Hash a password with PBKDF2-HMAC-SHA256 and a random salt.

    Args:
        password: the plain-text password (any non-empty string).
        iterations: PBKDF2 rounds; stored in the result so it can be raised later.
        salt: fixed salt for reproducible tests; random (16 bytes) when None.

    Returns:
        ``"pbkdf2_sha256$<iterations>$<salt>$<digest>"`` (salt and digest url-safe base64),
        the value to put in ``secrets.toml`` as ``researcher_password_hash``.

    Raises:
        ValueError: empty password or fewer than ``MIN_ITERATIONS`` iterations.
    """
    if not isinstance(password, str) or not password:
        raise ValueError("password must be a non-empty string")
    if not isinstance(iterations, int) or iterations < MIN_ITERATIONS:
        raise ValueError(
            f"iterations={iterations!r} is invalid: expected an integer >= {MIN_ITERATIONS}"
        )
    salt = secrets.token_bytes(SALT_BYTES) if salt is None else salt
    digest = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return f"{ALGORITHM}${iterations}${_b64encode(salt)}${_b64encode(digest)}"


def _parse(stored: str) -> tuple[int, bytes, bytes] | None:
    if not isinstance(stored, str):
        return None
    parts = stored.strip().split("$")
    if len(parts) != 4 or parts[0] != ALGORITHM:
        return None
    try:
        iterations = int(parts[1])
        salt, digest = _b64decode(parts[2]), _b64decode(parts[3])
    except (ValueError, TypeError):
        return None
    if iterations < MIN_ITERATIONS or not salt or len(digest) != hashlib.sha256().digest_size:
        return None
    return iterations, salt, digest


def is_valid_hash(stored: str | None) -> bool:
    """Whether ``stored`` looks like a hash made by :func:`hash_password`."""
    return stored is not None and _parse(stored) is not None


def verify_password(password: str, stored: str | None) -> bool:
    """Check a password against a stored hash, in constant time.

    Returns:
        True only when ``stored`` is a well-formed hash of ``password``. A malformed or missing
        hash is False, never an exception, so a typo in ``secrets.toml`` locks researchers out
        instead of letting everyone in.
    """
    parsed = _parse(stored) if stored is not None else None
    if parsed is None or not isinstance(password, str) or not password:
        return False
    iterations, salt, digest = parsed
    candidate = hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)
    return hmac.compare_digest(candidate, digest)


@dataclass
class PasswordLockout:
    """Counts wrong researcher passwords; after ``max_failures`` in a row, locks for ``lockout_s``.

    Pure state: no clock of its own (``now`` is passed in, e.g. ``time.time()``) and no
    Streamlit, so the page can keep ``failures`` and ``locked_until`` in Session State.

    Example::

        lock = PasswordLockout(failures=4)
        lock.failure(now=100.0)  # True: the 5th wrong password starts a lock-out
        lock.remaining_s(now=130.0)  # 30.0; lock.may_try(now=130.0) is False
    """

    failures: int = 0
    locked_until: float = 0.0
    max_failures: int = MAX_PASSWORD_FAILURES
    lockout_s: float = LOCKOUT_S

    def remaining_s(self, now: float) -> float:
        """Seconds until a password may be tried again (0 when not locked)."""
        return max(0.0, self.locked_until - now)

    def may_try(self, now: float) -> bool:
        """Whether a submitted password is checked at all (False while locked out)."""
        return now >= self.locked_until

    def success(self) -> None:
        """A right password: the count starts again."""
        self.failures = 0

    def failure(self, now: float) -> bool:
        """Count a wrong password.

        Returns:
            True when this failure started a lock-out (``locked_until`` set, count reset).
        """
        self.failures += 1
        if self.failures < self.max_failures:
            return False
        self.locked_until = now + self.lockout_s
        self.failures = 0
        return True


def is_loopback_address(address: str | None) -> bool:
    """Whether a ``server.address`` value only accepts connections from this machine.

    An unset or empty address is *not* loopback: Streamlit then binds every interface.
    ``localhost``, ``127.0.0.0/8`` and ``::1`` (also IPv4-mapped ``::ffff:127.x.y.z``) are.
    """
    if address is None:
        return False
    text = str(address).strip().strip("[]").lower()
    if not text:
        return False
    if text == "localhost":
        return True
    try:
        ip = ipaddress.ip_address(text.split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return False  # another host name: it may resolve to a public interface
    mapped = getattr(ip, "ipv4_mapped", None)
    return bool(ip.is_loopback or (mapped is not None and mapped.is_loopback))


def access_mode(
    auth_configured: bool, password_hash: str | None, server_address: str | None
) -> AccessMode:
    """Decide how the Retrain page grants the researcher role.

    Args:
        auth_configured: ``secrets.toml`` has an ``[auth]`` section (identity provider).
        password_hash: ``researcher_password_hash`` from ``secrets.toml``, or None.
        server_address: Streamlit's ``server.address`` option (None when unset).

    Returns:
        ``"login"``, ``"password"``, ``"localhost"`` or ``"denied"`` (see the module docstring).
    """
    if auth_configured:
        return "login"
    if password_hash is not None and str(password_hash).strip():
        return "password"
    if is_loopback_address(server_address):
        return "localhost"
    return "denied"


def is_researcher_email(email: str | None, allow_list: Iterable[str] | None) -> bool:
    """Whether a signed-in user holds the researcher role.

    Args:
        email: the user's e-mail claim (``st.user.email``).
        allow_list: ``researchers`` from ``secrets.toml``; None means every signed-in user.
    """
    if allow_list is None:
        return True
    if not email:
        return False
    allowed = {str(item).strip().lower() for item in allow_list}
    return email.strip().lower() in allowed


def _read_password() -> str:
    if sys.stdin.isatty():
        first = getpass.getpass("Researcher password: ")
        second = getpass.getpass("Repeat it: ")
        if first != second:
            raise cli.CLIError(
                "the two passwords differ; nothing was printed: run the command again"
            )
        return first
    return sys.stdin.readline().rstrip("\r\n")


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: ``python -m core.auth hash``.

    Args:
        argv: the command-line arguments (default ``sys.argv[1:]``).

    Returns:
        0 after printing a hash.

    Raises:
        core.cli.CLIError: ``--iterations`` below the minimum, a password that is too short,
            or two entries that differ.
    """
    parser = cli.ArgumentParser(
        prog="python -m core.auth", description="Researcher password hashes for secrets.toml"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="{hash}")
    hash_cmd = sub.add_parser("hash", help="read a password, print its hash")
    hash_cmd.add_argument("--iterations", type=int, default=DEFAULT_ITERATIONS)
    args = parser.parse_args(argv)
    if args.iterations < MIN_ITERATIONS:  # refused before the password is typed
        raise cli.CLIError(
            f"--iterations {args.iterations} is too low: use at least {MIN_ITERATIONS} "
            f"(default {DEFAULT_ITERATIONS})"
        )

    password = _read_password()
    if len(password) < MIN_PASSWORD_LENGTH:
        raise cli.CLIError(
            f"the password needs at least {MIN_PASSWORD_LENGTH} characters; nothing was printed: "
            "run the command again with a longer one"
        )
    stored = hash_password(password, iterations=args.iterations)
    print(stored)
    print(
        f'Put this line in .streamlit/secrets.toml:\nresearcher_password_hash = "{stored}"',
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(cli.run(main))
