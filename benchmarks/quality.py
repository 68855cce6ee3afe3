"""Sample quality vs NFE of DDIM, DPM-Solver++ and UniPC on a model trained here (FD_shapes / FD_mnist5k).

    python -m benchmarks.quality --workdir /tmp/shapes_edt --num_samples 512 --seeds 0,1 --nfe 5,6,8,10,15,20,25,50

Every (sampler, NFE, guidance) cell generates ``--num_samples`` samples per seed from the same checkpoint and
reports the mean and spread (min-max over seeds) of the offline Frechet distance in the shipped classifier's
features (not FID; lower is better; the report also scores as many real dataset images, the floor).
Writes ``benchmarks/results/quality_<dataset>_<backend>[_<tag>].md/.json`` and, when matplotlib is installed, a plot.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

import edt_jax
from benchmarks.bench_utils import command_line, machine_info, md_table, spread, write_results
from edt_jax.metrics import extractors
from edt_jax.metrics.frechet import FeatureStats
from edt_jax.runs import Run

# (label, sampler, order, variant)
SAMPLERS = {
    "ddim": ("DDIM", "ddim", 1, None),
    "dpm2": ("DPM-Solver++ 2M", "dpm_solver", 2, None),
    "dpm3": ("DPM-Solver++ 3M", "dpm_solver", 3, None),
    "unipc2_bh1": ("UniPC-2 bh1", "unipc", 2, "bh1"),
    "unipc2_bh2": ("UniPC-2 bh2", "unipc", 2, "bh2"),
    "unipc3_bh1": ("UniPC-3 bh1", "unipc", 3, "bh1"),
    "unipc3_bh2": ("UniPC-3 bh2", "unipc", 3, "bh2"),
}


def score_samples(run: Run, extractor, reference, num_samples: int, batch_size: int, seeds: list[int],
                  **sampling) -> dict[str, list[float]]:
    """Per sampling seed: the Frechet distance of ``num_samples`` samples (random labels) to ``reference``
    in ``extractor``'s features, and the fraction the extractor classifies as the label they were drawn for.

    ``sampling`` holds ``Run.sample``'s options; each seed draws its labels and its batches' noise as
    ``launch.evaluate`` does (``Run.sample(..., batch_size=batch_size)``).
    """
    class_head = extractor.spec.heads[0][0]  # the dataset's class: shape or digit
    scores = {"fd": [], "accuracy": []}
    for seed in seeds:
        labels = run.draw_labels(num_samples, seed)
        images = run.sample(labels, seed=seed, batch_size=batch_size, as_uint8=True, **sampling)
        scores["fd"].append(FeatureStats.from_features(extractor.features(images)).frechet_distance(reference))
        scores["accuracy"].append(float(np.mean(extractor.predict(images)[class_head] == labels)))
    return scores


def data_floor(dataset: str, extractor, reference, num: int, seed: int = 12345) -> float:
    """The score of ``num`` real dataset images (drawn with ``seed``): what a perfect model would get."""
    indices = np.sort(np.random.default_rng(seed).choice(extractor.spec.num_examples, num, replace=False))
    images = extractors.labelled_examples(dataset, indices)[0]
    return FeatureStats.from_features(extractor.features(images)).frechet_distance(reference)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workdir", required=True, help="a launch.train run on shapes or mnist5k")
    parser.add_argument("--dataset", default="shapes", choices=sorted(extractors.SPECS))
    parser.add_argument("--num_samples", type=int, default=512)
    parser.add_argument("--batch_size", type=int, default=256)
    parser.add_argument("--seeds", default="0,1")
    parser.add_argument("--nfe", default="5,6,8,10,15,20,25,50")
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--guidance", default="1.0", help="comma-separated classifier-free guidance scales")
    parser.add_argument("--amm", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent / "results"))
    parser.add_argument("--tag", default="", help="appended to the results' file names")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    nfes = [int(n) for n in args.nfe.split(",")]
    guidances = [float(g) for g in args.guidance.split(",")]
    unknown = [s for s in args.samplers.split(",") if s not in SAMPLERS]
    if unknown:
        parser.error(f"unknown samplers {unknown}; choose from {', '.join(SAMPLERS)}")

    start = time.time()
    run = edt_jax.load_run(args.workdir)
    config, step = run.config, run.step
    extractor = extractors.load_extractor(args.dataset)
    reference = extractors.dataset_stats(args.dataset, extractor=extractor)
    floor = data_floor(args.dataset, extractor, reference, args.num_samples)
    cells = []
    for key in args.samplers.split(","):
        label, sampler, order, variant = SAMPLERS[key]
        for guidance in guidances:
            for nfe in nfes:
                if nfe < order:
                    continue
                scores = score_samples(run, extractor, reference, args.num_samples, args.batch_size, seeds,
                                       sampler=sampler, steps=nfe, order=order, variant=variant,
                                       guidance_scale=guidance, amm=args.amm)
                cells.append(dict(sampler=label, guidance=guidance, nfe=nfe, **scores))
                print(f"{label:16s} guidance {guidance:g} NFE {nfe:3d}: FD {np.mean(scores['fd']):8.1f} "
                      f"({min(scores['fd']):.1f}-{max(scores['fd']):.1f}), class accuracy "
                      f"{np.mean(scores['accuracy']):.3f}", flush=True)

    header = ["sampler", "guidance"] + [f"NFE {n}" for n in nfes]

    def table(metric: str, digits: int) -> str:
        rows = []
        for key in args.samplers.split(","):
            for guidance in guidances:
                row = [c for c in cells if c["sampler"] == SAMPLERS[key][0] and c["guidance"] == guidance]
                by_nfe = {c["nfe"]: c[metric] for c in row}
                rows.append([SAMPLERS[key][0], f"{guidance:g}"] + [
                    spread(by_nfe[n], digits) if n in by_nfe else "-" for n in nfes])
        return md_table(header, rows)

    report = "\n".join([
        f"# Sample quality vs NFE ({extractor.metric_name}, lower is better)", "",
        f"- machine: {machine_info()}",
        f"- command: `{command_line()}`",
        f"- model: `{args.workdir}` step {step} ({config.model.name}, EMA parameters, AMM "
        f"{'on' if args.amm else 'off'}), {args.num_samples} samples per seed, seeds {seeds}, random labels",
        f"- cells: mean over seeds (min-max); reference: {extractor.metric_name} statistics of "
        f"{reference.count} dataset images; {args.num_samples} other dataset images score {floor:.1f}",
        f"- total runtime: {time.time() - start:.0f} s", "", f"## {extractor.metric_name}", "", table("fd", 0), "",
        "## Class accuracy (the classifier's class equals the label the sample was drawn for; chance 1/classes)", "",
        table("accuracy", 2), ""])
    print(report)
    import jax

    stem = f"quality_{args.dataset}_{jax.default_backend()}{'_' + args.tag if args.tag else ''}"
    path = write_results(args.out, stem, report, dict(cells=cells, step=step, seeds=seeds))
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plot")
        return
    fig, ax = plt.subplots(figsize=(6, 4))
    for key in args.samplers.split(","):
        for guidance in guidances:
            row = [c for c in cells if c["sampler"] == SAMPLERS[key][0] and c["guidance"] == guidance]
            ax.plot([c["nfe"] for c in row], [np.mean(c["fd"]) for c in row], marker="o",
                    label=SAMPLERS[key][0] + (f" w={guidance:g}" if len(guidances) > 1 else ""))
    ax.set(xscale="log", xlabel="NFE", ylabel=extractor.metric_name, title=f"{extractor.metric_name} vs NFE")
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path.with_suffix(".png"), dpi=120)


if __name__ == "__main__":
    main()
