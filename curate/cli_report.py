"""`curate report` and `curate review serve`: the pages to look at, written or served."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from curate.cli import StoreOpt, _store, app


def open_in_browser(path: Path) -> None:
    import webbrowser

    webbrowser.open(path.resolve().as_uri())


@app.command()
def report(
    ref: Annotated[str, typer.Argument(help="Build (id, prefix or tag) or training run")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Where to write the page (default: report-ID.html here; a run's own folder for a run)",
        ),
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open it in the default browser.")] = False,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a different file at --out.")
    ] = False,
    store: StoreOpt = None,
) -> None:
    """One self-contained HTML page: a build's funnel, token lengths, mixture, duplicates,
    leaks and validation; or a run's loss curves, throughput, packing and gate verdict."""
    from curate import api
    from curate.report import report_for, write_report

    found = report_for(ref, api.store_for(_store(store)))
    target = out or found.default_out
    write_report(found.html, target, overwrite, owned=out is None and found.owned)
    print(f"{found.what}: report {target} ({len(found.html):,} bytes)")
    if open_:
        open_in_browser(target)


@app.command("review-serve", hidden=True)
def review_serve(
    ref: Annotated[str, typer.Argument(help="Build (id, prefix or tag)")],
    port: Annotated[int, typer.Option("--port", min=0, max=65535, help="0: any free port")] = 0,
    decisions: Annotated[
        Path | None,
        typer.Option(help="Decisions file (default: review/decisions.jsonl beside the config)"),
    ] = None,
    open_: Annotated[bool, typer.Option("--open", help="Open it in the default browser.")] = False,
    store: StoreOpt = None,
) -> None:
    """`curate review serve ID`: review rejected rows in a browser, on 127.0.0.1 only, behind
    a random token in the URL it prints; decisions go to the same file as `review --decide`."""
    import sys

    from curate import api
    from curate.review.web import Review, Server

    review = Review(api.open_manifest(ref, _store(store)), decisions)
    server = Server(review, port)
    print(f"review {review.manifest.id[:12]}: {server.url}", flush=True)
    print(f"decisions: {review.path} · Ctrl-C stops", file=sys.stderr, flush=True)
    if open_:
        import webbrowser

        webbrowser.open(server.url)
    server.run()
