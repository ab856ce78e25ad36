"""Building blocks shared by every model (codec CNN blocks, DiCo block, embedders)."""
