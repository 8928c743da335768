# ruff: noqa: N999 - Streamlit shows the entry file name; "Home" is the product's wording
"""Entry point and router: ``streamlit run app/Home.py`` from the repository root.

Sets up the page, wires the top-level ``pages/`` folder with ``st.navigation`` (Streamlit only
auto-discovers a ``pages/`` folder next to the entry script), starts the local training worker
once per server, and runs the chosen page; the home page itself is drawn by
``app/views/home.py``. Never imports TensorFlow: Home reads the registry's JSON files and the
dataset folder only.
"""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

import streamlit as st  # noqa: E402

from app import widgets as w  # noqa: E402
from app.views import home  # noqa: E402
from core import config  # noqa: E402

st.set_page_config(
    page_title="MedMNIST clinical review",
    page_icon=":material/biotech:",
    layout="wide",
    initial_sidebar_state="expanded",
)

_PAGES = ROOT / "pages"
_links = {
    "Sample browser": (
        st.Page(
            _PAGES / "samples.py",
            title="Sample browser",
            icon=":material/grid_view:",
            url_path="samples",
        ),
        ":material/grid_view:",
    ),
    "3D volumes": (
        st.Page(
            _PAGES / "volume.py",
            title="3D volumes",
            icon=":material/view_in_ar:",
            url_path="volume",
        ),
        ":material/view_in_ar:",
    ),
    # url_path stays "gradcam": links to the former Grad-CAM explorer keep working
    "Explanations": (
        st.Page(
            _PAGES / "gradcam.py",
            title="Explanations",
            icon=":material/visibility:",
            url_path="gradcam",
        ),
        ":material/visibility:",
    ),
    "Experiments": (
        st.Page(
            _PAGES / "experiments.py",
            title="Experiments",
            icon=":material/science:",
            url_path="experiments",
        ),
        ":material/science:",
    ),
    "Quantization": (
        st.Page(
            _PAGES / "quantization.py",
            title="Quantization",
            icon=":material/memory:",
            url_path="quantization",
        ),
        ":material/memory:",
    ),
    "Case review": (
        st.Page(
            _PAGES / "case_review.py",
            title="Case review",
            icon=":material/rate_review:",
            url_path="review",
        ),
        ":material/rate_review:",
    ),
}


def home_page() -> None:
    home.draw(_links)


_review = [st.Page(home_page, title="Home", icon=":material/home:", default=True)]
_review += [page for page, _ in _links.values()]
_sections = {"Review": _review}
if (_PAGES / "retrain.py").is_file():
    _sections["Research"] = [
        st.Page(
            _PAGES / "retrain.py",
            title="Retrain",
            icon=":material/model_training:",
            url_path="retrain",
        )
    ]
navigation = st.navigation(_sections)
st.sidebar.caption(f"Registry: `{config.trained_models_dir()}`  \nData: `{config.medmnist_root()}`")
w.worker_status_ui()
navigation.run()
