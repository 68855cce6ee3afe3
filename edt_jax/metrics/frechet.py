"""Frechet distance between Gaussian fits of features, streaming statistics and their ``.npz`` files.

The FID of two image sets is the Frechet distance between Gaussians fitted to their Inception pool3
features (2048-d): ``|mu1 - mu2|^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2))``. The trace term is
computed here from the symmetric product ``S1^(1/2) S2 S1^(1/2)`` (same eigenvalues as ``S1 S2``)
with ``numpy.linalg.eigh`` in float64, so no scipy is needed and no complex parts or ``sqrtm``
failures on near-singular covariances appear.

Statistics files follow the layout of the ADM evaluator's reference batches
(``VIRTUAL_imagenet256_labeled.npz``: ``mu``/``sigma`` for pool3, ``mu_s``/``sigma_s`` for the
spatial features, ``arr_0`` for the images) and of pytorch-fid (``mu``/``sigma``).
"""

from __future__ import annotations

import dataclasses

import numpy as np

from edt_jax import paths


@dataclasses.dataclass(frozen=True)
class FeatureStats:
    """Gaussian fit of a feature set: ``mean`` (D,), ``covariance`` (D, D) (unbiased, like
    ``np.cov``), ``count`` samples (``None`` when a file did not record it)."""

    mean: np.ndarray
    covariance: np.ndarray
    count: int | None = None

    def __post_init__(self):
        mean = np.asarray(self.mean, dtype=np.float64)
        covariance = np.asarray(self.covariance, dtype=np.float64)
        if mean.ndim != 1 or covariance.shape != (mean.shape[0],) * 2:
            raise ValueError(f"statistics need mean (D,) and covariance (D, D); got {mean.shape} and "
                             f"{covariance.shape}")
        object.__setattr__(self, "mean", mean)
        object.__setattr__(self, "covariance", covariance)

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @classmethod
    def from_features(cls, features) -> FeatureStats:
        """One-shot statistics of ``features`` (N, D), N >= 2, accumulated in float64."""
        features = _as_features(features)
        return cls(features.mean(axis=0), np.cov(features, rowvar=False), features.shape[0])

    def frechet_distance(self, other: FeatureStats) -> float:
        """Frechet distance to ``other`` (the FID when both hold Inception pool3 statistics)."""
        return frechet_distance(self.mean, self.covariance, other.mean, other.covariance)


class StatsAccumulator:
    """Streaming mean/covariance: ``add`` batches (B, D) one at a time, then ``stats()``.

    Keeps only a running sum (D,) and a running sum of outer products (D, D) in float64, so 50k
    samples never sit in memory. Both sums are taken about the first batch's mean (a fixed shift),
    which avoids the cancellation of ``E[xx^T] - mu mu^T`` when the mean is large against the spread.
    """

    def __init__(self, dim: int | None = None):
        self.dim = dim
        self.count = 0
        self._shift = None
        self._sum = None
        self._outer = None

    def add(self, features) -> None:
        """Add a batch of features (B, D) (numpy or jax, any float dtype)."""
        features = _as_features(features, min_rows=1)
        if self.dim is None:
            self.dim = features.shape[1]
        if features.shape[1] != self.dim:
            raise ValueError(f"feature batch has dimension {features.shape[1]}, but this accumulator holds "
                             f"{self.dim}-d features")
        if self._shift is None:
            self._shift = features.mean(axis=0)
            self._sum = np.zeros(self.dim, np.float64)
            self._outer = np.zeros((self.dim, self.dim), np.float64)
        centred = features - self._shift
        self._sum += centred.sum(axis=0)
        self._outer += centred.T @ centred
        self.count += features.shape[0]

    def stats(self) -> FeatureStats:
        """The statistics of everything added so far (needs at least 2 samples)."""
        if self.count < 2:
            raise ValueError(f"statistics need at least 2 samples, {self.count} were added")
        mean_shifted = self._sum / self.count
        covariance = (self._outer - self.count * np.outer(mean_shifted, mean_shifted)) / (self.count - 1)
        # Exactly symmetric, as np.cov's result is.
        covariance = (covariance + covariance.T) / 2
        return FeatureStats(self._shift + mean_shifted, covariance, self.count)


