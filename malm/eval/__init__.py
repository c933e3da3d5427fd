"""After training: embedding a split, the retrieval protocols and metrics, test-time re-ranking by the
matching module, paired statistics, grounding."""
