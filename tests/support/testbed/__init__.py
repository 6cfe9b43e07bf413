"""The CPU test bed: tiny offline models, the HF oracle and a time-bounded sglang.Engine runner.

Test-only (also used by ``make demo`` and ``make bench``); never part of the wheel.
"""
