"""The `curate` command: parse, call the API, render. No logic lives here.

Exit codes: 0 ok, 1 internal error, 2 user error (bad config, bad input, unknown id) with a
one-paragraph message and no traceback; `--debug` anywhere on the line shows it.
"""

from __future__ import annotations

import gc
import json
import os
import sys
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Any

import typer

from curate.terminal import (
    clean,
    decide_loop,
    make_console,
    print_json,
    render_diff,
    render_item,
    render_stats,
    render_summary,
)

app = typer.Typer(
    name="curate",
    help="Versioned, content-hashed fine-tuning mixtures: build, inspect, review, export, train.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

StoreOpt = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Store folder or URI such as s3://bucket/prefix (default: $CURATE_STORE, else "
        ".curate/ beside the config or here).",
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]
IdArg = Annotated[str, typer.Argument(help="Manifest id, unique prefix (8+ hex digits) or tag.")]


def _store(store: str | None) -> str | None:
    return store if store is not None else (os.environ.get("CURATE_STORE") or None)


# ---------------------------------------------------------------------------------------
# build / show / log


@app.command()
def build(
    config: Annotated[Path, typer.Argument(help="mixture.toml")],
    store: StoreOpt = None,
    engine: Annotated[
        str, typer.Option(help="local (a process pool) or ray (Ray tasks; same manifest id)")
    ] = "local",
    address: Annotated[
        str | None,
        typer.Option(
            help="With --engine ray: local (start Ray here, the default), auto (the cluster "
            "`ray start --head` started on this machine) or ray://host:port."
        ),
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            min=1, help="Workers (default: the machine's cores; on Ray, the cluster's CPUs)."
        ),
    ] = None,
    strict: Annotated[
        bool, typer.Option("--strict", help="Stop at the first bad row instead of quarantining it.")
    ] = False,
    parent: Annotated[
        str | None, typer.Option(help="Manifest this build derives from (recorded as `parent`).")
    ] = None,
    no_report: Annotated[
        bool, typer.Option("--no-report", help="Skip the HTML report (`curate report` shows it).")
    ] = False,
    allow_empty: Annotated[
        bool,
        typer.Option(
            "--allow-empty", help="Accept a build whose every row was rejected (else exit 2)."
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Read, validate, deduplicate, mix and split the sources of CONFIG; print the manifest id."""
    # Importing polars, pyarrow and pydantic makes many objects and no garbage: the cycle
    # collector would only rescan them, again and again (a few % of a small build). It is
    # off while they import, and what they made is then frozen out of its scans, until
    # the command returns.
    collecting = gc.isenabled()
    gc.disable()
    try:
        where = (engine, address, workers)
        outputs = (as_json, not no_report, allow_empty)
        _build(config, store, where, strict, parent, outputs, collecting)
    finally:
        gc.unfreeze()
        if collecting:
            gc.enable()


def _build(
    config: Path,
    store: str | None,
    where: tuple[str, str | None, int | None],
    strict: bool,
    parent: str | None,
    outputs: tuple[bool, bool, bool],
    collecting: bool,
) -> None:
    """`outputs`: (print JSON, write the HTML report, accept a build without rows)."""
    from curate.config import load_config
    from curate.manifests.store import Store, default_store
    from curate.sources import Prescan, scratch_dir

    engine, address, workers = where
    as_json, report, allow_empty = outputs
    cfg = load_config(config)
    from curate.engines.local import hidden, prestart

    if engine == "local":
        prestart()  # the workers' forkserver imports in parallel with everything below
    # Hash the source files on threads while this process imports pyarrow and polars.
    scratch = scratch_dir(Store(_store(store) or default_store(config)).root)
    prescan = Prescan([(str(p), scratch) for src in cfg.sources for p in cfg.source_files(src)])

    import curate.pipeline  # noqa: F401 - imported here, while the collector is off
    from curate import api
    from curate.manifests.manifest import warnings as manifest_warnings
    from curate.progress import Progress

    gc.freeze()  # what the imports made: no garbage, never to be rescanned
    if collecting:
        gc.enable()

    prescanned = prescan.results()
    # transformers (a [tokenizer] that is a model folder) and sentence-transformers may
    # import pandas; only builds that load neither can do without it
    plain = cfg.dedup.semantic is None and cfg.tokenizer is None
    hide = hidden("pandas") if plain else nullcontext()
    with hide, Progress(enabled=not as_json) as progress:
        result = api.build(
            cfg,
            store=_store(store),
            workers=workers,
            engine=engine,
            address=address,
            strict=strict,
            parent=parent,
            progress=progress,
            prescanned=prescanned,
            report=report,
            allow_empty=allow_empty,
        )
    if as_json:
        data = result.manifest
        print_json(
            {
                "manifest_id": result.manifest_id,
                "counts": data["counts"],
                "sources": {
                    s["name"]: {
                        k: s[k]
                        for k in (
                            "rows_in",
                            "rows_kept",
                            "rows_rejected",
                            "rows_emitted",
                            "rejected",
                        )
                    }
                    for s in data["sources"]
                },
                "splits": {name: entry["rows"] for name, entry in data["splits"].items()},
                "roles": {
                    role: {k: entry.get(k) for k in ("realized_share", "solved_share", "bound")}
                    for role, entry in data["mixture"].get("roles", {}).items()
                },
                **{k: bool(v) for k, v in data["mixture"].get("risks", {}).items()},
                "store": result.run["store"],
                "seconds": result.run["seconds"],
                "warnings": manifest_warnings(data),
            }
        )
        return
    render_summary(result.manifest_id, result.manifest, result.run)


@app.command()
def show(ref: IdArg, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Show a manifest: sources, stages, mixture, splits."""
    from curate import api

    manifest = api.open_manifest(ref, _store(store))
    if as_json:
        print_json(manifest.data)
        return
    render_summary(manifest.id, manifest.data, manifest.store.read_run(manifest.id))


@app.command("log")
def log_cmd(
    store: StoreOpt = None,
    graph: Annotated[
        bool, typer.Option("--graph", help="Draw each build under its parent.")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the builds in the store, newest first (--graph: as a lineage tree)."""
    from rich.table import Column, Table

    from curate import api

    entries = api.log(_store(store))
    if as_json:
        print_json(entries)
        return
    if graph:
        from curate.manifests.lineage import graph as lineage

        for depth, e in lineage(entries):
            tags = f" ({', '.join(e['tags'])})" if e["tags"] else ""
            make_console().print(
                f"{'  ' * depth}{'└─ ' if depth else ''}{e['id'][:12]} {e['name']} "
                f"{e['created'] or ''} rows out {e['rows_out']}{tags}",
                markup=False,
                highlight=False,
            )
            for m in e["mined"]:  # where a mined source's rows came from
                runs = ", ".join(r[:12] for r in m["mining_runs"])
                make_console().print(
                    f"{'  ' * (depth + 1)}   ↳ {m['source']} ← labels {str(m['labels'])[:12]} "
                    f"← mining run {runs} ← logs {', '.join(m['logs'])}",
                    markup=False,
                    highlight=False,
                )
            for t in e["trained"]:  # and what was trained from it
                make_console().print(
                    f"{'  ' * (depth + 1)}   → trained {t['run_id'][:12]}"
                    f"{' (smoke)' if t['smoke'] else ''} {t['created']} in {t['folder']}",
                    markup=False,
                    highlight=False,
                )
        return
    table = Table("name", "created", "rows in", "rows out", "rejected", "tags")
    table.columns.insert(0, Column("id", no_wrap=True, min_width=16))
    for e in entries:
        table.add_row(
            e["id"][:16],
            e["name"],
            e["created"] or "",
            str(e["rows_in"]),
            str(e["rows_out"]),
            str(e["rows_rejected"]),
            ", ".join(e["tags"]),
        )
    make_console().print(table)


# ---------------------------------------------------------------------------------------
# verify / tag / export


@app.command()
def verify(ref: IdArg, store: StoreOpt = None, as_json: JsonOpt = False) -> None:
    """Re-hash every object of a build and check that every input row is accounted for."""
    from curate import api
    from curate.errors import IntegrityError

    report = api.verify(ref, _store(store))
    if as_json:
        print_json({**report, "ok": not report["problems"]})
        if report["problems"]:
            raise typer.Exit(2)
        return
    if report["problems"]:
        raise IntegrityError(
            f"manifest {report['id']} failed verification:\n"
            + "\n".join(f"  - {p}" for p in report["problems"])
        )
    make_console().print(
        f"ok: manifest {report['id']}, {report['objects']} objects re-hashed, rows conserved"
    )


@app.command("diff")
def diff_cmd(
    a: Annotated[str, typer.Argument(help="Manifest id, prefix or tag")],
    b: Annotated[str, typer.Argument(help="Manifest id, prefix or tag")],
    store: StoreOpt = None,
    rows: Annotated[
        int, typer.Option("--rows", min=0, help="Show up to N added and removed rows whole.")
    ] = 0,
    html: Annotated[
        bool, typer.Option("--html", help="Also write the two builds' reports side by side.")
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Where --html writes (default: diff-A-B.html)")
    ] = None,
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    as_json: JsonOpt = False,
) -> None:
    """What changed from build A to build B; exit 0 when they are the same build, 1 when not."""
    from curate import api

    report = api.diff(a, b, _store(store), rows)
    if html:
        from curate.report import write_report
        from curate.report.compare import diff_report

        page = diff_report(
            api.open_manifest(a, _store(store)), api.open_manifest(b, _store(store)), report
        )
        target = out or Path(f"diff-{report['a'][:12]}-{report['b'][:12]}.html")
        write_report(page.encode(), target, overwrite)
        print(f"diff report {target}", file=sys.stderr)
    if as_json:
        print_json(report)
    else:
        render_diff(report)
    if not report["identical"]:
        raise typer.Exit(1)


@app.command()
def mine(
    logs: Annotated[list[Path], typer.Argument(help="Log files: JSONL, .jsonl.gz or Parquet.")],
    config: Annotated[
        Path | None, typer.Option("--config", help="mine.toml: rules, lists, schemas, privacy.")
    ] = None,
    store: StoreOpt = None,
    queue: Annotated[
        Path | None,
        typer.Option("--queue", help="Write the new candidates here: queue.jsonl and queue.csv."),
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace the queue files in a used --queue folder.")
    ] = False,
    fresh: Annotated[
        bool,
        typer.Option(
            "--fresh",
            help="Collapse failures with no earlier run's candidates: queue every one again.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Find failures in production logs: each row judged by the rules (thumbs_down,
    low_score, invalid_json, schema_violation, truncated, degenerate, unexpected and missed
    refusals, empty, language_mismatch), secrets redacted first, failures collapsed into
    candidates (with earlier runs'), the run stored. `curate mine import LABELED --as NAME`
    brings the labels back as a source."""
    from curate import api
    from curate.mining.labels import queue_batches, write_queue
    from curate.terminal import render_mining

    run = api.mine(logs, config, _store(store), fresh)
    written = []
    if queue is not None:
        written = write_queue(queue_batches(run.store, run.record, run.id), queue, overwrite)
    if as_json:
        print_json({"mining_run": run.id, **run.record, "queue": [str(p) for p in written]})
    else:
        render_mining(run.record, run.id)
        for path in written:
            make_console().print(f"wrote {path}")


@app.command("mine-forget", hidden=True)
def mine_forget(
    run: Annotated[str, typer.Argument(help="A mining run id or unique prefix (8+ hex digits).")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """`curate mine forget RUN`: take the latest mining run's candidates out of the index,
    so that mining the logs again (with a fixed mine.toml) queues them anew."""
    from curate import api

    done = api.forget_mining_run(run, _store(store))
    if as_json:
        print_json(done)
        return
    make_console().print(
        f"mining run {done['mining_run'][:12]}: its {done['forgotten']} new candidates are out "
        "of the index; the next `curate mine` queues their failures again"
    )


@app.command("mine-report", hidden=True)
def mine_report(
    run: Annotated[str, typer.Argument(help="A mining run id or unique prefix (8+ hex digits).")],
    store: StoreOpt = None,
    top: Annotated[int, typer.Option("--top", help="Largest candidates shown.")] = 10,
    against: Annotated[
        str | None,
        typer.Option(
            "--against",
            help="A manifest id or tag: per week, how far production prompts drifted from "
            "its training rows (length, embedding centroid distance).",
        ),
    ] = None,
    as_json: JsonOpt = False,
) -> None:
    """`curate mine report RUN`: failures per rule, cluster, model version, day and week;
    top clusters and candidates; drift against a training manifest."""
    from curate import api
    from curate.mining.report import mining_report
    from curate.terminal import render_mining_report

    report = mining_report(api.store_for(_store(store)), run, top, against)
    if as_json:
        print_json(report)
    else:
        render_mining_report(report)


@app.command("mine-import", hidden=True)
def mine_import(
    labeled: Annotated[Path, typer.Argument(help="Queue items a labeler edited (JSONL or CSV).")],
    name: Annotated[str, typer.Option("--as", help="The source's name.")],
    out: Annotated[Path, typer.Option("--out", help="Where NAME/ goes.")] = Path("mined"),
    overwrite: Annotated[bool, typer.Option("--overwrite")] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """`curate mine import LABELED --as NAME`: labels as a mined source with its lineage."""
    from curate import api

    done = api.import_labels(labeled, name, out, overwrite, _store(store))
    if as_json:
        print_json(done)
        return
    make_console().print(
        f"{done['rows']} corrected rows and {done['pairs']} preference pairs in {done['folder']} "
        f"({done['discarded']} discarded, {done['unlabeled']} not labeled); its [[sources]] "
        f"block: {done['folder']}/source.toml",
        markup=False,  # "[[sources]]" is text, not markup
    )


@app.command("gc")
def gc_cmd(
    store: StoreOpt = None,
    delete: Annotated[
        bool, typer.Option("--delete", help="Remove them (default: only list them).")
    ] = False,
    cache: Annotated[
        bool,
        typer.Option(
            "--cache",
            help="Also the caches a rebuild recomputes from the sources (read blocks, step "
            "outputs): the next build of each config runs cold.",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List the objects no manifest names (shards of deleted or killed builds); --delete removes them."""
    from curate import api

    report = api.gc(_store(store), delete, cache)
    if as_json:
        print_json(report)
        return
    n, size = len(report["unreferenced"]), report["bytes"]
    what = "removed" if report["deleted"] else "would remove (dry run; --delete removes them)"
    cached = sum(report["cache"].values())
    also = f" and caches of {cached / 2**20:.1f} MiB" if cache else ""
    make_console().print(
        f"{report['objects']} objects, {report['manifests']} manifests: {what} {n} objects "
        f"no manifest names ({size / 2**20:.1f} MiB){also}"
    )


@app.command()
def tag(
    name: Annotated[str, typer.Argument(help="Tag name")],
    ref: IdArg,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Name a build: NAME then resolves wherever an id is expected."""
    from curate import api

    mid = api.tag(name, ref, _store(store))
    if as_json:
        print_json({"tag": name, "id": mid})
    else:
        make_console().print(f"{name} -> {mid}")


@app.command()
def export(
    ref: IdArg,
    fmt: Annotated[str, typer.Option("--format", help="jsonl | parquet | hf")] = "jsonl",
    out: Annotated[Path, typer.Option("--out", help="Output folder")] = Path("export"),
    columns: Annotated[
        str,
        typer.Option(
            "--columns",
            help="all: the rows with labels and assistant_masks beside input_ids (TRL, "
            "datasets); tokens: exactly input_ids, attention_mask, labels (Axolotl's "
            "pre-tokenized format, transformers.Trainer)",
        ),
    ] = "all",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace curate's own files in a used --out")
    ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Write a build's splits as JSONL, Parquet or a datasets save_to_disk folder, in the
    form trainers read as it is (labels -100 outside the trained tokens)."""
    from curate import api

    done = api.export(ref, fmt, out, _store(store), overwrite=overwrite, columns=columns)
    if as_json:
        print_json(
            {
                "paths": [str(p) for p in done.paths],
                "rows": done.rows,
                "skipped": done.skipped,
                "columns": done.columns,
            }
        )
        return
    console = make_console()
    for p in done.paths:
        console.print(str(p), markup=False, highlight=False)
    for split in done.skipped:
        console.print(
            f"{split}: no rows in this build, not written (an empty saved split cannot be "
            "loaded back)",
            markup=False,
            highlight=False,
        )


# ---------------------------------------------------------------------------------------
# query / review


@app.command()
def query(
    ref: IdArg,
    sql: Annotated[str, typer.Argument(help="SQL over views `rows` and `ledger`")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Run DuckDB SQL over a build's output (`rows`, with `split`) and its `ledger`."""
    from rich.table import Table

    from curate import api
    from curate.ledger import query as run_query

    result = run_query(api.open_manifest(ref, _store(store)), sql)
    records = result.to_pylist()
    if as_json:
        print_json(records)
        return
    table = Table(*result.column_names)
    for rec in records:
        table.add_row(*[_cell(v) for v in rec.values()])
    make_console().print(table)


def _cell(value: Any, width: int = 80) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"


@app.command()
def train(
    ref: IdArg,
    config: Annotated[Path | None, typer.Option("--config", help="train.toml")] = None,
    base: Annotated[
        str | None, typer.Option("--base", help="Base model: folder, .gguf file or hub id")
    ] = None,
    chat_template: Annotated[
        Path | None, typer.Option("--chat-template", help="The template override the build used")
    ] = None,
    quantize: Annotated[
        bool | None,
        typer.Option(
            "--quantize/--no-quantize",
            help="QLoRA (NF4) or plain LoRA (default: QLoRA on CUDA, plain LoRA on CPU)",
        ),
    ] = None,
    max_steps: Annotated[int | None, typer.Option("--max-steps", help="Stop after N steps")] = None,
    batch_tokens: Annotated[
        int | None, typer.Option("--batch-tokens", help="Tokens per micro-batch (pack size)")
    ] = None,
    smoke: Annotated[
        bool,
        typer.Option(
            "--smoke",
            help="100 steps (fewer with --max-steps) on 10% of the data, then save, load, "
            "merge and generate",
        ),
    ] = False,
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: store/runs/ID)")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace a run's own files in a used --out")
    ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Train a (Q)LoRA adapter on exactly the token ids and masks manifest ID validated."""
    from curate import api
    from curate.train.config import load_train_config
    from curate.train.run import train as run_train

    overrides: dict[str, Any] = {
        "base_model": base,
        "chat_template": str(chat_template) if chat_template else None,
        "max_steps": max_steps,
        "batch_tokens": batch_tokens,
        "quantize": quantize,
    }
    cfg = load_train_config(config, **overrides)
    where = api.store_for(_store(store))
    summary = run_train(
        ref, cfg, where, out=out, smoke=smoke, show_progress=not as_json, overwrite=overwrite
    )
    if smoke:
        from curate.train.merge import merge_run, sample_text

        summary["merge"] = merge_run(Path(summary["run_dir"]), where)
        summary["merge"]["greedy_sample"] = sample_text(Path(summary["run_dir"]), summary["merge"])
    if as_json:
        print_json(summary)
        return
    console = make_console()
    method = "QLoRA (4-bit)" if summary["quantized"] else "plain LoRA"
    console.print(
        f"run {summary['run_id']} · {summary['steps']} steps · train loss {summary['train_loss']}"
        f" · validation loss {summary['eval_loss_before']} -> {summary['eval_loss_after']}"
        f" · {summary['tokens_per_second']:,.0f} tokens/s · packing "
        f"{summary['packing']['efficiency']:.1%}"
    )
    choices = summary["choices"]
    console.print(
        f"{method} on {summary['device']}: {choices['quantize']['why']}\n"
        f"packs of {choices['batch_tokens']['value']:,} tokens: {choices['batch_tokens']['why']}"
    )
    console.print(f"release packet: {summary['run_dir']}/release.yaml")
    if smoke:  # what the merged model says to the first validation prompt, greedily
        console.print(f"smoke generation: {summary['merge']['greedy_sample']!r}", markup=False)


@app.command()
def merge(
    run: Annotated[Path, typer.Argument(help="Run folder (or run id, looked up in the store)")],
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Merge a run's adapter into its base (fp32) and check merged against unmerged."""
    from curate import api
    from curate.train.merge import merge_run

    given = _store(store)
    if run.is_dir():  # a run folder knows the store it was trained from
        report = merge_run(run, api.store_for(given) if given else None)
    else:
        where = api.store_for(given)
        report = merge_run(where.root / "runs" / str(run), where)
    if as_json:
        print_json(report)
        return
    make_console().print(
        f"merged into {report['merged']} · max logit difference {report['max_logit_diff']:.2e}"
        f" · greedy agreement {report['greedy_agreement']:.1%}"
    )


@app.command()
def review(
    ref: IdArg,
    reason: Annotated[str | None, typer.Option(help="Only this rejection reason")] = None,
    source: Annotated[str | None, typer.Option(help="Only this source")] = None,
    n: Annotated[int, typer.Option("-n", min=1, help="How many to sample")] = 10,
    seed: Annotated[int, typer.Option(help="Sampling seed")] = 0,
    decide: Annotated[
        bool, typer.Option("--decide", help="Record decisions (one row at a time, or --id).")
    ] = False,
    row_id: Annotated[str | None, typer.Option("--id", help="The row to decide on")] = None,
    keep: Annotated[bool, typer.Option("--keep", help="The rejection was wrong")] = False,
    reject: Annotated[bool, typer.Option("--reject", help="The rejection was right")] = False,
    note: Annotated[str | None, typer.Option(help="Why (kept with the decision)")] = None,
    reviewer: Annotated[str | None, typer.Option(help="Who (default: your user name)")] = None,
    decisions: Annotated[
        Path | None,
        typer.Option(help="Decisions file (default: review/decisions.jsonl beside the config)"),
    ] = None,
    stats: Annotated[
        bool, typer.Option("--stats", help="Each rule's precision by the reviews so far")
    ] = False,
    threshold: Annotated[float, typer.Option(help="--stats: flag rules below this")] = 0.9,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sample rejected rows beside their evidence; decide on them; measure each rule."""
    from curate import api
    from curate.errors import UserError
    from curate.review import loop
    from curate.review.sample import sample_rejections
    from curate.steps import REASONS

    if reason is not None and reason not in REASONS:
        raise UserError(f"unknown reason {reason!r}; reasons are: {', '.join(REASONS)}")
    manifest = api.open_manifest(ref, _store(store))
    if stats:
        render_stats(loop.stats(manifest, [decisions] if decisions else None, threshold), as_json)
        return
    if decide and row_id is not None:
        if keep == reject:
            raise UserError("--decide --id ROW needs one of --keep or --reject")
        rec = loop.decide(manifest, row_id, "keep" if keep else "reject", note, reviewer, decisions)
        if as_json:
            print_json(rec)
        else:
            why = rec["reason_reviewed"]
            make_console().print(
                f"{rec['decision']} {rec['id']} recorded "
                + (f"(it was rejected as {why})" if why else "(a row the build kept)"),
                markup=False,
            )
        return
    items = sample_rejections(manifest, reason, source, n, seed)
    if decide:
        decide_loop(manifest, items, reviewer, decisions)
        return
    if as_json:
        print_json(items)
        return
    console = make_console()
    if not items:
        console.print("no rejected rows match")
    for item in items:
        render_item(console, item)


@app.command()
def inspect(
    target: Annotated[str, typer.Argument(help="mixture.toml, or a manifest id / prefix / tag.")],
    n: Annotated[int, typer.Option("-n", min=1, help="How many rows.")] = 5,
    source: Annotated[str | None, typer.Option(help="Only rows of this source.")] = None,
    trust_remote_code: Annotated[
        bool,
        typer.Option(
            "--trust-remote-code",
            help="Let a build's tokenizer run its own code (never taken from the manifest).",
        ),
    ] = False,
    store: StoreOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show rows as the trainer sees them: rendered text, trained tokens highlighted, spans."""
    from curate.review.inspect import inspect_config, inspect_manifest

    if target.endswith(".toml") or Path(target).is_file():
        rows = inspect_config(target, n, source)
    else:
        rows = inspect_manifest(target, _store(store), n, source, trust_remote_code)
    if as_json:
        print_json(rows)
        return
    from rich.text import Text

    console = make_console()
    for row in rows:
        if "rejected" in row:
            console.print(
                f"[bold]{row['id']}[/] {row['source']}  [red]rejected: {row['rejected']}[/] "
                f"{json.dumps(row['detail'], ensure_ascii=False)}"
            )
            continue
        spans = ", ".join(f"[{a},{b})" for a, b in row["mask_spans"])
        console.print(
            f"[bold]{row['id']}[/] {row['source']}  tokens {row['n_tokens']}  trained "
            f"{row['n_trained']}  cut {row['tokens_cut']}  spans {spans}"
        )
        text = Text()
        for seg in row["segments"]:
            text.append(seg["text"], style="bold green" if seg["trained"] else "dim")
        console.print(text)
        console.print()


import curate.cli_gate  # noqa: E402, F401 - registers `curate gate` on the app above

# ---------------------------------------------------------------------------------------
# entry point


def main(argv: list[str] | None = None) -> None:
    from curate.errors import UserError

    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] in (["--version"], ["-V"]):
        from curate import __version__

        print(f"curate {__version__}")
        return
    debug = "--debug" in args
    args = [a for a in args if a != "--debug"]
    if args[:2] in (["mine", "import"], ["mine", "report"], ["mine", "forget"]):  # `mine LOGS...`
        args = [f"mine-{args[1]}", *args[2:]]
    if args[:2] == ["review", "serve"]:  # `review ID` takes any id or tag
        args = ["review-serve", *args[2:]]
    try:
        code = app(args=args, prog_name="curate", standalone_mode=False)
        if isinstance(code, int) and code:  # a command's typer.Exit(code) comes back as a value
            sys.exit(code)
    except UserError as exc:
        if debug:
            raise
        print(f"error: {clean(str(exc))}", file=sys.stderr)
        sys.exit(exc.exit_code)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        print("aborted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):  # a usage error from the parser
            exc.show()
            sys.exit(2)
        if debug:
            raise
        print(
            f"internal error: {type(exc).__name__}: {clean(str(exc))}\n(this is a bug in curate; run again with --debug for the traceback)",
            file=sys.stderr,
        )
        sys.exit(1)


def run() -> None:
    """The `curate` executable: `main`, then leave without tearing the interpreter down.

    Everything a command writes is closed, fsynced and renamed before `main` returns;
    skipping the interpreter's teardown of pyarrow, polars and DuckDB saves ~0.1 s a command.
    """
    try:
        main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    sys.stdout.flush()
    sys.stderr.flush()
    if "multiprocessing.process" in sys.modules:  # else a command that started no workers
        from curate.engines.sockets import remove_forkserver_folder

        # without it every build with workers left a /tmp/pymp-* behind
        remove_forkserver_folder()
    os._exit(code)


if __name__ == "__main__":
    run()
import curate.cli_report  # noqa: E402, F401 - registers `curate report`
