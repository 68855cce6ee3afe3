"""At which noise level a trained model loses each factor of the data: noise real images, sample back, classify.

    python -m benchmarks.recovery --workdir /tmp/shapes_edt --snr 10,3,1,0.3,0.1 --num_images 256

For every signal-to-noise ratio SNR = alpha_bar / (1 - alpha_bar) in ``--snr`` the script noises the same
held-out dataset images to the training timestep t nearest that SNR, runs the sampler from t down (with
``--steps`` scaled by t / T, as a full run would spend on that stretch) and the images' own labels, and reports:

- ``x0 MSE``: the network's one-step estimate of the clean images at t (AMM as sampled);
- ``MSE``: the regenerated images against the originals;
- per head of the shipped classifier (shapes: shape, object hue, background hue, scale, x, y, orientation;
  mnist5k: digit), the fraction of regenerated images in which it finds the original's factor.

A last row samples from pure noise with the same labels: only its class head means something there (it is
``launch.evaluate``'s class accuracy), and a first row scores the original images (the classifier's ceiling).
A factor that survives down to a low SNR is one the model can render once the noise has fixed it; the SNR at which
a factor's accuracy collapses is where the model would have to create it. Writes
``benchmarks/results/recovery_<dataset>_<backend>[_<tag>].md/.json``.
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import edt_jax
from benchmarks.bench_utils import command_line, machine_info, md_table, write_results
from edt_jax import samplers
from edt_jax.data.pixels import to_uint8
from edt_jax.diffusion.ddpm import predict_x0_from_eps, q_sample
from edt_jax.metrics import extractors


def nearest_timestep(alphas_cumprod: np.ndarray, snr: float) -> int:
    """The discrete timestep whose SNR alpha_bar / (1 - alpha_bar) is nearest ``snr`` in log space."""
    log_snr = np.log(alphas_cumprod) - np.log1p(-alphas_cumprod)
    return int(np.argmin(np.abs(log_snr - math.log(snr))))


def make_recover(run, *, sampler: str, steps: int, order: int, amm: bool):
    """``recover(x0 (N, H, W, C), labels (N,), t, key) -> (x0 estimate at t, regenerated images)`` of a loaded
    ``edt_jax.Run``.

    Noises ``x0`` to the discrete timestep ``t`` (None: pure noise at T), takes the network's one-step estimate
    there, and runs ``sampler`` (``samplers.sample``) from t with ``steps * t / T`` steps (at least ``order``).
    """
    model, params, ns = run.model, run.params, run.schedule
    diffusion = ns.tables
    num_timesteps = ns.total_N
    compiled = {}

    def build(t: int | None):
        t_start = ns.T if t is None else (t + 1) / num_timesteps  # the continuous time the network reads as t
        n_steps = max(order, round(steps * t_start / ns.T))

        @jax.jit
        def regenerate(x0, labels, key):
            def net(x, t_input):
                return model.apply({"params": params}, x, t_input, labels, train=False, amm=amm)

            noise = jax.random.normal(key, x0.shape)
            if t is None:
                x_t, estimate = noise, jnp.zeros_like(x0)
            else:
                t_vec = jnp.full((x0.shape[0],), t)
                x_t = q_sample(diffusion, x0, t_vec, noise)
                model_fn = samplers.model_wrapper(net, ns, run.prediction, learned_sigma=model.learn_sigma)
                eps = model_fn(x_t, jnp.full((x0.shape[0],), t_start))
                estimate = predict_x0_from_eps(diffusion, x_t, t_vec, eps)
            out = samplers.sample(sampler, net, x_t, ns, steps=n_steps, prediction=run.prediction,
                                  learned_sigma=model.learn_sigma, order=order, t_start=t_start)
            return estimate, jnp.clip(out, -1.0, 1.0)

        return regenerate

    def recover(x0, labels, t, key):
        if t not in compiled:
            compiled[t] = build(t)
        return compiled[t](x0, labels, key)

    return recover


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a launch.train run on shapes or mnist5k")
    parser.add_argument("--dataset", default="shapes", choices=sorted(extractors.SPECS))
    parser.add_argument("--snr", default="10,3,1,0.3,0.1", help="comma-separated signal-to-noise ratios")
    parser.add_argument("--num_images", type=int, default=256, help="held-out images (a random subset)")
    parser.add_argument("--sampler", default="unipc", choices=samplers.ODE_SAMPLERS)
    parser.add_argument("--steps", type=int, default=20, help="steps of a full run from pure noise")
    parser.add_argument("--order", type=int, default=2)
    parser.add_argument("--amm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--use_ema", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--step", type=int, default=None, help="checkpoint step (default: the newest)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--tag", default="", help="appended to the results' file names")
    args = parser.parse_args()
    snrs = [float(s) for s in args.snr.split(",")]
    if any(not s > 0 for s in snrs):
        parser.error(f"--snr values must be positive; got {args.snr!r}")
    if args.num_images < 1 or args.steps < args.order:
        parser.error(f"need --num_images >= 1 and --steps >= --order; got {args.num_images} and {args.steps}")

    start = time.time()
    run = edt_jax.load_run(args.workdir, args.step, use_ema=args.use_ema)
    config, step = run.config, run.step
    extractor = extractors.load_extractor(args.dataset)
    heads = [name for name, _ in extractor.spec.heads]
    class_head = heads[0]
    held = extractors.split_indices(args.dataset)[1]
    indices = np.sort(np.random.default_rng(args.seed).choice(held, min(args.num_images, len(held)), replace=False))
    images, factors = extractors.labelled_examples(args.dataset, indices)
    x0 = jnp.asarray(extractors.to_model_range(images))
    labels = jnp.asarray(factors[class_head], jnp.int32)
    recover = make_recover(run, sampler=args.sampler, steps=args.steps, order=args.order, amm=args.amm)

    def head_scores(regenerated: np.ndarray) -> dict[str, float]:
        pixels = to_uint8(np.asarray(regenerated))
        return {k: float(v) for k, v in extractors.head_accuracy(extractor, pixels, factors).items()}

    alphas_cumprod = np.asarray(run.schedule.alphas_cumprod)
    rows = [dict(name="originals", t=None, snr=None, x0_mse=None, mse=0.0, accuracy=head_scores(x0))]
    key = jax.random.key(args.seed)
    for snr in snrs + [None]:
        t = None if snr is None else nearest_timestep(alphas_cumprod, snr)
        estimate, regenerated = recover(x0, labels, t, jax.random.fold_in(key, len(alphas_cumprod) if t is None else t))
        accuracy = head_scores(regenerated)
        if t is None:  # from pure noise only the label ties a sample to an original
            accuracy = {class_head: accuracy[class_head]}
        rows.append(dict(name="pure noise" if t is None else f"SNR {snr:g}", t=t,
                         snr=None if t is None else float(alphas_cumprod[t] / (1 - alphas_cumprod[t])),
                         x0_mse=None if t is None else float(jnp.mean((estimate - x0) ** 2)),
                         mse=None if t is None else float(jnp.mean((regenerated - x0) ** 2)), accuracy=accuracy))
        print(f"{rows[-1]['name']:>12s}: " + " ".join(f"{h} {v:.2f}" for h, v in accuracy.items()), flush=True)

    def fmt(value, digits):
        return "-" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"

    table = md_table(["from", "t", "x0 MSE", "MSE"] + heads, [
        [r["name"], fmt(r["t"], 0), fmt(r["x0_mse"], 4), fmt(r["mse"], 4)]
        + [fmt(r["accuracy"].get(h), 2) for h in heads] for r in rows])
    report = "\n".join([
        f"# Recovery of {args.dataset} factors from noised held-out images", "",
        f"- machine: {machine_info()}",
        f"- command: `{command_line()}`",
        f"- model: `{args.workdir}` step {step} ({config.model.name}, {'EMA' if args.use_ema else 'raw'} parameters, "
        f"AMM {'on' if args.amm else 'off'}, prediction {run.prediction}); "
        f"{args.sampler} order {args.order}, {args.steps} steps from T scaled by t / T; {len(indices)} images",
        "- cells: fraction of regenerated images in which the shipped classifier finds the original's factor "
        "(circles' orientation is not scored); chance is 1 / number of values",
        f"- total runtime: {time.time() - start:.0f} s", "", table, ""])
    print(report)
    stem = f"recovery_{args.dataset}_{jax.default_backend()}{'_' + args.tag if args.tag else ''}"
    write_results(args.out, stem, report, dict(rows=rows, step=step, workdir=args.workdir))


if __name__ == "__main__":
    main()
