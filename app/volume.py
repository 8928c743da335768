"""3D rendering helpers: a PyVista scene exported in a child process, and a Plotly fallback.

VTK (PyVista) and TensorFlow crash when they share a process on this stack (a segfault or
``free(): invalid pointer`` depending on import order), and the app process holds TensorFlow
for Grad-CAM. So the PyVista scene is built here in a *child* process
(``python -m app.volume --export IN.npz OUT.html ...``), exported as a standalone vtk.js HTML
page with ``plotter.export_html`` (the same export stpyvista's trame backend embeds; it renders
offline, unlike the panel backend that loads its JavaScript from CDNs) and the page shows that
HTML in an iframe. If the child fails, the page falls back to ``plotly_scene``, which renders
in any WebGL browser without VTK.

This module imports neither TensorFlow nor (at import time) PyVista.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RENDER_MODES = ("isosurface", "volume")


@dataclass(frozen=True)
class SceneOptions:
    """What the 3D scene shows. Values refer to volumes scaled to [0, 1].

    Attributes:
        mode: "isosurface" (surface at ``threshold``) or "volume" (volume rendering).
        threshold: Iso-level of the anatomy surface / lower bound of the rendered intensities.
        opacity: Opacity of the anatomy surface or volume, in [0, 1].
        cam_threshold: Iso-level of the red Grad-CAM heat surface (when a heatmap is given).
        cam_opacity: Opacity of the heat surface.
    """

    mode: str = "isosurface"
    threshold: float = 0.5
    opacity: float = 0.35
    cam_threshold: float = 0.6
    cam_opacity: float = 0.6

    def validate(self) -> SceneOptions:
        if self.mode not in RENDER_MODES:
            raise ValueError(f"render mode {self.mode!r} is not supported; use {RENDER_MODES}")
        for name in ("threshold", "opacity", "cam_threshold", "cam_opacity"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name}={value!r} must be in [0, 1]")
        return self


def _as_volume(volume: np.ndarray) -> np.ndarray:
    vol = np.asarray(volume)
    if vol.ndim == 4 and vol.shape[-1] == 1:
        vol = vol[..., 0]
    if vol.ndim != 3:
        raise ValueError(f"expected a (D, H, W) volume, got shape {vol.shape}")
    if vol.dtype == np.uint8:
        return vol.astype(np.float32) / 255.0
    return vol.astype(np.float32)


# --------------------------------------------------------------------------------------------
# PyVista scene (runs in the child process only)
# --------------------------------------------------------------------------------------------


def _pyvista_html(volume: np.ndarray, cam: np.ndarray | None, opts: SceneOptions) -> str:
    os.environ.setdefault("PYVISTA_OFF_SCREEN", "true")
    import pyvista as pv

    pv.OFF_SCREEN = True

    def grid_of(arr: np.ndarray, name: str) -> pv.ImageData:
        # numpy (D, H, W) = (z, y, x); VTK wants x fastest, i.e. Fortran order of (x, y, z).
        xyz = np.transpose(arr, (2, 1, 0))
        grid = pv.ImageData(dimensions=xyz.shape)
        grid.point_data[name] = xyz.ravel(order="F")
        return grid

    plotter = pv.Plotter(off_screen=True, window_size=(640, 520))
    plotter.set_background("#10141a")
    anatomy = grid_of(volume, "intensity")
    if opts.mode == "isosurface":
        surface = anatomy.contour([opts.threshold], scalars="intensity")
        if surface.n_points:
            plotter.add_mesh(
                surface.smooth(n_iter=20),
                color="#d9d4c7",
                opacity=opts.opacity,
                smooth_shading=True,
                name="anatomy",
            )
    else:
        # vtk.js, which draws the exported scene, shows ray-cast volumes (add_volume) blank
        # here, so "volume rendering" is drawn as nested translucent shells at rising
        # intensity levels: outer layers faint, inner (denser) layers more opaque.
        import matplotlib

        levels = np.linspace(opts.threshold, max(opts.threshold, 0.95), 5)
        colours = matplotlib.colormaps["bone"](np.linspace(0.45, 0.95, len(levels)))
        for i, (level, colour) in enumerate(zip(levels, colours, strict=True)):
            shell = anatomy.contour([float(level)], scalars="intensity")
            if shell.n_points:
                plotter.add_mesh(
                    shell,
                    color=colour[:3],
                    opacity=opts.opacity * (i + 1) / len(levels),
                    smooth_shading=True,
                    name=f"anatomy_{i}",
                )
    if cam is not None:
        heat = grid_of(cam, "gradcam").contour([opts.cam_threshold], scalars="gradcam")
        if heat.n_points:
            plotter.add_mesh(heat, color="#e53935", opacity=opts.cam_opacity, name="gradcam")
    plotter.add_axes(interactive=False)
    plotter.camera_position = "iso"
    html = plotter.export_html(None)
    plotter.close()
    return html.getvalue() if hasattr(html, "getvalue") else str(html)


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--export",
        nargs=2,
        metavar=("IN_NPZ", "OUT_HTML"),
        required=True,
        help="npz with 'volume' (and optional 'cam'); HTML written to OUT_HTML",
    )
    for field, default in asdict(SceneOptions()).items():
        parser.add_argument(f"--{field.replace('_', '-')}", default=default, type=type(default))
    args = parser.parse_args(argv)
    opts = SceneOptions(**{k: getattr(args, k) for k in asdict(SceneOptions())}).validate()
    src, dst = args.export
    with np.load(src, allow_pickle=False) as npz:
        volume = _as_volume(npz["volume"])
        cam = _as_volume(npz["cam"]) if "cam" in npz.files else None
    html = _pyvista_html(volume, cam, opts)
    Path(dst).write_text(html, encoding="utf-8")
    return 0


# --------------------------------------------------------------------------------------------
# Called from the Streamlit process
# --------------------------------------------------------------------------------------------


def scene_key(volume: np.ndarray, cam: np.ndarray | None, opts: SceneOptions) -> str:
    """Content hash of a scene's inputs (cache key)."""
    h = hashlib.sha1()
    h.update(np.ascontiguousarray(volume).tobytes())
    if cam is not None:
        h.update(np.ascontiguousarray(np.round(cam, 3)).tobytes())
    h.update(repr(opts).encode())
    return h.hexdigest()


