"""Serve the app behind nginx: nginx sends Streamlit's front-end files, Streamlit runs the pages.

Why: a first visit fetches Streamlit's whole front-end bundle (about 90 files). Served by
Streamlit's own web server, that costs the server process about half of a Grad-CAM page's CPU
(docs/benchmarks.md, "Serving static files from nginx"); nginx sends the same files from disk
for a few hundredths of a CPU-second and leaves Streamlit's cores to the pages.

Usage (from the repository root)::

    python -m deploy.nginx                  # http://127.0.0.1:8080, Streamlit on a free port
    python -m deploy.nginx --port 8080 --gzip static
    python -m deploy.nginx --listen 0.0.0.0 # refused unless a researcher password or [auth]
                                            # is configured (see docs/deploy.md)

In code (the load benchmark and tests/test_proxy.py)::

    with serve(port=0) as proxy:
        print(proxy.url, proxy.streamlit_port, proxy.nginx_pid)

Streamlit always listens on 127.0.0.1 here; only nginx faces the network.
"""

from __future__ import annotations

import argparse
import contextlib
import getpass
import gzip
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import tomllib
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template

from core import auth

REPO = Path(__file__).resolve().parents[1]
TEMPLATE = Path(__file__).with_name("nginx.conf.template")
# Debian's nginx-light puts the binary here; NGINX overrides it (another build, a test).
DEFAULT_NGINX = "/usr/sbin/nginx"
GZIP_MODES = ("static", "on", "off")
# Text types worth compressing; fonts in woff2 and images are compressed already.
GZIP_SUFFIXES = (".js", ".css", ".html", ".json", ".svg", ".map", ".txt", ".ttf")
GZIP_TYPES = (
    "text/css application/javascript application/json image/svg+xml text/plain text/xml "
    "application/xml"
)

MIME_TYPES = """types {
    text/html html; text/css css; application/javascript js; application/json json map;
    image/svg+xml svg; image/png png; image/gif gif; image/jpeg jpg; font/woff2 woff2;
    font/woff woff; font/ttf ttf; text/plain txt; application/wasm wasm;
}
"""


class SetupError(RuntimeError):
    """The proxy cannot start; the message says what to do (numbered steps)."""


@dataclass
class Proxy:
    """A running nginx + Streamlit pair."""

    url: str
    streamlit_port: int
    nginx_pid: int
    streamlit_pid: int
    prefix: Path  # nginx's config, logs and (gzip static) compressed bundle
    processes: tuple[subprocess.Popen, ...] = ()

    def stopped(self) -> str | None:
        """The name of a server that has exited, or None while both run."""
        for name, proc in zip(("nginx", "Streamlit"), self.processes, strict=False):
            if proc.poll() is not None:
                return name
        return None

    @property
    def access_log(self) -> Path:
        return self.prefix / "access.log"


# --------------------------------------------------------------------------------------------
# Checks
# --------------------------------------------------------------------------------------------


def nginx_binary() -> str:
    """The nginx executable to run.

    Raises:
        SetupError: none is installed.
    """
    path = os.environ.get("NGINX") or shutil.which("nginx") or DEFAULT_NGINX
    if not (Path(path).is_file() and os.access(path, os.X_OK)):
        raise SetupError(
            f"nginx is not installed (looked for {path}).\n"
            "1. Install it: `sudo apt-get install -y nginx-light` (or run `make setup-browser`).\n"
            "2. Or point NGINX at an nginx executable: `NGINX=/path/to/nginx make serve-proxy`.\n"
            "3. Or serve without it: `make run` (Streamlit alone, same app, more server CPU)."
        )
    return path


def _secrets(paths: list[Path]) -> dict:
    """The merged ``secrets.toml`` files Streamlit would read (later files win)."""
    merged: dict = {}
    for path in paths:
        if path.is_file():
            try:
                merged.update(tomllib.loads(path.read_text()))
            except tomllib.TOMLDecodeError as exc:
                raise SetupError(
                    f"{path} is not valid TOML: {exc}.\n"
                    "1. Fix the file (Streamlit would fail to read it too).\n"
                    "2. Then start the proxy again."
                ) from exc
    return merged


def secrets_paths() -> list[Path]:
    """Where Streamlit looks for ``secrets.toml`` when run from the repository root."""
    return [Path.home() / ".streamlit" / "secrets.toml", REPO / ".streamlit" / "secrets.toml"]


