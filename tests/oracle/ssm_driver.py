"""Runs many sev-snp-measure command lines in one Python process.

Used by tests/tests/measure_oracle.rs and bench/src/bin/measure.rs as the oracle: importing
sev-snp-measure once and calling its command-line entry point for each job keeps hundreds
of comparisons within seconds.

  python ssm_driver.py run     < jobs.json   # jobs: [[arg, ...], ...]
  python ssm_driver.py bench N < argv.json   # one argv; N timed in-process runs

`run` prints a JSON list of {"code": int, "out": str, "err": str}, one per job, where
`code` is the exit status sev-snp-measure's CLI would have given (an uncaught exception
counts as 1, as an uncaught exception ends the real program with status 1).
`bench` prints {"seconds": [t1, ...], "out": str} with per-call wall times.
"""

import contextlib
import io
import json
import sys
import time
import traceback

from sevsnpmeasure import cli


def run_one(argv):
    out, err = io.StringIO(), io.StringIO()
    code = 0
    saved = sys.argv
    sys.argv = ["sev-snp-measure"] + list(argv)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = cli.main()
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
            except Exception:  # noqa: BLE001 - the real CLI would die with a traceback
                traceback.print_exc(file=err)
                code = 1
    finally:
        sys.argv = saved
    return {"code": int(code or 0), "out": out.getvalue(), "err": err.getvalue()}


def main():
    mode = sys.argv[1]
    if mode == "run":
        jobs = json.load(sys.stdin)
        json.dump([run_one(j) for j in jobs], sys.stdout)
    elif mode == "bench":
        n = int(sys.argv[2])
        argv = json.load(sys.stdin)
        times, result = [], None
        for _ in range(n):
            t0 = time.perf_counter()
            result = run_one(argv)
            times.append(time.perf_counter() - t0)
        json.dump({"seconds": times, "out": result["out"], "code": result["code"]}, sys.stdout)
    else:
        sys.exit("usage: ssm_driver.py run|bench N")


if __name__ == "__main__":
    main()
