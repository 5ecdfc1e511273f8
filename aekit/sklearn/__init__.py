"""scikit-learn estimators of aekit's models: the auto-encoders on rows (:mod:`aekit.sklearn.autoencoders`), a
drop-in beside ``sklearn.decomposition.PCA`` with an outlier detector beside each, and the photo restorer on images of
any sizes (:mod:`aekit.sklearn.restoration`). Each builds the model ``aekit train`` builds from the same options and
trains it with the same trainer; what they share is in :mod:`aekit.sklearn.base`.
"""

from aekit.sklearn import autoencoders
from aekit.sklearn.autoencoders import (
    AdversarialAutoEncoder,
    AdversarialAutoEncoderOutlierDetector,
    AutoEncoder,
    AutoEncoderOutlierDetector,
    DenoisingAutoEncoder,
    DenoisingAutoEncoderOutlierDetector,
    DropoutAutoEncoder,
    DropoutAutoEncoderOutlierDetector,
    VariationalAutoEncoder,
    VariationalAutoEncoderOutlierDetector,
    _unpickled,  # noqa: F401 - the pickles made before the estimators moved into this package find it here
    estimator,
    outlier_detector,
)
from aekit.sklearn.base import ParameterError
from aekit.sklearn.restoration import PhotoRestorer

__all__ = [
    "AutoEncoder",
    "DenoisingAutoEncoder",
    "DropoutAutoEncoder",
    "AdversarialAutoEncoder",
    "VariationalAutoEncoder",
    "AutoEncoderOutlierDetector",
    "DenoisingAutoEncoderOutlierDetector",
    "DropoutAutoEncoderOutlierDetector",
    "AdversarialAutoEncoderOutlierDetector",
    "VariationalAutoEncoderOutlierDetector",
    "PhotoRestorer",
    "ParameterError",
    "estimator",
    "outlier_detector",
]


def __getattr__(name: str) -> type:
    # The classes estimator() and outlier_detector() make for the other families, by their names.
    return autoencoders.__getattr__(name)
