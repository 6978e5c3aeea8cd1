"""One worker of a MultiWorkerMirroredStrategy run of the training program.

    TF_CONFIG=... python tests/scripts/multiworker_run.py OUT.npz TRAIN-ARGS...

Trains with ``trainers.train.train`` (``--strategy multiworker`` is added) and writes
the final weights of this worker's model, its role and where it wrote, to OUT.npz.
"""

import json
import os
import sys

os.environ["CUDA_VISIBLE_DEVICES"] = ""
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402

from trainers import train as T  # noqa: E402


def main(out, argv):
    spec = T.parse(list(argv) + ["--strategy", "multiworker"])
    result = T.train(spec)
    model = result.model
    weights = {f"w{i}": w for i, w in enumerate(model.get_weights())}
    info = {"status": result.status, "export_path": result.export_path,
            "replicas": model.distribute_strategy.num_replicas_in_sync,
            "steps": int(model.optimizer.iterations.numpy()),
            "task": json.loads(os.environ["TF_CONFIG"])["task"]}
    np.savez(out, info=json.dumps(info), **weights)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
