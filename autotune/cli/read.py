"""The commands that read a storage (``export``, ``studies``, ``report``, ``compare``, ``dashboard``) and the
compile cache's ``cache``. None of them needs a toolchain or the tuner."""

from __future__ import annotations

import argparse
import time

from autotune.compile_cache import CompileCache, default_cache_dir
from autotune.results.attrs import study_overview
from autotune.results.export import winner_preset, write_preset
from autotune.results.verdict import short_verdict
from autotune.storage import default_storage_url, load_study, open_existing_storage


def cmd_export(args: argparse.Namespace) -> int:
    study = load_study(_reading(args.storage), args.study)
    preset = winner_preset(study)
    text = write_preset(preset, fmt=args.format, out=args.out)
    if args.out is None:
        print(text, end="")
    else:
        print(f"wrote {args.format} preset for {preset['model']} {preset['scenario']} ({preset['value']:,.2f} "
              f"{preset['unit']}, trial #{preset['trial']}) to {args.out}")
    return 0


def cmd_studies(args: argparse.Namespace) -> int:
    rows = study_overview(open_existing_storage(_reading(args.storage)))
    if not rows:
        print("no studies in this storage")
        return 0
    print(f"{'study':<36} {'feasible':>8} {'infeasible':>10} {'failed':>6} {'best':>12} {'baseline':>12}  "
          f"validation (gain over the baseline [interval])")
    for r in rows:
        print(f"{r['study']:<36} {r['feasible']:>8} {r['infeasible']:>10} {r['failed']:>6} "
              f"{_fmt(r['best']):>12} {_fmt(r['baseline']):>12}  {short_verdict(r['validation'])}")
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from autotune.results.report import default_report_dir, write_report

    study = load_study(_reading(args.storage), args.study)
    page = write_report(study, args.out or default_report_dir(args.study))
    print(f"wrote {page} and {page.parent / 'trials.csv'} ({len(study.trials)} trials)")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from autotune.results.compare import compare, format_table, write_html

    entries, rows = compare(args.targets, [_reading(s) for s in args.storage or [None]])
    print(format_table(entries, rows), end="")
    if args.out is not None:
        print(f"wrote {write_html(entries, rows, args.out)}")
    return 0


def cmd_dashboard(args: argparse.Namespace) -> int:
    from autotune.results.dashboard import serve_dashboard

    try:
        serve_dashboard(_reading(args.storage), args.study, args.port, say=lambda line: print(line, flush=True))
    except KeyboardInterrupt:
        print("dashboard stopped")
    return 0


def cmd_cache(args: argparse.Namespace) -> int:
    cache = CompileCache(root=args.cache_dir or default_cache_dir())
    if args.action == "prune":
        result = cache.prune(older_than_s=args.older_than)
        print(f"pruned {result.entries} entries, {result.partial} unfinished compiles and {result.failed_logs} "
              f"failure logs from {cache.root}: {result.freed_bytes / 2**20:,.1f} MB freed")
    info = cache.info()
    when = lambda t: "-" if t is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(t))  # noqa: E731
    print(f"compile cache {info.root}: {info.entries} entries, {info.entry_bytes / 2**20:,.1f} MB; last used "
          f"{when(info.oldest_use)} .. {when(info.newest_use)}; {info.partial} unfinished compiles "
          f"({info.partial_bytes / 2**20:,.1f} MB), {info.failed_logs} failure logs")
    return 0


def _reading(url: str | None) -> str:
    """The storage URL to read: the given one, else the default (reading never creates it)."""
    return url or default_storage_url(create=False)


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:,.2f}"
