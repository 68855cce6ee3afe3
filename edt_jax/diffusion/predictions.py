"""What a network predicts: one name (``prediction``) and one set of values for the whole library.

    "eps"    the noise eps of x_t = alpha_t x0 + sigma_t eps (DDPM, ADM, DiT, EDT)
    "x0"     the clean data x0
    "v"      v = alpha_t eps - sigma_t x0 (progressive distillation, Stable Diffusion 2)
    "score"  grad log p_t(x_t) = -eps / sigma_t (score models; samplers read it, the trainer does not train it)

The loss config, the sampler wrappers, the sampler entry point, runs, DP-IR and DisDiff all take
``prediction=`` with these values. The names of the reference sampler code (``model_type`` "noise" |
"x_start" | "v" | "score") still work, with a deprecation warning.
"""

from __future__ import annotations

from edt_jax.checks import check_choice
from edt_jax.deprecation import warn_deprecated

PREDICTIONS = ("eps", "x0", "v")  # what the trainer's loss can target
SAMPLER_PREDICTIONS = (*PREDICTIONS, "score")  # what the samplers can read
LEGACY_MODEL_TYPES = {"noise": "eps", "x_start": "x0"}  # the reference code's names; "v" and "score" are unchanged


def check_prediction(value: str, accepted: tuple[str, ...] = SAMPLER_PREDICTIONS, *, name: str = "prediction") -> str:
    """``value`` in the library's vocabulary (a legacy ``model_type`` name is mapped, with a warning once);
    a one-line ``ValueError`` naming the accepted values otherwise."""
    if value in LEGACY_MODEL_TYPES:
        new = LEGACY_MODEL_TYPES[value]
        warn_deprecated(f"{name}={value!r}", f"prediction={new!r}")
        value = new
    check_choice(name, value, accepted)
    return value


def resolve_prediction(prediction: str | None, model_type: str | None, *, default: str = "eps",
                       accepted: tuple[str, ...] = SAMPLER_PREDICTIONS) -> str:
    """The prediction of a call that may still use the deprecated ``model_type=`` keyword."""
    if model_type is not None:
        if prediction is not None:
            raise ValueError(f"give prediction= or the deprecated model_type=, not both (got {prediction!r} and "
                             f"{model_type!r})")
        warn_deprecated("model_type=", "prediction=")
        prediction = LEGACY_MODEL_TYPES.get(model_type, model_type)  # its values too: one warning, not two
    return check_prediction(default if prediction is None else prediction, accepted)


def target_of(prediction: str, x0, eps, alpha, sigma):
    """What a network of ``prediction`` ("eps" | "x0" | "v") is trained to output at x = alpha x0 + sigma eps."""
    if prediction == "eps":
        return eps
    if prediction == "x0":
        return x0
    if prediction == "v":
        return alpha * eps - sigma * x0
    raise ValueError(f"prediction {prediction!r} has no training target; accepted: {', '.join(PREDICTIONS)}")


def to_x0(output, x, alpha, sigma, prediction: str):
    """The clean data implied by a network ``output`` of ``prediction`` at x = alpha x0 + sigma eps.

    jax or numpy arrays alike; alpha, sigma broadcast over x (alpha^2 + sigma^2 = 1 for "v").
    """
    if prediction == "x0":
        return output
    if prediction == "v":
        return alpha * x - sigma * output  # v = alpha eps - sigma x0  =>  x0 = alpha x - sigma v
    return (x - sigma * to_eps(output, x, alpha, sigma, prediction)) / alpha


def to_eps(output, x, alpha, sigma, prediction: str):
    """The noise prediction implied by a network ``output`` of ``prediction`` at x; alpha, sigma broadcast over x."""
    if prediction == "eps":
        return output
    if prediction == "x0":
        return (x - alpha * output) / sigma
    if prediction == "v":
        return alpha * output + sigma * x
    return -sigma * output  # score = -eps / sigma
