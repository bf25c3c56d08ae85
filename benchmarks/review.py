"""``cnnsee report`` on the logs of a long run, against TensorBoard's ``EventAccumulator`` loading the same images.

The log: 2 runs x 120 steps x 8 CNNSee image tags (``--size full``, about 420 MB of event files) or 2 x 12 x 8
(``--size small``), each image a distinct random-noise PNG (stored, not compressed: noise does not compress, and
storing keeps the generation quick) of about 220 KB, plus CNNSee's scalars (faithfulness with its random reference,
drift, overhead) at every step. The event files are written record by record with TensorBoard's ``Event`` protocol
buffer and TFRecord framing (what ``torch.utils.tensorboard.SummaryWriter`` writes), and ``EventAccumulator`` reads
them back: the image count it finds is checked against what was written.

Each measurement is a fresh Python process (``python -c``) that reports its own wall time for the work (imports and
interpreter start excluded: both sides pay them) and its peak resident memory (``VmHWM`` of ``/proc/self/status``;
``ru_maxrss`` would also count this script's own memory at the fork, torch included):

- report: ``lightning_cnnsee.cli.main(["report", LOGDIR, "-o", FILE, "--no-progress"])``, i.e. ``cnnsee report``;
- TensorBoard: ``EventAccumulator(run, size_guidance={"images": 0})`` (0: keep every image) and ``Reload()`` for
  each run, all kept (every image in memory), then the number of images they hold;
- imports only: what the report's process holds before it reads anything (information).

Report and TensorBoard are timed in turns (A B, B A, ...), per-round ratios, median and spread (``_common``).
Targets: report time / EventAccumulator time <= 0.15; report peak memory <= 300 MB. The log and the report are
written under ``--workdir`` (default: a new folder in the system's temporary folder) and removed at the end unless
``--keep``.

    python benchmarks/review.py                 # ~4 min: writes ~420 MB of logs and a ~570 MB report
    python benchmarks/review.py --size small    # ~30 s
"""

from __future__ import annotations

import argparse
import json
import shutil
import struct
import subprocess
import sys
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from _common import machine_line, median, paired_ratio, print_summary, ratio_text, table, verdict

SIZES = {"full": (2, 120, 8), "small": (2, 12, 8)}  # runs, steps, image tags
TAGS = (
    "cnnsee/gradcam/features.0",
    "cnnsee/gradcam/features.8",
    "cnnsee/gradcam/features.15",
    "cnnsee/filters/features.8",
    "cnnsee/filters/features.15",
    "cnnsee/classes",
    "cnnsee/activations/features.0",
    "cnnsee/activations/features.8",
)
TIME_TARGET, MEMORY_TARGET_MB = 0.15, 300.0

PEAK = """
import json, resource, sys, time
def peak_mb():
    # VmHWM: this process's own peak. ru_maxrss would also count the parent's memory at fork (Linux keeps the
    # larger of the two across exec), and the parent holds torch.
    with open("/proc/self/status") as handle:
        for line in handle:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
"""

REPORT_CHILD = (
    PEAK
    + """
started = time.perf_counter()
from lightning_cnnsee import cli
imported = time.perf_counter()
import contextlib, io
out = io.StringIO()
with contextlib.redirect_stdout(out):
    status = cli.main(["report", sys.argv[1], "-o", sys.argv[2], "--no-progress"])
done = time.perf_counter()
print(json.dumps({"status": status, "seconds": done - imported, "import_seconds": imported - started,
                  "peak_mb": peak_mb(), "said": out.getvalue()}))
"""
)

TENSORBOARD_CHILD = (
    PEAK
    + """
started = time.perf_counter()
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
imported = time.perf_counter()
accumulators = [EventAccumulator(folder, size_guidance={"images": 0}) for folder in sys.argv[1:]]
for accumulator in accumulators:  # all kept: every image in memory, as a report made from them would need
    accumulator.Reload()
images = sum(len(a.Images(tag)) for a in accumulators for tag in a.Tags()["images"])
done = time.perf_counter()
print(json.dumps({"images": images, "seconds": done - imported, "import_seconds": imported - started,
                  "peak_mb": peak_mb()}))
"""
)

IMPORTS_CHILD = (
    PEAK
    + """
from lightning_cnnsee import cli
from lightning_cnnsee.review import report, events
from tensorboard.compat.proto import event_pb2
print(json.dumps({"peak_mb": peak_mb()}))
"""
)


def noise_png(rng: np.random.Generator, width: int, height: int) -> bytes:
    """A valid RGB PNG of random pixels, zlib level 0 (stored): ``width * height * 3`` bytes and a little more."""
    rows = np.empty((height, width * 3 + 1), dtype=np.uint8)
    rows[:, 0] = 0  # filter type "none" on every row
    rows[:, 1:] = rng.integers(0, 256, size=(height, width * 3), dtype=np.uint8)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows.tobytes(), 0))
        + chunk(b"IEND", b"")
    )