def check_listen(address: str, secrets: dict) -> None:
    """Refuse to face the network when the Retrain page would then be open to it.

    Behind nginx, Streamlit only ever sees connections from 127.0.0.1, so the Retrain page's
    "loopback only" rule (``core.auth.access_mode``) would let anyone who reaches nginx retrain
    models without a password. A non-loopback ``address`` therefore needs the password or the
    identity provider that the page asks for on a network-facing server.

    Raises:
        SetupError: ``address`` is not loopback and neither is configured.
    """
    if auth.is_loopback_address(address):
        return
    if auth.access_mode("auth" in secrets, secrets.get("researcher_password_hash"), address) in (
        "login",
        "password",
    ):
        return
    raise SetupError(
        f"Refusing to listen on {address!r}: behind nginx every request reaches Streamlit from "
        "127.0.0.1, so the Retrain page would let anyone on the network retrain models.\n"
        "1. Set a researcher password: `python -m core.auth hash` and put the printed "
        "line in .streamlit/secrets.toml.\n"
        "2. Or configure an identity provider in an [auth] section of .streamlit/secrets.toml.\n"
        "3. Or listen on loopback only (the default, --listen 127.0.0.1)."
    )


def check_port(listen: str, port: int) -> None:
    """Fail before starting anything when nginx could not listen on ``listen:port``.

    Raises:
        SetupError: the port is taken, or needs privileges this user lacks.
    """
    if not port:
        return
    family = socket.AF_INET6 if ":" in listen else socket.AF_INET
    with socket.socket(family) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as nginx does
        try:
            sock.bind((listen, port))
        except OSError as exc:
            raise SetupError(
                f"Cannot listen on {listen}:{port}: {exc.strerror}.\n"
                "1. Pick another port: `python -m deploy.nginx --port 8081`.\n"
                "2. Or stop what uses it (`ss -ltnp | grep :{port}` shows it).\n"
                "3. Ports below 1024 need root."
            ) from exc


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# --------------------------------------------------------------------------------------------
# Config
# --------------------------------------------------------------------------------------------


def streamlit_static_dir() -> Path:
    """Streamlit's built front-end bundle (``.../streamlit/static/static``: js, css, media)."""
    import streamlit

    path = Path(streamlit.__file__).parent / "static" / "static"
    if not path.is_dir():
        raise SetupError(
            f"Streamlit's front-end bundle is missing ({path}).\n"
            "1. Reinstall Streamlit: `.venv/bin/pip install --force-reinstall -r requirements.txt`."
        )
    return path


def precompress(source: Path, dest: Path) -> Path:
    """Copy ``source`` to ``dest`` with a ``.gz`` beside every text file, for ``gzip_static``.

    Why a copy: nginx looks for ``file.gz`` next to ``file``, and site-packages may be
    read-only or shared with other projects.

    Returns:
        ``dest``.
    """
    shutil.copytree(source, dest)
    for path in dest.rglob("*"):
        if path.is_file() and path.suffix in GZIP_SUFFIXES:
            data = path.read_bytes()
            with gzip.open(path.with_name(path.name + ".gz"), "wb", compresslevel=9) as out:
                out.write(data)
    return dest


def render_config(
    *, prefix: Path, static_dir: Path, listen: str, port: int, streamlit_port: int, gzip_mode: str
) -> str:
    """nginx.conf for these values (``deploy/nginx.conf.template``).

    Raises:
        ValueError: an unknown ``gzip_mode``.
    """
    if gzip_mode not in GZIP_MODES:
        raise ValueError(f"gzip mode must be one of {GZIP_MODES}, not {gzip_mode!r}")
    # nginx's master drops to `nobody` when started as root; the prefix is ours (mode 0700),
    # so keep the workers on our own user instead.
    user_line = f"user {getpass.getuser()};" if os.geteuid() == 0 else ""
    gzip_lines = ""
    if gzip_mode == "on":  # compress every response as it is sent (costs nginx CPU each time)
        gzip_lines = f"    gzip on;\n    gzip_proxied any;\n    gzip_types {GZIP_TYPES};"
    mime = Path("/etc/nginx/mime.types")
    if not mime.is_file():  # an nginx built elsewhere (NGINX=...): the types the bundle needs
        mime = prefix / "mime.types"
        mime.write_text(MIME_TYPES)
    return Template(TEMPLATE.read_text()).substitute(
        user_line=user_line,
        prefix=prefix,
        mime_types=mime,
        gzip_lines=gzip_lines,
        gzip_static_line="            gzip_static on;" if gzip_mode == "static" else "",
        listen=listen if ":" not in listen else f"[{listen}]",
        port=port,
        static_dir=static_dir,
        streamlit_port=streamlit_port,
    )


# --------------------------------------------------------------------------------------------
# Processes
# --------------------------------------------------------------------------------------------


