"""diffusers' scheduler configs read on the host: defaults, checks, noise tables and timestep grids.

A ``scheduler_config.json`` of diffusers names its scheduler in ``_class_name`` and lists constructor arguments;
the ones it leaves out take the constructor's defaults. ``resolve_config`` fills those in (diffusers 0.42.1's
defaults), maps the values diffusers itself silently rewrites (``algorithm_type="deis"`` runs DPM-Solver++,
foreign ``solver_type`` names fall back to the class's default) and rejects what the samplers here do not
reproduce with a one-line ``ValueError``: a key naming an unsupported feature is rejected only when it is not at
its diffusers default, so the configs diffusers writes (which list every key) load as they are.

The tables follow diffusers' float32 arithmetic: betas and alphas_cumprod are float32 (torch's CPU cumprod
accumulates in float64 and rounds each entry), the per-step sigmas are rounded to float32, and everything the
solvers derive from them is float64 on the host.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from typing import Any

import numpy as np

from edt_jax.diffusion.ddpm import cosine_betas

UNIPC, DPM, DDIM = "UniPCMultistepScheduler", "DPMSolverMultistepScheduler", "DDIMScheduler"
SCHEDULER_CLASSES = (UNIPC, DPM, DDIM)

_COMMON = {"num_train_timesteps": 1000, "beta_start": 0.0001, "beta_end": 0.02, "beta_schedule": "linear",
           "trained_betas": None, "prediction_type": "epsilon", "thresholding": False,
           "dynamic_thresholding_ratio": 0.995, "sample_max_value": 1.0, "timestep_spacing": "linspace",
           "steps_offset": 0, "rescale_betas_zero_snr": False}
_MULTISTEP = {"solver_order": 2, "lower_order_final": True, "use_karras_sigmas": False,
              "use_exponential_sigmas": False, "use_beta_sigmas": False, "use_flow_sigmas": False, "flow_shift": 1.0,
              "final_sigmas_type": "zero", "use_dynamic_shifting": False, "time_shift_type": "exponential"}
# Every constructor argument of the three classes in diffusers 0.42.1, with its default.
DEFAULTS: dict[str, dict[str, Any]] = {
    UNIPC: {**_COMMON, **_MULTISTEP, "predict_x0": True, "solver_type": "bh2", "disable_corrector": (),
            "solver_p": None, "sigma_min": None, "sigma_max": None, "shift_terminal": None},
    DPM: {**_COMMON, **_MULTISTEP, "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "euler_at_final": False,
          "use_lu_lambdas": False, "lambda_min_clipped": -math.inf, "variance_type": None},
    DDIM: {**_COMMON, "clip_sample": True, "set_alpha_to_one": True, "clip_sample_range": 1.0,
           "timestep_spacing": "leading"},
}
# Features not reproduced here: accepted only at their default.
UNSUPPORTED = ("thresholding", "rescale_betas_zero_snr", "use_exponential_sigmas", "use_beta_sigmas", "use_flow_sigmas",
               "use_dynamic_shifting", "shift_terminal", "solver_p", "use_lu_lambdas", "variance_type")
# Read by diffusers only together with an unsupported feature above, so any value is harmless here.
INERT = ("dynamic_thresholding_ratio", "sample_max_value", "flow_shift", "time_shift_type")

BETA_SCHEDULES = ("linear", "scaled_linear", "squaredcos_cap_v2")
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
TIMESTEP_SPACINGS = ("linspace", "leading", "trailing")
FINAL_SIGMAS_TYPES = ("zero", "sigma_min")
MAX_SOLVER_ORDER = 3
# Values diffusers rewrites in its constructors (register_to_config) instead of rejecting them.
SOLVER_TYPES = {UNIPC: ("bh1", "bh2"), DPM: ("midpoint", "heun")}
SOLVER_TYPE_FALLBACK = {UNIPC: {"midpoint": "bh2", "heun": "bh2", "logrho": "bh2"},
                        DPM: {"logrho": "midpoint", "bh1": "midpoint", "bh2": "midpoint"}}
ALGORITHM_TYPES = ("dpmsolver++", "dpmsolver")
ALGORITHM_FALLBACK = {"deis": "dpmsolver++"}


def _fail(cls: str, key: str, value, accepted: str) -> ValueError:
    return ValueError(f"{cls} config: {key}={value!r} is not supported; {accepted}")


def _choice(cls: str, key: str, value, accepted, aliases: Mapping[str, str] | None = None) -> str:
    """``value`` if accepted, its diffusers replacement if it is one of ``aliases`` (old -> new), else an error."""
    aliases = aliases or {}
    if value in aliases:
        return aliases[value]
    if value not in accepted:
        also = "".join(f" ({', '.join(repr(a) for a in aliases if aliases[a] == new)} run as {new!r})"
                       for new in dict.fromkeys(aliases.values()))
        raise _fail(cls, key, value, f"accepted: {', '.join(repr(a) for a in accepted)}{also}")
    return value


def _flag(cls: str, key: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise _fail(cls, key, value, "accepted: true or false")
    return bool(value)


def _number(cls: str, key: str, value, *, positive: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) or math.isnan(value) \
            or (positive and not value > 0):
        raise _fail(cls, key, value, f"accepted: a {'positive ' if positive else ''}number")
    return float(value)


def _integer(cls: str, key: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low \
            or (high is not None and value > high):
        bound = f"an integer in [{low}, {high}]" if high is not None else f"an integer >= {low}"
        raise _fail(cls, key, value, f"accepted: {bound}")
    return int(value)


def resolve_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """The full, checked option dict of a diffusers scheduler config (``_class_name`` plus every option).

    Keys starting with ``_`` are metadata and ignored; keys the class does not take are ignored with a warning, as
    diffusers' ``from_config`` does (a Stable Diffusion ``PNDMScheduler`` config relabelled for UniPC keeps its
    ``skip_prk_steps``).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"config must be the dict of a diffusers scheduler_config.json, got {type(config).__name__}")
    cls = config.get("_class_name")
    if cls not in SCHEDULER_CLASSES:
        raise ValueError(f"unsupported diffusers scheduler _class_name {cls!r}; accepted: "
                         f"{', '.join(repr(c) for c in SCHEDULER_CLASSES)}")
    defaults = DEFAULTS[cls]
    given = {k: v for k, v in config.items() if not k.startswith("_")}
    ignored = sorted(set(given) - set(defaults))
    if ignored:
        warnings.warn(f"{cls} takes no option {', '.join(ignored)}; ignored, as diffusers ignores them", stacklevel=4)
    cfg = {**defaults, **{k: v for k, v in given.items() if k in defaults}, "_class_name": cls}
    for key in UNSUPPORTED:
        if key in cfg and cfg[key] != defaults[key]:
            raise _fail(cls, key, cfg[key], f"only its diffusers default {defaults[key]!r} is")
    return _check_values(cls, cfg)


