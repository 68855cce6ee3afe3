"""Sampler benchmarks: error vs NFE on the analytic Gaussian mixture, and per-step cost on a small MLP.

Run from the repository root:

    python -m benchmarks.samplers            # full run (about a minute on a 2-core CPU)
    python -m benchmarks.samplers --quick    # smoke test

Prints markdown tables and writes them to ``benchmarks/results/samplers_<backend>.md`` (and ``.json``).
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from benchmarks.bench_utils import command_line, machine_info, md_table, time_call, write_results
from edt_jax import samplers
from edt_jax.diffusion.analytic import GaussianMixture
from edt_jax.diffusion.schedules import NoiseScheduleVP

NFES = (5, 6, 8, 10, 15, 20, 50)
ERROR_SAMPLERS: dict[str, Callable] = {
    "DDIM": lambda f, x, ns, n, sk: samplers.ddim(f, x, ns, steps=n, skip_type=sk),
    "DPM-Solver++ 2M": lambda f, x, ns, n, sk: samplers.dpm_solver(f, x, ns, n, 2, "dpmsolver++", sk),
    "DPM-Solver++ 3M": lambda f, x, ns, n, sk: samplers.dpm_solver(f, x, ns, n, 3, "dpmsolver++", sk),
    "UniPC-2 bh1": lambda f, x, ns, n, sk: samplers.unipc(f, x, ns, n, 2, "bh1", skip_type=sk),
    "UniPC-2 bh2": lambda f, x, ns, n, sk: samplers.unipc(f, x, ns, n, 2, "bh2", skip_type=sk),
    "UniPC-3 bh1": lambda f, x, ns, n, sk: samplers.unipc(f, x, ns, n, 3, "bh1", skip_type=sk),
    "UniPC-3 bh2": lambda f, x, ns, n, sk: samplers.unipc(f, x, ns, n, 3, "bh2", skip_type=sk),
}
TIMING_SAMPLERS: dict[str, Callable] = {
    "UniPC-2 bh1": lambda f, x, ns, n: samplers.unipc(f, x, ns, n, order=2),
    "DDIM": lambda f, x, ns, n: samplers.ddim(f, x, ns, n),
    "DPM-Solver++ 2M": lambda f, x, ns, n: samplers.dpm_solver(f, x, ns, n, order=2),
}


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--fixture", default="tests/fixtures/samplers_reference.npz",
                   help="npz with gmm_means/gmm_stds/gmm_weights (relative to the repo root)")
    p.add_argument("--skip_types", default="time_uniform,logSNR",
                   help="comma-separated time grids for the error tables (time_uniform, logSNR, time_quadratic)")
    p.add_argument("--batch", type=int, default=512, help="samples in the error benchmark")
    p.add_argument("--ref_steps", type=int, default=1000, help="UniPC-3 steps of the converged reference")
    p.add_argument("--timing_batch", type=int, default=64)
    p.add_argument("--timing_width", type=int, default=256, help="hidden width of the MLP noise model")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out_dir", default="benchmarks/results")
    p.add_argument("--quick", action="store_true", help="small batches and few repeats, for smoke tests")
    args = p.parse_args()
    if args.quick:
        args.batch, args.ref_steps, args.timing_batch, args.repeats = 64, 200, 8, 3
    return args


# ----------------------------------------------------------------------------- (a) error vs NFE
def load_mixture(path: str, seed: int) -> tuple[GaussianMixture, str]:
    """The fixture's mixture if ``path`` exists, else a seeded random 3-component mixture in D = 16."""
    if Path(path).exists():
        d = np.load(path, allow_pickle=False)
        return GaussianMixture(d["gmm_means"], d["gmm_stds"], d["gmm_weights"]), f"fixture mixture `{path}`"
    rng = np.random.default_rng(seed)
    gmm = GaussianMixture(rng.normal(0.0, 2.0, (3, 16)), rng.uniform(0.2, 0.5, 3), rng.dirichlet(np.ones(3)))
    return gmm, f"seeded random mixture (seed {seed}; `{path}` not found)"


