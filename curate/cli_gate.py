"""`curate gate`: parse, call the gate, render its decision (exit 0 pass, 1 fail, 2 bad input)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.cli import JsonOpt, StoreOpt, _store, app
from curate.terminal import make_console, print_json


@app.command()
def gate(
    ref: Annotated[
        str, typer.Argument(help="Run (folder, id or prefix), or a base model to measure alone")
    ],
    baseline: Annotated[
        str,
        typer.Option("--baseline", help="'base' (the run's base model), another run, or 'none'"),
    ] = "base",
    config: Annotated[
        Path, typer.Option("--config", help="gate.toml (suites, eval sets, thresholds)")
    ] = Path("gate.toml"),
    report: Annotated[
        Path | None, typer.Option("--report", help="Also write the JSON report here")
    ] = None,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Decide whether a fine-tune may ship: task, regression, forgetting, safety, format,
    stop behaviour and a pairwise judge, each paired against the baseline."""
    from curate import api
    from curate.gate.run import gate as run_gate

    result = run_gate(
        ref,
        api.store_for(_store(store)),
        config,
        None if baseline == "none" else baseline,
        report,
        say=lambda line: print(f"gate: {line}", file=sys.stderr, flush=True),
    )
    if as_json:
        print_json(result)
    else:
        _render(result)
    if result["decision"] == "fail":
        raise typer.Exit(1)


def _render(result: dict[str, Any]) -> None:
    from rich.table import Table

    console = make_console()
    table = Table("suite", "verdict", "candidate", "baseline", "difference [interval]", "items")
    for name, suite in result["suites"].items():
        parts = {k: v for k, v in suite.items() if isinstance(v, dict) and "items" in v}
        rows = parts.items() if parts else [(name, suite)]
        for part, figures in rows:
            label = name if part == name else f"{name}.{part}"
            passed = suite["passed"]
            if part != name and passed is False:  # a part fails by its own reasons
                passed = not any(w.startswith(f"{part}:") for w in suite["why"])
            verdict = {True: "pass", False: "FAIL", None: "-"}[passed]
            table.add_row(label, verdict, *_figures(figures))
    console.print(table)
    for line in result["why"]:
        console.print(f"  - {line}")
    who = result["candidate"]["run"] or result["candidate"]["base"]
    console.print(f"gate: {result['decision']} · {who} · {result['seconds']} s")


def _figures(f: dict[str, Any]) -> list[str]:
    if "win_rate" in f:  # the judge
        low, high = f["interval"]
        return [f"win {f['win_rate']:.1%}", "", f"[{low:.1%}, {high:.1%}]", str(f["items"])]
    cand = f"{f['candidate']:.1%}"
    if "baseline" not in f:
        return [cand, "", "", str(f["items"])]
    low, high = f["interval"]
    return [
        cand,
        f"{f['baseline']:.1%}",
        f"{f['diff']:+.1%} [{low:+.1%}, {high:+.1%}]",
        str(f["items"]),
    ]


@app.command()
def serve(
    model: Annotated[str, typer.Argument(help="Model folder, .gguf file or hub id")],
    name: Annotated[str, typer.Option("--name", help="The model name requests use")] = "judge",
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free)")] = 8000,
    store: StoreOpt = None,
) -> None:
    """Serve a local model as an OpenAI-compatible chat endpoint on 127.0.0.1 (a judge for
    `curate gate`). Requests need the token from $CURATE_SERVE_TOKEN, else the one printed."""
    import os
    import secrets

    from curate import api
    from curate.gate.serve import serve as run_server
    from curate.train.model import resolve_base

    token = os.environ.get("CURATE_SERVE_TOKEN") or secrets.token_urlsafe(24)
    if "CURATE_SERVE_TOKEN" not in os.environ:
        print(f"token: {token}  (send it as 'Authorization: Bearer ...')", flush=True)
    folder = resolve_base(model, api.store_for(_store(store)).root / "cache")
    run_server(folder, name, port, token)


@app.command()
def models(as_json: JsonOpt = False) -> None:
    """The models installed with curate that need no network: give one's name to `--base`
    (`curate train ID --base smollm2`, `curate serve smollm2`)."""
    from curate.train.offline import offline_models

    found = offline_models()
    if as_json:
        print_json(found)
        return
    console = make_console()
    for m in found:
        where = m["path"] or f"not installed ({m['install']})"
        console.print(f"{m['name']}: {m['what']}\n  {where}", markup=False)
