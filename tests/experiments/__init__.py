"""Tests of fxpsim.experiments: the studies the CLI runs, called without argv."""
