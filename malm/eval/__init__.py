"""After training: embedding a split, the retrieval protocols and metrics, paired statistics, grounding."""
