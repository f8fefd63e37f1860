"""Polars frames and report blocks as Markdown and as HTML (every value escaped).

A report is a list of blocks: ("h", level, text), ("p", text), ("table", frame),
("pre", text), ("figure", Drawn). `markdown` and `html` render the same blocks,
so the two files always say the same thing.
"""
from __future__ import annotations

import base64
import html
import math

import polars as pl

CSS = """body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;
color:#222;line-height:1.45}table{border-collapse:collapse;font-size:12px;margin:.5em 0 1.2em;
max-width:100%}th,td{border:1px solid #ccc;padding:2px 5px;text-align:left;
overflow-wrap:anywhere;max-width:16em}th{background:#f2f2f2}
td.n{text-align:right;font-variant-numeric:tabular-nums}.wide{overflow-x:auto}
pre{background:#f7f7f7;padding:.8em;
overflow:auto;font-size:12px;max-height:28em}figure{margin:1.2em 0}img{max-width:100%;
border:1px solid #eee}figcaption{font-size:13px;color:#555}.note{color:#a33}
.lead{font-size:1.1em;background:#eef5ff;padding:.7em 1em;border-left:4px solid #48c}"""


def cell(v) -> str:
    """A value as short text: floats to 4 significant digits, lists shortened, None empty."""
    if v is None:
        return ""
    if isinstance(v, bool):
        return "yes" if v else "no"
    if isinstance(v, float):
        return "nan" if math.isnan(v) else f"{v:.4g}"
    if isinstance(v, list):
        inner = ", ".join(cell(x) for x in v[:6])
        return f"[{inner}{', ...' if len(v) > 6 else ''}]"
    return str(v)


def _rows(frame: pl.DataFrame, limit: int) -> list[list[str]]:
    return [[cell(v) for v in row] for row in frame.head(limit).iter_rows()]


def _td(v, links: dict[str, str] | None = None) -> str:
    numeric = isinstance(v, (int, float)) and not isinstance(v, bool)
    attr = ' class="n"' if numeric else ""
    text = html.escape(cell(v))
    if links and isinstance(v, str) and v in links:
        text = f'<a href="{html.escape(links[v])}">{text}</a>'
    return f"<td{attr}>{text}</td>"


def table_md(frame: pl.DataFrame, limit: int = 200) -> str:
    if frame.is_empty():
        return "_(no rows)_"
    esc = lambda s: s.replace("|", "\\|")                                 # noqa: E731
    lines = ["| " + " | ".join(esc(c) for c in frame.columns) + " |",
             "|" + "---|" * frame.width]
    lines += ["| " + " | ".join(esc(c) for c in r) + " |" for r in _rows(frame, limit)]
    if frame.height > limit:
        lines.append(f"\n_({frame.height - limit} more rows in the Parquet file)_")
    return "\n".join(lines)


def table_html(frame: pl.DataFrame, limit: int = 200, links: dict[str, str] | None = None) -> str:
    if frame.is_empty():
        return "<p><em>(no rows)</em></p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in frame.columns)
    body = "".join("<tr>" + "".join(_td(v, links) for v in row) + "</tr>"
                   for row in frame.head(limit).iter_rows())
    more = (f"<p><em>({frame.height - limit} more rows in the Parquet file)</em></p>"
            if frame.height > limit else "")
    return (f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody>'
            f"</table></div>{more}")


def markdown(blocks: list[tuple], figure_dir: str) -> str:
    out = []
    for kind, *args in blocks:
        if kind == "h":
            out.append("#" * args[0] + " " + args[1])
        elif kind in ("p", "lead"):
            out.append(args[0])
        elif kind == "table":
            out.append(table_md(args[0]))
        elif kind == "pre":
            out.append("```\n" + args[0] + "\n```")
        elif kind == "figure":
            d = args[0]
            out.append(f"![{d.caption}]({figure_dir}/{d.name}.png)\n\n*{d.caption}*"
                       if d.png else f"*{d.caption}*: skipped, {d.note}.")
    return "\n\n".join(out) + "\n"


def _figure_html(d) -> str:
    cap = html.escape(d.caption)
    if not d.png:
        return f'<p class="note">{cap}: skipped, {html.escape(d.note or "")}.</p>'
    data = base64.b64encode(d.png).decode()
    return (f'<figure id="{html.escape(d.name)}"><img alt="{cap}" '
            f'src="data:image/png;base64,{data}"><figcaption>{cap}</figcaption></figure>')


def to_html(blocks: list[tuple], title: str, links: dict[str, str] | None = None) -> str:
    """The blocks as one self-contained page; cells equal to a key of `links` (trial ids)
    link to its value (the per-trial pages)."""
    out = []
    for kind, *args in blocks:
        if kind == "h":
            out.append(f"<h{args[0]}>{html.escape(args[1])}</h{args[0]}>")
        elif kind == "p":
            out.append(f"<p>{html.escape(args[0])}</p>")
        elif kind == "lead":
            out.append(f'<p class="lead">{html.escape(args[0])}</p>')
        elif kind == "table":
            out.append(table_html(args[0], links=links))
        elif kind == "pre":
            out.append(f"<pre>{html.escape(args[0])}</pre>")
        elif kind == "figure":
            out.append(_figure_html(args[0]))
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head><body>\n"
            + "\n".join(out) + "\n</body></html>\n")