def write_logs(root: Path, runs: int, steps: int, tags: int, width: int, height: int) -> tuple[list[Path], int, int]:
    """The event files of ``runs`` runs; returns their folders, the images written and the bytes written."""
    from tensorboard.compat.proto.event_pb2 import Event
    from tensorboard.compat.proto.summary_pb2 import Summary

    from lightning_cnnsee.review.records import write_record

    rng = np.random.default_rng(0)
    folders, images, size = [], 0, 0
    for run in range(runs):
        folder = root / "logs" / f"version_{run}"
        folder.mkdir(parents=True)
        path = folder / f"events.out.tfevents.{1700000000 + run}.bench.{run}.0"
        with path.open("wb") as handle:
            write_record(handle, Event(wall_time=time.time(), file_version="brain.Event:2").SerializeToString())
            for step in range(steps):
                for tag in TAGS[:tags]:
                    image = Summary.Image(
                        height=height, width=width, colorspace=3, encoded_image_string=noise_png(rng, width, height)
                    )
                    event = Event(
                        wall_time=time.time(), step=step, summary=Summary(value=[Summary.Value(tag=tag, image=image)])
                    )
                    write_record(handle, event.SerializeToString())
                    images += 1
                progress = step / max(1, steps - 1)
                scalars = {
                    "cnnsee/faithfulness/features.8/deletion": 0.6 - 0.3 * progress,
                    "cnnsee/faithfulness/features.8/deletion_random": 0.58 + 0.01 * run,
                    "cnnsee/drift/features.8/vs_start": progress**0.5,
                    "cnnsee/drift/features.8/vs_previous": 0.2 * (1 - progress),
                    "cnnsee/overhead": 0.04 + 0.005 * np.sin(step),
                }
                values = [Summary.Value(tag=tag, simple_value=value) for tag, value in scalars.items()]
                write_record(
                    handle, Event(wall_time=time.time(), step=step, summary=Summary(value=values)).SerializeToString()
                )
        size += path.stat().st_size
        folders.append(folder)
    return folders, images, size


def child(code: str, *args: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"child failed ({done.returncode}): {done.stderr[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--size", choices=sorted(SIZES), default="full", help="full: 2 runs x 120 steps x 8 tags; small: 2 x 12 x 8"
    )
    parser.add_argument("--repeats", type=int, default=None, help="timed rounds per case (default: 2 full, 3 small)")
    parser.add_argument(
        "--image",
        default="300x245",
        metavar="WxH",
        help="size of each noise image, RGB (default %(default)s: about 220 KB as a stored PNG)",
    )
    parser.add_argument("--workdir", default=None, help="where to write the log and the report (default: a temp dir)")
    parser.add_argument("--keep", action="store_true", help="keep the log and the report")
    args = parser.parse_args()
    started = time.perf_counter()
    runs, steps, tags = SIZES[args.size]
    width, height = (int(value) for value in args.image.lower().split("x"))
    repeats = args.repeats or (2 if args.size == "full" else 3)
    work = Path(tempfile.mkdtemp(prefix="cnnsee-review-bench-", dir=args.workdir))
    needed = runs * steps * tags * width * height * 3 * 2.5  # the log, and the report in base64
    free = shutil.disk_usage(work).free
    if free < needed + 1e9:
        shutil.rmtree(work)
        sys.exit(f"{work.parent} has {free / 1e9:.1f} GB free; this size needs about {needed / 1e9:.1f} GB plus 1.")
    print(machine_line())
    try:
        clock = time.perf_counter()
        folders, written, size = write_logs(work, runs, steps, tags, width, height)
        print(
            f"wrote {written} images, {size / 1e6:.0f} MB of event files in {time.perf_counter() - clock:.0f} s "
            f"({runs} runs x {steps} steps x {tags} tags, {size / written / 1e3:.0f} KB per record)"
        )
        logdir, page = work / "logs", work / "report.html"
        imports = child(IMPORTS_CHILD)
        results: dict[str, list[dict]] = {"report": [], "tensorboard": []}
        cases = {
            "report": lambda: child(REPORT_CHILD, str(logdir), str(page)),
            "tensorboard": lambda: child(TENSORBOARD_CHILD, *map(str, folders)),
        }
        for round_index in range(repeats):
            for name in list(cases) if round_index % 2 == 0 else list(cases)[::-1]:
                result = cases[name]()
                results[name].append(result)
                print(f"round {round_index + 1} {name}: {result['seconds']:.2f} s, peak {result['peak_mb']:.0f} MB")
        for result in results["report"]:
            assert result["status"] == 0 and f"{written} images" in result["said"], result["said"]
        for result in results["tensorboard"]:
            assert result["images"] == written, (result["images"], written)
        page_mb = page.stat().st_size / 1e6
        ours = [result["seconds"] for result in results["report"]]
        theirs = [result["seconds"] for result in results["tensorboard"]]
        ratio = paired_ratio(ours, theirs)
        peak = max(result["peak_mb"] for result in results["report"])
        rows = [
            [
                "cnnsee report",
                f"{median(ours):.2f} [{min(ours):.2f}-{max(ours):.2f}]",
                f"{max(r['peak_mb'] for r in results['report']):.0f}",
                f"writes a {page_mb:.0f} MB page",
            ],
            [
                "EventAccumulator (images=0)",
                f"{median(theirs):.2f} [{min(theirs):.2f}-{max(theirs):.2f}]",
                f"{max(r['peak_mb'] for r in results['tensorboard']):.0f}",
                "loads the images",
            ],
            ["imports only (report's process)", "", f"{imports['peak_mb']:.0f}", "before reading anything"],
        ]
        print(table(["case", "seconds, median [min-max]", "peak RSS MB", "note"], rows))
        print_summary(
            [
                f"log: {written} images, {size / 1e6:.0f} MB of event files; report {page_mb:.0f} MB",
                f"time report / EventAccumulator: {ratio_text(ratio)} ({repeats} rounds): "
                f"{verdict(ratio[0], TIME_TARGET)}",
                f"report peak memory: {peak:.0f} MB: {verdict(peak, MEMORY_TARGET_MB)}",
            ],
            started,
        )
    finally:
        if args.keep:
            print(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
