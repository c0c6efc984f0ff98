"""Safe persistence: skconvae.save/load round trips, and damaged or hostile files."""

import io
import json
import os
import pathlib
import pickle
import subprocess
import sys

import joblib
import numpy as np
import pandas as pd
import pytest
import torch
from safetensors import safe_open
from safetensors.numpy import save_file
from sklearn.base import clone
from sklearn.datasets import load_sample_images
from sklearn.exceptions import NotFittedError as SklearnNotFittedError

import skconvae
from skconvae import (
    ConvAutoencoderRegressor,
    ConvAutoencoderTransformer,
    ModelFileError,
    NotFittedError,
    SkconvaeError,
    _persistence,
)

from .conftest import FAST


@pytest.fixture(scope="module")
def X(digits):
    return digits[0][:300]


@pytest.fixture(scope="module")
def fitted(X):
    return ConvAutoencoderTransformer(**FAST, latent_dim=8).fit(X)


@pytest.fixture(scope="module")
def model_file(fitted, tmp_path_factory):
    path = tmp_path_factory.mktemp("models") / "digits.safetensors"
    fitted.save(path)
    return path


def _read(path):
    with safe_open(path, framework="numpy") as f:
        return f.metadata(), {name: f.get_tensor(name) for name in f.keys()}


def _rewrite(source, target, edit_document=None, edit_tensors=None, fix_digest=True):
    """Copy a model file with edits, recomputing its digest as a careful forger would."""
    metadata, tensors = _read(source)
    document = json.loads(metadata["skconvae"])
    if edit_document:
        edit_document(document)
    if edit_tensors:
        edit_tensors(tensors)
    text = json.dumps(document)
    digest = _persistence._digest(text, tensors) if fix_digest else metadata["skconvae.sha256"]
    save_file(tensors, target, metadata={"skconvae": text, "skconvae.sha256": digest})
    return target


def _assert_same_model(loaded, original, X):
    assert type(loaded) is type(original)
    assert loaded.get_params() == original.get_params()
    assert sorted(vars(loaded)) == sorted(vars(original))
    for name, value in vars(original).items():
        assert type(getattr(loaded, name)) is type(value), name
        if isinstance(value, np.ndarray):
            np.testing.assert_array_equal(getattr(loaded, name), value, err_msg=name)
    if hasattr(original, "transform"):
        codes = original.transform(X)
        np.testing.assert_array_equal(loaded.transform(X), codes)
        np.testing.assert_array_equal(
            loaded.inverse_transform(codes), original.inverse_transform(codes)
        )
        np.testing.assert_array_equal(loaded.score_samples(X), original.score_samples(X))
        assert loaded.score(X) == original.score(X)
    else:
        np.testing.assert_array_equal(loaded.predict(X), original.predict(X))


# -- round trips ----------------------------------------------------------------------------


def _photo_patches():
    china = load_sample_images().images[0]
    return np.stack([china[r : r + 11, 100:113] for r in range(0, 11 * 24, 11)])


@pytest.mark.parametrize(
    "params, make_X",
    [
        ({}, None),
        ({"latent_dim": 8}, None),
        ({"latent_dim": 4, "variational": True, "kl_weight": 0.5}, None),
        ({"noise": "salt_pepper", "noise_level": 0.1, "early_stopping": True}, None),
        ({"loss": "bce", "scaling": "minmax", "optimizer": torch.optim.Adagrad}, None),
        ({"scaling": "symmetric", "lr": 3e-3, "optimizer": "sgd"}, None),
        ({"scaling": None, "filters": [3, 3, 2], "kernel_size": 5}, None),
        ({"image_shape": (8, 8)}, lambda X: X.reshape(-1, 8, 8)),
        ({}, lambda X: X[:, :60]),  # 1-D signals
        ({"channels": "last"}, lambda X: _photo_patches()),
        ({"image_shape": [11, 13, 3]}, lambda X: _photo_patches().reshape(24, -1)),
        ({}, lambda X: _photo_patches().transpose(0, 3, 1, 2)),
    ],
    ids=["conv-code", "latent-mixture", "variational", "denoising-early-stopping",
         "bce-adagrad-class", "symmetric-sgd", "unscaled-deeper", "3-D-images", "signals",
         "NHWC", "flat-RGB", "NCHW"],
)  # fmt: skip
def test_round_trip_gives_the_same_model(X, tmp_path, params, make_X):
    data = make_X(X) if make_X else X
    original = ConvAutoencoderTransformer(**{**FAST, **params}).fit(data)
    original.save(tmp_path / "model.safetensors")
    loaded = skconvae.load(tmp_path / "model.safetensors")
    _assert_same_model(loaded, original, data)
    np.testing.assert_array_equal(loaded.reconstruct(data), original.reconstruct(data))
    if params.get("latent_dim"):
        np.testing.assert_array_equal(
            loaded.sample(4, random_state=1), original.sample(4, random_state=1)
        )


