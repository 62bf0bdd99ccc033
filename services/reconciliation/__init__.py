"""reconciliation, the business middle platform's T+1 three-way matching: the platform's own
transactions (payment-core) against the WeChat Pay trade bill and the insurer's 3201 totals."""
