"""Real-browser test of the Case review page: a verdict survives a server restart and is in the CSV.

Chromium (Playwright) against ``streamlit run app/Home.py`` on 127.0.0.1, a random-weight
RetinaMNIST model on the real MedMNIST file, a temporary ``REVIEWS_DB``. The server is stopped
and started again between recording the verdict and looking for it. Screenshots (worklist,
verdict, the PDF report as PNG when poppler's ``pdftoppm`` is installed) go to
``test-artifacts/browser/`` for a person to look at.
"""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from pathlib import Path

import pytest
from app_helpers import CHROMIUM, REPO, make_run, streamlit_server, wait_body_text, wait_idle
from conftest import real_root, require_real_file
from playwright.sync_api import expect

pytestmark = [pytest.mark.browser, pytest.mark.slow]
SHOTS = REPO / "test-artifacts" / "browser"
NOTE = "=1+1 *not bold* <b>not html</b>"


@pytest.fixture(scope="module")
def review_env(tmp_path_factory):
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium)")
    require_real_file("retinamnist")
    tmp = tmp_path_factory.mktemp("browser_review")
    env = {
        "MEDMNIST_ROOT": str(real_root()),
        "TRAINED_MODELS_DIR": str(tmp / "registry"),
        "JOBS_DB": str(tmp / "jobs.sqlite"),
        "JOBS_WORKER_AUTOSTART": "0",
        "REVIEWS_DB": str(tmp / "reviews.sqlite"),
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        run = make_run(tmp / "registry", "retinamnist", "cnn2d", seed=0)
    SHOTS.mkdir(parents=True, exist_ok=True)
    return {"env": env, "run": run.name, "tmp": tmp}


def open_review(page, url: str, name: str) -> None:
    """Open the Case review page in a new browser session and give the reviewer name."""
    page.goto(f"{url}/review", wait_until="domcontentloaded")
    page.wait_for_selector("[data-testid=stApp]", timeout=60_000)
    wait_idle(page)
    page.get_by_role("heading", name="Case review").first.wait_for(timeout=30_000)
    page.locator(".st-key-review_name_input input").fill(name)
    page.get_by_role("button", name="Start reviewing").click()
    wait_idle(page)
    page.get_by_role("button", name="Agree", exact=True).wait_for(timeout=60_000)
    wait_idle(page)


def body(page) -> str:
    return page.inner_text("body")


def test_verdict_survives_a_restart_and_is_in_the_csv(review_env, page):
    env, tmp = review_env["env"], review_env["tmp"]
    with streamlit_server(env, SHOTS / "server_review_1.log") as url:
        open_review(page, url, "Dr Browser")
        wait_body_text(page, "0 of 400 reviewed")
        first_case = page.get_by_role("heading", name="Test sample #").first.inner_text()
        page.screenshot(path=str(SHOTS / "review_worklist.png"), full_page=True)
        page.locator("textarea").first.fill(NOTE)
        page.get_by_role("button", name="Agree", exact=True).click()
        wait_idle(page)
        text = wait_body_text(page, "1 of 400 reviewed")
        assert f"Saved Agree on test sample #{first_case.split('#')[1]}" in text
        assert "Traceback" not in text
    # a new server process, a new browser session: the verdict comes from the file
    page.context.clear_cookies()
    with streamlit_server(env, SHOTS / "server_review_2.log") as url:
        open_review(page, url, "Dr Browser")
        text = wait_body_text(page, "1 of 400 reviewed")
        expect(page.get_by_role("heading", name="Test sample #").first).to_have_text(
            first_case, timeout=30_000
        )
        assert "Agree · Dr Browser" in text
        assert NOTE in text  # the note as typed: not rendered as Markdown or HTML
        assert page.locator("b", has_text="not html").count() == 0
        page.screenshot(path=str(SHOTS / "review_verdict.png"), full_page=True)

        with page.expect_download(timeout=60_000) as info:
            page.get_by_role("button", name="Download reviews (CSV)").click()
        csv_path = tmp / "reviews.csv"
        info.value.save_as(csv_path)
        rows = list(csv.DictReader(io.StringIO(csv_path.read_text(encoding="utf-8-sig"))))
        (row,) = rows
        assert row["reviewer"] == "Dr Browser" and row["verdict"] == "agree"
        assert row["run"] == review_env["run"] and row["split"] == "test"
        assert f"#{row['sample_index']}" in first_case
        assert row["note"] == "'" + NOTE  # escaped against formula injection
        assert row["is_current"] == "1"

        with page.expect_download(timeout=60_000) as info:
            page.get_by_role("button", name="Download case report (PDF)").click()
        pdf_path = SHOTS / "review_report.pdf"
        info.value.save_as(pdf_path)
        assert pdf_path.read_bytes().startswith(b"%PDF-")
        if shutil.which("pdftoppm"):  # a picture of the report for a person to look at
            subprocess.run(
                ["pdftoppm", "-png", "-r", "70", "-singlefile", str(pdf_path), str(pdf_path)[:-4]],
                check=True,
            )