def pyvista_scene_html(
    volume: np.ndarray, cam: np.ndarray | None, opts: SceneOptions, timeout: float = 90.0
) -> str:
    """Build the PyVista scene in a child process and return its standalone HTML.

    Args:
        volume: ``(D, H, W)`` or ``(D, H, W, 1)``, uint8 or float in [0, 1].
        cam: Optional Grad-CAM volume of the same spatial shape, in [0, 1].
        opts: What to draw.
        timeout: Seconds before the child is abandoned.

    Returns:
        The HTML document (vtk.js scene, no network access needed).

    Raises:
        RuntimeError: the child failed or timed out (its stderr tail is in the message).
    """
    opts.validate()
    with tempfile.TemporaryDirectory(prefix="medmnist-scene-") as tmp:
        src, dst = Path(tmp) / "scene.npz", Path(tmp) / "scene.html"
        arrays = {"volume": _as_volume(volume)}
        if cam is not None:
            arrays["cam"] = _as_volume(cam)
        np.savez(src, **arrays)
        cmd = [sys.executable, "-m", "app.volume", "--export", str(src), str(dst)]
        for field, value in asdict(opts).items():
            cmd += [f"--{field.replace('_', '-')}", str(value)]
        env = {**os.environ, "PYVISTA_OFF_SCREEN": "true", "PYTHONPATH": str(ROOT)}
        try:
            proc = subprocess.run(
                cmd,
                cwd=ROOT,
                env=env,
                capture_output=True,
                text=True,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"the 3D scene took longer than {timeout:.0f} s") from exc
        if proc.returncode != 0 or not dst.is_file():
            tail = (proc.stderr or "").strip().splitlines()[-3:]
            raise RuntimeError(
                f"the PyVista renderer exited with code {proc.returncode}: {' | '.join(tail)}"
            )
        return dst.read_text(encoding="utf-8")


# Built scenes are kept as files, not in memory: a scene is ~1.9 MB of HTML, and st.iframe given
# an HTML *string* first tries it as a URL (urllib.parse.urlsplit, whose lru_cache of 128
# entries then pins two copies of every distinct scene: ~3.7 MB each, never given back before
# the 128th). st.iframe given a Path reads the file without that. Cached in memory too
# (st.cache_data), each scene also kept a pickled copy. Files are keyed by content and the
# newest SCENE_FILES are kept (~90 MB of disk at most).
SCENE_FILES = 48
_scene_dir: Path | None = None
_scene_lock = threading.Lock()


