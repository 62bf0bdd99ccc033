"""The gRPC face of data-aggregation: proto <-> query/result only."""
