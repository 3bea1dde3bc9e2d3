"""Knowledge base: documents -> chunks -> embeddings in pgvector, hybrid retrieval, reranking."""
