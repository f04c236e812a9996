"""Harness for interleaved, subprocess-per-contender CPU benchmarks.

Some settings are fixed once per process (`KERAS_BACKEND`, thread pools), so
a benchmark runs as a driver that starts one long-lived worker subprocess per
contender. This module has the parts that do not depend on what is timed:

- worker side: `restrict_threads`, `_protocol_channel`, `_send` and `_serve`,
  which warms a `step()` callable up, reports `{"ready": info}` and then times
  `run N` blocks sent on stdin (replies on a `PROTOCOL_PREFIX` line of the
  real stdout; everything else the worker prints goes to stderr);
- driver side: `Worker` (one subprocess and its log), `Contender` and
  `worker_pool` (start and finally close workers), `wait_ready`, `run_rounds`
  (the interleaved-rounds loop), `worker_command` and `_env`;
- one-shot memory probes (a fresh child process per measurement):
  `timed_peak` (times and peak-RSS rise of repeated steps, child side),
  `send_result` / `run_child` (a result line back to the driver);
- machine: `peak_worker` / `measure_peak` (fp32 matmul peak), `cpu_jiffies`,
  `busy_fraction` and `wait_for_quiet` (wait for other processes to leave
  the CPUs idle), `quantiles`, `machine_info`, `make_log_dir`.

The module imports only the standard library (frameworks are imported inside
the workers), so workers import it before choosing a backend.

A new benchmark `benchmarks/NAME.py`:

1. imports it with `sys.path.insert(0, os.path.dirname(os.path.abspath(
   __file__)))` followed by `import _harness  # noqa: E402`, so this works
   when the script is run from anywhere and in the workers it starts;
2. has a worker mode (e.g. `--worker KIND`): call `_protocol_channel()` first,
   then `restrict_threads(threads)`, import the framework, build the model
   and a `step()` that runs one step, blocks on it and returns the loss as a
   float, and hand it to `_serve(channel, step, info, warmup)`; a `peak`
   mode calls `peak_worker(threads)`;
3. in the driver, builds `Contender(name, worker_command(__file__, flags),
   _env(backend))` items, then `with worker_pool(contenders, log_dir) as
   workers:` calls `wait_ready(workers)` and `run_rounds(workers, ...)`, and
   summarises each `worker.times` (seconds per step) with `quantiles`.
   `measure_peak(command, log_dir, tag, quiet_wait)` before and after the
   rounds gives the machine's peak for a `% peak` column.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time

PROTOCOL_PREFIX = "@@bench "
RESULT_PREFIX = "@@result "


# === Worker side ===


def restrict_threads(threads: int) -> None:
    """Pin this process to `threads` cores before any framework import."""
    cpus = sorted(os.sched_getaffinity(0))
    if threads < len(cpus):
        os.sched_setaffinity(0, set(cpus[:threads]))


def _protocol_channel():
    """Keep the real stdout for protocol lines; send all else to stderr."""
    channel = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    return channel


def _send(channel, payload: dict) -> None:
    """Write one protocol line (`PROTOCOL_PREFIX` + JSON) to the driver."""
    channel.write(PROTOCOL_PREFIX + json.dumps(payload) + "\n")
    channel.flush()


def _serve(channel, step, info: dict, warmup: int, calls=None) -> None:
    """Warm up, report, then time blocks of steps on request.

    `step()` runs one step and returns its loss (a float). After `warmup`
    steps, sends `{"ready": info}` (with `first_step_s`, `warmup_s` and
    `first_loss` added), then answers each `run N` line on stdin with
    `{"times": [s, ...], "loss": last, "cpu_s": process CPU time}` until
    `quit` or end of input.

    `calls` (optional) maps a name to a callable returning a dict of
    measurements (one record), for things that are not one step, e.g. a
    whole `model.fit`. Each is called once before `ready` (its first
    record goes to `info["first_calls"][name]`: compilation, iterator
    set-up), and `call NAME N` answers `{"records": [N records], "loss":
    the last record's "loss" if any, "cpu_s": ...}`.
    """
    calls = calls or {}
    t0 = time.perf_counter()
    first_loss = step()
    first = time.perf_counter() - t0
    for _ in range(max(warmup - 1, 0)):
        step()
    first_calls = {name: fn() for name, fn in calls.items()}
    info.update(
        first_step_s=first,
        warmup_s=time.perf_counter() - t0,
        first_loss=first_loss,
    )
    if first_calls:
        info["first_calls"] = first_calls
    _send(channel, {"ready": info})
    for line in sys.stdin:
        command = line.split()
        if not command:
            continue
        if command[0] == "quit":
            break
        if command[0] == "run":
            times, loss = [], None
            cpu = time.process_time()
            for _ in range(int(command[1])):
                t = time.perf_counter()
                loss = step()
                times.append(time.perf_counter() - t)
            cpu = time.process_time() - cpu
            _send(channel, {"times": times, "loss": loss, "cpu_s": cpu})
        elif command[0] == "call":
            fn = calls[command[1]]
            cpu = time.process_time()
            records = [fn() for _ in range(int(command[2]))]
            cpu = time.process_time() - cpu
            loss = records[-1].get("loss") if records else None
            _send(channel, {"records": records, "loss": loss, "cpu_s": cpu})
    channel.close()


def peak_worker(threads: int) -> None:
    """Best-of fp32 square-matmul GFLOP/s in torch, NumPy and JAX (XLA).

    The libraries differ a lot on one CPU (MKL/oneDNN, OpenBLAS, XLA's own
    kernels), so the peak is the best any of them reaches. Sends one
    `{"<library>_<n>": GFLOP/s}` line and exits.
    """
    channel = _protocol_channel()
    restrict_threads(threads)
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    import jax
    import torch

    torch.set_num_threads(threads)
    jax_matmul = jax.jit(lambda a, b: a @ b)

    def runners(a, b):
        a_np, b_np = a.numpy(), b.numpy()
        a_jax, b_jax = jax.numpy.asarray(a_np), jax.numpy.asarray(b_np)
        return {
            "torch": lambda: torch.mm(a, b),
            "numpy": lambda: a_np @ b_np,
            "jax": lambda: jax_matmul(a_jax, b_jax).block_until_ready(),
        }

    result = {}
    for n in (1024, 2048):
        for name, fn in runners(torch.randn(n, n), torch.randn(n, n)).items():
            fn()
            best = min(_timed(fn) for _ in range(8))
            result[f"{name}_{n}"] = 2 * n**3 / best / 1e9
    _send(channel, result)
    channel.close()


def _timed(fn) -> float:
    """Wall-clock seconds of one `fn()` call."""
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


# === Driver side ===


def worker_command(script: str, worker_args) -> list:
    """Command line that runs `script` (a path) with `worker_args`."""
    return [sys.executable, os.path.abspath(script), *worker_args]


def _env(backend=None) -> dict:
    """The driver's environment, quieter TF logs, unbuffered; `KERAS_BACKEND`."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env.setdefault("PYTHONUNBUFFERED", "1")
    if backend is not None:
        env["KERAS_BACKEND"] = backend
    return env