def _check_values(cls: str, cfg: dict[str, Any]) -> dict[str, Any]:
    cfg["num_train_timesteps"] = _integer(cls, "num_train_timesteps", cfg["num_train_timesteps"], 2)
    cfg["beta_schedule"] = _choice(cls, "beta_schedule", cfg["beta_schedule"], BETA_SCHEDULES)
    for key in ("beta_start", "beta_end"):
        cfg[key] = _number(cls, key, cfg[key], positive=True)
    cfg["prediction_type"] = _choice(cls, "prediction_type", cfg["prediction_type"], PREDICTION_TYPES)
    cfg["timestep_spacing"] = _choice(cls, "timestep_spacing", cfg["timestep_spacing"], TIMESTEP_SPACINGS)
    cfg["steps_offset"] = _integer(cls, "steps_offset", cfg["steps_offset"], 0)
    if cfg["trained_betas"] is not None:
        betas = np.asarray(cfg["trained_betas"], np.float64)
        if betas.shape != (cfg["num_train_timesteps"],) or not np.all((betas > 0) & (betas < 1)):
            raise _fail(cls, "trained_betas", f"<{betas.shape} array>",
                        f"accepted: num_train_timesteps={cfg['num_train_timesteps']} values in (0, 1)")
        cfg["trained_betas"] = tuple(betas.tolist())
    if cls == DDIM:
        for key in ("clip_sample", "set_alpha_to_one"):
            cfg[key] = _flag(cls, key, cfg[key])
        cfg["clip_sample_range"] = _number(cls, "clip_sample_range", cfg["clip_sample_range"], positive=True)
        return cfg
    cfg["solver_order"] = _integer(cls, "solver_order", cfg["solver_order"], 1, MAX_SOLVER_ORDER)
    cfg["solver_type"] = _choice(cls, "solver_type", cfg["solver_type"], SOLVER_TYPES[cls], SOLVER_TYPE_FALLBACK[cls])
    cfg["final_sigmas_type"] = _choice(cls, "final_sigmas_type", cfg["final_sigmas_type"], FINAL_SIGMAS_TYPES)
    for key in ("lower_order_final", "use_karras_sigmas", "predict_x0", "euler_at_final"):
        if key in cfg:
            cfg[key] = _flag(cls, key, cfg[key])
    if cls == DPM:
        if str(cfg["algorithm_type"]).startswith("sde-"):
            raise _fail(cls, "algorithm_type", cfg["algorithm_type"], "accepted: the deterministic 'dpmsolver++', "
                        "'dpmsolver' (the sde- variants draw noise at every step)")
        cfg["algorithm_type"] = _choice(cls, "algorithm_type", cfg["algorithm_type"], ALGORITHM_TYPES,
                                        ALGORITHM_FALLBACK)
        cfg["lambda_min_clipped"] = _number(cls, "lambda_min_clipped", cfg["lambda_min_clipped"])
        if cfg["algorithm_type"] == "dpmsolver" and cfg["final_sigmas_type"] == "zero":  # diffusers rejects it too
            raise _fail(cls, "final_sigmas_type", "zero", "algorithm_type='dpmsolver' needs 'sigma_min'")
        return cfg
    for key in ("sigma_min", "sigma_max"):
        if cfg[key] is not None:
            cfg[key] = _number(cls, key, cfg[key], positive=True)
    corrector = cfg["disable_corrector"]
    if not isinstance(corrector, (list, tuple)) or not all(
            isinstance(i, (int, np.integer)) and not isinstance(i, bool) for i in corrector):
        raise _fail(cls, "disable_corrector", corrector, "accepted: a list of step indices")
    cfg["disable_corrector"] = tuple(int(i) for i in corrector)
    if cfg["final_sigmas_type"] == "zero":
        # diffusers' UniPC step into sigma = 0 is finite only at order 1 in the data space (lambda = +inf there).
        if not cfg["predict_x0"]:
            raise _fail(cls, "final_sigmas_type", "zero", "predict_x0=false needs 'sigma_min' (diffusers returns NaN)")
        if cfg["solver_type"] == "bh1":  # its B(h) = h is -inf there, times a zero residual
            raise _fail(cls, "final_sigmas_type", "zero", "solver_type='bh1' needs 'sigma_min' (diffusers returns NaN)")
        if not cfg["lower_order_final"] and cfg["solver_order"] > 1:
            raise _fail(cls, "final_sigmas_type", "zero",
                        "lower_order_final=false with solver_order > 1 needs 'sigma_min' (diffusers returns inf)")
    return cfg


