"""MedMNIST clinical-review core: data, models, training, evaluation, explanation, quantization.

Importing this package is cheap: it never imports TensorFlow or Streamlit. Modules that need
TensorFlow import it themselves.
"""

import os

# tfmot only accepts Keras 2 models, and importing it flips tf.keras to tf-keras for the whole
# process anyway; choose Keras 2 before TensorFlow is ever imported so everything agrees.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
# TensorFlow's C++ INFO/WARNING chatter is noise for CLI users and in the app's logs.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

__all__ = ["config", "info"]