def test_round_trip_keeps_dataframe_feature_names_and_pandas_output(X, tmp_path):
    frame = pd.DataFrame(X, columns=[f"px{i}" for i in range(64)])
    original = ConvAutoencoderTransformer(**FAST).set_output(transform="pandas").fit(frame)
    skconvae.save(original, tmp_path / "m.safetensors")
    loaded = skconvae.load(tmp_path / "m.safetensors")
    np.testing.assert_array_equal(loaded.feature_names_in_, frame.columns)
    assert loaded.feature_names_in_.dtype == object
    out = loaded.transform(frame)
    assert isinstance(out, pd.DataFrame)
    pd.testing.assert_frame_equal(out, original.transform(frame))


def test_regressor_round_trip(digits, tmp_path):
    clean = digits[0][:300].reshape(-1, 8, 8)
    noisy = clean + np.random.default_rng(0).normal(0, 2, clean.shape)
    original = ConvAutoencoderRegressor(filters=(4, 8), max_epochs=1, random_state=0)
    original.fit(noisy, clean)
    skconvae.save(original, tmp_path / "reg.safetensors")
    loaded = skconvae.load(tmp_path / "reg.safetensors")
    _assert_same_model(loaded, original, noisy)
    assert loaded.score(noisy, clean) == original.score(noisy, clean)


def test_file_is_plain_safetensors_with_a_versioned_json_document(fitted, model_file):
    metadata, tensors = _read(model_file)
    assert set(metadata) == {"skconvae", "skconvae.sha256"}
    document = json.loads(metadata["skconvae"])
    assert document["format"] == "skconvae-model"
    assert document["format_version"] == _persistence.FORMAT_VERSION == 3
    assert document["estimator"] == "ConvAutoencoderTransformer"
    assert document["skconvae_version"] == skconvae.__version__
    assert document["params"]["latent_dim"] == 8
    net = document["fitted"]["net_"]["__net__"]
    assert net["module"] == "ConvAutoencoder"
    assert net["module_kwargs"]["__dict__"]["in_channels"] == 1
    weights = fitted.net_.module_.state_dict()
    assert set(tensors) == {f"net_.{k}" for k in weights} | {"data_min_", "data_max_"} | {
        f"code_density_.{k}"
        for k in ("weights_", "means_", "covariances_", "precisions_", "precisions_cholesky_")
    }
    for key, value in weights.items():
        np.testing.assert_array_equal(tensors[f"net_.{key}"], value.cpu().numpy())


def test_saving_is_deterministic_and_the_method_matches_the_function(fitted, tmp_path):
    fitted.save(tmp_path / "a.safetensors")
    skconvae.save(fitted, tmp_path / "b.safetensors")
    skconvae.load(tmp_path / "a.safetensors").save(tmp_path / "c.safetensors")
    # The same document and tensors (safetensors orders its header's metadata freely).
    metadata, tensors = _read(tmp_path / "a.safetensors")
    for name in ("b.safetensors", "c.safetensors"):
        other_metadata, other_tensors = _read(tmp_path / name)
        assert other_metadata == metadata
        assert other_tensors.keys() == tensors.keys()
        for key, value in tensors.items():
            np.testing.assert_array_equal(other_tensors[key], value)


