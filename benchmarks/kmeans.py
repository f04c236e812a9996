"""Benchmark `keras_towers.clustering.kmeans` against scikit-learn (and faiss).

ProtoCLIP clusters every episode's 128-d projected features (officially with
faiss: K=20000 on 200k points, 20 iterations, 3 restarts). This script times
`keras_towers.clustering.kmeans` on each requested Keras backend against
scikit-learn's `KMeans` and, when it is importable, `faiss.Kmeans`, on the
same data, iterations and restarts, in one run:

- data: `--n` points in `--d` dimensions drawn around `--k` Gaussian centres
  and L2-normalised (like ProtoCLIP's projected features), float32, from
  `--seed`;
- keras_towers and scikit-learn: `max_iter`, `n_init`, `init` and `tol` as
  given (scikit-learn with `algorithm="lloyd"`);
- faiss: `niter=max_iter`, `nredo=n_init`, its own init (K random points) and
  no tolerance (it always runs `niter` iterations);
- every inertia is the exact sum of squared distances to the returned
  centroids (for faiss: a nearest-centroid search after training, not timed).

`KERAS_BACKEND` is fixed per process, so each backend runs in a subprocess of
its own (this script with `--worker`), sequentially; scikit-learn and faiss run
in the driver. Each contender is timed on `--repeats` calls with the same
seed; the `first` column includes one-off costs (JAX compiles each kernel
once per shape), `best` is the fastest call. Ratios compare best times and
inertias with scikit-learn's.

Usage:

```
.venv/bin/python benchmarks/kmeans.py                       # 50k x 128, K=5000: long on 2 cores
.venv/bin/python benchmarks/kmeans.py --backends jax,torch,tensorflow
.venv/bin/python benchmarks/kmeans.py --n 5000 --k 200 --backends jax,torch,tensorflow
.venv/bin/python benchmarks/kmeans.py --init random --tol 0   # faiss-like settings
.venv/bin/python benchmarks/kmeans.py --threads 1             # on a busy machine
```
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _harness  # noqa: E402

RESULT_PREFIX = "@@kmeans "
BACKENDS = ("jax", "torch", "tensorflow")


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--n", type=int, default=50_000, help="points")
    parser.add_argument("--d", type=int, default=128, help="dimensions")
    parser.add_argument("--k", type=int, default=5_000, help="clusters")
    parser.add_argument("--max-iter", type=int, default=20, help="Lloyd iterations")
    parser.add_argument("--n-init", type=int, default=3, help="restarts")
    parser.add_argument(
        "--init",
        default="k-means++",
        choices=("k-means++", "random"),
        help="seeding (faiss always uses its own random init)",
    )
    parser.add_argument("--tol", type=float, default=1e-4, help="relative tolerance")
    parser.add_argument("--seed", type=int, default=0, help="data and k-means seed")
    parser.add_argument(
        "--chunk-size", type=int, default=None, help="keras_towers chunk rows"
    )
    parser.add_argument(
        "--backends",
        default=os.environ.get("KERAS_BACKEND", "jax"),
        help="comma-separated Keras backends, each run in a subprocess",
    )
    parser.add_argument("--repeats", type=int, default=1, help="timed calls each")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="cores/threads per contender (default: all); 1 avoids OpenMP "
        "spinning on a machine that is busy with other work",
    )
    parser.add_argument("--no-sklearn", action="store_true")
    parser.add_argument("--no-faiss", action="store_true")
    parser.add_argument("--json", help="also write the results to this file")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    args.backends = [b for b in args.backends.split(",") if b]
    unknown = sorted(set(args.backends) - set(BACKENDS))
    if unknown:
        parser.error(f"unknown backend(s) {unknown}; choose from {BACKENDS}")
    return args


def make_data(n: int, d: int, k: int, seed: int):
    import numpy as np

    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d))
    x = centres[rng.integers(0, k, n)] + rng.normal(scale=0.5, size=(n, d))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype("float32")


def inertia_of(x, centroids, labels) -> float:
    import numpy as np

    diff = x.astype("float64") - centroids.astype("float64")[labels]
    return float(np.einsum("ij,ij->", diff, diff))


def _timed_calls(fn, repeats: int):
    times, out = [], None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return times, out


def _thread_limit(threads):
    from threadpoolctl import threadpool_limits

    return threadpool_limits(threads) if threads else contextlib.nullcontext()


def run_keras_towers(args) -> dict:
    """Time kmeans on this process's Keras backend (worker mode)."""
    import keras

    from keras_towers import clustering

    x = make_data(args.n, args.d, args.k, args.seed)
    times, result = _timed_calls(
        lambda: clustering.kmeans(
            x,
            args.k,
            max_iter=args.max_iter,
            n_init=args.n_init,
            init=args.init,
            seed=args.seed,
            chunk_size=args.chunk_size,
            tol=args.tol,
        ),
        args.repeats,
    )
    return {
        "name": f"keras_towers[{keras.backend.backend()}]",
        "times": times,
        "inertia": inertia_of(x, result.centroids, result.labels),
        "n_iter": result.n_iter,
        "note": f"empty clusters re-seeded: {result.empty_clusters_fixed}",
    }


