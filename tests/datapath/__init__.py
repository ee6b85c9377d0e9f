"""Tests of fxpsim.datapath (a package, so test basenames may repeat those of other folders)."""