class Worker:
    """One worker subprocess: protocol on its stdin/stdout, stderr to a log.

    The driver loop fills `info` (the ready payload), `times` (seconds per
    timed step), `records` (`{call name: [record, ...]}` from `call`
    blocks), `foreign` (other processes' CPU share per block),
    `waited_s` (time spent waiting for a quiet CPU), `discarded` (blocks
    re-timed) and `last_loss`; `variant` marks an experiment row.
    `peak_rss_mib()` reads the live worker's peak resident memory.
    """

    def __init__(self, name, command, env, log_path):
        self.name = name
        self.log_path = log_path
        self.log = open(log_path, "w")
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.log,
            env=env,
            text=True,
            bufsize=1,
        )
        self.info = None
        self.times = []
        self.records = {}
        self.foreign = []
        self.waited_s = 0.0
        self.discarded = 0
        self.variant = False

    def receive(self) -> dict:
        """Next protocol payload; raises with the log's tail if it exited."""
        for line in self.proc.stdout:
            if line.startswith(PROTOCOL_PREFIX):
                return json.loads(line[len(PROTOCOL_PREFIX) :])
        self.proc.wait()
        self.log.flush()
        with open(self.log_path) as f:
            tail = f.read()[-4000:]
        raise RuntimeError(
            f"worker {self.name!r} exited with code {self.proc.returncode}; "
            f"log {self.log_path}:\n{tail}"
        )

    def peak_rss_mib(self) -> float | None:
        """The worker's peak resident memory so far (Linux `VmHWM`), in MiB;
        None where /proc does not say (another OS, or the worker exited)."""
        try:
            with open(f"/proc/{self.proc.pid}/status") as f:
                for line in f:
                    if line.startswith("VmHWM:"):
                        return int(line.split()[1]) / 1024
        except OSError:
            return None
        return None

    def send(self, text: str) -> None:
        """Send one command line (`run N`, `quit`)."""
        self.proc.stdin.write(text + "\n")
        self.proc.stdin.flush()

    def close(self) -> None:
        """Ask the worker to quit (kill it after 60 s) and close the log."""
        if self.proc.poll() is None:
            try:
                self.send("quit")
                self.proc.wait(timeout=60)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@dataclasses.dataclass
