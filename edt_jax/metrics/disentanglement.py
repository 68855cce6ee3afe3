"""Supervised disentanglement metrics: the FactorVAE score, DCI and MIG, as disentanglement_lib computes them.

    from edt_jax.metrics import disentanglement as dis
    rs = np.random.RandomState(0)
    dis.factor_vae_score(ground_truth, representation_fn, rs)   # {train_accuracy, eval_accuracy, num_active_dims}
    dis.dci(ground_truth, representation_fn, rs)                # {disentanglement, completeness, informativeness_*}
    dis.mig(ground_truth, representation_fn, rs)                # {discrete_mig}
    rep = dis.ChunkPCA(num_chunks=7).fit_transform(codes)       # DisDiff: (n, 7 * d) codes -> (n, 7)

- **FactorVAE score** (Kim & Mnih 2018): fix one random factor in a batch, vote for the code whose variance
  (normalised by its global variance) is smallest; the accuracy of a majority-vote classifier from code to
  factor. Codes with a global std below 0.05 are pruned (they never get votes).
- **DCI** (Eastwood & Williams 2018): one gradient-boosted tree classifier per factor on the codes; the feature
  importances form a (K codes, F factors) matrix. Disentanglement = importance-weighted 1 - entropy (base F)
  of each code's row, completeness = the same over each factor's column (base K), informativeness = mean
  classification accuracy (not an error) on train and test codes.
- **MIG** (Chen et al. 2018): each code discretised into a 20-bin histogram; per factor, the gap between the
  two largest code-factor mutual informations over the factor's entropy, averaged over factors.

They reproduce google-research/disentanglement_lib @ 86a644d4 (``evaluation/metrics/{factor_vae,dci,mig,
utils}.py``) with the gin bindings of DisDiff's ``evaluate.py`` (``prune_dims.threshold = 0.05``, the
histogram discretiser with 20 bins): the same draws from ``random_state`` in the same order, so for a seed the
numbers agree with the official ones (FactorVAE and MIG exactly). Quirks kept on purpose: FactorVAE's
``num_active_dims`` is the number of codes K, not the count of unpruned ones (the official returns
``len(active_mask)``), and informativeness is an accuracy.

DCI and the global RNG: ``sklearn.ensemble.GradientBoostingClassifier()`` has ``random_state=None``, so its
tree splitter draws from numpy's *global* RNG (the order in which features are tried; exact ties go to the
first). This module never seeds it; call ``np.random.seed(s)`` right before ``dci`` to reproduce a run bit for
bit. Other global seeds move DCI by up to a few 1e-3.

``ground_truth_data`` follows disentanglement_lib's ``GroundTruthData`` protocol (``num_factors``,
``factors_num_values``, ``sample_factors(num, rs)``, ``sample_observations_from_factors(factors, rs)``; see
``edt_jax.data.ground_truth``); ``representation_fn(observations) -> (n, K)`` codes, used in float64.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable
from typing import Any, Protocol

import numpy as np

__all__ = ["ChunkPCA", "GroundTruthData", "dci", "dci_from_codes", "factor_vae_score", "mig", "mig_from_codes",
           "pca_chunks"]

PRUNE_THRESHOLD = 0.05  # DisDiff's prune_dims.threshold: codes with global std below it get no FactorVAE votes
_ENTROPY_EPS = 1e-11  # disentanglement_lib adds this to the importances before the entropies


class GroundTruthData(Protocol):
    """disentanglement_lib's ground-truth data protocol (the part the metrics use)."""

    @property
    def num_factors(self) -> int: ...

    @property
    def factors_num_values(self) -> list[int]: ...

    def sample_factors(self, num: int, random_state: np.random.RandomState) -> np.ndarray: ...

    def sample_observations_from_factors(self, factors: np.ndarray,
                                         random_state: np.random.RandomState) -> Any: ...


RepresentationFn = Callable[[Any], Any]