def _scene_folder() -> Path:
    global _scene_dir
    with _scene_lock:
        if _scene_dir is None or not _scene_dir.is_dir():
            # One folder per user, shared by this user's servers: a server stopped by a signal
            # runs no cleanup, and files keyed by content are valid for any server, so the
            # pruning in scene_file bounds the folder whatever happened before.
            _scene_dir = Path(tempfile.gettempdir()) / f"medmnist-scenes-{os.getuid()}"
            _scene_dir.mkdir(mode=0o700, exist_ok=True)
        return _scene_dir


def cached_scene_file(
    volume: np.ndarray, cam: np.ndarray | None, opts: SceneOptions
) -> Path | None:
    """The HTML file of a scene built before in this process, or None (then build it)."""
    path = _scene_folder() / f"{scene_key(volume, cam, opts)}.html"
    try:
        os.utime(path)  # most recently used: pruned last
    except OSError:
        return None
    return path


def scene_file(
    volume: np.ndarray, cam: np.ndarray | None, opts: SceneOptions, keep: int = SCENE_FILES
) -> Path:
    """The scene's standalone HTML as a file (built by ``pyvista_scene_html`` on a miss).

    Args:
        volume: ``(D, H, W)`` or ``(D, H, W, 1)``, uint8 or float in [0, 1].
        cam: Optional Grad-CAM volume of the same spatial shape, in [0, 1].
        opts: What to draw.
        keep: Scene files kept; the least recently used beyond this are deleted.

    Returns:
        Path of the HTML file (pass it to ``st.iframe``).

    Raises:
        RuntimeError: the renderer failed (see ``pyvista_scene_html``).
    """
    cached = cached_scene_file(volume, cam, opts)
    if cached is not None:
        return cached
    folder = _scene_folder()
    path = folder / f"{scene_key(volume, cam, opts)}.html"
    html = pyvista_scene_html(volume, cam, opts)
    tmp = path.with_suffix(f".{threading.get_ident()}.tmp")
    tmp.write_text(html, encoding="utf-8")
    os.replace(tmp, path)  # atomic: a concurrent reader sees no half-written scene
    files = sorted(folder.glob("*.html"), key=lambda p: p.stat().st_mtime, reverse=True)
    for old in files[max(1, keep) :]:
        with contextlib.suppress(OSError):
            old.unlink()
    return path


def plotly_scene(volume: np.ndarray, cam: np.ndarray | None, opts: SceneOptions):
    """The same scene with Plotly (WebGL in the browser, no VTK): the fallback view.

    Returns:
        A ``plotly.graph_objects.Figure``.
    """
    import plotly.graph_objects as go

    opts.validate()
    vol = _as_volume(volume)
    d, h, w = vol.shape
    z, y, x = np.mgrid[0:d, 0:h, 0:w]
    coords = dict(x=x.ravel(), y=y.ravel(), z=z.ravel())
    traces = []
    if opts.mode == "isosurface":
        traces.append(
            go.Isosurface(
                **coords,
                value=vol.ravel(),
                isomin=opts.threshold,
                isomax=1.0,
                surface_count=1,
                opacity=max(opts.opacity, 0.05),
                colorscale="Greys",
                showscale=False,
                caps=dict(x_show=False, y_show=False, z_show=False),
                name="anatomy",
            )
        )
    else:
        traces.append(
            go.Volume(
                **coords,
                value=vol.ravel(),
                isomin=opts.threshold,
                isomax=1.0,
                opacity=max(opts.opacity, 0.05) / 4,
                surface_count=12,
                colorscale="gray",
                showscale=False,
                name="anatomy",
            )
        )
    if cam is not None:
        heat = _as_volume(cam)
        traces.append(
            go.Isosurface(
                **coords,
                value=heat.ravel(),
                isomin=opts.cam_threshold,
                isomax=1.0,
                surface_count=1,
                opacity=opts.cam_opacity,
                colorscale=[[0, "#e53935"], [1, "#e53935"]],
                showscale=False,
                caps=dict(x_show=False, y_show=False, z_show=False),
                name="Grad-CAM",
            )
        )
    fig = go.Figure(traces)
    fig.update_layout(
        height=520,
        margin=dict(l=0, r=0, t=0, b=0),
        paper_bgcolor="#10141a",
        scene=dict(
            xaxis_title="x (W)",
            yaxis_title="y (H)",
            zaxis_title="z (D, axial)",
            aspectmode="cube",
            bgcolor="#10141a",
        ),
    )
    return fig


if __name__ == "__main__":
    sys.exit(_main())
