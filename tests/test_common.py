"""scikit-learn's estimator checks, with fast settings."""

import pytest
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from skconvae import ConvAutoencoderTransformer

from .conftest import FAST

pytestmark = pytest.mark.filterwarnings(
    # The set_output checks fit on a DataFrame and transform an array on purpose.
    "ignore:X (does not have valid|has) feature names:UserWarning"
)

# Every check is expected to pass: there are no expected failures.
EXPECTED_FAILED_CHECKS: dict[str, str] = {}


@parametrize_with_checks(
    [ConvAutoencoderTransformer(**FAST)],
    expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS,
)
def test_sklearn_compatible(estimator, check):
    check(estimator)


# Checks scikit-learn runs on its own estimators but does not yield to
# parametrize_with_checks: parameter validation, set_output and feature names.
EXTRA_CHECKS = [
    "check_param_validation",
    "check_set_output_transform",
    "check_set_output_transform_pandas",
    "check_global_output_transform_pandas",
    "check_transformer_get_feature_names_out",
    "check_transformer_get_feature_names_out_pandas",
]


@pytest.mark.parametrize("check_name", EXTRA_CHECKS)
def test_sklearn_extra_checks(check_name):
    check = getattr(estimator_checks, check_name)
    check("ConvAutoencoderTransformer", ConvAutoencoderTransformer(**FAST))
