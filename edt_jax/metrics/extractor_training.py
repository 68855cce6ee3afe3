"""Train an offline feature extractor (the classifier behind FD_shapes / FD_mnist5k) and write its weights.

    train_extractor("shapes", "edt_jax/metrics/weights/shapes_classifier.npz")   # what launch.train_extractor runs

Trains with Adam (cosine-decayed learning rate) on the train split of ``split_indices`` and reports the
accuracy of every head on the fixed held-out split (shapes: a random 10%; mnist5k: the last 50 of each digit),
which goes into the weights file's metadata. Runs on a CPU in a few minutes.
"""

from __future__ import annotations

import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from edt_jax.metrics import extractors as ex

DEFAULT_STEPS = {"shapes": 1500, "mnist5k": 1000}
PROGRESS_EXAMPLES = 1000  # held-out images scored at each progress line (all of them at the end)


def make_train_step(module: ex.Classifier, tx: optax.GradientTransformation):
    def loss_fn(params, x, labels):
        _, logits = module.apply({"params": params}, x)
        total = 0.0
        for head, head_logits in logits.items():
            # Label -1 marks a factor the image does not show (shapes' orientation of circles): no loss there.
            valid = labels[head] >= 0
            ce = optax.softmax_cross_entropy_with_integer_labels(head_logits, jnp.maximum(labels[head], 0))
            total += jnp.sum(ce * valid) / jnp.maximum(valid.sum(), 1)
        return total

    @jax.jit
    def step(params, opt_state, x, labels):
        loss, grads = jax.value_and_grad(loss_fn)(params, x, labels)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return step


def _format(accuracy: dict[str, float]) -> str:
    return " ".join(f"{head} {value:.4f}" for head, value in accuracy.items())


def train_extractor(dataset: str, output: str, *, steps: int | None = None, batch_size: int = 128,
                    learning_rate: float = 4e-3, seed: int = 0, log_every: int = 250) -> dict:
    """Train the classifier of ``dataset`` (shapes, mnist5k) and write its weights and metadata to ``output``;
    returns the metadata (held-out accuracy per head). Prints a progress line every ``log_every`` steps."""
    spec = ex.get_spec(dataset)
    steps = DEFAULT_STEPS[dataset] if steps is None else steps
    if steps < 1 or batch_size < 1:
        raise ValueError(f"steps and batch_size must be positive; got {steps} and {batch_size}")
    train_idx, held_idx = ex.split_indices(dataset)
    held_images, held_labels = ex.labelled_examples(dataset, held_idx)
    # Progress lines score a fixed random subset: a prefix of the sorted indices would hold a single shape.
    progress = np.random.default_rng(1).permutation(len(held_idx))[:PROGRESS_EXAMPLES]
    # mnist5k is tiny: keep its train split in memory; shapes images are rendered per batch (~50 us each).
    cached = ex.labelled_examples(dataset, train_idx) if dataset == "mnist5k" else None

    module = ex.create_classifier(dataset)
    params = module.init(jax.random.key(seed), jnp.zeros((1, *spec.image_shape)))["params"]
    schedule = optax.warmup_cosine_decay_schedule(0.0, learning_rate, min(100, steps // 10), steps,
                                                  end_value=learning_rate * 0.01)
    tx = optax.adam(schedule)
    opt_state = tx.init(params)
    train_step = make_train_step(module, tx)
    evaluator = ex.Extractor(spec, module, params, {})
    rng = np.random.default_rng(seed)
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    print(f"{dataset}: {num_params} parameters, {len(train_idx)} train / {len(held_idx)} held-out images, "
          f"{steps} steps of batch {batch_size}", flush=True)

    start, losses = time.time(), []
    for step in range(1, steps + 1):
        picks = rng.choice(len(train_idx), batch_size, replace=False)
        if cached is None:
            images, labels = ex.labelled_examples(dataset, train_idx[picks])
        else:
            images, labels = cached[0][picks], {k: v[picks] for k, v in cached[1].items()}
        params, opt_state, loss = train_step(params, opt_state, ex.to_model_range(images), labels)
        losses.append(loss)
        if step % log_every == 0 or step == steps:
            evaluator.params = params
            accuracy = ex.head_accuracy(evaluator, held_images[progress],
                                        {k: v[progress] for k, v in held_labels.items()})
            print(f"step {step}/{steps} loss {float(np.mean(jax.device_get(losses))):.4f} "
                  f"held-out acc ({len(progress)}) {_format(accuracy)} [{time.time() - start:.0f} s]",
                  flush=True)
            losses = []
    train_seconds = time.time() - start

    evaluator.params = params
    accuracy = ex.head_accuracy(evaluator, held_images, held_labels)
    held_out = ("random 10% of indices (numpy default_rng(0) permutation)" if dataset == "shapes"
                else "last 50 images of each digit")
    metadata = {
        "metric_name": spec.metric_name,
        "architecture": {"channels": list(module.channels), "squeeze": module.squeeze,
                         "feature_dim": module.feature_dim, "groups": module.groups},
        "heads": dict(spec.heads),
        "train_steps": steps, "batch_size": batch_size, "learning_rate": learning_rate, "seed": seed,
        "optimizer": "adam, linear warmup + cosine decay",
        "held_out": held_out, "held_out_count": int(len(held_idx)), "held_out_accuracy": accuracy,
        "train_seconds": round(train_seconds, 1), "num_params": num_params, "jax_version": jax.__version__,
    }
    ex.save_extractor(output, dataset, params, metadata)
    print(f"held-out accuracy ({len(held_idx)} images): {_format(accuracy)}", flush=True)
    print(f"wrote {output} ({train_seconds:.0f} s of training)", flush=True)
    return metadata