def _wait_http(url: str, proc: subprocess.Popen, what: str, log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise SetupError(
                f"{what} exited with code {proc.returncode} at start-up.\n"
                f"1. Read its log: {log}\n"
                "2. A port in use? Pick another with --port."
            )
        try:
            with urllib.request.urlopen(url, timeout=2) as resp:
                if resp.status == 200:
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise SetupError(f"{what} did not answer {url} within {timeout:.0f} s; see {log}")
        time.sleep(0.1)


def _stop(proc: subprocess.Popen | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout=15)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)


@contextlib.contextmanager
def serve(
    *,
    listen: str = "127.0.0.1",
    port: int = 8080,
    gzip_mode: str = "static",
    env: dict[str, str] | None = None,
    log_dir: Path | None = None,
    timeout: float = 90.0,
) -> Iterator[Proxy]:
    """Start Streamlit on a free loopback port and nginx in front of it; stop both on exit.

    Args:
        listen: the address nginx listens on (non-loopback needs a password or [auth]).
        port: nginx's port; 0 picks a free one (tests, benchmarks).
        gzip_mode: ``static`` (bundle compressed once at start), ``on`` (every response
            compressed as sent) or ``off``.
        env: extra environment for Streamlit.
        log_dir: where ``streamlit.log`` goes (default: the nginx prefix).
        timeout: seconds each server may take to answer.

    Raises:
        SetupError: nginx missing, an unsafe ``listen``, or a server that did not start.
    """
    # the address first: an unsafe one is refused whether or not nginx is installed
    check_listen(listen, _secrets(secrets_paths()))
    check_port(listen, port)  # before Streamlit's start-up, not after it
    nginx = nginx_binary()
    prefix = Path(tempfile.mkdtemp(prefix="medmnist-nginx-"))
    streamlit_proc = nginx_proc = None
    try:
        static = streamlit_static_dir()
        if gzip_mode == "static":
            static = precompress(static, prefix / "static")
        port = port or free_port()
        streamlit_port = free_port()
        (prefix / "nginx.conf").write_text(
            render_config(
                prefix=prefix,
                static_dir=static,
                listen=listen,
                port=port,
                streamlit_port=streamlit_port,
                gzip_mode=gzip_mode,
            )
        )
        log = (log_dir or prefix) / "streamlit.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as out:
            streamlit_proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "streamlit",
                    "run",
                    "app/Home.py",
                    "--server.address",
                    "127.0.0.1",
                    "--server.port",
                    str(streamlit_port),
                    "--server.headless",
                    "true",
                    # nginx serves /static/ at the root: a base path would move the bundle.
                    "--server.baseUrlPath",
                    "",
                ],
                cwd=REPO,
                env={**os.environ, **(env or {})},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        health = f"http://127.0.0.1:{streamlit_port}/_stcore/health"
        _wait_http(health, streamlit_proc, "Streamlit", log, timeout)
        nginx_proc = subprocess.Popen(
            [nginx, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", "stderr"],
            stdout=subprocess.DEVNULL,
            stderr=(prefix / "nginx.stderr").open("ab"),
            start_new_session=True,
        )
        host = "127.0.0.1" if listen in ("0.0.0.0", "::") else listen
        url = f"http://{host if ':' not in host else f'[{host}]'}:{port}"
        _wait_http(f"{url}/_stcore/health", nginx_proc, "nginx", prefix / "error.log", timeout)
        yield Proxy(
            url,
            streamlit_port,
            nginx_proc.pid,
            streamlit_proc.pid,
            prefix,
            (nginx_proc, streamlit_proc),
        )
    finally:
        _stop(nginx_proc)
        _stop(streamlit_proc)
        shutil.rmtree(prefix, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", default="127.0.0.1", help="nginx's address")
    parser.add_argument("--port", type=int, default=8080, help="nginx's port")
    parser.add_argument(
        "--gzip",
        choices=GZIP_MODES,
        default="static",
        help="static: compress the bundle once at start (default); on: every response; off",
    )
    args = parser.parse_args(argv)
    # Ctrl+C and SIGTERM (systemd, docker stop) both stop the two servers, at start-up too.
    # SIGINT explicitly: a process started in the background by a shell (`make serve-proxy &`,
    # nohup) inherits SIGINT as ignored, and Python then never raises KeyboardInterrupt.
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, _interrupt)
    try:
        with serve(listen=args.listen, port=args.port, gzip_mode=args.gzip) as proxy:
            print(f"The app is at {proxy.url} (Streamlit on 127.0.0.1:{proxy.streamlit_port})")
            print("Ctrl+C stops both servers.", flush=True)
            while True:
                time.sleep(0.5)
                if name := proxy.stopped():
                    print(f"{name} stopped; stopping the other.", file=sys.stderr)
                    return 1
    except KeyboardInterrupt:  # serve() has stopped both servers and removed its folder
        print("Stopped.", file=sys.stderr)
        return 0
    except SetupError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    sys.exit(main())
