"""One self-contained HTML page per run or comparison: its configuration, a metrics table and the figures.

The figures are embedded as base64 PNG and the style is inline, so the page is a single file that opens anywhere,
offline, and can be mailed or attached as it is; it loads nothing from the network and runs no script.
"""

from __future__ import annotations

import base64
import html
import numbers
from pathlib import Path

from aekit.atomic import atomic_write
from aekit.errors import RunError
from aekit.evaluation.metrics import lookup

REPORT = "report.html"

_STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; margin: 2rem auto; max-width: 70rem;
       padding: 0 1rem; color: #1b1b1b; background: #fff; line-height: 1.4; }
h1 { font-size: 1.5rem; } h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #ddd; }
table { border-collapse: collapse; font-size: 0.9rem; margin: 0.5rem 0; }
th, td { border: 1px solid #ccc; padding: 0.2rem 0.6rem; text-align: left; vertical-align: top; }
th { background: #f3f3f3; } td.number { text-align: right; font-variant-numeric: tabular-nums; }
.scroll { overflow-x: auto; }
figure { margin: 1.5rem 0; } figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.85rem; color: #555; }
"""


def write_report(path: str | Path, title: str, config: dict, metrics: list[dict], figures: list[str | Path]) -> Path:
    """Write the page to ``path`` (atomically) and return the path.

    ``config`` is shown as a table (nested dicts as nested tables), ``metrics`` as one table with a row per dict
    (columns in order of first appearance, a dash where a row has no value; a single dict is shown as a column of
    name-value lines), and each PNG of ``figures`` inline, in order, captioned by its file name. A registered metric
    (:mod:`aekit.evaluation.metrics`) is written in its format and described (beside it, or in its header's
    tooltip); other numbers to 4 significant digits.
    """
    path = Path(path)
    atomic_write(path, render_report(title, config, metrics, figures).encode())
    return path


def render_report(title: str, config: dict, metrics: list[dict], figures: list[str | Path]) -> str:
    """The page of :func:`write_report` as a string."""
    sections = [f"<h1>{_text(title)}</h1>"]
    if metrics:
        sections.append(f'<h2>Metrics</h2>\n<div class="scroll">{_metrics_table(metrics)}</div>')
    if figures:
        sections.append("<h2>Figures</h2>\n" + "\n".join(_figure(Path(figure)) for figure in figures))
    if config:
        sections.append(f'<h2>Configuration</h2>\n<div class="scroll">{_config_table(config)}</div>')
    # The empty data: icon keeps the browser from asking the network (or the disk) for a favicon.
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f'<link rel="icon" href="data:,">\n<title>{_text(title)}</title>\n<style>{_STYLE}</style>\n'
        "</head>\n<body>\n" + "\n".join(sections) + "\n</body>\n</html>\n"
    )


def _metrics_table(rows: list[dict]) -> str:
    if len(rows) == 1:  # one run: a name per line reads better than one wide row
        return (
            "<table>\n"
            + "\n".join(
                f"<tr><th>{_text(key)}</th>{_cell(value, key)}<td>{_text(_meaning(key))}</td></tr>"
                for key, value in rows[0].items()
            )
            + "\n</table>"
        )
    columns = list(dict.fromkeys(key for row in rows for key in row))
    head = "".join(f'<th title="{_text(_meaning(column))}">{_text(column)}</th>' for column in columns)
    body = "".join("<tr>" + "".join(_cell(row.get(column), column) for column in columns) + "</tr>\n" for row in rows)
    return f"<table>\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body}</tbody>\n</table>"


def _config_table(config: dict) -> str:
    rows = []
    for key, value in config.items():
        shown = _config_table(value) if isinstance(value, dict) and value else _text(_plain(value))
        rows.append(f"<tr><th>{_text(key)}</th><td>{shown}</td></tr>")
    return "<table>\n" + "\n".join(rows) + "\n</table>"


def _meaning(key: str) -> str:
    """What the metric ``key`` is (empty for a column that is no metric, such as the model)."""
    metric = lookup(key)
    return "" if metric is None else metric.describe(key)


def _cell(value, key: str = "") -> str:
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return f"<td>{'-' if value is None else _text(value)}</td>"
    if isinstance(value, numbers.Real):
        metric = lookup(key)
        fmt = metric.fmt if metric is not None else "d" if isinstance(value, numbers.Integral) else ".4g"
        return f'<td class="number">{format(value, fmt)}</td>'
    return f"<td>{_text(_plain(value))}</td>"


def _plain(value) -> str:
    if isinstance(value, (list, tuple)):
        return ", ".join(map(str, value))
    return "-" if value is None else str(value)


def _figure(path: Path) -> str:
    try:
        data = base64.b64encode(path.read_bytes()).decode("ascii")
    except OSError:
        raise RunError(f"the figure {path} is missing or unreadable; write the figures again") from None
    caption = _text(path.stem.replace("_", " "))
    return (
        f'<figure>\n<img src="data:image/png;base64,{data}" alt="{caption}">\n'
        f"<figcaption>{caption} ({_text(path.name)})</figcaption>\n</figure>"
    )


def _text(value) -> str:
    return html.escape(str(value))