class Contender:
    """A row of the benchmark: its name, worker command line and environment.

    `variant` marks experiments (shown, but left out of targets).
    """

    name: str
    command: list
    env: dict | None = None
    variant: bool = False


def make_log_dir(log_dir, prefix: str) -> str:
    """`log_dir` (created if missing), or a fresh temp dir named `prefix*`."""
    log_dir = log_dir or tempfile.mkdtemp(prefix=prefix)
    os.makedirs(log_dir, exist_ok=True)
    return log_dir


@contextlib.contextmanager
def worker_pool(contenders, log_dir: str):
    """Start one `Worker` per `Contender` (log `log_dir/<name>.log`); close all.

    The workers start at once and warm up concurrently.
    """
    workers = []
    try:
        for contender in contenders:
            log_name = "".join(ch if ch.isalnum() else "_" for ch in contender.name)
            log_path = os.path.join(log_dir, log_name + ".log")
            env = contender.env if contender.env is not None else _env()
            workers.append(Worker(contender.name, contender.command, env, log_path))
            workers[-1].variant = contender.variant
        yield workers
    finally:
        for worker in workers:
            worker.close()


def wait_ready(workers, on_ready=None) -> None:
    """Wait for each worker's `ready` payload (into `worker.info`).

    `on_ready(worker)` is called as each one arrives, e.g. to print it.
    """
    for worker in workers:
        worker.info = worker.receive()["ready"]
        if on_ready is not None:
            on_ready(worker)


def run_rounds(
    workers,
    rounds: int,
    steps: int,
    *,
    quiet_wait: float,
    max_other_load: float,
    retries: int,
    call: str | None = None,
) -> None:
    """Time `rounds` rounds of one `steps`-step block per worker, interleaved.

    The order rotates by one worker each round, so machine-load drift is
    shared. Before each block the driver waits (up to `quiet_wait` s) for a
    quiet CPU; a block during which other processes took more than
    `max_other_load` of all CPU time is re-timed, up to `retries` times.
    Results go into the workers' `times`, `last_loss`, `foreign`,
    `waited_s` and `discarded`. With `call=NAME` a block is `steps` calls
    of the workers' `NAME` callable (see `_serve`) instead, and its records
    go into `worker.records[NAME]`; `workers` are then only those serving
    it.
    """
    hz = os.sysconf("SC_CLK_TCK")
    ncpu = os.cpu_count()
    block = f"run {steps}" if call is None else f"call {call} {steps}"
    for r in range(rounds):
        shift = r % len(workers)
        for worker in workers[shift:] + workers[:shift]:
            for attempt in range(retries + 1):
                worker.waited_s += wait_for_quiet(quiet_wait)
                busy0, _ = cpu_jiffies()
                t0 = time.perf_counter()
                worker.send(block)
                reply = worker.receive()
                wall = time.perf_counter() - t0
                busy = (cpu_jiffies()[0] - busy0) / hz
                # Share of all CPU time that other processes took.
                other = max(busy - reply["cpu_s"], 0.0) / (wall * ncpu)
                if other <= max_other_load or attempt == retries:
                    break
                worker.discarded += 1
            if call is None:
                worker.times.extend(reply["times"])
            else:
                worker.records.setdefault(call, []).extend(reply["records"])
            worker.last_loss = reply["loss"]
            worker.foreign.append(other)
        label = "" if call is None else f" ({call})"
        print(f"  round {r + 1}/{rounds}{label} done", flush=True)


