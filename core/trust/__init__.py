"""Know when to trust a prediction: calibration, selective prediction (refer), an OOD guard,
ensembles, and the :class:`~core.trust.predictor.Predictor` that combines them.

Importing this package does not import TensorFlow: ``calibration``, ``selective``, ``ood``,
``foreign`` and ``ensemble`` are numpy/SciPy/scikit-learn; ``predictor`` and ``fit`` load
models. Use ``core.registry.load_predictor(run_dir)`` to get a predictor.
"""
