"""Tests of fxpsim.graph (a package, so test basenames may repeat those of other folders)."""
