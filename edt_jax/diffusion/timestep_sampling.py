"""Host-side timestep samplers for training, as ADM's ``resample.py`` (EDT's default: "loss-second-moment").

A sampler draws B timesteps from p_t and returns importance weights 1 / (N p_t), so that
mean(weights * loss) is an unbiased estimate of the uniform-t objective; the trainer multiplies the
per-sample losses by them.

:class:`LossSecondMomentResampler` keeps the last ``history_per_term`` losses of every timestep. Until
each timestep has a full history it is uniform (warm-up); afterwards

    p_t = (1 - uniform_prob) sqrt(mean(history_t^2)) / sum_s sqrt(mean(history_s^2)) + uniform_prob / N

Multi-host training: :meth:`update_with_local_losses` only sees the arrays it is given. ADM all-gathers
every rank's (t, loss) pairs first so all ranks keep the same history; with JAX the caller must do the
same (e.g. gather the global batch's t and losses with ``multihost_utils.process_allgather``) and pass
the full arrays, in the same order, on every host.
"""

from __future__ import annotations

import numbers

import numpy as np

from edt_jax.checks import check_choice, check_int

TIMESTEP_SAMPLERS = ("uniform", "loss-second-moment")


class TimestepSampler:
    """Base class: draws t from p_t proportional to :meth:`weights` (uniform here) with importance weights."""

    #: Whether :meth:`update_with_local_losses` does anything (the caller may skip gathering losses).
    loss_aware = False

    def __init__(self, num_timesteps: int):
        self.num_timesteps = check_int("num_timesteps", num_timesteps, 1)

    def weights(self) -> np.ndarray:
        """(N,) float64 unnormalised sampling weights."""
        return np.ones(self.num_timesteps, dtype=np.float64)

    def sample(self, rng: np.random.Generator, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """Draw timesteps: returns t (B,) int32 in [0, N) and importance weights 1 / (N p_t) (B,) float32."""
        batch_size = check_int("batch_size", batch_size, 1)
        w = self.weights()
        p = w / np.sum(w)
        t = rng.choice(len(p), size=(batch_size,), p=p)
        return t.astype(np.int32), (1.0 / (len(p) * p[t])).astype(np.float32)

    def update_with_local_losses(self, ts, losses) -> None:
        """No-op unless the sampler is loss-aware."""

    def state_dict(self) -> dict:
        """JSON-serialisable state (plain Python values)."""
        return {"num_timesteps": self.num_timesteps}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; raises ValueError if it was made for another N."""
        _check_same("num_timesteps", state, self.num_timesteps)


class UniformSampler(TimestepSampler):
    """p_t = 1 / N; the importance weights are all 1 and losses are ignored."""


class LossSecondMomentResampler(TimestepSampler):
    """Importance sampling with p_t proportional to the RMS of t's recent losses (ADM / EDT)."""

    loss_aware = True

    def __init__(self, num_timesteps: int, history_per_term: int = 10, uniform_prob: float = 0.001):
        super().__init__(num_timesteps)
        self.history_per_term = check_int("history_per_term", history_per_term, 1)
        ok = isinstance(uniform_prob, numbers.Real) and not isinstance(uniform_prob, bool)
        if not ok or not 0.0 <= uniform_prob <= 1.0:
            raise ValueError(f"uniform_prob must be a number in [0, 1], got {uniform_prob!r}")
        self.uniform_prob = float(uniform_prob)
        # Row t holds t's losses oldest first; only the first counts[t] entries are filled.
        self._history = np.zeros((self.num_timesteps, self.history_per_term), dtype=np.float64)
        self._counts = np.zeros(self.num_timesteps, dtype=np.int64)

    def warmed_up(self) -> bool:
        """True once every timestep has a full history (before that, sampling is uniform)."""
        return bool(np.all(self._counts == self.history_per_term))

    def weights(self) -> np.ndarray:
        """(N,) float64 sampling probabilities (ones during warm-up)."""
        if not self.warmed_up():
            return np.ones(self.num_timesteps, dtype=np.float64)
        rms = np.sqrt(np.mean(self._history ** 2, axis=-1))
        total = np.sum(rms)
        if total == 0.0:
            # All-zero losses would give 0/0 in ADM; uniform is the only sensible limit.
            return np.ones(self.num_timesteps, dtype=np.float64)
        return rms / total * (1.0 - self.uniform_prob) + self.uniform_prob / self.num_timesteps

    def update_with_local_losses(self, ts, losses) -> None:
        """Append each loss to its timestep's history, in order, dropping the oldest once full.

        ts: (K,) integer timesteps in [0, N); losses: (K,) finite per-sample losses (NumPy or JAX
        arrays; the per-sample "loss" of ``training_losses``, before importance weighting). Single
        process: pass the globally gathered arrays on every host (see the module docstring).
        """
        ts = np.asarray(ts)
        losses = np.asarray(losses, dtype=np.float64)
        if ts.ndim != 1 or losses.shape != ts.shape:
            raise ValueError(f"ts and losses must be 1-D of the same length, got shapes {ts.shape} and {losses.shape}")
        if ts.size and (not np.issubdtype(ts.dtype, np.integer) or ts.min() < 0 or ts.max() >= self.num_timesteps):
            raise ValueError(f"ts must be integers in [0, {self.num_timesteps}), got {ts.dtype} values in "
                             f"[{ts.min()}, {ts.max()}]")
        if not np.all(np.isfinite(losses)):
            raise ValueError(f"losses must be finite, got {int(np.sum(~np.isfinite(losses)))} non-finite values")
        # A plain loop on purpose: repeated timesteps in one batch must shift the history in order.
        for t, loss in zip(ts.tolist(), losses.tolist(), strict=True):
            count = self._counts[t]
            if count == self.history_per_term:
                self._history[t, :-1] = self._history[t, 1:]
                self._history[t, -1] = loss
            else:
                self._history[t, count] = loss
                self._counts[t] = count + 1

    def state_dict(self) -> dict:
        """JSON-serialisable state: the histories and counts as lists (floats round-trip exactly)."""
        return {
            "num_timesteps": self.num_timesteps,
            "history_per_term": self.history_per_term,
            "uniform_prob": self.uniform_prob,
            "loss_history": self._history.tolist(),
            "loss_counts": self._counts.tolist(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`'s output; raises ValueError if its settings differ from this sampler's."""
        for key, value in (("num_timesteps", self.num_timesteps), ("history_per_term", self.history_per_term),
                           ("uniform_prob", self.uniform_prob)):
            _check_same(key, state, value)
        shape = (self.num_timesteps, self.history_per_term)
        history = np.asarray(state.get("loss_history"), dtype=np.float64)
        counts = np.asarray(state.get("loss_counts"), dtype=np.int64)
        if history.shape != shape or counts.shape != shape[:1] or np.any(counts < 0) \
                or np.any(counts > self.history_per_term):
            raise ValueError(f"state loss_history must be {shape} and loss_counts ({shape[0]},) in "
                             f"[0, {self.history_per_term}], got {history.shape} and {counts.shape}")
        self._history = history.copy()
        self._counts = counts.copy()


def _check_same(key: str, state: dict, expected) -> None:
    got = state.get(key) if isinstance(state, dict) else None
    if isinstance(got, bool) or got != expected:
        raise ValueError(f"state {key}={got!r} does not match this sampler's {key}={expected!r}")


def create_timestep_sampler(name: str, num_timesteps: int) -> TimestepSampler:
    """A sampler by name: "uniform" | "loss-second-moment" (ADM's defaults: 10 losses per t, 0.001 uniform)."""
    check_choice("timestep sampler", name, TIMESTEP_SAMPLERS)
    if name == "uniform":
        return UniformSampler(num_timesteps)
    return LossSecondMomentResampler(num_timesteps)
