"""scikit-learn's estimator checks, with fast settings."""

import pytest
from sklearn.utils import estimator_checks
from sklearn.utils.estimator_checks import parametrize_with_checks

from skconvae import ConvAutoencoderRegressor, ConvAutoencoderTransformer

from .conftest import FAST

pytestmark = pytest.mark.filterwarnings(
    # The set_output checks fit on a DataFrame and transform an array on purpose.
    "ignore:X (does not have valid|has) feature names:UserWarning"
)

# The transformer passes every check: it has no expected failures.
#
# The regressor maps images to paired images. These checks fit it on targets of
# shape (n, 1), (n, 5) or 1-D integers beside inputs of 2 to 10 features: targets
# that are not images of the inputs' size or an integer multiple of it. It
# rejects them with a ValueError that says so; tests/test_regressor.py runs the
# same properties (pickling, dtypes, subset invariance, idempotence, pipelines...)
# on real paired images instead.
_NOT_IMAGE_TARGETS = (
    "fits on a target that is not an image paired with X (a scalar or a few values "
    "per sample), which the image-to-image regressor rejects by design"
)
REGRESSOR_EXPECTED_FAILED_CHECKS = {
    name: _NOT_IMAGE_TARGETS
    for name in [
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_dtype_object",
        "check_estimators_dtypes",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_partial_fit_n_features",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_n_features_in_after_fitting",
        "check_pipeline_consistency",
        "check_positive_only_tag_during_fit",
        "check_readonly_memmap_input",
        "check_regressor_data_not_an_array",
        "check_regressor_multioutput",
        "check_regressors_int",
        "check_regressors_no_decision_function",
        "check_regressors_train",
    ]
}


def _expected_failures(estimator):
    if isinstance(estimator, ConvAutoencoderRegressor):
        return REGRESSOR_EXPECTED_FAILED_CHECKS
    return {}


@parametrize_with_checks(
    [
        ConvAutoencoderTransformer(**FAST),
        ConvAutoencoderRegressor(**{**FAST, "filters": (2, 2)}),
    ],
    expected_failed_checks=_expected_failures,
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


def test_regressor_parameter_validation():
    estimator_checks.check_param_validation(
        "ConvAutoencoderRegressor", ConvAutoencoderRegressor(**FAST)
    )
