"""Start-up time of the `keras-towers` script against peers, in one run.

Times, as fresh processes, the commands that should answer at once
(`keras-towers --help`, `presets list`, `--version`, `train --help`: they
import neither Keras nor keras_towers) against peers measured in the same
run: a bare interpreter (`python -c pass`), `import keras` (what every
command paid before the parser left Keras out), `import transformers` and
`import keras_towers` (what a command that trains or loads a preset still
pays, once per backend). Each round runs every contender once, in
rotating order, so load drift is shared; the table shows the median and the
fastest of `--runs` rounds, the median as a multiple of the bare
interpreter's and as a fraction of `import keras`'s, and PASS/FAIL against
the target (`--target`, 2 s, for the keras-towers commands).

It also reports each contender's peak resident memory (the largest
`ru_maxrss` of its processes, from `os.wait4`): the floor a training
process starts from before it builds anything, next to `import torch,
transformers` (the peer of `benchmarks/clip_train_step.py`'s memory ratio)
and `import tensorflow` (which keras_towers imports on every backend, for
tf.data and keras-hub's tokenizers). Memory does not depend on load, so
`--runs 1` is enough for that column.

Usage:

```
.venv/bin/python benchmarks/cli_startup.py              # ~1 min on 2 cores
.venv/bin/python benchmarks/cli_startup.py --runs 9 --json out.json
.venv/bin/python benchmarks/cli_startup.py --no-heavy   # skip the Keras imports
```
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

BIN = Path(sys.executable).parent
SCRIPT = str(BIN / "keras-towers")

#: (label, argv, is a keras-towers command held to the target).
LIGHT = [
    ("keras-towers --help", [SCRIPT, "--help"], True),
    ("keras-towers presets list", [SCRIPT, "presets", "list"], True),
    ("keras-towers --version", [SCRIPT, "--version"], True),
    ("keras-towers train --help", [SCRIPT, "train", "--help"], True),
    ("python -c pass", [sys.executable, "-c", "pass"], False),
]
HEAVY = [
    ("python -c 'import keras'", [sys.executable, "-c", "import keras"], False),
    (
        "python -c 'import transformers'",
        [sys.executable, "-c", "import transformers"],
        False,
    ),
    (
        "python -c 'import torch, transformers'",
        [sys.executable, "-c", "import torch, transformers"],
        False,
    ),
    (
        "python -c 'import tensorflow'",
        [sys.executable, "-c", "import tensorflow"],
        False,
    ),
] + [
    (
        f"import keras_towers ({backend})",
        [
            "env",
            f"KERAS_BACKEND={backend}",
            sys.executable,
            "-c",
            "import keras_towers",
        ],
        False,
    )
    for backend in ("torch", "jax", "tensorflow")
]


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n")[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--runs", type=int, default=5, help="rounds")
    parser.add_argument(
        "--target", type=float, default=2.0, help="seconds, keras-towers commands"
    )
    parser.add_argument(
        "--no-heavy",
        action="store_true",
        help="skip the peers that import Keras (keras, transformers, keras_towers)",
    )
    parser.add_argument("--json", help="write the timings to this file")
    return parser.parse_args(argv)


def _time(argv, env) -> tuple[float, float]:
    """`(seconds, peak resident MiB)` of running `argv` to the end."""
    start = time.perf_counter()
    process = subprocess.Popen(
        argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    # wait4 returns the child's own rusage (ru_maxrss in KiB on Linux: the
    # largest resident set of the process and the descendants it waited for,
    # so `env` exec-ing python is measured as python).
    stderr = process.stderr.read()
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    process.stderr.close()
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed:\n{stderr}")
    return seconds, usage.ru_maxrss / 1024.0


def main(argv=None) -> int:
    args = parse_args(argv)
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    contenders = LIGHT + ([] if args.no_heavy else HEAVY)
    load_before = os.getloadavg()
    times: dict[str, list[float]] = {label: [] for label, _, _ in contenders}
    peak_mib: dict[str, float] = {label: 0.0 for label, _, _ in contenders}
    for _, command, _ in contenders:  # warm the file cache, untimed
        _time(command, env)
    for round_ in range(args.runs):
        shift = round_ % len(contenders)
        for label, command, _ in contenders[shift:] + contenders[:shift]:
            seconds, mib = _time(command, env)
            times[label].append(seconds)
            peak_mib[label] = max(peak_mib[label], mib)
    load_after = os.getloadavg()

    median = {label: statistics.median(values) for label, values in times.items()}
    bare = median["python -c pass"]
    keras_import = median.get("python -c 'import keras'")
    print(
        f"{args.runs} rounds; load average {load_before[0]:.2f} before, "
        f"{load_after[0]:.2f} after; {os.cpu_count()} CPUs; backend "
        f"{os.environ.get('KERAS_BACKEND', '(keras.json / default)')}"
    )
    peer = peak_mib.get("python -c 'import torch, transformers'")
    header = f"{'command':<40} {'median s':>9} {'best s':>8} {'x bare':>8}"
    if keras_import:
        header += f" {'/ keras':>8}"
    header += f" {'peak MiB':>9}"
    if peer:
        header += f" {'/ torch+tr':>10}"
    header += "  target"
    print(header)
    print("-" * len(header))
    failed = False
    for label, _, held in contenders:
        line = (
            f"{label:<40} {median[label]:>9.3f} {min(times[label]):>8.3f} "
            f"{median[label] / bare:>8.1f}"
        )
        if keras_import:
            line += f" {median[label] / keras_import:>8.3f}"
        line += f" {peak_mib[label]:>9.0f}"
        if peer:
            line += f" {peak_mib[label] / peer:>10.2f}"
        if held:
            ok = median[label] < args.target
            failed |= not ok
            line += f"  {'PASS' if ok else 'FAIL'} (< {args.target:g} s)"
        print(line)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {
                    "runs": args.runs,
                    "load_average": [load_before[0], load_after[0]],
                    "seconds": times,
                    "median": median,
                    "peak_mib": peak_mib,
                },
                indent=2,
            )
        )
        print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
