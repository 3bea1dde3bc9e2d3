"""PostgreSQL + pgvector: embedded server, versioned migrations, and the tenant-scoped connection helper."""