def alphas_cumprod(cfg: Mapping[str, Any]) -> np.ndarray:
    """(N,) float32 alpha-bar table of the config, as diffusers builds it in torch float32."""
    n = cfg["num_train_timesteps"]
    if cfg["trained_betas"] is not None:
        betas = np.asarray(cfg["trained_betas"], np.float32)
    elif cfg["beta_schedule"] == "linear":
        betas = np.linspace(cfg["beta_start"], cfg["beta_end"], n).astype(np.float32)
    elif cfg["beta_schedule"] == "scaled_linear":
        betas = np.linspace(cfg["beta_start"] ** 0.5, cfg["beta_end"] ** 0.5, n).astype(np.float32) ** 2
    else:  # squaredcos_cap_v2: computed in float64, as diffusers does, then float32
        betas = cosine_betas(n).astype(np.float32)
    alphas = (np.float32(1.0) - betas).astype(np.float64)
    return np.cumprod(alphas).astype(np.float32)


def _check_timesteps(cfg: Mapping[str, Any], timesteps: np.ndarray) -> np.ndarray:
    """The grid itself, or an error where diffusers' formula leaves [0, N) (a large ``steps_offset``; "trailing"
    where float rounding of arange adds a timestep -1, e.g. 61 steps of 1000)."""
    n = cfg["num_train_timesteps"]
    outside = timesteps[(timesteps < 0) | (timesteps >= n)]
    if outside.size:
        raise ValueError(f"{cfg['_class_name']}: timestep_spacing={cfg['timestep_spacing']!r} with "
                         f"steps_offset={cfg['steps_offset']} gives timesteps {outside[:3].tolist()} outside "
                         f"[0, {n - 1}]; choose another num_inference_steps or spacing")
    return timesteps


