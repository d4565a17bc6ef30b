"""`marlbench compare`: leaderboards with significance tests from a results folder.

results   reads completed runs and failed cells        stats     the statistics, on arrays
analysis  builds the tables and the warnings           render    text formats
plots     PNG figures                                  report    writes everything to a folder
"""

from marlbench.compare.analysis import Comparison, compare, parse_pairs
from marlbench.compare.report import write_report
from marlbench.compare.results import Results, RunRecord, load_results

__all__ = ["Comparison", "Results", "RunRecord", "compare", "load_results", "parse_pairs",
           "write_report"]
