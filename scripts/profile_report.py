"""Summarise a py-spy raw profile (`py-spy record -f raw`): where the samples are, inclusive and self.

    py-spy record -p <worker pid> -d 10 -r 200 -f raw -o worker.raw --nonblocking
    python3 scripts/profile_report.py worker.raw [more.raw ...] [--top 40] [--match otp_service]

Frames are "function (file:line)"; lines are dropped so one function is one row. Inclusive counts a frame once per
sample even when it recurses. `--match` keeps only rows whose file contains the string.
"""
from __future__ import annotations

import argparse
import re
from collections import Counter

_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^:()]+)(?::\d+)?\)$")


def _name(frame: str) -> str:
    m = _FRAME.match(frame.strip())
    if not m:
        return frame.strip()
    path = m["file"]
    for marker in ("site-packages/", "lib/python3.11/", "/work/main/"):
        if marker in path:
            path = path.split(marker, 1)[1]
    return f"{m['func']} ({path})"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("raw", nargs="+", help="one or more raw files (summed)")
    parser.add_argument("--top", type=int, default=40)
    parser.add_argument("--match", default=None)
    parser.add_argument(
        "--children", action="append", default=[], metavar="FUNC",
        help="also break down what FUNC (a function name, e.g. 'OtpService.generate') spends, by callee",
    )
    args = parser.parse_args(argv)
    children: dict[str, Counter[str]] = {name: Counter() for name in args.children}
    inclusive: Counter[str] = Counter()
    own: Counter[str] = Counter()
    total = 0
    lines = []
    for path in args.raw:
        with open(path) as handle:
            lines.extend(handle)
    if True:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            if not stack:
                continue
            n = int(count)
            frames = [_name(f) for f in stack.split(";")]
            frames = [f for f in frames if not f.startswith("process ") and not f.startswith("thread ")]
            total += n
            for name in set(frames):
                inclusive[name] += n
            if frames:
                own[frames[-1]] += n
            for wanted, table in children.items():
                at = next((i for i, f in enumerate(frames) if f.split(" (")[0] == wanted), None)
                if at is not None:
                    table[frames[at + 1] if at + 1 < len(frames) else "(self)"] += n
    print(f"{total} samples")
    for title, table in (("inclusive", inclusive), ("self", own)):
        print(f"\n-- {title} --")
        shown = 0
        for name, n in table.most_common():
            if args.match and args.match not in name:
                continue
            print(f"{100 * n / total:6.1f}%  {name}")
            shown += 1
            if shown >= args.top:
                break
    for wanted, table in children.items():
        print(f"\n-- {wanted}: {100 * sum(table.values()) / total:.1f}% --")
        for name, n in table.most_common(args.top):
            print(f"{100 * n / total:6.1f}%  {name}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