def _as_features(features, min_rows: int = 2) -> np.ndarray:
    features = np.asarray(features, dtype=np.float64)
    if features.ndim != 2 or features.shape[0] < min_rows:
        raise ValueError(f"features must be (N, D) with N >= {min_rows}; got shape {features.shape}")
    return features


def _sqrt_psd(matrix: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Square root of a symmetric PSD matrix and its eigenvalues (tiny negative ones clipped to 0)."""
    eigenvalues, vectors = np.linalg.eigh((matrix + matrix.T) / 2)
    eigenvalues = np.clip(eigenvalues, 0.0, None)
    return (vectors * np.sqrt(eigenvalues)) @ vectors.T, eigenvalues


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Args:
      mu1, mu2: means (D,).
      sigma1, sigma2: symmetric positive semi-definite covariances (D, D).

    ``tr((S1 S2)^(1/2))`` is taken as the sum of square roots of the eigenvalues of the symmetric
    PSD matrix ``S1^(1/2) S2 S1^(1/2)``; round-off negatives are clipped to 0. Agrees with the classic
    ``scipy.linalg.sqrtm(S1 @ S2)`` formula where that one is well conditioned.
    """
    mu1, mu2 = np.asarray(mu1, np.float64), np.asarray(mu2, np.float64)
    sigma1, sigma2 = np.asarray(sigma1, np.float64), np.asarray(sigma2, np.float64)
    if mu1.ndim != 1 or mu1.shape != mu2.shape:
        raise ValueError(f"means must be (D,) vectors of the same length; got {mu1.shape} and {mu2.shape}")
    square = (mu1.shape[0],) * 2
    if sigma1.shape != square or sigma2.shape != square:
        raise ValueError(f"covariances must be {square} for {mu1.shape[0]}-d means; got {sigma1.shape} and "
                         f"{sigma2.shape}")
    if not all(np.isfinite(a).all() for a in (mu1, mu2, sigma1, sigma2)):
        raise ValueError("statistics contain NaN or inf values")
    sqrt1, _ = _sqrt_psd(sigma1)
    _, eigenvalues = _sqrt_psd(sqrt1 @ sigma2 @ sqrt1)
    trace_sqrt = np.sqrt(eigenvalues).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2.0 * trace_sqrt)


def save_stats(path: paths.PathLike, stats: FeatureStats) -> None:
    """Write ``mu`` (D,), ``sigma`` (D, D) (float64) and ``count`` (-1 when unknown) to an ``.npz`` file."""
    count = -1 if stats.count is None else int(stats.count)
    with paths.as_path(path).open("wb") as f:
        np.savez(f, mu=stats.mean, sigma=stats.covariance, count=np.int64(count))


def load_stats(path: paths.PathLike, spatial: bool = False) -> FeatureStats:
    """Read statistics from an ``.npz`` file: ours, pytorch-fid's or an ADM reference batch.

    ``spatial=True`` reads the ADM evaluator's spatial-feature statistics (``mu_s``/``sigma_s``)
    instead of pool3 (``mu``/``sigma``). ``count`` is optional (``None`` when absent).
    """
    path = paths.as_path(path)
    if not path.is_file():
        raise FileNotFoundError(f"statistics file {str(path)!r} not found; expected an .npz with 'mu' and 'sigma' "
                                f"(ours, pytorch-fid's or an ADM reference batch such as "
                                f"VIRTUAL_imagenet256_labeled.npz)")
    mu_key, sigma_key = ("mu_s", "sigma_s") if spatial else ("mu", "sigma")
    with paths.open_npz(path) as data:
        if mu_key not in data.files or sigma_key not in data.files:
            raise ValueError(f"statistics file {str(path)!r} holds keys {sorted(data.files)}, but "
                           f"{mu_key!r} and {sigma_key!r} are expected")
        mean, covariance = data[mu_key], data[sigma_key]
        count = int(data["count"]) if "count" in data.files else None
    if mean.ndim != 1 or covariance.shape != (mean.shape[0],) * 2:
        raise ValueError(f"statistics file {str(path)!r} has {mu_key!r} of shape {mean.shape} and {sigma_key!r} of "
                         f"shape {covariance.shape}; expected (D,) and (D, D)")
    return FeatureStats(mean, covariance, None if count is None or count < 0 else count)
