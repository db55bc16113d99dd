"""Benchmark runners behind `scalowatch bench ...`: NAB, UCR, MVTec, audio, throughput."""
