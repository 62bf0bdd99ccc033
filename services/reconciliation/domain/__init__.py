"""Pure reconciliation logic: the nouns of a run and the matcher. No grpc, sqlalchemy or I/O."""
