"""The default a new user gets: ``VGG16_WEIGHTS`` unset → Keras' ImageNet download.

CI always sets ``VGG16_WEIGHTS``, which once hid that this path crashed for every VGG16 run
(``tf_keras.applications.vgg16`` stopped exporting ``WEIGHTS_PATH_NO_TOP``). These tests unset
it and replace only the download itself (there is no internet here) with a fake that records
what was asked for and serves the genuine file, so everything after the download is real.
"""

from __future__ import annotations

import numpy as np
import pytest
import tf_keras as keras

from core import config, registry
from core.models import vgg16_transfer

OFFICIAL_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/vgg16/"
    "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
)
OFFICIAL_MD5 = "6d6bbae143d832006294945121d1f1fc"


@pytest.fixture
def fake_download(monkeypatch, vgg16_weights_file):
    """``keras.utils.get_file`` replaced by a recorder that returns the genuine weights file."""
    calls: list[dict] = []

    def get_file(fname, origin=None, *args, **kwargs):
        calls.append({"fname": fname, "origin": origin, **kwargs})
        return str(vgg16_weights_file)

    monkeypatch.delenv("VGG16_WEIGHTS", raising=False)
    monkeypatch.setattr(keras.utils, "get_file", get_file)
    return calls


def test_unset_setting_means_the_official_download(fake_download, vgg16_weights_file):
    assert config.vgg16_weights() == "imagenet"
    path = vgg16_transfer.resolve_weights("imagenet")
    assert len(fake_download) == 1
    call = fake_download[0]
    assert call["origin"] == OFFICIAL_URL
    assert call["file_hash"] == OFFICIAL_MD5
    assert call["fname"] == "vgg16_weights_tf_dim_ordering_tf_kernels_notop.h5"
    assert path == str(vgg16_weights_file)


def test_shipped_lean_vgg16_run_loads_with_the_setting_unset(
    fake_download, monkeypatch, vgg16_weights_file
):
    """The Grad-CAM page's default kind of model, loaded the way the app loads it."""
    run = registry.resolve_run("vgg16_ft2_ema")
    model = registry.load_model(run)
    assert [c["origin"] for c in fake_download] == [OFFICIAL_URL]
    x = np.random.default_rng(0).random((2, 28, 28, 3), dtype=np.float32)
    from_download = model(x, training=False).numpy()
    # the same run rebuilt from the local file named by the setting: identical model
    monkeypatch.setenv("VGG16_WEIGHTS", str(vgg16_weights_file))
    from_setting = registry.load_model(run)(x, training=False).numpy()
    np.testing.assert_array_equal(from_download, from_setting)


def test_failed_download_names_the_setting_with_numbered_steps(monkeypatch):
    def offline(*args, **kwargs):
        raise Exception(  # what get_file raises, verbatim shape
            f"URL fetch failure on {OFFICIAL_URL}: None -- [Errno -3] "
            "Temporary failure in name resolution"
        )

    monkeypatch.delenv("VGG16_WEIGHTS", raising=False)
    monkeypatch.setattr(keras.utils, "get_file", offline)
    with pytest.raises(vgg16_transfer.WeightsUnavailableError) as err:
        vgg16_transfer.build_vgg16((28, 28, 3), 5, "ordinal-regression")
    text = str(err.value)
    assert "VGG16_WEIGHTS" in text
    assert "Temporary failure in name resolution" in text
    assert "\n  1. " in text and "\n  2. " in text
