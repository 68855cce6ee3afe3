"""Access to ``tests/fixtures/samplers_reference.npz`` (see ``reference_fixtures``) for the sampler tests."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
from reference_fixtures import fixture_path, load_npz

from edt_jax.diffusion import GaussianMixture, NoiseScheduleVP

SAMPLERS_NPZ = "samplers_reference.npz"


def load_sampler_fixture() -> dict:
    """All arrays of the fixture; raises when the file is absent."""
    return load_npz(SAMPLERS_NPZ)


def fixture_cases() -> list[dict]:
    """The case descriptions (for parametrisation); raises when the fixture is absent."""
    with np.load(fixture_path(SAMPLERS_NPZ), allow_pickle=False) as data:
        cases = json.loads(str(data["cases_json"]))
    if not cases:
        raise ValueError(f"{SAMPLERS_NPZ} lists no cases")
    return cases


def case_ids(case: dict) -> str:
    return case["name"]


def schedule_from_spec(spec: dict) -> NoiseScheduleVP:
    kind = spec["kind"]
    if kind == "discrete":
        betas = np.linspace(spec["beta_start"], spec["beta_end"], spec["num_train_steps"], dtype=np.float64)
        return NoiseScheduleVP.discrete(betas=betas)
    if kind == "linear":
        return NoiseScheduleVP.linear(spec["beta_0"], spec["beta_1"])
    if kind == "cosine":
        return NoiseScheduleVP.cosine()
    raise ValueError(f"unknown schedule kind {kind!r}")


def gmm_from_fixture(data: dict) -> GaussianMixture:
    return GaussianMixture(data["gmm_means"], data["gmm_stds"], data["gmm_weights"])


# The fixtures name what the network predicts as the reference code does (``model_type``); the library's names:
PREDICTION_OF_MODEL_TYPE = {"noise": "eps", "x_start": "x0", "v": "v", "score": "score"}


def prediction_of(case: dict) -> str:
    """The library's ``prediction`` for a fixture case's ``model_type``."""
    return PREDICTION_OF_MODEL_TYPE[case["model_type"]]


def numpy_eps_model(gmm: GaussianMixture, ns: NoiseScheduleVP, model_type: str, guidance: dict | None,
                    cond: np.ndarray):
    """The fixture's analytic network as a float64 NumPy noise predictor ``eps(x, t_vec)`` (for the loop twin)."""
    net = gmm.model(ns, PREDICTION_OF_MODEL_TYPE[model_type])

    def raw_eps(x: np.ndarray, t_vec: np.ndarray, labels: np.ndarray | None) -> np.ndarray:
        with jax.enable_x64(True):
            t_input = jnp.asarray(ns.model_time(t_vec), jnp.float64)
            lab = None if labels is None else jnp.asarray(labels)
            out = np.asarray(net(jnp.asarray(x, jnp.float64), t_input, lab), dtype=np.float64)
        shape = (-1,) + (1,) * (x.ndim - 1)
        alpha_t = np.reshape(ns.marginal_alpha(t_vec), shape)
        sigma_t = np.reshape(ns.marginal_std(t_vec), shape)
        if model_type == "noise":
            return out
        if model_type == "x_start":
            return (x - alpha_t * out) / sigma_t
        if model_type == "v":
            return alpha_t * out + sigma_t * x
        raise ValueError(f"unknown model_type {model_type!r}")

    if guidance is None:
        return lambda x, t_vec: raw_eps(x, t_vec, None)

    scale = float(guidance["scale"])
    uncond = np.full(cond.shape, gmm.num_components, dtype=np.int64)

    def cfg_eps(x: np.ndarray, t_vec: np.ndarray) -> np.ndarray:
        eps_u = raw_eps(x, t_vec, uncond)
        eps_c = raw_eps(x, t_vec, cond)
        return eps_u + scale * (eps_c - eps_u)

    return cfg_eps
