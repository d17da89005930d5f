"""studylib: structural pruning and recovery of multimodal LLMs (the reference toolkit and study)."""

from . import pruned_modeling  # noqa: F401  registers Pruned* configs/models with AutoConfig/AutoModel
