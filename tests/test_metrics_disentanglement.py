"""FactorVAE, DCI and MIG against disentanglement_lib @ 86a644d4 as DisDiff runs them
(``disentanglement_reference.npz``, rebuilt as its README says), their errors and DisDiff's chunk PCA.

A DCI call at the fixture's sizes (10000 + 5000 codes, one GradientBoostingClassifier per factor) takes ~25 s on
a 2-core CPU, so the sampling DCI runs on the ``disentangled`` case and the array-level DCI on ``arrays/noisy``
(FactorVAE and MIG run on every case).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from reference_fixtures import load_npz

from edt_jax.metrics import disentanglement as dis

NPZ = "disentanglement_reference.npz"
CASES = ("disentangled", "mixed_fewer", "pruned_nuisance")


@pytest.fixture(scope="module")
def fixture() -> dict:
    data = load_npz(NPZ)
    data["cases"] = {c["name"]: c for c in json.loads(str(data["cases_json"]))["cases"]}
    return data


class FixtureGroundTruth:
    """The README's ground truth: SplitDiscreteStateSpace draws, obs = factors / (sizes - 1). Deliberately no
    ``sample`` method: the metrics must sample through the two protocol methods."""

    def __init__(self, factor_sizes):
        self.factor_sizes = list(factor_sizes)

    @property
    def num_factors(self):
        return len(self.factor_sizes)

    @property
    def factors_num_values(self):
        return self.factor_sizes

    def sample_factors(self, num, random_state):
        factors = np.zeros((num, self.num_factors), dtype=np.int64)
        for i, n in enumerate(self.factor_sizes):
            factors[:, i] = random_state.randint(n, size=num)
        return factors

    def sample_observations_from_factors(self, factors, random_state):
        return factors.astype(np.float64) / (np.array(self.factor_sizes, np.float64) - 1)


def case_setup(fixture: dict, name: str):
    case = fixture["cases"][name]
    L, A, b, s, C, e, o = (fixture[f"case/{name}/{k}"] for k in "LAbsCeo")

    def representation(obs):
        return obs @ L + s * np.tanh(obs @ A + b) + e * np.sin(obs @ C) + o

    return case, FixtureGroundTruth(case["factor_sizes"]), representation


# ---- official parity -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", CASES)
def test_factor_vae_matches_official(fixture, name):
    case, gt, rep = case_setup(fixture, name)
    out = dis._factor_vae_votes(gt, rep, np.random.RandomState(case["seeds"]["factor_vae"]),
                                **case["args"]["factor_vae"])
    key = f"case/{name}/factor_vae"
    np.testing.assert_array_equal(out["active_mask"], fixture[f"{key}/active_mask"])
    np.testing.assert_array_equal(out["train_votes"], fixture[f"{key}/train_votes"])
    np.testing.assert_array_equal(out["eval_votes"], fixture[f"{key}/eval_votes"])
    assert out["train_accuracy"] == fixture[f"{key}/train_accuracy"]
    assert out["eval_accuracy"] == fixture[f"{key}/eval_accuracy"]
    # The official quirk: the number of codes K, even with pruned codes (pruned_nuisance: 9, 7 active).
    assert out["num_active_dims"] == fixture[f"{key}/num_active_dims"] == len(out["active_mask"])


def test_factor_vae_score_public_result(fixture):
    case, gt, rep = case_setup(fixture, "pruned_nuisance")
    out = dis.factor_vae_score(gt, rep, np.random.RandomState(case["seeds"]["factor_vae"]))  # defaults = args
    assert set(out) == {"train_accuracy", "eval_accuracy", "num_active_dims"}
    assert out == {k: case["official"]["factor_vae"][k] for k in out}
    assert isinstance(out["num_active_dims"], int) and isinstance(out["train_accuracy"], float)


@pytest.mark.parametrize("name", CASES)
def test_mig_matches_official(fixture, name):
    case, gt, rep = case_setup(fixture, name)
    out = dis.mig(gt, rep, np.random.RandomState(case["seeds"]["mig"]), **case["args"]["mig"])
    assert set(out) == {"discrete_mig"}
    assert abs(out["discrete_mig"] - fixture[f"case/{name}/mig/discrete_mig"]) <= 1e-6


def test_dci_matches_official(fixture):
    name = CASES[0]
    case, gt, rep = case_setup(fixture, name)
    np.random.seed(case["seeds"]["dci_global"])  # the classifier's tree splitter draws from the global RNG
    out = dis.dci(gt, rep, np.random.RandomState(case["seeds"]["dci"]), **case["args"]["dci"])
    assert set(out) == {"disentanglement", "completeness", "informativeness_train", "informativeness_test"}
    for key, value in out.items():
        assert abs(value - fixture[f"case/{name}/dci/{key}"]) <= 1e-12, key


def _noisy(fixture):
    return [fixture[f"arrays/noisy/{k}"] for k in ("codes_train", "factors_train", "codes_test", "factors_test")]


def test_dci_from_codes_matches_official(fixture):
    np.random.seed(0)
    out = dis.dci_from_codes(*_noisy(fixture))
    for key in ("disentanglement", "completeness", "informativeness_train", "informativeness_test"):
        assert abs(out[key] - fixture[f"arrays/noisy/dci/{key}"]) <= 1e-12, key
    assert out["importance_matrix"].shape == (6, 5)
    np.testing.assert_allclose(out["importance_matrix"], fixture["arrays/noisy/dci/importance_matrix"], rtol=0,
                               atol=1e-12)


def test_mig_from_codes_matches_official(fixture):
    codes, factors = _noisy(fixture)[:2]
    out = dis.mig_from_codes(codes, factors, num_bins=20)
    assert abs(out["discrete_mig"] - fixture["arrays/noisy/mig/discrete_mig"]) <= 1e-12
    np.testing.assert_allclose(out["mutual_info"], fixture["arrays/noisy/mig/mutual_info"], rtol=0, atol=1e-12)
    np.testing.assert_allclose(out["entropy"], fixture["arrays/noisy/mig/entropy"], rtol=0, atol=1e-12)


# ---- behaviour that needs no fixture ---------------------------------------------------------------------------

def _tiny(n=80, seed=0):
    rng = np.random.default_rng(seed)
    factors = np.stack([rng.integers(0, 3, n), rng.integers(0, 4, n)], axis=1)
    codes = np.concatenate([factors + 0.3 * rng.standard_normal((n, 2)), rng.standard_normal((n, 1))], axis=1)
    return codes, factors


def test_dci_draws_from_the_global_rng_without_seeding_it():
    from sklearn.ensemble import GradientBoostingClassifier

    codes, factors = _tiny()
    np.random.seed(7)
    first = dis.dci_from_codes(codes, factors, codes, factors)
    after = np.random.get_state()[1].copy()
    np.random.seed(7)  # the same fits by hand consume the global RNG the same way
    for j in range(factors.shape[1]):
        GradientBoostingClassifier().fit(codes, factors[:, j])
    np.testing.assert_array_equal(after, np.random.get_state()[1])
    np.random.seed(7)
    assert dis.dci_from_codes(codes, factors, codes, factors)["disentanglement"] == first["disentanglement"]


def test_factor_vae_without_active_codes_returns_zeros_after_the_variance_draw():
    gt = FixtureGroundTruth((3, 4))
    rs = np.random.RandomState(0)
    out = dis.factor_vae_score(gt, lambda obs: np.full((len(obs), 2), 0.5) + 0.01 * obs, rs, num_variance_estimate=50)
    assert out == {"train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}
    replay = np.random.RandomState(0)
    gt.sample_factors(50, replay)
    assert rs.randint(10**9) == replay.randint(10**9)  # nothing drawn after the variance estimate


def _one_line_error(fn, *match):
    with pytest.raises(ValueError) as info:
        fn()
    message = str(info.value)
    assert "\n" not in message
    for text in match:
        assert text in message, message
    return message


def test_errors_are_one_line_and_name_the_bad_value():
    gt = FixtureGroundTruth((3, 4))
    rs = np.random.RandomState(0)
    good = lambda obs: obs @ np.ones((2, 3))  # noqa: E731
    codes, factors = _tiny()
    _one_line_error(lambda: dis.mig_from_codes(codes[:, :1], factors), "at least 2 codes", "K=1")
    _one_line_error(lambda: dis.mig(gt, lambda obs: obs[:, :1], rs, num_train=20), "at least 2 codes")
    _one_line_error(lambda: dis.mig(gt, lambda obs: good(obs)[:-1], rs, num_train=20), "rows")
    _one_line_error(lambda: dis.mig(gt, lambda obs: good(obs)[:, 0], rs, num_train=20), "2-D", "shape")
    _one_line_error(lambda: dis.mig(gt, good, rs, num_train=0), "num_train", "0")
    _one_line_error(lambda: dis.dci(gt, good, rs, num_test=-3), "num_test", "-3")
    _one_line_error(lambda: dis.factor_vae_score(gt, good, rs, batch_size=1), "batch_size", ">= 2")
    _one_line_error(lambda: dis.mig(gt, good, np.random.default_rng(0)), "RandomState", "Generator")
    _one_line_error(lambda: dis.mig_from_codes(codes, factors, num_bins=0), "num_bins")
    _one_line_error(lambda: dis.mig_from_codes(np.full_like(codes, np.nan), factors), "NaN")
    _one_line_error(lambda: dis.mig_from_codes(codes, np.zeros_like(factors)), "factor 0", "single value")
    _one_line_error(lambda: dis.mig_from_codes(codes, factors + 0.5), "integer")
    _one_line_error(lambda: dis.dci_from_codes(codes[:, :1], factors, codes[:, :1], factors), "K=1")
    _one_line_error(lambda: dis.dci_from_codes(codes, factors, codes[:, :2], factors), "columns")
    _one_line_error(lambda: dis.dci_from_codes(codes, factors[:-1], codes, factors), "rows")


# ---- DisDiff's chunk PCA ---------------------------------------------------------------------------------------

def test_chunk_pca_is_one_first_component_per_row_major_chunk():
    from sklearn.decomposition import PCA

    rng = np.random.default_rng(0)
    n, num_chunks, d = 300, 4, 5
    codes = rng.standard_normal((n, num_chunks * d)) @ np.diag(np.linspace(0.5, 2.0, num_chunks * d))
    reduced = dis.pca_chunks(codes, num_chunks)
    assert reduced.shape == (n, num_chunks) and reduced.dtype == np.float64
    chunks = codes.reshape(n, num_chunks, d)
    for i in range(num_chunks):  # chunk i = entries i*d .. (i+1)*d - 1, as DisDiff's chunk(N, dim=1)
        np.testing.assert_array_equal(reduced[:, i], PCA(n_components=1).fit_transform(chunks[:, i])[:, 0])
        centred = chunks[:, i] - chunks[:, i].mean(axis=0)
        top = np.linalg.eigh(centred.T @ centred)[1][:, -1]
        np.testing.assert_allclose(np.abs(reduced[:, i]), np.abs(centred @ top), atol=1e-10)
    np.testing.assert_allclose(reduced.mean(axis=0), 0.0, atol=1e-12)
    # (n, N, d) input is the same; fit once, then transform other codes; a chunk only affects its column.
    np.testing.assert_array_equal(dis.pca_chunks(chunks, num_chunks), reduced)
    pca = dis.ChunkPCA(num_chunks).fit(codes)
    np.testing.assert_allclose(pca(codes), reduced, atol=1e-12)
    other = codes[:7].copy()
    other[:, :d] += 1.0
    np.testing.assert_allclose(pca(other)[:, 1:], reduced[:7, 1:], atol=1e-12)


def test_chunk_pca_errors():
    codes = np.random.default_rng(0).standard_normal((20, 6))
    _one_line_error(lambda: dis.pca_chunks(codes, 4), "num_chunks=4", "6")
    _one_line_error(lambda: dis.pca_chunks(codes, 7), "more chunks", "6")
    _one_line_error(lambda: dis.pca_chunks(codes, 0), "num_chunks", "0")
    _one_line_error(lambda: dis.pca_chunks(codes[:1], 2), "at least 2")
    _one_line_error(lambda: dis.ChunkPCA(2)(codes), "fit")
    _one_line_error(lambda: dis.ChunkPCA(2).fit(codes)(codes[:, :4]), "chunks of 2", "3")
    _one_line_error(lambda: dis.pca_chunks(codes.reshape(20, 3, 2), 2), "N = num_chunks", "(20, 3, 2)")
