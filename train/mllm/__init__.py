"""Training of GLEE-LLMs (reasoning segmentation): the shapeworld learning proof."""
