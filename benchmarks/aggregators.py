"""Benchmark of the robust aggregators and pre-aggregators against their floors (a script).

Run::

    python benchmarks/aggregators.py            # n in {16, 64, 256}, d in {1e4, 1e6}
    python benchmarks/aggregators.py --quick    # n in {16, 64}, d = 1e4
    python benchmarks/aggregators.py --sizes 256x1000000 --rules krum,median,geomed
    python benchmarks/aggregators.py --device cuda       # on a GPU (times synchronised)
    SHIELDWALL_NO_NUMBA=1 python benchmarks/aggregators.py   # the pure-torch fallback

For every size: float32 rows from a seeded ``torch.randn``, ``f = (n - 3) // 4`` (what Bulyan
tolerates), ``torch.set_num_threads(2)``, on ``--device`` (``cpu``; on ``cuda`` every timed call
ends with ``torch.cuda.synchronize()``). Reported per rule:

* ``time``: median wall time over repeats (after one warm-up call; cases slower than a second
  get fewer repeats, see ``--budget``).
* ``floor`` and ``x``: the time of the cheapest torch work the rule cannot avoid, measured in the
  same run, and the ratio. Distance rules (Krum, Multi-Krum, Bulyan, MDA, NNM): one
  ``x @ x.T`` plus one ``x.mean(0)`` pass (Bulyan: plus ``median(0)`` of ``n - 2f`` rows, its
  coordinate-wise phase). Coordinate rules (median, trimmed mean, MeaMed, Phocas):
  ``x.median(0)``. Geometric median / CenteredClip with a known number of iterations: that
  many ``x.mean(0)`` passes (the time includes the coordinate-median start where there is one);
  geomed(default), whose number of steps is not known here: ``x.median(0)``. Sign majority: one
  mean pass. Clipping, ARC, bucketing, which must write new rows: one ``x.clone()``. NNM's floor is
  the distance rules' although it does two GEMM-sized products (the Gram matrix and the mixing).
* ``naive``: the distance rules' score computed with a Python loop over pairs of rows (one
  ``(x_i - x_j).pow(2).sum()`` each), only where ``pairs * d <= --naive-cap``.
* ``byzfl``: ByzFL's implementation of the same rule on the same input, where ``byzfl`` is
  installed (optional; it is loaded without its package ``__init__``, which needs torchvision),
  and ``ours/byzfl``. Their defaults differ (see the notes printed at the end).
* ``peak MB``: peak extra resident memory of one call, measured in a fresh subprocess per case:
  after the input is allocated and the rule warmed up on a small input, the kernel's peak-RSS
  mark is reset (``/proc/self/clear_refs``) and the peak during the call (``VmHWM``) minus the
  resident size before it is reported (elsewhere: the growth of ``ru_maxrss``); ``xin`` is
  that as a multiple of the input's size (on CUDA: ``torch.cuda.max_memory_allocated`` over
  the call minus the memory allocated before it). It counts every temporary the call touches
  (and allocator slack), not what it returns to the OS. Only for inputs of at least
  ``--memory-min-mb`` (32 MB): below that the growth is lost in the interpreter's own heap.

The machine may be shared: absolute times are noisy, the ratios (taken in the same run) less so.
On a busy machine ``--threads 1 --clock cpu`` times the CPU time of the calling thread (torch and
the numba kernels then run in it), which other jobs delay but do not inflate.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import subprocess
import sys
import time
from collections.abc import Callable

import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from _timing import paired_medians  # noqa: E402  (beside this script)
from aggregator_cases import CASE_ALIASES, CASES, load_byzfl  # noqa: E402

THREADS = 2


# --------------------------------------------------------------------------- helpers
DEVICE = torch.device("cpu")
CLOCK = time.perf_counter  # --clock cpu: time.thread_time (one thread: the work, not the wait)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)


def timeit(fn: Callable[[], object], repeats: int, budget: float) -> float:
    """Median wall time of ``fn`` over up to ``repeats`` calls after one warm-up call."""
    return timeit_paired([fn], repeats, budget)[0]


def timeit_paired(fns: list[Callable[[], object]], repeats: int, budget: float) -> list[float]:
    """Median time of each of ``fns``, taking turns in every round (:func:`_timing.paired_medians`
    with this run's ``--repeats``, ``--budget``, ``--clock`` and device)."""
    return paired_medians(fns, repeats, budget=budget, clock=CLOCK, sync=_sync)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    except OSError:
        return _load()


def _load() -> str:
    try:
        return " ".join(f"{v:.1f}" for v in os.getloadavg()) + f" on {os.cpu_count()} CPUs"
    except OSError:
        return "unknown"


def make_input(n: int, d: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
    return x.to(DEVICE)


def peak_memory_mb(label: str, n: int, d: int) -> float | None:
    """Peak extra RSS (MB) of one call, from a fresh subprocess."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_memcase", label, str(n), str(d)]
    cmd.append(str(DEVICE))
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=True)
        return float(out.stdout.strip().splitlines()[-1])
    except Exception:
        return None


def _memcase(label: str, n: int, d: int, device: str = "cpu") -> None:
    global DEVICE
    DEVICE = torch.device(device)
    torch.set_num_threads(THREADS)
    case = next(c for c in CASES if c.label == label)
    f = (n - 3) // 4
    case.call(make_input(n, 64, seed=1), f)  # warm the code paths on a small input
    x = make_input(n, d)
    if DEVICE.type == "cuda":
        torch.cuda.synchronize(DEVICE)
        before = torch.cuda.memory_allocated(DEVICE)
        torch.cuda.reset_peak_memory_stats(DEVICE)
        case.call(x, f)
        torch.cuda.synchronize(DEVICE)
        print(max(0, torch.cuda.max_memory_allocated(DEVICE) - before) / 2**20)
        return
    if _reset_peak_rss():
        before = _proc_status_kib("VmRSS")
        case.call(x, f)
        after = _proc_status_kib("VmHWM")
    else:  # high-water mark since start: valid when nothing before peaked higher than now
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        case.call(x, f)
        after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(max(0, after - before) / 1024.0)  # KiB -> MiB


def _reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return _proc_status_kib("VmHWM") is not None
    except OSError:
        return False


def _proc_status_kib(field: str) -> int | None:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def fmt_ms(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    ms = seconds * 1e3
    return f"{ms:.3g}" if ms < 100 else f"{ms:.0f}"


def fmt_ratio(r: float | None) -> str:
    return "-" if r is None else (f"{r:.2f}" if r < 10 else f"{r:.0f}")


# --------------------------------------------------------------------------- main
def run(args) -> None:
    global DEVICE, CLOCK
    DEVICE = torch.device(args.device)
    if args.clock == "cpu":
        CLOCK = time.thread_time
    torch.set_num_threads(args.threads)
    byzfl = None if args.no_byzfl else load_byzfl()
    cases = CASES
    if args.rules:
        wanted = [w.strip() for w in args.rules.split(",") if w.strip()]
        prefixes = [CASE_ALIASES.get(w, w) for w in wanted]
        cases = [c for c in CASES if any(c.label == p or c.label.startswith(p) for p in prefixes)]
    from shieldwall.aggregators import _select

    where = platform.processor() or platform.machine()
    if DEVICE.type == "cuda":
        where = f"{torch.cuda.get_device_name(DEVICE)} (CUDA {torch.version.cuda})"
    print(
        f"# shieldwall aggregator benchmark — torch {torch.__version__}, "
        f"{args.threads} threads, {where}, float32, device {DEVICE}, clock: "
        + ("CPU time of the calling thread" if args.clock == "cpu" else "wall")
    )
    numba_note = "off: pure-torch fallback"
    if _select.available():
        import numba

        numba_note = f"numba {numba.__version__} kernels (CPU tensors only)"
    print(f"# coordinate-wise rules: {numba_note}; uptime: {_uptime()}")
    print(f"# byzfl: {'version ' + byzfl.version if byzfl else 'not installed: skipped'}")
    print(
        "# times in ms (median over repeats); x = ours / floor; naive and byzfl: ms and "
        "ours / theirs; peak MB: extra resident memory of one call (xin: / input size)"
    )
    print(
        "# floor and byzfl are timed in the same rounds as ours (calls alternate); "
        f"load average at start: {_load()}"
    )
    for case in cases:  # compile numba kernels / warm code paths before any timing
        try:
            case.call(make_input(11, 64, seed=2), 2)
        except Exception:  # noqa: BLE001 - reported where the case is timed
            pass
    for n, d in args.sizes:
        f = (n - 3) // 4
        x = make_input(n, d)
        t_mean = timeit(lambda x=x: x.mean(dim=0), args.repeats, args.budget)
        t_median = timeit(lambda x=x: x.median(dim=0), args.repeats, args.budget)
        t_gemm = timeit(lambda x=x: x @ x.T, args.repeats, args.budget)
        input_mb = n * d * 4 / 2**20
        print(
            f"\n## n={n} d={d} f={f}  input {input_mb:.1f} MB  floors: mean(0) "
            f"{fmt_ms(t_mean)} ms, median(0) {fmt_ms(t_median)} ms, x@x.T {fmt_ms(t_gemm)} ms"
        )
        header = (
            f"{'rule':<28}{'time':>9}{'floor':>9}{'x':>7}{'naive':>9}{'x':>7}"
            f"{'byzfl':>9}{'x':>7}{'peak MB':>9}{'xin':>6}"
        )
        print(header)
        print("-" * len(header))
        for case in cases:
            if not case.feasible(n, f):
                print(f"{case.label:<28}{'(skipped: C(n, f) too large)':>40}")
                continue
            ours = lambda c=case, x=x, f=f: c.call(x, f)  # noqa: E731
            floor_fns = {
                "gemm": [lambda x=x: x @ x.T, lambda x=x: x.mean(dim=0)],
                "median": [lambda x=x: x.median(dim=0)],
                "gemm+median_theta": [
                    lambda x=x: x @ x.T,
                    lambda x=x: x.mean(dim=0),
                    lambda x=x, f=f: x[: x.shape[0] - 2 * f].median(dim=0),
                ],
                "mean": [lambda x=x: x.mean(dim=0)],
                "clone": [lambda x=x: x.clone()],
                "iters": [lambda x=x: x.mean(dim=0)] * case.iters,
                "median_theta": [lambda x=x, f=f: x[: x.shape[0] - 2 * f].median(dim=0)],
            }[case.floor]

            def floor_fn(fns=floor_fns):
                for fn in fns:
                    fn()

            theirs_fn, theirs_note = None, ""
            if byzfl is not None and case.byzfl is not None:
                try:
                    rule = case.byzfl(byzfl, f)
                    rule(x[:, :64].clone())  # fail fast on what it does not support
                    theirs_fn = lambda r=rule, x=x: r(x)  # noqa: E731
                except Exception as exc:
                    theirs_note = f"  byzfl failed: {type(exc).__name__}: {str(exc)[:60]}"
            fns = [ours, floor_fn] + ([theirs_fn] if theirs_fn else [])
            try:
                times = timeit_paired(fns, args.repeats, args.budget)
            except Exception as exc:  # ByzFL may fail on the full size only
                theirs_note = f"  byzfl failed: {type(exc).__name__}: {str(exc)[:60]}"
                times = timeit_paired(fns[:2], args.repeats, args.budget)
            t, floor = times[0], times[1]
            theirs = times[2] if len(times) > 2 else None
            naive = None
            if case.naive is not None and n * (n - 1) // 2 * d <= args.naive_cap:
                naive = timeit(lambda c=case, x=x, f=f: c.naive(x, f), 1, args.budget)
            measure = not args.no_memory and input_mb >= args.memory_min_mb
            mem = peak_memory_mb(case.label, n, d) if measure else None
            print(
                f"{case.label:<28}{fmt_ms(t):>9}{fmt_ms(floor if floor > 0 else None):>9}"
                f"{fmt_ratio(t / floor if floor > 0 else None):>7}"
                f"{fmt_ms(naive):>9}{fmt_ratio(t / naive if naive else None):>7}"
                f"{fmt_ms(theirs):>9}{fmt_ratio(t / theirs if theirs else None):>7}"
                f"{'-' if mem is None else f'{mem:.0f}':>9}"
                f"{'-' if mem is None else f'{mem / input_mb:.1f}':>6}{theirs_note}",
                flush=True,
            )
        del x
    print(f"\n# load average at end: {_load()}; uptime: {_uptime()}")
    print(
        "# Notes. geomed(default) stops on RFA's criterion (tol=1e-6, at most 100 steps): its"
        "\n# floor column counts only the median start, the steps it took are not known here."
        "\n# ByzFL's defaults differ from ours; timed with matched work where possible:"
        "\n#  Krum/MultiKrum score n-f-1 neighbours (Blanchard et al.: n-f-2); Median and MeaMed"
        "\n#  use torch.quantile (the mean of the two middle values, as ours);"
        "\n#  GeometricMedian starts from zeros, no stopping rule (T steps, nu=1e-6 here);"
        "\n#  CenteredClipping with m=0, L=5, tau=10 (ours: same, init=0; ByzFL 0.0.11 rejects any"
        "\n#  explicit m, so a fresh instance starts from zeros each call); Clipping and ARC modify"
        "\n#  their input in place, so they are timed on a copy; MDA loops over all C(n, n-f)"
        "\n#  subsets in Python."
    )


def parse_sizes(text: str) -> list[tuple[int, int]]:
    sizes = []
    for item in text.split(","):
        n, d = item.lower().split("x")
        sizes.append((int(n), int(float(d))))
    return sizes


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--_memcase":
        _memcase(argv[1], int(argv[2]), int(argv[3]), *argv[4:5])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="n in {16, 64}, d = 1e4")
    parser.add_argument(
        "--sizes",
        type=parse_sizes,
        default=None,
        help="comma-separated NxD, e.g. 16x10000,256x1000000",
    )
    parser.add_argument("--rules", default="", help="comma-separated rule labels (prefixes)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=THREADS, help="torch.set_num_threads")
    parser.add_argument(
        "--budget",
        type=float,
        default=4.0,
        help="seconds of timed repeats per case before stopping early",
    )
    parser.add_argument(
        "--naive-cap",
        type=float,
        default=2.5e9,
        help="largest pairs * d for the Python-loop reference",
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the RSS subprocesses")
    parser.add_argument(
        "--memory-min-mb",
        type=float,
        default=32.0,
        help="measure peak memory only for inputs of at least this size (smaller ones are "
        "below what ru_maxrss resolves next to the interpreter's own heap)",
    )
    parser.add_argument("--no-byzfl", action="store_true", help="do not time ByzFL")
    parser.add_argument(
        "--device", default="cpu", help="torch device of the inputs (cpu, cuda, cuda:1)"
    )
    parser.add_argument(
        "--clock",
        choices=("wall", "cpu"),
        default="wall",
        help="wall: time.perf_counter; cpu: CPU time of the calling thread (needs --threads 1: "
        "robust to other jobs on a shared machine, which only delay the thread)",
    )
    args = parser.parse_args(argv)
    if args.clock == "cpu" and (args.threads != 1 or args.device != "cpu"):
        parser.error("--clock cpu measures the calling thread: use it with --threads 1 on cpu")
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"--device {args.device}: CUDA is not available here")
    if args.sizes is None:
        args.sizes = (
            [(16, 10_000), (64, 10_000)]
            if args.quick
            else [(n, d) for n in (16, 64, 256) for d in (10_000, 1_000_000)]
        )
    run(args)


if __name__ == "__main__":
    main()
