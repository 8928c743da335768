"""nginx in front of Streamlit (``deploy/nginx.py``): real nginx, real ``streamlit run``, real
Chromium on the shipped ``cnn2d_noaug`` run and the real RetinaMNIST test split.

What a clinic relies on: the pages work through nginx (websocket included), nginx, not
Streamlit, sends the front-end bundle, the compressed copies are the same bytes, stopping the
launcher stops both servers, and the launcher refuses to open the Retrain page to the network.
Screenshots go to ``test-artifacts/browser/proxy_*.png``.
"""

from __future__ import annotations

import contextlib
import gzip
import re
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from app_helpers import CHROMIUM, wait_idle
from conftest import real_root, require_real_file
from test_browser import SHOTS, assert_no_error_shown, press_slider

from deploy import nginx

# nginx is a system package like Chromium (`make setup-browser` installs both): the tests that
# start it carry the browser marker, so `make test-fast` runs without it.


def _require_nginx() -> None:
    try:
        nginx.nginx_binary()
    except nginx.SetupError as exc:
        pytest.fail(str(exc))


def _log_rows(proxy: nginx.Proxy) -> list[list[str]]:
    """(method, uri, status, upstream, seconds) per request, from the ``timing`` log format."""
    return [line.split() for line in proxy.access_log.read_text().splitlines() if line.strip()]


@pytest.fixture(scope="module")
def proxy(tmp_path_factory):
    _require_nginx()
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    require_real_file("retinamnist")
    tmp = tmp_path_factory.mktemp("proxy")
    env = {
        "MEDMNIST_ROOT": str(real_root()),
        "JOBS_DB": str(tmp / "jobs.sqlite"),
        "JOBS_WORKER_AUTOSTART": "0",
    }
    with nginx.serve(port=0, env=env, log_dir=SHOTS) as running:
        yield running


def _get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(request, timeout=30) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


@pytest.mark.browser
@pytest.mark.slow
def test_gradcam_page_works_through_nginx_and_nginx_sends_the_bundle(proxy, page):
    page.goto(f"{proxy.url}/gradcam?run=cnn2d_noaug&split=test&index=3", wait_until="load")
    page.wait_for_selector("[data-testid=stApp]", timeout=60_000)
    wait_idle(page)
    page.get_by_text("ms server time").first.wait_for(timeout=120_000)
    assert_no_error_shown(page)
    # an interaction goes over the proxied websocket and reruns the fragment
    before = page.locator(".st-key-gradcam_alpha").inner_text()
    press_slider(page, "gradcam_alpha", 2)
    after = page.locator(".st-key-gradcam_alpha").inner_text()
    assert after != before, f"the opacity slider did not move through nginx ({before!r})"
    assert_no_error_shown(page)
    SHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(SHOTS / "proxy_gradcam.png"), full_page=True)

    time.sleep(1)  # nginx writes the access log line when a request ends
    rows = _log_rows(proxy)
    static = [r for r in rows if r[1].startswith("/static/")]
    assert len(static) >= 10, f"the page fetched only {len(static)} bundle files: {rows[:20]}"
    proxied = [r for r in static if r[3] != "-"]
    assert not proxied, f"bundle files went to Streamlit instead of nginx: {proxied[:5]}"
    assert all(r[2] in ("200", "304") for r in static), [r for r in static if r[2] != "200"]
    pages = [r for r in rows if r[1] == "/gradcam"]
    assert pages and all(r[3] != "-" for r in pages), "the page itself must come from Streamlit"


@pytest.mark.browser
@pytest.mark.slow
def test_compressed_bundle_is_the_same_bytes_and_a_missing_file_is_a_404(proxy):
    status, _, index = _get(proxy.url + "/")
    assert status == 200
    names = sorted(set(re.findall(rb"/?static/js/[\w.\-]+\.js", index)))
    assert names, "index.html names no script of the bundle"
    name = names[0].decode().lstrip("/")
    original = (nginx.streamlit_static_dir().parent / name).read_bytes()

    status, headers, body = _get(f"{proxy.url}/{name}", {"Accept-Encoding": "gzip"})
    assert status == 200 and headers.get("Content-Encoding") == "gzip", headers
    assert gzip.decompress(body) == original
    assert "immutable" in headers.get("Cache-Control", "")
    status, headers, body = _get(f"{proxy.url}/{name}")  # a client that cannot gunzip
    assert status == 200 and "Content-Encoding" not in headers and body == original

    status, _, _ = _get(f"{proxy.url}/static/js/no-such-file.js")
    assert status == 404


@pytest.mark.browser
@pytest.mark.slow
def test_stopping_the_launcher_stops_both_servers_and_removes_its_files(tmp_path):
    _require_nginx()
    env = {"JOBS_DB": str(tmp_path / "jobs.sqlite"), "JOBS_WORKER_AUTOSTART": "0"}
    with nginx.serve(port=0, gzip_mode="off", env=env) as running:
        status, _, _ = _get(running.url + "/_stcore/health")
        assert status == 200
        pids, prefix = (running.nginx_pid, running.streamlit_pid), running.prefix
        assert (prefix / "nginx.conf").is_file()
    for proc in running.processes:
        assert proc.poll() is not None, f"pid {proc.pid} still runs after the launcher stopped"
    assert not prefix.exists()
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT", "SIGTERM"])
def test_ctrl_c_or_sigterm_stops_both_servers_even_when_started_in_the_background(how, tmp_path):
    """A shell's background job (`make serve-proxy &`) starts with SIGINT ignored; Ctrl+C
    (SIGINT) and `kill` (SIGTERM) must still stop nginx and Streamlit and remove the folder."""
    import os
    import signal
    import subprocess
    import sys

    _require_nginx()
    env = {
        **os.environ,
        "JOBS_DB": str(tmp_path / "jobs.sqlite"),
        "JOBS_WORKER_AUTOSTART": "0",
        "TMPDIR": str(tmp_path),
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "deploy.nginx", "--port", "0", "--gzip", "off"],
        cwd=nginx.REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    try:
        line = proc.stdout.readline()
        assert "The app is at" in line, line + proc.stdout.read()
        (prefix,) = tmp_path.glob("medmnist-nginx-*")
        pids = [int(p) for p in re.findall(r"\d+", (prefix / "nginx.pid").read_text())]
        proc.send_signal(getattr(signal, how))
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:  # the test failed: do not leave its servers running
            proc.kill()
            for leftover in _started_under(tmp_path):
                with contextlib.suppress(OSError):
                    os.kill(leftover, signal.SIGKILL)
    assert not prefix.exists(), "the launcher left its nginx folder behind"
    for pid in pids:
        assert not Path(f"/proc/{pid}").exists(), f"nginx {pid} still runs"
    assert not _started_under(tmp_path), "a server started by the launcher still runs"


def _started_under(tmp_path: Path) -> list[int]:
    """Live processes whose environment names ``tmp_path`` (the launcher's children)."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError):
                if str(tmp_path).encode() in (entry / "environ").read_bytes():
                    found.append(int(entry.name))
    return found


def test_network_facing_proxy_is_refused_without_a_researcher_password(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.setattr(nginx, "secrets_paths", lambda: [tmp_path / "secrets.toml"])
    with pytest.raises(nginx.SetupError, match=r"Refusing to listen on '0.0.0.0'.*\n1\. "):
        nginx.check_listen("0.0.0.0", {})
    nginx.check_listen("127.0.0.1", {})
    nginx.check_listen("::1", {})
    nginx.check_listen("0.0.0.0", {"researcher_password_hash": "pbkdf2_sha256$1$aa$bb"})
    nginx.check_listen("0.0.0.0", {"auth": {"redirect_uri": "https://x/oauth2callback"}})
    # the CLI says so and starts nothing
    assert nginx.main(["--listen", "0.0.0.0", "--port", "0"]) == 2
    assert "Refusing to listen on '0.0.0.0'" in capsys.readouterr().err
    (tmp_path / "secrets.toml").write_text("researcher_password_hash = \n")  # broken TOML
    with pytest.raises(nginx.SetupError, match="not valid TOML"):
        nginx._secrets(nginx.secrets_paths())


def test_a_port_in_use_is_reported_before_anything_starts(capsys):
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        assert nginx.main(["--port", str(port)]) == 2
        assert time.monotonic() - started < 2, "Streamlit was started before the port check"
    err = capsys.readouterr().err
    assert f"Cannot listen on 127.0.0.1:{port}" in err and "1. Pick another port" in err


def test_missing_nginx_gets_install_steps(monkeypatch, capsys):
    monkeypatch.setenv("NGINX", "/nonexistent/nginx")
    assert nginx.main(["--port", "0"]) == 2
    err = capsys.readouterr().err
    assert "nginx is not installed" in err and "1. Install it" in err


@pytest.mark.browser
@pytest.mark.slow
def test_rendered_config_passes_nginx_own_check(tmp_path):
    _require_nginx()
    import subprocess

    for mode in nginx.GZIP_MODES:
        conf = tmp_path / f"{mode}.conf"
        conf.write_text(
            nginx.render_config(
                prefix=tmp_path,
                static_dir=nginx.streamlit_static_dir(),
                listen="127.0.0.1",
                port=nginx.free_port(),
                streamlit_port=nginx.free_port(),
                gzip_mode=mode,
            )
        )
        check = subprocess.run(
            [nginx.nginx_binary(), "-t", "-p", str(tmp_path), "-c", str(conf), "-e", "stderr"],
            capture_output=True,
            text=True,
        )
        assert check.returncode == 0, check.stderr
    with pytest.raises(ValueError, match="gzip mode"):
        nginx.render_config(
            prefix=tmp_path,
            static_dir=tmp_path,
            listen="127.0.0.1",
            port=1,
            streamlit_port=2,
            gzip_mode="brotli",
        )
