"""Does Keras' own `fit` run under `tf.distribute.MultiWorkerMirroredStrategy`?

Starts two local TensorFlow workers (TF_CONFIG on localhost) that each train a
plain `keras.Sequential` (no keras_towers code) for one step, and prints each
worker's outcome. With keras 3.15.1 / tensorflow 2.21 on CPU both workers fail
inside Keras' trainer, so keras_towers' multi-worker path cannot be exercised
here; its replica-context code is the one `MirroredStrategy` runs (tested in
tests/test_distributed.py).

    .venv/bin/python scripts/multiworker_probe.py
"""

import json
import os
import subprocess
import sys

WORKER = """
import os, sys, json
os.environ["KERAS_BACKEND"] = "tensorflow"
import tensorflow as tf
strategy = tf.distribute.MultiWorkerMirroredStrategy()
import keras, numpy as np
with strategy.scope():
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
x = np.ones((8, 4), "float32")
data = tf.data.Dataset.from_tensor_slices((x, x[:, :1])).batch(8)
try:
    model.fit(data, epochs=1, verbose=0)
    print("RESULT ok")
except Exception as error:
    print("RESULT", type(error).__name__, " ".join(str(error).split())[:300])
"""


def main(port: int = 23471) -> None:
    cluster = {"worker": [f"localhost:{port}", f"localhost:{port + 1}"]}
    workers = []
    for index in range(2):
        env = dict(
            os.environ,
            TF_CPP_MIN_LOG_LEVEL="3",
            TF_CONFIG=json.dumps(
                {"cluster": cluster, "task": {"type": "worker", "index": index}}
            ),
        )
        workers.append(
            subprocess.Popen(
                [sys.executable, "-c", WORKER],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        )
    for index, worker in enumerate(workers):
        out, _ = worker.communicate(timeout=600)
        lines = [x for x in out.splitlines() if x.startswith("RESULT")]
        print(f"worker {index}: {lines[-1][7:] if lines else 'no result'}")


if __name__ == "__main__":
    main()