# -- loading runs no code from the file ------------------------------------------------------------


def test_load_never_unpickles(model_file, fitted, X, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("skconvae.load must not unpickle")

    for target, name in [(pickle, "load"), (pickle, "loads"), (pickle, "Unpickler"),
                         (torch, "load"), (joblib, "load")]:  # fmt: skip
        monkeypatch.setattr(target, name, forbidden)
    np.testing.assert_array_equal(skconvae.load(model_file).transform(X), fitted.transform(X))


class _Payload:
    """A pickle that touches a file when it is unpickled."""

    def __init__(self, sentinel):
        self.sentinel = sentinel

    def __reduce__(self):
        return (pathlib.Path(self.sentinel).touch, ())


def test_a_hostile_pickle_is_refused_and_not_run(tmp_path):
    sentinel = tmp_path / "code-ran"
    hostile = tmp_path / "model.safetensors"
    hostile.write_bytes(pickle.dumps(_Payload(str(sentinel))))
    with pytest.raises(ModelFileError, match="never opens pickle or joblib files"):
        skconvae.load(hostile)
    assert not sentinel.exists()
    # The file was armed: unpickling it would have run the code.
    pickle.loads(hostile.read_bytes())
    assert sentinel.exists()


def test_pickle_and_joblib_files_of_real_models_are_refused(fitted, tmp_path):
    (tmp_path / "m.pkl").write_bytes(pickle.dumps(fitted))
    joblib.dump(fitted, tmp_path / "m.joblib")
    for name in ("m.pkl", "m.joblib"):
        with pytest.raises(ModelFileError, match="not a readable model file"):
            skconvae.load(tmp_path / name)


# -- damaged and tampered files ---------------------------------------------------------------


@pytest.mark.parametrize("keep", [0, 7, 8, 100, 0.5, -1], ids=lambda k: f"keep-{k}")
def test_truncated_files_are_refused(model_file, tmp_path, keep):
    data = model_file.read_bytes()
    n = int(len(data) * keep) if isinstance(keep, float) else keep % len(data)
    (tmp_path / "cut.safetensors").write_bytes(data[:n])
    with pytest.raises(ModelFileError, match="truncated or corrupted"):
        skconvae.load(tmp_path / "cut.safetensors")


@pytest.mark.parametrize("where", ["last weight byte", "middle weight byte", "document"])
def test_flipped_bits_are_caught(model_file, tmp_path, where):
    data = bytearray(model_file.read_bytes())
    header = int.from_bytes(data[:8], "little")
    position = {
        "last weight byte": len(data) - 1,
        "middle weight byte": (8 + header + len(data)) // 2,
        "document": data.index(b'latent_dim\\":8') + len('latent_dim\\":'),
    }[where]
    data[position] ^= 0x01  # in the document: latent_dim 8 becomes 9
    (tmp_path / "flipped.safetensors").write_bytes(bytes(data))
    with pytest.raises(ModelFileError, match="failed its integrity check"):
        skconvae.load(tmp_path / "flipped.safetensors")


def test_a_safetensors_file_of_something_else_is_refused(tmp_path):
    save_file({"w": np.zeros(3, np.float32)}, tmp_path / "other.safetensors")
    with pytest.raises(ModelFileError, match="holds no skconvae model"):
        skconvae.load(tmp_path / "other.safetensors")


def _set(path, value):
    """Edit: set a key path in the document."""

    def edit(document):
        node = document
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value

    return edit


NET = ("fitted", "net_", "__net__")
MODULE = (*NET, "module_kwargs", "__dict__")


def _poison_weight(tensors):
    tensors["net_.encoder.0.weight"][0, 0, 0, 0] = np.nan


def _swap_weight(tensors):
    tensors["net_.encoder.0.bias"] = np.zeros(7, np.float32)


TAMPERED = [
    ("estimator", _set(("estimator",), "os.system"), None, "names the estimator 'os.system'"),
    ("optimizer", _set(("params", "optimizer"), {"__optimizer__": "builtins.eval"}), None,
     "optimizer 'builtins.eval', which is not a torch.optim class"),
    ("optimizer base", _set(("params", "optimizer"), {"__optimizer__": "Optimizer"}), None,
     "not a torch.optim class"),
    ("unknown marker", _set(("params", "lr"), {"__reduce__": ["os.system", "ls"]}), None,
     "unknown entry '__reduce__' at 'lr'"),
    ("extra param", _set(("params", "evil"), 1), None, r"parameters \['evil'\] that"),
    ("invalid param", _set(("params", "max_epochs"), -1), None,
     "invalid skconvae model: InvalidParameterError: The 'max_epochs' parameter"),
    ("method attribute", _set(("fitted", "transform"), 1), None,
     "attribute 'transform' .* not a fitted attribute"),
    ("dunder attribute", _set(("fitted", "__class__"), "x"), None, "'__class__'"),
    ("module class", _set((*NET, "module"), "Sequential"), None, "unknown network module"),
    ("kernel size", _set((*MODULE, "kernel_size"), 5), None,
     r"net_.encoder.0.weight is float32 of shape \(4, 1, 3, 3\), but .* \(4, 1, 5, 5\)"),
    ("channels", _set((*MODULE, "in_channels"), 3), None, "invalid skconvae model"),
    # 600 MB of weights if they were allocated: the module is first built on the meta device.
    ("big filters", _set((*MODULE, "filters"), [4096, 4096]), None,
     r"encoder.0.weight is float32 of shape \(4, 1, 3, 3\), but .* \(4096, 1, 3, 3\)"),
    ("huge filters", _set((*MODULE, "filters"), [10**9, 10**9]), None,
     "invalid skconvae model: RuntimeError: Storage size calculation overflow"),
    ("activation", _set((*MODULE, "output_activation"), "evil"), None,
     "invalid skconvae model: KeyError: 'evil'"),
    ("layout", _set(("fitted", "_layout", "__layout__", "height"), 9), None,
     "invalid skconvae model"),
    ("layout type", _set(("fitted", "_layout", "__layout__", "height"), "8"), None,
     "invalid image layout"),
    ("nan weight", None, _poison_weight, "net_.encoder.0.weight holds NaN or infinite values"),
    ("weight shape", None, _swap_weight, r"float32 of shape \(7,\), but .* shape \(4,\)"),
    ("extra tensor", None, lambda t: t.update(extra=np.zeros(2)), "nothing refers to: \\['extra'"),
    ("missing tensor", None, lambda t: t.pop("data_min_"), "missing tensor 'data_min_'"),
    ("newer version", _set(("format_version",), 4), None,
     "format version 4 .* reads format version 3 and older. Upgrade skconvae"),
    ("development version", _set(("format_version",), 1), None,
     "format version 1 by a development version .* Fit the model again"),
    ("format", _set(("format",), "other"), None, "not a skconvae model file"),
]  # fmt: skip


@pytest.mark.parametrize(
    "edit_document, edit_tensors, match", [t[1:] for t in TAMPERED], ids=[t[0] for t in TAMPERED]
)
def test_tampered_files_are_refused_even_with_a_valid_digest(
    model_file, tmp_path, edit_document, edit_tensors, match
):
    forged = _rewrite(model_file, tmp_path / "forged.safetensors", edit_document, edit_tensors)
    with pytest.raises(ModelFileError, match=match) as caught:
        skconvae.load(forged)
    assert isinstance(caught.value, SkconvaeError) and isinstance(caught.value, ValueError)


def test_version_2_files_load_as_trained_without_warps(mnist, tmp_path):
    # Version 2 predates warp: a transformer saved then trained on its images as they are.
    images, _ = mnist
    original = ConvAutoencoderTransformer(**FAST, latent_dim=8).fit(images[:100])
    assert original.warp_ == "affine"
    original.save(tmp_path / "now.safetensors")

    def as_version_2(document):
        document["format_version"] = 2
        del document["params"]["warp"], document["fitted"]["warp_"]
        net_kwargs = document["fitted"]["net_"]["__net__"]["net_kwargs"]
        del net_kwargs.get("__dict__", net_kwargs)["warp"]

    old = _rewrite(tmp_path / "now.safetensors", tmp_path / "v2.safetensors", as_version_2)
    loaded = skconvae.load(old)
    assert loaded.warp is None and loaded.warp_ is None and loaded.net_.warp is None
    np.testing.assert_array_equal(loaded.transform(images[:5]), original.transform(images[:5]))


def test_edits_without_a_new_digest_fail_the_integrity_check(model_file, tmp_path):
    def nudge(tensors):
        tensors["net_.decoder.0.weight"] += np.float32(1e-6)

    forged = _rewrite(model_file, tmp_path / "f.safetensors", None, nudge, fix_digest=False)
    with pytest.raises(ModelFileError, match="modified after it was saved"):
        skconvae.load(forged)


@pytest.mark.parametrize(
    "text, match",
    [("{not json", "not valid JSON"), ('{"format": NaN}', "not valid JSON"), ("[1, 2]", "format")],
)
def test_a_damaged_document_is_refused(model_file, tmp_path, text, match):
    _, tensors = _read(model_file)
    metadata = {"skconvae": text, "skconvae.sha256": _persistence._digest(text, tensors)}
    save_file(tensors, tmp_path / "bad.safetensors", metadata=metadata)
    with pytest.raises(ModelFileError, match=match):
        skconvae.load(tmp_path / "bad.safetensors")


# -- devices -----------------------------------------------------------------------------------


@pytest.mark.parametrize("saved_device", ["cuda", "cuda:0", "cuda:7"])
def test_a_gpu_fitted_model_loads_on_the_cpu(fitted, X, tmp_path, monkeypatch, saved_device):
    # Fake a GPU-fitted model, and a machine without CUDA.
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    gpu_model = pickle.loads(pickle.dumps(fitted))
    gpu_model.device_ = saved_device
    gpu_model.save(tmp_path / "gpu.safetensors")
    _, _ = _read(tmp_path / "gpu.safetensors")
    document = json.loads(_read(tmp_path / "gpu.safetensors")[0]["skconvae"])
    assert document["fitted"]["device_"] == saved_device
    loaded = skconvae.load(tmp_path / "gpu.safetensors")
    assert loaded.device_ == "cpu" and loaded.net_.device == "cpu"
    assert next(loaded.net_.module_.parameters()).device.type == "cpu"
    np.testing.assert_array_equal(loaded.transform(X), fitted.transform(X))


def test_load_on_a_chosen_device(model_file, X, fitted):
    loaded = skconvae.load(model_file, device="cpu")
    assert loaded.device_ == "cpu"
    np.testing.assert_array_equal(loaded.transform(X), fitted.transform(X))
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            skconvae.load(model_file, device="cuda")


class _TensorSpy(pickle.Pickler):
    """Pickles to nowhere and records every tensor it meets."""

    def __init__(self):
        super().__init__(io.BytesIO())
        self.tensors = []

    def reducer_override(self, obj):
        if isinstance(obj, torch.Tensor):
            self.tensors.append(tuple(obj.shape))
        return NotImplemented


@pytest.mark.parametrize("kind", ["transformer", "regressor"])
def test_pickle_routes_every_tensor_through_the_device_mapping(kind, X):
    """A tensor pickled outside skorch's CUDA-dependent attributes is unpickled on the
    device it was saved from: a model fitted on a GPU then fails to unpickle on a CPU-only
    machine ("Attempting to deserialize object on a CUDA device"). The LR scheduler in the
    callbacks held the optimizer's tensors that way until ``callbacks`` joined
    ``cuda_dependent_attributes_`` (remove it there and this test fails)."""
    params = dict(FAST, max_epochs=3, early_stopping=True, validation_fraction=0.2)
    if kind == "transformer":
        model = ConvAutoencoderTransformer(**params, lr_schedule="cosine").fit(X)
    else:
        images = X.reshape(-1, 8, 8)
        model = ConvAutoencoderRegressor(**params).fit(images, images)
    state = model.net_.__getstate__()
    outside = {key: value for key, value in state.items() if key != "__cuda_dependent_attributes__"}
    spy = _TensorSpy()
    spy.dump(outside)
    assert spy.tensors == []
    mapped = _TensorSpy()
    mapped.dump(pickle.loads(state["__cuda_dependent_attributes__"]))
    assert len(mapped.tensors) > 0
    assert pickle.loads(pickle.dumps(model)).net_.callbacks_ is not None


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_a_cuda_model_loads_in_a_process_without_cuda(X, tmp_path):
    model = ConvAutoencoderTransformer(**FAST, device="cuda").fit(X)
    model.save(tmp_path / "cuda.safetensors")
    np.save(tmp_path / "x.npy", X)
    np.save(tmp_path / "codes.npy", model.transform(X))
    script = f"""
import numpy as np, torch, skconvae
assert not torch.cuda.is_available()
ae = skconvae.load({str(tmp_path / "cuda.safetensors")!r})
codes = ae.transform(np.load({str(tmp_path / "x.npy")!r}))
np.testing.assert_allclose(codes, np.load({str(tmp_path / "codes.npy")!r}), rtol=1e-3, atol=1e-3)
print(ae.device_, ae.net_.device)
"""
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["cpu", "cpu"]


# -- what is saved, and what is not ------------------------------------------------------------


def test_callbacks_and_random_state_instances_are_not_saved(X, tmp_path):
    from skorch.callbacks import EpochTimer

    ae = ConvAutoencoderTransformer(
        **{**FAST, "random_state": np.random.RandomState(0)}, callbacks=[("t", EpochTimer())]
    ).fit(X)
    with pytest.warns(UserWarning) as record:
        ae.save(tmp_path / "m.safetensors")
    messages = sorted(str(w.message) for w in record)
    assert len(messages) == 2
    assert "callbacks are not saved" in messages[0]
    assert "random_state=RandomState instance is not saved" in messages[1]
    loaded = skconvae.load(tmp_path / "m.safetensors")
    assert loaded.callbacks is None and loaded.random_state is None
    np.testing.assert_array_equal(loaded.transform(X), ae.transform(X))


def test_torch_optim_classes_are_saved_by_name(X, tmp_path):
    ae = ConvAutoencoderTransformer(**FAST, optimizer=torch.optim.NAdam).fit(X)
    ae.save(tmp_path / "m.safetensors")
    document = json.loads(_read(tmp_path / "m.safetensors")[0]["skconvae"])
    assert document["params"]["optimizer"] == {"__optimizer__": "NAdam"}
    assert skconvae.load(tmp_path / "m.safetensors").optimizer is torch.optim.NAdam


def test_saving_an_unfitted_estimator(tmp_path):
    with pytest.raises(NotFittedError, match="Call fit before save") as caught:
        ConvAutoencoderTransformer().save(tmp_path / "m.safetensors")
    assert isinstance(caught.value, SklearnNotFittedError)
    assert isinstance(caught.value, SkconvaeError)
    assert not (tmp_path / "m.safetensors").exists()


def test_a_failed_save_leaves_the_existing_file_intact(fitted, model_file, tmp_path, monkeypatch):
    target = tmp_path / "m.safetensors"
    target.write_bytes(model_file.read_bytes())

    def disk_full(tensors, filename, metadata=None):
        pathlib.Path(filename).write_bytes(b"partial")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(_persistence, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        fitted.save(target)
    assert target.read_bytes() == model_file.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.safetensors"]


# -- everything else keeps working -------------------------------------------------------------


def test_pickle_and_joblib_still_work_on_loaded_models(model_file, fitted, X):
    loaded = skconvae.load(model_file)
    buffer = io.BytesIO()
    joblib.dump(loaded, buffer)
    buffer.seek(0)
    for copy in (pickle.loads(pickle.dumps(loaded)), joblib.load(buffer)):
        np.testing.assert_array_equal(copy.transform(X), fitted.transform(X))


def test_load_leaves_global_random_states_untouched(model_file):
    np_state, torch_state = np.random.get_state()[1].copy(), torch.get_rng_state().clone()
    skconvae.load(model_file)
    np.testing.assert_array_equal(np.random.get_state()[1], np_state)
    assert torch.equal(torch.get_rng_state(), torch_state)


def test_a_loaded_model_refits_clones_and_continues(model_file, fitted, X):
    loaded = skconvae.load(model_file)
    assert clone(loaded).get_params() == fitted.get_params()
    loaded.set_params(warm_start=True).fit(X)
    assert len(loaded.net_.history) == FAST["max_epochs"]
    assert not np.array_equal(loaded.transform(X), fitted.transform(X))
    refit = skconvae.load(model_file).fit(X)
    np.testing.assert_array_equal(refit.transform(X), fitted.transform(X))


# -- file faults and environment faults ----------------------------------------------------------


@pytest.mark.parametrize(
    "where, error",
    [
        ("build", torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2 GiB")),
        ("build", RuntimeError("Found no NVIDIA driver on your system")),
        ("trial", RuntimeError("a bug in skconvae")),
        ("trial", MemoryError()),
    ],
    ids=["out-of-memory", "no-driver", "package-bug", "host-memory"],
)
def test_environment_errors_are_not_blamed_on_the_file(model_file, monkeypatch, where, error):
    """Building the network on its device and the trial pass raise their own errors, with
    a note that the file passed its checks; they are not turned into ModelFileError.

    Mutation checked: moving the build and ``_check_runs`` back inside the decoding
    ``try`` (the landed code) turns the RuntimeErrors into "damaged or edited" errors.
    """

    def fail(*args, **kwargs):
        raise error

    if where == "build":
        monkeypatch.setattr(skconvae.AutoencoderNet, "initialize", fail)
    else:
        monkeypatch.setattr(ConvAutoencoderTransformer, "transform", fail)
    with pytest.raises(type(error)) as caught:
        skconvae.load(model_file)
    assert not isinstance(caught.value, ModelFileError)
    assert any("after the file passed its checks" in note for note in caught.value.__notes__)


# -- the declared schema of saved attributes ------------------------------------------------------

# The fitted attributes of file format version 1, as FITTED_SCHEMA declared them when
# version 1 was frozen. Changing the schema means a new FORMAT_VERSION (and a reader of
# the old one): add its entry here then.
FROZEN_SCHEMAS = {
    1: {
        "ConvAutoencoderTransformer": {
            "net_", "code_density_", "_layout", "image_shape_", "code_shape_", "data_min_",
            "data_max_", "device_", "n_features_in_", "feature_names_in_",
            "_sklearn_output_config",
        },
        "ConvAutoencoderRegressor": {
            "net_", "_layout", "_target_layout", "image_shape_", "target_shape_", "scale_",
            "target_min_", "target_max_", "device_", "n_features_in_", "feature_names_in_",
            "_sklearn_output_config",
        },
    },
    2: {
        "ConvAutoencoderTransformer": {
            "net_", "code_density_", "_layout", "image_shape_", "code_shape_", "filters_",
            "latent_dim_", "loss_", "max_epochs_", "data_min_", "data_max_", "device_",
            "n_features_in_", "feature_names_in_", "_sklearn_output_config",
        },
        "ConvAutoencoderRegressor": {
            "net_", "_layout", "_target_layout", "image_shape_", "target_shape_", "scale_",
            "target_min_", "target_max_", "input_min_", "input_max_", "device_",
            "n_features_in_", "feature_names_in_", "_sklearn_output_config",
        },
    },
    3: {  # warp_ added
        "ConvAutoencoderTransformer": {
            "net_", "code_density_", "_layout", "image_shape_", "code_shape_", "filters_",
            "latent_dim_", "loss_", "max_epochs_", "warp_", "data_min_", "data_max_",
            "device_", "n_features_in_", "feature_names_in_", "_sklearn_output_config",
        },
        "ConvAutoencoderRegressor": {
            "net_", "_layout", "_target_layout", "image_shape_", "target_shape_", "scale_",
            "target_min_", "target_max_", "input_min_", "input_max_", "device_",
            "n_features_in_", "feature_names_in_", "_sklearn_output_config",
        },
    },
}  # fmt: skip


def test_the_schema_changes_only_with_the_format_version():
    declared = {name: set(schema) for name, schema in _persistence.FITTED_SCHEMA.items()}
    assert declared == FROZEN_SCHEMAS[_persistence.FORMAT_VERSION]


def _fitted_attributes(estimator) -> set:
    return set(vars(estimator)) - set(estimator.get_params(deep=False)) - _persistence._NOT_SAVED


@pytest.mark.parametrize(
    "make",
    [
        lambda X: ConvAutoencoderTransformer(**FAST).fit(X),
        lambda X: ConvAutoencoderTransformer(**FAST, latent_dim=4, warm_start=True).fit(X).fit(X),
        lambda X: (
            ConvAutoencoderTransformer(**FAST, latent_dim=2, variational=True)
            .set_output(transform="pandas")
            .fit(pd.DataFrame(X, columns=[f"p{i}" for i in range(X.shape[1])]))
        ),
        lambda X: ConvAutoencoderRegressor(**FAST, early_stopping=True).fit(X, X),
        lambda X: ConvAutoencoderRegressor(**FAST).fit(
            X.reshape(-1, 8, 8)[:, ::2, ::2], X.reshape(-1, 8, 8)
        ),
    ],
    ids=["transformer", "mixture-warm", "variational-dataframe", "regressor", "upscaling"],
)
def test_every_fitted_attribute_is_declared_in_the_schema(X, tmp_path, make):
    """Fails when fit adds an attribute the file format does not declare: save refuses
    such an estimator, so the attribute must be declared (with a new format version).

    Mutation checked: a fit that also sets ``self.extra_ = 1`` fails here (and save
    raises TypeError naming it).
    """
    estimator = make(X)
    schema = _persistence.FITTED_SCHEMA[type(estimator).__name__]
    attributes = _fitted_attributes(estimator)
    assert attributes <= set(schema), attributes - set(schema)
    assert {name for name, (_, required) in schema.items() if required} <= attributes
    if getattr(estimator, "code_density_", None) is not None:
        mixture = estimator.code_density_
        stored = set(vars(mixture)) - set(mixture.get_params())
        assert stored == set(_persistence.MIXTURE_SCHEMA)
    estimator.save(tmp_path / "m.safetensors")
    assert _fitted_attributes(skconvae.load(tmp_path / "m.safetensors")) == attributes


def test_an_undeclared_attribute_is_refused_at_save_and_at_load(fitted, model_file, tmp_path):
    extended = pickle.loads(pickle.dumps(fitted))
    extended.extra_ = np.zeros(3)
    with pytest.raises(TypeError, match=r"attributes \['extra_'\], which its model file format"):
        extended.save(tmp_path / "extended.safetensors")
    assert not (tmp_path / "extended.safetensors").exists()
    forged = _rewrite(model_file, tmp_path / "forged.safetensors", _set(("fitted", "extra_"), 1))
    with pytest.raises(ModelFileError, match=r"attribute 'extra_' .* not a fitted attribute"):
        skconvae.load(forged)
    dropped = _rewrite(
        model_file, tmp_path / "dropped.safetensors", lambda d: d["fitted"].pop("code_shape_")
    )
    with pytest.raises(ModelFileError, match=r"lacks the fitted attributes \['code_shape_'\]"):
        skconvae.load(dropped)


def test_scikit_learns_own_new_mixture_attributes_are_not_saved(fitted, tmp_path, X):
    extended = pickle.loads(pickle.dumps(fitted))
    extended.code_density_.attribute_of_a_later_sklearn_ = np.ones(2)
    extended.save(tmp_path / "m.safetensors")
    loaded = skconvae.load(tmp_path / "m.safetensors")
    assert not hasattr(loaded.code_density_, "attribute_of_a_later_sklearn_")
    np.testing.assert_array_equal(
        loaded.sample(4, random_state=0), fitted.sample(4, random_state=0)
    )
