"""Aligned text tables: fixed-width rows for logs that grow line by line, markdown for reports."""


def row(cells, widths, first_left: bool = False) -> str:
    """One line of right-aligned cells (the first left-aligned if asked), two spaces apart."""
    return "  ".join(str(c).ljust(w) if first_left and i == 0 else str(c).rjust(w)
                     for i, (c, w) in enumerate(zip(cells, widths)))


def markdown(headers: list, rows: list) -> str:
    """A markdown table whose columns line up in plain text too: printed as is and embedded in reports."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]

    def line(r):
        return "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w)
                                 for i, (c, w) in enumerate(zip(r, widths))) + " |"
    return "\n".join([line(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|",
                      *map(line, cells[1:])])
