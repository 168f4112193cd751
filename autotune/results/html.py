"""What the report's and the comparison's pages share: the style sheet and cell formatting."""

from __future__ import annotations

import html
import math
import shlex
from typing import Any

import numpy as np

from autotune.results.attrs import MISSING
from autotune.results.frame import given

CSS = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;color:#1f2328;margin:0;background:#f6f8fa}
main{max-width:1200px;margin:0 auto;padding:20px 28px 60px;background:#fff}
h1{font-size:24px;margin:0 0 4px}h2{font-size:19px;border-bottom:1px solid #d0d7de;padding-bottom:4px;margin-top:32px}
h3{font-size:15px;margin:22px 0 6px}.meta{color:#57606a;margin:0 0 12px}nav a{margin-right:14px}
.banner{padding:10px 14px;border-radius:6px;margin:10px 0;border:1px solid}
.warn{background:#fff8c5;border-color:#d4a72c}.bad{background:#ffebe9;border-color:#ff8182}
.info{background:#ddf4ff;border-color:#54aeff}
.headline{font-size:18px;margin:12px 0;padding:12px 16px;background:#dafbe1;border:1px solid #4ac26b;border-radius:6px}
table{border-collapse:collapse;margin:6px 0}td,th{border:1px solid #d0d7de;padding:3px 8px;text-align:left;
vertical-align:top}th{background:#f6f8fa}td.num{text-align:right;font-variant-numeric:tabular-nums}
table.kv th{width:210px;font-weight:600}
pre{background:#f6f8fa;border:1px solid #d0d7de;border-radius:6px;padding:8px;white-space:pre-wrap;
word-break:break-all;font-size:12px;margin:4px 0}
code{font-size:12px}.missing{color:#8c959f;font-style:italic}
tr.winner td{background:#dafbe1}tr.baseline td{background:#fff1e5}tr.infeasible td{color:#57606a}
tr.running td,tr.waiting td{background:#ddf4ff}tr.failed td,tr.interrupted td{background:#ffebe9}
.trials td,.trials th{font-size:12px;padding:2px 5px}.trials td.reason{min-width:220px}
.scroll{overflow-x:auto;max-width:100%}
figure{margin:10px 0 26px}figure img{max-width:100%;height:auto;border:1px solid #d0d7de}
figcaption{color:#57606a;font-size:13px;margin-top:4px}.note{color:#57606a;font-style:italic}
.legend span{display:inline-block;padding:0 6px;margin-right:6px;border:1px solid #d0d7de}
"""


def esc(value: Any) -> str:
    return html.escape(str(value), quote=True)


def missing(text: str = MISSING) -> str:
    return f'<span class="missing">{esc(text)}</span>'


def num(value: Any, digits: int = 2) -> str:
    if not given(value) or value == MISSING or (isinstance(value, float) and not math.isfinite(value)):
        return "—"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{value:,}"
    if isinstance(value, (float, np.floating)):
        return f"{value:,.{digits}f}"
    return str(value)


def cell(value: Any) -> str:
    return esc(num(value))


def kv(key: str, label: str, value_html: str) -> str:
    return f'<tr><th>{esc(label)}</th><td data-key="{esc(key)}">{value_html}</td></tr>'


def attr(value: Any) -> str:
    return missing() if value == MISSING else (missing("none") if value is None else esc(value))


def seconds(value: float | None) -> str:
    if value is None:
        return missing()
    return f"{value:,.1f} s" if value < 120 else f"{value:,.1f} s ({value / 60:,.1f} min)"


def command(argv: Any) -> str:
    if not argv:
        return missing()
    return f"<pre>{esc(shlex.join(map(str, argv)) if isinstance(argv, list) else argv)}</pre>"

