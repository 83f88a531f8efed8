"""Two methods on the same seeds: is the difference of their means larger than the seeds' noise?

    python benchmarks/paired_seeds.py A/seeds.csv B/seeds.csv [--metric test_error] [--method-a dtp] [--method-b bp]

Each file is the ``seeds.csv`` that ``targetprop reproduce`` (or ``--report``) writes: one row per method and seed.
The two methods are paired seed by seed, over the seeds both hold, so that what a seed does to both alike (an
easy or a hard start) cancels. Printed: each seed's difference A − B,
their mean ± std, how many seeds favour each side, and two-sided p-values of the paired t-test and of the Wilcoxon
signed-rank test (scipy, which scikit-learn brings). A p-value above 0.05 says the seeds do not tell the two means
apart; it does not say they are equal.

A file holding several methods needs ``--method-a`` / ``--method-b``; one holding a single method takes it.
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

from scipy import stats


def read(path: Path, method: str | None, metric: str) -> tuple[str, dict[int, float]]:
    """``{seed: value}`` of one method of a seeds.csv, and the method's name."""
    with open(path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    methods = sorted({r["method"] for r in rows})
    if method is None:
        if len(methods) != 1:
            sys.exit(f"{path} holds the methods {', '.join(methods)}: name one with --method-a / --method-b")
        method = methods[0]
    if method not in methods:
        sys.exit(f"{path} holds no method {method!r} (it holds {', '.join(methods)})")
    if rows and metric not in rows[0]:
        sys.exit(f"{path} has no column {metric!r} (it has {', '.join(rows[0])})")
    return method, {int(r["seed"]): float(r[metric]) for r in rows if r["method"] == method and r[metric] != ""}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("a", type=Path, help="seeds.csv of method A")
    parser.add_argument("b", type=Path, help="seeds.csv of method B")
    parser.add_argument("--metric", default="test_error", help="a column of seeds.csv (default: test_error)")
    parser.add_argument("--method-a", help="A's method, where its file holds several")
    parser.add_argument("--method-b", help="B's method, where its file holds several")
    args = parser.parse_args()

    name_a, a = read(args.a, args.method_a, args.metric)
    name_b, b = read(args.b, args.method_b, args.metric)
    seeds = sorted(set(a) & set(b))
    if len(seeds) < 2:
        sys.exit(f"the two files share {len(seeds)} seed(s): at least 2 are needed")
    diff = [a[s] - b[s] for s in seeds]
    print(f"{args.metric}, A = {name_a} ({args.a}), B = {name_b} ({args.b}), seeds {seeds}")
    print("seed   A       B       A - B")
    for s, d in zip(seeds, diff, strict=True):
        print(f"{s:>4}  {a[s]:6.2f}  {b[s]:6.2f}  {d:+6.2f}")
    print(
        f"mean A {statistics.mean(a[s] for s in seeds):.3f}, mean B {statistics.mean(b[s] for s in seeds):.3f}; "
        f"A - B {statistics.mean(diff):+.3f} ± {statistics.stdev(diff):.3f} (std over {len(seeds)} seeds)"
    )
    print(f"A lower in {sum(d < 0 for d in diff)}, B lower in {sum(d > 0 for d in diff)}, equal in {diff.count(0.0)}")
    if not any(diff):
        print("the two are equal on every seed: nothing to test")
        return
    t = stats.ttest_rel([a[s] for s in seeds], [b[s] for s in seeds])
    w = stats.wilcoxon(diff)
    print(f"paired t-test: t = {t.statistic:.2f}, p = {t.pvalue:.3f}; Wilcoxon signed-rank: p = {w.pvalue:.3f}")


if __name__ == "__main__":
    main()