def measure_peak(command, log_dir: str, tag: str, quiet_wait: float) -> dict:
    """Run a `peak_worker` command once (after a quiet CPU); its GFLOP/s."""
    wait_for_quiet(quiet_wait)
    log_path = os.path.join(log_dir, f"peak_{tag}.log")
    worker = Worker("peak", command, _env(), log_path)
    try:
        return worker.receive()
    finally:
        worker.proc.wait()
        worker.log.close()


# === One-shot memory probes ===


def status_kib(field: str) -> int:
    """A `/proc/self/status` field in KiB (`VmRSS`, `VmHWM`)."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def reset_peak() -> bool:
    """Reset this process's peak RSS (`VmHWM`); False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def timed_peak(step, repeats: int) -> dict:
    """Run `step()` `repeats` times after resetting the peak RSS: the
    times, the last value, the RSS before (`rss_mib`) and the peak rise over
    it (`peak_mib`)."""
    baseline = status_kib("VmRSS")
    info = {"peak_reset": reset_peak()}
    times, value = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        value = step()
        times.append(time.perf_counter() - start)
    info.update(
        times=times,
        value=value,
        rss_mib=baseline / 1024,
        peak_mib=(status_kib("VmHWM") - baseline) / 1024,
    )
    return info


def send_result(info: dict) -> None:
    """Child side: the result line `run_child` reads."""
    print(RESULT_PREFIX + json.dumps(info), flush=True)


def run_child(command, env: dict) -> dict:
    """Driver side: run a child to completion and return its `send_result`
    dict, or `{"error": ...}` with the exit code and the last lines."""
    result = subprocess.run(command, capture_output=True, text=True, env=env)
    for line in result.stdout.splitlines():
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    tail = (result.stdout + result.stderr).strip().splitlines()[-5:]
    return {"error": f"exit {result.returncode}: " + " | ".join(tail)}


# === Machine ===


def cpu_jiffies():
    """(busy, total) jiffies over all CPUs, from /proc/stat."""
    with open("/proc/stat") as f:
        fields = [int(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    total = sum(fields[:8])  # excludes guest time, counted in user
    return total - idle, total


def busy_fraction(seconds: float) -> float:
    """Fraction of all CPUs busy over a short window."""
    b0, t0 = cpu_jiffies()
    time.sleep(seconds)
    b1, t1 = cpu_jiffies()
    return (b1 - b0) / max(t1 - t0, 1)


def wait_for_quiet(max_wait: float, threshold: float = 0.15) -> float:
    """Wait (up to `max_wait` s) until other processes leave the CPUs idle."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        if busy_fraction(0.25) <= threshold:
            break
    return time.perf_counter() - start


def print_footer(report: dict) -> None:
    """The end of a benchmark's report: what "other load" means, the
    variant rows, a warning when other processes loaded the CPU, the
    PASS/FAIL lines of `report["targets"]` and the wall time.

    `report` holds `results` (dicts with `name`, `variant`, `foreign_load`),
    `targets` (dicts with `target`, `value`, `pass`) and `wall_s`.
    """
    print(
        "  other load: share of the machine's CPU time that other processes "
        "used while the contender's timed blocks ran"
    )
    variants = [r["name"] for r in report["results"] if r["variant"]]
    if variants:
        print(f"  variants (not in the targets): {', '.join(variants)}")
    if any(r["foreign_load"] > 0.1 for r in report["results"]):
        print(
            "  WARNING: other processes loaded the machine during timing; "
            "the numbers are noisy"
        )
    if report["targets"]:
        print()
        for t in report["targets"]:
            verdict = "PASS" if t["pass"] else "FAIL"
            print(f"  [{verdict}] {t['target']}: {t['value']}")
    print(f"\ntotal wall time {report['wall_s']:.0f}s")


def quantiles(values):
    """(first quartile, median, third quartile) of `values`."""
    q = statistics.quantiles(values, n=4, method="inclusive")
    return q[0], statistics.median(values), q[2]


def machine_info() -> dict:
    """CPU model, core counts, Python version and platform."""
    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }
