"""phoenix_lib: the code the Phoenix textbook explains and runs.

The public names of the released Phoenix models are importable from here:
configs, inputs, ``make_ranker``/``make_retriever`` and their helpers, for both releases
the book follows (January and May 2026; ``DEFAULT_RELEASE`` is May).
"""

from phoenix_lib.checkpoint import load_params, save_params
from phoenix_lib.config import (
    ACTIONS,
    DEFAULT_RELEASE,
    RELEASES,
    ContinuousActionConfig,
    HashConfig,
    NormConfig,
    PhoenixModelConfig,
    PhoenixRetrievalModelConfig,
    TransformerConfig,
    book_ranker_config,
    book_retrieval_config,
)
from phoenix_lib.inputs import (
    RecsysBatch,
    RecsysEmbeddings,
    batch_from_ids,
    validate_batch,
    with_post_rows,
)
from phoenix_lib.ranker import RankerOutput, make_ranker
from phoenix_lib.retrieval import RetrievalOutput, TopK, make_retriever, retrieve_top_k

__all__ = [
    "ACTIONS",
    "DEFAULT_RELEASE",
    "RELEASES",
    "ContinuousActionConfig",
    "HashConfig",
    "NormConfig",
    "PhoenixModelConfig",
    "PhoenixRetrievalModelConfig",
    "RankerOutput",
    "RecsysBatch",
    "RecsysEmbeddings",
    "RetrievalOutput",
    "TopK",
    "TransformerConfig",
    "batch_from_ids",
    "book_ranker_config",
    "book_retrieval_config",
    "load_params",
    "make_ranker",
    "make_retriever",
    "retrieve_top_k",
    "save_params",
    "validate_batch",
    "with_post_rows",
]