def frechet_distance(a: np.ndarray, b: np.ndarray) -> float:
    """Frechet distance between Gaussian fits N(mean, cov) of the rows of a and b (N, D)."""
    mu_a, mu_b = a.mean(0), b.mean(0)
    cov_a, cov_b = np.cov(a, rowvar=False), np.cov(b, rowvar=False)
    w, v = np.linalg.eigh(cov_a)
    sqrt_a = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
    cross = np.sqrt(np.clip(np.linalg.eigvalsh(sqrt_a @ cov_b @ sqrt_a), 0, None)).sum()
    return float(np.sum((mu_a - mu_b) ** 2) + np.trace(cov_a) + np.trace(cov_b) - 2.0 * cross)


def rms_error(x: np.ndarray, ref: np.ndarray) -> float:
    """Mean over samples of the per-sample RMS error."""
    return float(np.mean(np.sqrt(np.mean((x - ref) ** 2, axis=1))))


def error_benchmark(args: argparse.Namespace, skip_type: str) -> tuple[str, dict]:
    gmm, source = load_mixture(args.fixture, args.seed)
    dim = gmm.means.shape[1]
    with jax.enable_x64(True):
        ns = NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000))
        model_fn = samplers.model_wrapper(gmm.model(ns), ns)
        x_T = jnp.asarray(np.random.default_rng(args.seed).standard_normal((args.batch, dim)))

        def run(fn: Callable, steps: int, skip: str) -> np.ndarray:
            return np.asarray(jax.jit(lambda x: fn(model_fn, x, ns, steps, skip))(x_T))

        # The reference uses logSNR: a time_uniform grid's last step spans about a third of the log-SNR
        # range and is taken at order 1 (lower_order_final), so it converges slowly.
        ref = run(ERROR_SAMPLERS["UniPC-3 bh1"], args.ref_steps, "logSNR")
        ref_half = run(ERROR_SAMPLERS["UniPC-3 bh1"], args.ref_steps // 2, "logSNR")
        outs = {k: [run(fn, n, skip_type) for n in NFES] for k, fn in ERROR_SAMPLERS.items()}
    rms = {k: [rms_error(o, ref) for o in v] for k, v in outs.items()}
    fd = {k: [frechet_distance(o, ref) for o in v] for k, v in outs.items()}
    mean = gmm.weights @ gmm.means
    cov = sum(w * (s**2 * np.eye(dim) + np.outer(m, m)) for w, s, m in zip(gmm.weights, gmm.stds, gmm.means,
                                                                           strict=True)) - np.outer(mean, mean)
    exact = np.random.default_rng(args.seed + 1).multivariate_normal(mean, cov, size=200_000)
    floor = frechet_distance(ref, exact)
    header = ["sampler"] + [f"NFE {n}" for n in NFES]
    fmt = "{:.2e}".format
    text = (f"## (a) Error vs NFE on the analytic Gaussian mixture, `{skip_type}` grid\n\n"
            f"Model: exact noise prediction of the {source} (K = {gmm.num_components}, D = {dim}); schedule: "
            f"discrete linear betas 1e-4..0.02, N = 1000; skip_type `{skip_type}`; x_T: {args.batch} seeded "
            f"standard-normal samples (seed {args.seed}); precision: float64 (`jax.enable_x64`).\n"
            f"Reference: UniPC-3 bh1, {args.ref_steps} steps, logSNR grid; its distance to the "
            f"{args.ref_steps // 2}-step run: RMS {fmt(rms_error(ref_half, ref))}.\n\n"
            f"### RMS error per sample vs the reference (mean over samples of sqrt(mean_d (x - x_ref)^2))\n\n"
            + md_table(header, [[k] + [fmt(e) for e in v] for k, v in rms.items()])
            + "\n\n### Frechet distance between Gaussian fits of the samples and of the reference samples\n\n"
            f"Same x_T for both, so this measures solver error in distribution, not sampling noise; for scale, "
            f"FD(reference samples, exact mixture mean/cov) = {fmt(floor)} at this batch size.\n\n"
            + md_table(header, [[k] + [fmt(e) for e in v] for k, v in fd.items()]))
    return text, {"source": source, "nfe": list(NFES), "rms": rms, "frechet": fd, "fd_floor": floor}


# ----------------------------------------------------------------------------- (b) per-step overhead
class MLPNoise(nn.Module):
    """A 3-layer MLP noise predictor with a sinusoidal time embedding, on flattened images."""

    width: int = 256

    @nn.compact
    def __call__(self, x: jax.Array, t: jax.Array) -> jax.Array:
        half = self.width // 2
        freqs = jnp.exp(-jnp.log(10000.0) * jnp.arange(half) / half)
        emb = jnp.concatenate([jnp.sin(t[:, None] * freqs), jnp.cos(t[:, None] * freqs)], axis=-1)
        h = nn.Dense(self.width)(x.reshape(x.shape[0], -1)) + nn.Dense(self.width)(emb)
        h = nn.Dense(self.width)(nn.silu(h))
        return nn.Dense(int(np.prod(x.shape[1:])))(nn.silu(h)).reshape(x.shape)


def timing_benchmark(args: argparse.Namespace) -> tuple[str, dict]:
    ns = NoiseScheduleVP.discrete(betas=np.linspace(1e-4, 0.02, 1000))
    x = jax.random.normal(jax.random.PRNGKey(args.seed), (args.timing_batch, 32, 32, 3), jnp.float32)
    net = MLPNoise(width=args.timing_width)
    t = jnp.full((args.timing_batch,), 500.0, jnp.float32)
    params = net.init(jax.random.PRNGKey(args.seed + 1), x, t)
    models = {"MLP": lambda p, xx, tt: net.apply(p, xx, tt), "null (x * 0.1)": lambda p, xx, tt: xx * 0.1}
    rows, results = [], {}
    for mname, apply in models.items():
        _, call_runs = time_call(apply, (params, x, t), args.repeats * 5)
        call_ms, call_min = 1e3 * statistics.median(call_runs), 1e3 * min(call_runs)
        rows.append([mname, "model call", "1", "-", f"{call_ms:.3f}", f"{call_min:.3f}", "-", "-"])
        results[mname] = {"call_ms": call_ms, "call_min_ms": call_min}
        for sname, sampler in TIMING_SAMPLERS.items():
            for steps in (10, 50):
                def sample(p, xx, sampler=sampler, steps=steps, apply=apply):
                    return sampler(samplers.model_wrapper(lambda a, b: apply(p, a, b), ns), xx, ns, steps)

                comp, runs = time_call(sample, (params, x), args.repeats)
                med, best = 1e3 * statistics.median(runs) / steps, 1e3 * min(runs) / steps
                rows.append([mname, sname, str(steps), f"{comp:.2f}", f"{med:.3f}", f"{best:.3f}",
                             f"{med - call_ms:+.3f}", f"{best - call_min:+.3f}"])
                results[mname][f"{sname}/{steps}"] = {"compile_s": comp, "median_ms_per_step": med,
                                                      "min_ms_per_step": best}
    header = ["model", "sampler", "steps", "compile (s)", "median ms/step", "min ms/step",
              "overhead (median - call median)", "overhead (min - call min)"]
    text = (f"## (b) Per-step cost, float32\n\n"
            f"Model: {net.__class__.__name__} (3 Dense layers of width {args.timing_width} + time embedding, "
            f"random init) on "
            f"x of shape {tuple(x.shape)} (D = 3072), batch {args.timing_batch}; parameters are jit arguments. "
            f"Sampler rows time the whole jitted trajectory (compile excluded, reported separately) divided by "
            f"steps; {args.repeats} timed repeats after one warm-up (model call: {args.repeats * 5}). "
            f"Overhead = sampler time per step - isolated model-call time, in ms (the isolated call also pays one "
            f"dispatch, so this can be negative; on a shared CPU the min-based column is the steadier one).\n\n"
            + md_table(header, rows))
    return text, results


def main() -> None:
    args = parse_args()
    start = time.perf_counter()
    backend = jax.default_backend()
    errors = {skip: error_benchmark(args, skip) for skip in args.skip_types.split(",")}
    timing_text, timing_json = timing_benchmark(args)
    elapsed = time.perf_counter() - start
    header = (f"# Sampler benchmarks ({backend})\n\n"
              f"- date: {datetime.datetime.now().isoformat(timespec='seconds')}\n- machine: {machine_info()}\n"
              f"- command: `{command_line()}`{' (quick mode)' if args.quick else ''}\n"
              f"- precision: float64 for (a), float32 for (b)\n- total runtime: {elapsed:.0f} s\n")
    report = "\n\n".join([header] + [text for text, _ in errors.values()] + [timing_text]) + "\n"
    print(report)
    suffix = "_quick" if args.quick else ""
    summary = {"errors": {k: v for k, (_, v) in errors.items()}, "timing": timing_json, "runtime_s": elapsed}
    print(f"wrote {write_results(args.out_dir, f'samplers_{backend}{suffix}', report, summary)}")


if __name__ == "__main__":
    main()
