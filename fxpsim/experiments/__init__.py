"""Multi-step studies the CLI runs (Stripes runs, pruning pipelines, the acc table, reproduce): library functions, testable without argv."""
