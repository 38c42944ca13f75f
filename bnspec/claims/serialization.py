"""Serialization: Configuration and saved-model round trips.

Tests: tests/claims/test_serialization.py."""

from bnspec.claims._model import Claim

ORDER = 50
TITLE = 'Serialization'

CLAIMS = (
    Claim(
        "K13",
        "get_config/from_config round trip",
        "get_config()/from_config() rebuilds an equivalent layer: same configuration, and with the "
        "weights copied the same outputs in both modes.",
        "Keras docs, Layer.get_config / serialization guide",
    ),
    Claim(
        "K14",
        ".keras save/load keeps the behaviour",
        "Saving a model to .keras and loading it back keeps the moving statistics and the behaviour, "
        "including a hard-coded training=True.",
        "Keras docs, Model.save / keras.saving.load_model",
    ),
)