def ddim_timesteps(cfg: Mapping[str, Any], steps: int) -> np.ndarray:
    """(S,) int64 timesteps of ``DDIMScheduler.set_timesteps`` (DDIM spaces ``steps`` points, not ``steps + 1``)."""
    n, spacing = cfg["num_train_timesteps"], cfg["timestep_spacing"]
    if spacing == "linspace":
        t = np.linspace(0, n - 1, steps).round()[::-1].astype(np.int64)
    elif spacing == "leading":
        t = (np.arange(0, steps) * (n // steps)).round()[::-1].astype(np.int64) + cfg["steps_offset"]
    else:
        t = np.round(np.arange(n, 0, -n / steps)).astype(np.int64) - 1
    return _check_timesteps(cfg, t)


def _multistep_timesteps(cfg: Mapping[str, Any], steps: int, last: int) -> np.ndarray:
    """The spacing part of UniPC's / DPM-Solver's ``set_timesteps``; ``last`` is N, or fewer with
    ``lambda_min_clipped``."""
    n, spacing = cfg["num_train_timesteps"], cfg["timestep_spacing"]
    if spacing == "linspace":
        return np.linspace(0, last - 1, steps + 1).round()[::-1][:-1].astype(np.int64)
    if spacing == "leading":
        ratio = last // (steps + 1)
        return (np.arange(0, steps + 1) * ratio).round()[::-1][:-1].astype(np.int64) + cfg["steps_offset"]
    return np.arange(last, 0, -n / steps).round().astype(np.int64) - 1


def _sigma_to_t(sigmas: np.ndarray, log_sigmas: np.ndarray) -> np.ndarray:
    """diffusers' ``_sigma_to_t``: the fractional training timestep of each sigma, by interpolating log sigma."""
    log_sigma = np.log(np.maximum(sigmas, 1e-10))
    dists = log_sigma[None, :] - log_sigmas[:, None]
    low = np.cumsum(dists >= 0, axis=0).argmax(axis=0).clip(max=log_sigmas.shape[0] - 2)
    w = np.clip((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[low + 1]), 0, 1)
    return (1 - w) * low + w * (low + 1)


def multistep_schedule(cfg: Mapping[str, Any], steps: int) -> tuple[np.ndarray, np.ndarray]:
    """UniPC's / DPM-Solver's ``set_timesteps``: (S,) int64 timesteps and (S + 1,) float32 sigmas = sqrt((1 - a)/a),
    the last one the end point (0 for ``final_sigmas_type="zero"``)."""
    ac = alphas_cumprod(cfg)
    n = cfg["num_train_timesteps"]
    table = ((np.float32(1.0) - ac) / ac) ** np.float32(0.5)
    last = n
    if cfg.get("lambda_min_clipped", -math.inf) > -math.inf:
        lam = np.log(np.sqrt(ac)) - np.log(np.sqrt(np.float32(1.0) - ac))
        last = n - int(np.searchsorted(lam[::-1], np.float32(cfg["lambda_min_clipped"])))
    timesteps = _multistep_timesteps(cfg, steps, last)
    if cfg["use_karras_sigmas"]:
        # Karras et al.'s rho = 7 ramp between the table's ends (UniPC: or the config's sigma_min / sigma_max);
        # the model sees the timesteps whose table sigma is nearest in log space.
        lo = cfg.get("sigma_min") or float(table[0])
        hi = cfg.get("sigma_max") or float(table[-1])
        ramp = np.linspace(0, 1, steps)
        sigmas = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
        t = _sigma_to_t(sigmas, np.log(table))
        # DPM-Solver keeps fractional timesteps for the cosine schedule; the int64 cast then truncates them.
        keep = cfg["_class_name"] == DPM and cfg["beta_schedule"] == "squaredcos_cap_v2"
        timesteps = (np.trunc(t) if keep else t.round()).astype(np.int64)
        karras_end = cfg["_class_name"] == UNIPC  # UniPC ends on its last Karras sigma, DPM on the table's
        end = sigmas[-1] if karras_end else table[0]
    else:
        timesteps = _check_timesteps(cfg, timesteps)
        sigmas = np.interp(timesteps, np.arange(n), table)
        end = table[0]
    end = 0.0 if cfg["final_sigmas_type"] == "zero" else end
    return timesteps, np.concatenate([sigmas, [end]]).astype(np.float32)