def run_sklearn(args, x) -> dict:
    import sklearn
    from sklearn.cluster import KMeans

    def fit():
        return KMeans(
            n_clusters=args.k,
            init=args.init,
            n_init=args.n_init,
            max_iter=args.max_iter,
            tol=args.tol,
            random_state=args.seed,
            algorithm="lloyd",
        ).fit(x)

    with _thread_limit(args.threads):
        times, model = _timed_calls(fit, args.repeats)
    return {
        "name": f"scikit-learn {sklearn.__version__}",
        "times": times,
        "inertia": inertia_of(x, model.cluster_centers_, model.labels_),
        "n_iter": int(model.n_iter_),
        "note": "",
    }


def run_faiss(args, x):
    try:
        import faiss
    except ImportError:
        return None

    def fit():
        km = faiss.Kmeans(
            args.d,
            args.k,
            niter=args.max_iter,
            nredo=args.n_init,
            seed=args.seed,
            spherical=False,
            verbose=False,
        )
        km.train(x)
        return km

    if args.threads:
        faiss.omp_set_num_threads(args.threads)
    times, km = _timed_calls(fit, args.repeats)
    _, labels = km.index.search(x, 1)
    return {
        "name": f"faiss {getattr(faiss, '__version__', '')}".strip(),
        "times": times,
        "inertia": inertia_of(x, km.centroids, labels[:, 0]),
        "n_iter": args.max_iter,
        "note": "init: K random points, no tol",
    }


def worker_args(args) -> list:
    flags = [
        "--worker",
        f"--n={args.n}",
        f"--d={args.d}",
        f"--k={args.k}",
        f"--max-iter={args.max_iter}",
        f"--n-init={args.n_init}",
        f"--init={args.init}",
        f"--tol={args.tol}",
        f"--seed={args.seed}",
        f"--repeats={args.repeats}",
    ]
    if args.threads:
        flags.append(f"--threads={args.threads}")
    if args.chunk_size is not None:
        flags.append(f"--chunk-size={args.chunk_size}")
    return [sys.executable, os.path.abspath(__file__), *flags]


def _env(backend: str, threads) -> dict:
    env = _harness._env(backend)
    if threads:
        for name in ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS"):
            env[name] = str(threads)
    return env


def run_backend(args, backend: str) -> dict:
    done = subprocess.run(
        worker_args(args),
        env=_env(backend, args.threads),
        capture_output=True,
        text=True,
    )
    for line in done.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = "\n".join(done.stderr.splitlines()[-20:])
    raise RuntimeError(f"the {backend} worker failed (exit {done.returncode}):\n{tail}")


def report(args, results: list) -> str:
    reference = next((r for r in results if r["name"].startswith("scikit")), None)
    lines = [
        f"k-means: N={args.n} D={args.d} K={args.k}, max_iter={args.max_iter}, "
        f"n_init={args.n_init}, init={args.init}, tol={args.tol}, seed={args.seed}, "
        f"threads={args.threads or 'all'}",
        "machine: {cpu}, {affinity} of {nproc} cores, Python {python}".format(
            **_harness.machine_info()
        ),
        "",
        f"{'contender':<26} {'first s':>9} {'best s':>9} {'inertia':>14} "
        f"{'n_iter':>6} {'time/sk':>8} {'inertia/sk':>10}  note",
    ]
    for r in results:
        best = min(r["times"])
        time_ratio = inertia_ratio = ""
        if reference is not None:
            time_ratio = f"{best / min(reference['times']):.2f}"
            inertia_ratio = f"{r['inertia'] / reference['inertia']:.4f}"
        lines.append(
            f"{r['name']:<26} {r['times'][0]:>9.2f} {best:>9.2f} "
            f"{r['inertia']:>14.4f} {r['n_iter']:>6} {time_ratio:>8} "
            f"{inertia_ratio:>10}  {r['note']}"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    args = parse_args(argv)
    if args.worker:
        if args.threads:
            _harness.restrict_threads(args.threads)
        result = run_keras_towers(args)
        print(RESULT_PREFIX + json.dumps(result), flush=True)
        return
    x = make_data(args.n, args.d, args.k, args.seed)
    results = []
    if not args.no_sklearn:
        results.append(run_sklearn(args, x))
    if not args.no_faiss:
        faiss_result = run_faiss(args, x)
        if faiss_result is not None:
            results.append(faiss_result)
    for backend in args.backends:
        results.append(run_backend(args, backend))
    print(report(args, results))
    if not args.no_faiss and not any(r["name"].startswith("faiss") for r in results):
        print("faiss: not installed (pip install faiss-cpu to compare)")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"args": vars(args), "results": results}, f, indent=2)


if __name__ == "__main__":
    main()
