"""One Markdown-table writer for every report agekit prints or saves (eval, bench, benchmarks)."""
from __future__ import annotations


def table_row(cells) -> str:
    # a '|' or a newline inside a value would break the row
    return "| " + " | ".join(str(c).replace("|", "\\|").replace("\n", " ") for c in cells) + " |"


def table(header, rows) -> str:
    """A GitHub-flavoured Markdown table: `header` names the columns, each row gives one cell per column
    (any value; str() is applied). A row of the wrong length is an error, not a ragged table."""
    header = list(header)
    lines = [table_row(header), "|" + "---|" * len(header)]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"row has {len(row)} cells, the table has {len(header)} columns: {row}")
        lines.append(table_row(row))
    return "\n".join(lines)
