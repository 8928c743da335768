"""Every picture the app shows reaches the browser as PNG: with Streamlit's default
``output_format="auto"`` a picture without transparency (a grey scan, an upscaled MedMNIST
sample, a PNG we already encoded) is re-encoded as JPEG on every run, which adds ringing at the
edges of enlarged pixels and of heatmaps on a clinical image, and costs server CPU."""

from __future__ import annotations

import ast

from conftest import REPO


def _image_calls_without_png(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.Call)
            and isinstance(node.func, ast.Attribute)
            and node.func.attr == "image"
        ):
            kw = {k.arg: k.value for k in node.keywords}
            fmt = kw.get("output_format")
            if not (isinstance(fmt, ast.Constant) and fmt.value == "PNG"):
                yield f"{path.relative_to(REPO)}:{node.lineno}"


def test_every_st_image_call_sends_png():
    files = sorted((REPO / "app").rglob("*.py")) + sorted((REPO / "pages").glob("*.py"))
    calls = [c for f in files for c in _image_calls_without_png(f)]
    n_files_with_images = sum("image(" in f.read_text() for f in files)
    assert n_files_with_images >= 4  # the scan looks at the real pages
    assert not calls, f"st.image without output_format='PNG': {calls}"
