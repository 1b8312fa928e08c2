"""One module per command: parse what the CLI passed, call the engine, render, return an exit code."""
