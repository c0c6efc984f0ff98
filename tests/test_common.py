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
# The regressor maps images to paired images. The checks below fit it on targets
# of shape (n,), (n, 1) or (n, 5) beside inputs of 2 to 10 features: targets that
# are not images of the inputs' size or an integer multiple of it, which it
# rejects by design. Each must fail with exactly that rejection (anything else,
# or a pass, fails the test): strict expected failures with a checked reason.
REGRESSOR_NON_IMAGE_TARGET_CHECKS = frozenset(
    {
        "check_dict_unchanged", "check_dont_overwrite_parameters", "check_dtype_object",
        "check_estimators_dtypes", "check_estimators_fit_returns_self",
        "check_estimators_nan_inf", "check_estimators_overwrite_params",
        "check_estimators_partial_fit_n_features",
        "check_estimators_pickle", "check_f_contiguous_array_estimator", "check_fit2d_1sample",
        "check_fit2d_predict1d", "check_fit_check_is_fitted", "check_fit_idempotent",
        "check_fit_score_takes_y", "check_methods_sample_order_invariance",
        "check_methods_subset_invariance", "check_n_features_in",
        "check_n_features_in_after_fitting", "check_pipeline_consistency",
        "check_positive_only_tag_during_fit", "check_readonly_memmap_input",
        "check_regressor_data_not_an_array", "check_regressor_multioutput",
        "check_regressors_int", "check_regressors_no_decision_function",
        "check_regressors_train",
    }
)  # fmt: skip
_NON_IMAGE_TARGET_ERROR = "are not an integer multiple of the input images'"


class PairedImageRegressor(ConvAutoencoderRegressor):
    """The regressor trained on image pairs whatever ``y`` scikit-learn's checks pass:
    each sample's target is the sample itself (an identity mapping), so every check
    above also runs, on valid pairs: parameters, dtypes, memmaps, idempotence,
    pickling, subset invariance and the rest."""

    def fit(self, X, y=None):
        return super().fit(X, X)

    def partial_fit(self, X, y=None):
        return super().partial_fit(X, X)

    def score(self, X, y=None, sample_weight=None):
        return super().score(X, X, sample_weight=sample_weight)


# What fails on image pairs, and why; strict (a pass fails the test).
PAIRED_EXPECTED_FAILED_CHECKS = {
    "check_regressors_train": "this wrapper ignores y, so a y of the wrong length goes "
    "unnoticed; the real regressor rejects it (see REGRESSOR_NON_IMAGE_TARGET_CHECKS)",
    "check_supervised_y_no_nan": "this wrapper ignores y; the real regressor rejects a "
    "non-finite y, which this check also runs on it",
    "check_regressor_multioutput": "predictions are float32 images by design (the "
    "network's precision), where the check expects float64",
}


def _expected_failures(estimator):
    if isinstance(estimator, PairedImageRegressor):
        return PAIRED_EXPECTED_FAILED_CHECKS
    return {}


def _check_name(check) -> str:
    return getattr(check, "func", check).__name__


@parametrize_with_checks(
    [
        ConvAutoencoderTransformer(**FAST),
        ConvAutoencoderRegressor(**{**FAST, "filters": (2, 2)}),
        PairedImageRegressor(**{**FAST, "filters": (2, 2)}),
    ],
    expected_failed_checks=_expected_failures,
    xfail_strict=True,
)
def test_sklearn_compatible(estimator, check):
    """Mutation checked: an expected failure that passes, or fails for another reason
    (``check_no_attributes_set_in_init`` added to the list, or the regressor's
    target error reworded) fails the test."""
    expects_rejection = type(estimator) is ConvAutoencoderRegressor and (
        _check_name(check) in REGRESSOR_NON_IMAGE_TARGET_CHECKS
    )
    if not expects_rejection:
        check(estimator)
        return
    with pytest.raises((ValueError, AssertionError)) as caught:
        check(estimator)
    error = caught.value
    assert _NON_IMAGE_TARGET_ERROR in f"{error} {error.__cause__}", repr(error)


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
