"""Data: sources named by a string, grain pipelines, global sharded batches.

    from edt_jax import data
    source = data.create_source("shapes")                      # or mnist5k, photos:32:train, tfds:..., folder:<dir>
    dataset = data.create_dataset(source, data.host_batch_size(256), seed=0, random_flip=True)
    for batch in data.global_batches(iter(dataset), mesh): ...  # {"image": (256, 32, 32, 3), "label": (256,)}
"""

from edt_jax.data.pipeline import create_dataset, global_batches, host_batch_size, to_global
from edt_jax.data.preprocess import Preprocess, center_crop
from edt_jax.data.sources import SOURCE_FORMS, create_source

__all__ = ["SOURCE_FORMS", "Preprocess", "center_crop", "create_dataset", "create_source", "global_batches",
           "host_batch_size", "to_global"]