# ---- checks and sampling ---------------------------------------------------------------------------------------

def _count(where: str, name: str, value: Any, minimum: int = 1) -> int:
    """``value`` as an int >= minimum, or a one-line ValueError."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"{where}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _codes(where: str, codes: Any, num_rows: int | None = None, what: str = "codes") -> np.ndarray:
    """Codes as a finite float64 (n, K) array; float64 because float32 can move FactorVAE argmins and MIG bins."""
    arr = np.asarray(codes)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{where}: {what} must be a 2-D (n, K) array with K >= 1, got shape {arr.shape}")
    if num_rows is not None and arr.shape[0] != num_rows:
        raise ValueError(f"{where}: {what} has {arr.shape[0]} rows for {num_rows} observations; "
                         "the representation must return one (K,) code per observation")
    if not (np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.integer)):
        raise ValueError(f"{where}: {what} must be real numbers, got dtype {arr.dtype}")
    arr = arr.astype(np.float64, copy=False)
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"{where}: {what} contain NaN or inf")
    return arr


def _factors(where: str, factors: Any, num_rows: int | None = None, what: str = "factors") -> np.ndarray:
    """Factors as an int64 (n, F) array of non-negative integer values."""
    arr = np.asarray(factors)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"{where}: {what} must be a 2-D (n, F) array with F >= 1, got shape {arr.shape}")
    if num_rows is not None and arr.shape[0] != num_rows:
        raise ValueError(f"{where}: {what} has {arr.shape[0]} rows but the codes have {num_rows}")
    is_int = np.issubdtype(arr.dtype, np.integer)
    if not is_int and not (np.issubdtype(arr.dtype, np.floating) and np.all(arr == np.round(arr))):
        raise ValueError(f"{where}: {what} must be integer factor values, got dtype {arr.dtype}")
    return arr.astype(np.int64, copy=False)


def _random_state(where: str, random_state: Any) -> np.random.RandomState:
    # The official draws use RandomState.randint; a numpy Generator has no randint and draws other numbers.
    if not isinstance(random_state, np.random.RandomState):
        raise ValueError(f"{where}: random_state must be a numpy.random.RandomState (disentanglement_lib's "
                         f"draws), got {type(random_state).__name__}")
    return random_state


def _represent(where: str, representation_fn: RepresentationFn, observations: Any, num: int) -> np.ndarray:
    return _codes(where, representation_fn(observations), num, "representation_fn(observations)")


def _sample(ground_truth_data: GroundTruthData, num: int, random_state: np.random.RandomState) -> tuple[Any, Any]:
    # disentanglement_lib's GroundTruthData.sample, written out so user objects need only the two methods.
    factors = ground_truth_data.sample_factors(num, random_state)
    return factors, ground_truth_data.sample_observations_from_factors(factors, random_state)


def _factor_codes(where: str, ground_truth_data: GroundTruthData, representation_fn: RepresentationFn,
                  num_points: int, random_state: np.random.RandomState,
                  batch_size: int) -> tuple[np.ndarray, np.ndarray]:
    """utils.generate_batch_factor_code: ``sample(min(batch_size, left))`` until num_points -> codes (n, K),
    factors (n, F) (not transposed, unlike the official)."""
    codes, factors, done = [], [], 0
    while done < num_points:
        n = min(num_points - done, batch_size)
        f, obs = _sample(ground_truth_data, n, random_state)
        factors.append(_factors(where, f, n, "sample_factors(num)"))
        codes.append(_represent(where, representation_fn, obs, n))
        if codes[-1].shape[1] != codes[0].shape[1]:
            raise ValueError(f"{where}: representation_fn returned {codes[-1].shape[1]} codes per observation "
                             f"after {codes[0].shape[1]} earlier; it must return a fixed number K")
        done += n
    return np.concatenate(codes), np.concatenate(factors)


# ---- FactorVAE -------------------------------------------------------------------------------------------------

def _factor_vae_votes(ground_truth_data: GroundTruthData, representation_fn: RepresentationFn,
                      random_state: np.random.RandomState, batch_size: int = 64, num_train: int = 10000,
                      num_eval: int = 5000, num_variance_estimate: int = 10000) -> dict[str, Any]:
    """The FactorVAE computation with its intermediate arrays: the scores of ``factor_vae_score`` plus
    ``global_variances`` (K,), ``active_mask`` (K,) bool and ``train_votes``, ``eval_votes`` (F, K) int64."""
    where = "factor_vae_score"
    # batch_size 1 would give ddof=1 variances of one sample (NaN): the official needs >= 2 as well.
    batch_size = _count(where, "batch_size", batch_size, 2)
    num_train = _count(where, "num_train", num_train)
    num_eval = _count(where, "num_eval", num_eval)
    num_variance_estimate = _count(where, "num_variance_estimate", num_variance_estimate, 2)
    num_factors = _count(where, "ground_truth_data.num_factors", ground_truth_data.num_factors)
    random_state = _random_state(where, random_state)

    _, obs = _sample(ground_truth_data, num_variance_estimate, random_state)  # = sample_observations
    global_var = np.var(_represent(where, representation_fn, obs, num_variance_estimate), axis=0, ddof=1)
    active = np.sqrt(global_var) >= PRUNE_THRESHOLD
    out: dict[str, Any] = {"global_variances": global_var, "active_mask": active}
    if not active.any():  # the official's early return, before any further draw
        return {**out, "train_accuracy": 0.0, "eval_accuracy": 0.0, "num_active_dims": 0}

    def votes(num_points: int) -> np.ndarray:
        v = np.zeros((num_factors, len(global_var)), dtype=np.int64)
        for _ in range(num_points):
            k = random_state.randint(num_factors)
            f = np.array(ground_truth_data.sample_factors(batch_size, random_state))
            f[:, k] = f[0, k]  # the fixed factor takes the first sample's value
            codes = _represent(where, representation_fn,
                               ground_truth_data.sample_observations_from_factors(f, random_state), batch_size)
            if codes.shape[1] != len(global_var):
                raise ValueError(f"{where}: representation_fn returned {codes.shape[1]} codes per observation "
                                 f"after {len(global_var)} earlier; it must return a fixed number K")
            ratio = np.var(codes, axis=0, ddof=1)[active] / global_var[active]
            # argmin indexes the *active* codes, as the official: with pruning, trailing columns stay 0.
            v[k, np.argmin(ratio)] += 1
        return v

    train_votes = votes(num_train)
    classifier = np.argmax(train_votes, axis=0)  # (K,) the majority factor of each code
    columns = np.arange(train_votes.shape[1])
    eval_votes = votes(num_eval)
    return {**out, "train_votes": train_votes, "eval_votes": eval_votes,
            "train_accuracy": float(np.sum(train_votes[classifier, columns]) / np.sum(train_votes)),
            "eval_accuracy": float(np.sum(eval_votes[classifier, columns]) / np.sum(eval_votes)),
            "num_active_dims": len(active)}


def factor_vae_score(ground_truth_data: GroundTruthData, representation_fn: RepresentationFn,
                     random_state: np.random.RandomState, batch_size: int = 64, num_train: int = 10000,
                     num_eval: int = 5000, num_variance_estimate: int = 10000) -> dict[str, float | int]:
    """The FactorVAE score (disentanglement_lib ``compute_factor_vae``, prune threshold 0.05).

    Draws: ``num_variance_estimate`` observations for the global variances, then ``num_train`` and ``num_eval``
    points, each ``randint(num_factors)`` and a ``batch_size`` batch of factors with that factor fixed.

    Returns:
      ``train_accuracy``, ``eval_accuracy`` (floats in [0, 1]) and ``num_active_dims`` (int; as the official,
      the number of codes K whenever one code is active, 0 and accuracies 0 when none is).
    """
    full = _factor_vae_votes(ground_truth_data, representation_fn, random_state, batch_size, num_train,
                             num_eval, num_variance_estimate)
    return {key: full[key] for key in ("train_accuracy", "eval_accuracy", "num_active_dims")}


# ---- DCI -------------------------------------------------------------------------------------------------------

def _one_minus_entropy(p: np.ndarray, base: int) -> np.ndarray:
    """1 - H_base of each column of p (scipy.stats.entropy normalises the columns), as disentanglement_lib."""
    from scipy import stats

    return 1.0 - stats.entropy(p + _ENTROPY_EPS, base=base)


def dci_from_codes(codes_train: Any, factors_train: Any, codes_test: Any, factors_test: Any) -> dict[str, Any]:
    """DCI on given codes (disentanglement_lib ``dci._compute_dci`` on the transposes).

    Args:
      codes_train: (n, K) codes, K >= 2; factors_train: (n, F) integer factors, F >= 2, each taking >= 2 values.
      codes_test: (m, K); factors_test: (m, F).

    Returns:
      ``disentanglement``, ``completeness``, ``informativeness_train``, ``informativeness_test`` (floats; the
      last two are mean accuracies) and ``importance_matrix`` (K, F). Uses numpy's global RNG (module docstring).
    """
    where = "dci_from_codes"
    x_train, x_test = _codes(where, codes_train, what="codes_train"), _codes(where, codes_test, what="codes_test")
    y_train = _factors(where, factors_train, len(x_train), "factors_train")
    y_test = _factors(where, factors_test, len(x_test), "factors_test")
    num_codes, num_factors = x_train.shape[1], y_train.shape[1]
    if x_test.shape[1] != num_codes or y_test.shape[1] != num_factors:
        raise ValueError(f"{where}: test codes/factors have {x_test.shape[1]}/{y_test.shape[1]} columns but the "
                         f"training ones {num_codes}/{num_factors}; they must match")
    # The entropies are in base K and base F: with a single code or factor they are 0/0.
    if num_codes < 2 or num_factors < 2:
        raise ValueError(f"{where}: DCI needs at least 2 codes and 2 factors, got K={num_codes}, F={num_factors}")
    for j in range(num_factors):
        if len(np.unique(y_train[:, j])) < 2:
            raise ValueError(f"{where}: factor {j} takes a single value in the training set; a classifier "
                             "needs at least 2 classes")
    from sklearn.ensemble import GradientBoostingClassifier

    importance = np.zeros((num_codes, num_factors), dtype=np.float64)
    acc_train, acc_test = [], []
    for j in range(num_factors):  # factor by factor, in order: each fit draws from the global RNG
        model = GradientBoostingClassifier()  # default settings, random_state=None, as the official
        model.fit(x_train, y_train[:, j])
        importance[:, j] = np.abs(model.feature_importances_)
        acc_train.append(np.mean(model.predict(x_train) == y_train[:, j]))
        acc_test.append(np.mean(model.predict(x_test) == y_test[:, j]))
    weights = importance if importance.sum() != 0.0 else np.ones_like(importance)
    per_code = _one_minus_entropy(importance.T, num_factors)  # (K,)
    per_factor = _one_minus_entropy(importance, num_codes)  # (F,)
    # Weights divided first, then multiplied, in the official order (bit-identical results).
    return {"disentanglement": float(np.sum(per_code * (weights.sum(axis=1) / weights.sum()))),
            "completeness": float(np.sum(per_factor * (weights.sum(axis=0) / weights.sum()))),
            "informativeness_train": float(np.mean(acc_train)),
            "informativeness_test": float(np.mean(acc_test)),
            "importance_matrix": importance}


def dci(ground_truth_data: GroundTruthData, representation_fn: RepresentationFn,
        random_state: np.random.RandomState, num_train: int = 10000, num_test: int = 5000,
        batch_size: int = 16) -> dict[str, float]:
    """DCI (disentanglement_lib ``compute_dci``): ``num_train`` then ``num_test`` sampled codes, drawn in batches
    of ``batch_size``. Returns the four scores of ``dci_from_codes``; seed numpy's global RNG first to
    reproduce a run exactly."""
    where = "dci"
    num_train, num_test = _count(where, "num_train", num_train), _count(where, "num_test", num_test)
    batch_size = _count(where, "batch_size", batch_size)
    random_state = _random_state(where, random_state)
    train = _factor_codes(where, ground_truth_data, representation_fn, num_train, random_state, batch_size)
    test = _factor_codes(where, ground_truth_data, representation_fn, num_test, random_state, batch_size)
    scores = dci_from_codes(train[0], train[1], test[0], test[1])
    return {key: scores[key] for key in ("disentanglement", "completeness", "informativeness_train",
                                         "informativeness_test")}


# ---- MIG -------------------------------------------------------------------------------------------------------

def _histogram_discretize(codes: np.ndarray, num_bins: int) -> np.ndarray:
    """Each code column -> bin numbers 1..num_bins of its own num_bins-bin histogram (disentanglement_lib's
    ``_histogram_discretize``; the last edge is dropped, so the maximum falls in bin num_bins)."""
    out = np.zeros(codes.shape, dtype=np.int64)
    for j in range(codes.shape[1]):
        out[:, j] = np.digitize(codes[:, j], np.histogram(codes[:, j], num_bins)[1][:-1])
    return out


def mig_from_codes(codes: Any, factors: Any, num_bins: int = 20) -> dict[str, Any]:
    """The mutual information gap on given codes (disentanglement_lib ``mig._compute_mig`` on the transposes).

    Args:
      codes: (n, K) codes, K >= 2; factors: (n, F) integer factors, each taking >= 2 values.
      num_bins: histogram bins per code (DisDiff: 20).

    Returns:
      ``discrete_mig`` (float), ``mutual_info`` (K, F) and ``entropy`` (F,), in nats.
    """
    from sklearn.metrics import mutual_info_score

    where = "mig_from_codes"
    num_bins = _count(where, "num_bins", num_bins)
    x = _codes(where, codes)
    y = _factors(where, factors, len(x))
    if x.shape[1] < 2:  # the gap is between the two most informative codes
        raise ValueError(f"{where}: MIG needs at least 2 codes, got K={x.shape[1]}")
    discrete = _histogram_discretize(x, num_bins)
    mi = np.array([[mutual_info_score(y[:, f], discrete[:, j]) for f in range(y.shape[1])]
                   for j in range(x.shape[1])], dtype=np.float64).reshape(x.shape[1], y.shape[1])
    entropy = np.array([mutual_info_score(y[:, f], y[:, f]) for f in range(y.shape[1])], dtype=np.float64)
    if np.any(entropy == 0.0):
        raise ValueError(f"{where}: factor {int(np.argmin(entropy))} takes a single value in the sample; MIG "
                         "divides by each factor's entropy")
    top = np.sort(mi, axis=0)[::-1]
    return {"discrete_mig": float(np.mean((top[0] - top[1]) / entropy)), "mutual_info": mi, "entropy": entropy}


def mig(ground_truth_data: GroundTruthData, representation_fn: RepresentationFn,
        random_state: np.random.RandomState, num_train: int = 10000, batch_size: int = 16,
        num_bins: int = 20) -> dict[str, float]:
    """MIG (disentanglement_lib ``compute_mig``, histogram discretiser): ``num_train`` sampled codes, drawn in
    batches of ``batch_size``. Returns ``discrete_mig``."""
    where = "mig"
    num_train, batch_size = _count(where, "num_train", num_train), _count(where, "batch_size", batch_size)
    num_bins = _count(where, "num_bins", num_bins)
    random_state = _random_state(where, random_state)
    codes, factors = _factor_codes(where, ground_truth_data, representation_fn, num_train, random_state, batch_size)
    return {"discrete_mig": mig_from_codes(codes, factors, num_bins)["discrete_mig"]}


# ---- DisDiff's evaluation protocol: one principal component per latent chunk ------------------------------------

class ChunkPCA:
    """DisDiff's representation for the metrics: the encoder's (n, N*d) codes split row-major into N chunks of d
    (the official ``chunk(N, dim=1)``), each chunk reduced to its first principal component -> (n, N).

    DisDiff's ``evaluate.eval_func`` fits ``sklearn.decomposition.PCA(n_components=1)`` per chunk on the codes of
    every image of the dataset (``fit_transform``) and indexes that table with the metrics' observations (dataset
    indices). Do the same with ``fit_transform(all_codes)``; or ``fit`` once and call the instance on other codes
    (``transform``). Computed in float64 (DisDiff's torch latents are float32).
    """

    def __init__(self, num_chunks: int) -> None:
        self.num_chunks = _count("ChunkPCA", "num_chunks", num_chunks)
        self.pcas: list[Any] | None = None

    def _split(self, codes: Any) -> np.ndarray:
        """(n, N*d) or (n, N, d) codes -> float64 (n, N, d)."""
        arr = np.asarray(codes)
        if arr.ndim == 3:
            if arr.shape[1] != self.num_chunks:
                raise ValueError(f"ChunkPCA: (n, N, d) codes must have N = num_chunks = {self.num_chunks}, got "
                                 f"shape {arr.shape}")
            arr = arr.reshape(len(arr), -1)
        x = _codes("ChunkPCA", arr)
        if x.shape[1] < self.num_chunks:
            raise ValueError(f"ChunkPCA: num_chunks={self.num_chunks} asks for more chunks than the {x.shape[1]} "
                             "code entries per example; use at most that many")
        if x.shape[1] % self.num_chunks:
            raise ValueError(f"ChunkPCA: codes have {x.shape[1]} entries per example, which does not split into "
                             f"num_chunks={self.num_chunks} equal chunks; use a num_chunks dividing it")
        return x.reshape(len(x), self.num_chunks, -1)

    def fit_transform(self, codes: Any) -> np.ndarray:
        """Fit on codes (n >= 2, (n, N*d) or (n, N, d)) and return their (n, N) first components, exactly as
        DisDiff (``PCA.fit_transform`` per chunk)."""
        from sklearn.decomposition import PCA

        chunks = self._split(codes)
        if len(chunks) < 2:
            raise ValueError(f"ChunkPCA: fitting needs at least 2 examples, got {len(chunks)}")
        self.pcas = [PCA(n_components=1) for _ in range(self.num_chunks)]
        return np.concatenate([p.fit_transform(chunks[:, i]) for i, p in enumerate(self.pcas)], axis=1)

    def fit(self, codes: Any) -> ChunkPCA:
        """Fit on codes ((n, N*d) or (n, N, d)); returns self."""
        self.fit_transform(codes)
        return self

    def transform(self, codes: Any) -> np.ndarray:
        """(n, N*d) or (n, N, d) codes, the d of the fit -> (n, N) first principal components."""
        if self.pcas is None:
            raise ValueError("ChunkPCA: call fit(codes) or fit_transform(codes) before transforming codes")
        chunks = self._split(codes)
        if chunks.shape[2] != self.pcas[0].n_features_in_:
            raise ValueError(f"ChunkPCA: codes have chunks of {chunks.shape[2]} entries but it was fit on chunks "
                             f"of {self.pcas[0].n_features_in_}")
        return np.concatenate([p.transform(chunks[:, i]) for i, p in enumerate(self.pcas)], axis=1)

    __call__ = transform


def pca_chunks(codes: Any, num_chunks: int) -> np.ndarray:
    """DisDiff's reduction of (n, N*d) codes to (n, N): ``ChunkPCA(num_chunks).fit_transform(codes)``."""
    return ChunkPCA(num_chunks).fit_transform(codes)
