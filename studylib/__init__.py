"""studylib: structural pruning and recovery of multimodal LLMs (the reference toolkit and study).

Importing the package itself is cheap (the command line starts at once). `studylib.pruned_modeling`, which
`studylib.models` imports, registers the pruned_* configs and models with transformers' Auto classes.
"""
