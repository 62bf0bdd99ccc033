"""The gRPC face of reconciliation: proto <-> command/result only."""
