"""Tests of fxpsim.compress (a package, so test basenames may repeat those of other folders)."""
