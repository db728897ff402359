"""Tables that fit the console they are printed on (a terminal, or an 80-column CI log: rich takes the
width from COLUMNS when the output is not a terminal). A FitTable's key columns (the row's name, its
verdict, its main number) are always shown whole; the others are shown, most important first, while
the width allows, wrapped at spaces rather than cut, and those left out are named under the table.
The report files (summary.md, results.json) are written in full elsewhere: this is terminal only.

Loaded by the commands that print tables when they run, not at `--help` (rich.markdown is not light).
"""
from __future__ import annotations

from dataclasses import dataclass

from rich import box
from rich.cells import cell_len
from rich.console import Console, ConsoleOptions, RenderResult
from rich.markdown import Markdown, TableElement
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text


@dataclass(frozen=True)
class Col:
    """A FitTable column. A key column is always shown and its cells are never wrapped (but for long
    ones, at spaces: see WHOLE) or cut; the others are shown by `priority`, highest first, while they
    fit. Headers may wrap at spaces."""
    header: str | Text
    key: bool = False
    priority: int = 0
    justify: str = "left"


def _text(cell) -> Text:
    return cell if isinstance(cell, Text) else Text.from_markup(str(cell))


# A key cell up to this wide is never wrapped (names, verdicts, numbers); a longer one, a sentence
# (a target, a sweep's verdict), wraps at its spaces. No cell is ever cut within a word.
WHOLE = 24


def _sizes(cell) -> tuple[int, int]:
    """(longest word, longest line) of a cell, in terminal cells."""
    lines = _text(cell).plain.splitlines() or [""]
    return (max((cell_len(w) for line in lines for w in line.split()), default=0),
            max(cell_len(line) for line in lines))


def _share(spare: int, needs: dict[int, int]) -> dict[int, int]:
    """`spare` cells shared out among columns that need more: each need that an equal share covers in
    full, the others an equal share of the rest; the first columns of `needs` get what does not divide."""
    given = dict.fromkeys(needs, 0)
    pending = [j for j, need in needs.items() if need > 0]
    while pending and spare > 0:
        share = spare // len(pending)
        covered = [j for j in pending if needs[j] <= share]
        if not covered:
            for rank, j in enumerate(pending):
                given[j] = share + (rank < spare - share * len(pending))
            break
        for j in covered:
            given[j] = needs[j]
            spare -= needs[j]
        pending = [j for j in pending if j not in covered]
    return given


class FitTable:
    """A rich Table (title, caption, box... as Table's keyword arguments) that keeps the columns the
    width it is rendered at allows: all of them on a wide terminal, the key ones and the most important
    others on a narrow one."""

    def __init__(self, *columns: Col, **table_options) -> None:
        self.columns = columns
        self.rows: list[tuple] = []
        self.options = table_options

    def add_row(self, *cells) -> None:
        self.rows.append(cells + ("",) * (len(self.columns) - len(cells)))

    def _frame(self, console: Console, n: int) -> int:
        """What borders and padding add to the cells of n columns."""
        probe = Table(**{k: v for k, v in self.options.items() if k not in ("title", "caption")})
        for _ in range(n):
            probe.add_column(width=1)
        return Measurement.get(console, console.options.update_width(10_000), probe).minimum - n

    def table(self, console: Console, width: int) -> Table:
        """The table at `width`: which columns, and how wide each one is."""
        least, head, unwrapped, natural = [], [], [], []  # the least width; header, cells, both unwrapped
        for i, col in enumerate(self.columns):
            head_word, head_line = _sizes(col.header)
            cells = [_sizes(row[i]) for row in self.rows]
            longest_line = max((line for _, line in cells), default=0)
            least.append(max([head_word, *(line if col.key and line <= WHOLE else word for word, line in cells)]))
            head.append(max(head_line, least[-1]))
            unwrapped.append(max(head_word, longest_line))
            natural.append(max(head_line, longest_line))
        order = sorted(range(len(self.columns)),
                       key=lambda i: (not self.columns[i].key, -self.columns[i].priority, i))
        kept: list[int] = []
        for i in order:
            trial = sorted([*kept, i])
            if self.columns[i].key or sum(least[j] for j in trial) + self._frame(console, len(trial)) <= width:
                kept = trial
        spare = width - self._frame(console, len(kept)) - sum(least[j] for j in kept)
        widths = {j: least[j] for j in kept}
        # What is left unwraps the headers first where that leaves the cells half of it or more (a wrapped
        # header costs lines once, a wrapped cell on every row), then the cells: each column what it needs
        # where an equal share covers that, the others equal shares.
        headers_first = 2 * sum(head[j] - least[j] for j in kept) <= spare
        for target in (head, unwrapped, natural) if headers_first else (unwrapped, natural):
            for j, extra in _share(max(spare, 0), {j: target[j] - widths[j] for j in order if j in widths}).items():
                widths[j] += extra
                spare -= extra
        options = dict(self.options)
        left_out = [_text(c.header).plain for j, c in enumerate(self.columns) if j not in widths]
        if left_out:
            every = sum(least) + self._frame(console, len(self.columns))
            note = f"Left out at {width} columns: {', '.join(left_out)} (COLUMNS={every} or more shows them)."
            options["caption"] = f"{options['caption']}\n{note}" if options.get("caption") else note
        table = Table(**options)
        fits = spare >= 0  # else even the key columns do not fit: rich wraps them as it can
        for j in kept:
            col = self.columns[j]
            table.add_column(col.header, justify=col.justify, width=widths[j] if fits else None, overflow="fold")
        for row in self.rows:
            table.add_row(*(row[j] for j in kept))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(console, options.max_width)

    def __rich_measure__(self, console: Console, options: ConsoleOptions) -> Measurement:
        return Measurement.get(console, options, self.table(console, options.max_width))


# A report's Markdown tables: the columns that name a row are keys, then the main numbers come first,
# then the others from left to right. The first column always names the row.
NAMING = {"model", "protocol", "mode", "level", "batch", "backend", "server", "peer", "concurrency", "setup",
          "target", "stage", "verdict", "met", "config", "variant"}
MAIN = ("p50 ms", "infer/s", "p99 ms", "median (us)", "vs eager", "errors", "measured", "goal", "req/s (median)",
        "throughput", "p50", "p99", "p50 us", "c8 / c1", "ratio")


def markdown_columns(headers: list[Text]) -> list[Col]:
    columns = []
    for i, header in enumerate(headers):
        name = header.plain.strip().lower()
        priority = len(MAIN) - MAIN.index(name) if name in MAIN else -i
        columns.append(Col(header, key=i == 0 or name in NAMING, priority=priority))
    return columns


class _FitTableElement(TableElement):
    """rich's Markdown table, as a FitTable with the look rich gives Markdown tables."""

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        headers = []
        for cell in self.header.row.cells if self.header is not None and self.header.row is not None else []:
            heading = cell.content.copy()
            heading.stylize("markdown.table.header")
            headers.append(heading)
        table = FitTable(*markdown_columns(headers), box=box.SIMPLE, pad_edge=False, style="markdown.table.border",
                         show_edge=False, collapse_padding=True)
        for row in self.body.rows if self.body is not None else []:
            table.add_row(*(cell.content for cell in row.cells))
        yield from table.__rich_console__(console, options)


class FitMarkdown(Markdown):
    """rich's Markdown, with tables that fit the width (the report file itself is unchanged)."""
    elements = {**Markdown.elements, "table_open": _FitTableElement}
