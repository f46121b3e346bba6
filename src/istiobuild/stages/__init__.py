"""The pipeline's stages, one module each: the stage's plan (typed steps) and the actions it performs."""
