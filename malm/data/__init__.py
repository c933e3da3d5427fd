"""Reading and feeding data: the Recipe1M reader, the cache and its image store, dataset,
masking, sampler, loader."""
