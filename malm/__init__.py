"""malm-suite: MALM (arXiv 2305.11327) food image <-> recipe retrieval, baselines and ablations."""

__version__ = "0.1.0"
