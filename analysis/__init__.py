"""Analysis of skill vectors: per-tensor statistics, heatmaps, cosine similarity."""
