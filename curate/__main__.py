from curate.cli import run

run()
