"""Our results beside the paper's: collection, summaries and comparisons, the paper's tables,
figures and exported files.

    collect   metrics JSON -> tidy tables; reading them back; choosing run sets
    compare   mean / CI over seeds x bags, paired differences between variants
    paper     the paper's numbers and the checks of the paper against itself
    tables    display tables (paper Tables 1-3, differences, malm tables, grounding)
    figures   figures
    write     Markdown/LaTeX export, and every output of `malm tables`
    expected  expected results and the regression check (`malm check-results`, expected/*.csv)

This package namespace is the API the notebooks use (``from malm import report``).
"""

from malm.eval.names import bag_label, protocol_reading, rerank_protocol
from malm.report.collect import (BAG_COLUMNS, BAGS_FILE, COLUMNS, DIRECTIONS, METRICS,
                                 collect_grounding, dedupe, inventory, load_bags, load_curves,
                                 load_ours, pick, same_config)
from malm.report.compare import compare, comparison_pairs, summarise
from malm.report.expected import Rule, check_path, format_check, paper_expected, read_expected
from malm.report.expected import check as check_expected
from malm.report.figures import figure_curves, figure_mask_ratio, figure_recall
from malm.report.paper import (mask_ratios, paper_claims, paper_inconsistencies, paper_mask_ratios,
                               paper_table, paper_with_variants, table_variants)
from malm.report.tables import (MISSING, NO_RERANK, NO_RESULTS, TABLE1_PAPER_ROWS, ablation_table,
                                coverage, differences, differences_table, fmt, fmt_ci, fmt_diff,
                                grounding_summary, has_matching, missing_note, ours_label,
                                paper_label, table1, table2, table3, wide_table)
from malm.report.write import build_tables, export, to_latex, to_markdown

__all__ = ["ablation_table", "BAG_COLUMNS", "bag_label", "BAGS_FILE", "build_tables",
           "collect_grounding", "COLUMNS", "compare", "comparison_pairs", "coverage", "dedupe",
           "check_expected", "check_path", "differences", "differences_table", "DIRECTIONS",
           "export", "figure_curves", "format_check",
           "figure_mask_ratio", "figure_recall", "fmt", "fmt_ci", "fmt_diff", "grounding_summary",
           "has_matching", "inventory", "load_bags", "load_curves", "load_ours", "mask_ratios", "METRICS",
           "MISSING", "missing_note", "NO_RERANK", "NO_RESULTS", "ours_label", "paper_claims",
           "paper_expected", "paper_inconsistencies", "paper_label", "paper_mask_ratios", "paper_table",
           "paper_with_variants", "pick", "protocol_reading", "read_expected", "rerank_protocol",
           "Rule", "same_config",
           "summarise", "table1",
           "TABLE1_PAPER_ROWS", "table2", "table3", "table_variants", "to_latex", "to_markdown",
           "wide_table"]
